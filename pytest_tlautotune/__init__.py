"""pytest-tlautotune: autotune TileLang kernels inside your pytest suite."""

__version__ = "0.1.0"
__all__ = ["__version__"]
