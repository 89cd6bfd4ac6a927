"""What inner pytest runs are given: the text of the shared kernels in ``examples/``, and the warning
filters they need.

Read as text, not imported: importing TileLang in the test process breaks later pytester runs.
The intentionally slow or wrong candidates the tests need are arguments of these kernels
(``gemm(..., bug_when_bk=32)``, ``repeat=``, ``extra=``, ``offset=``, ``segv=``), not copies.
"""

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: ``examples/kernels_cpu.py``: inner runs import it as ``kernels`` (gemm, elementwise_add, relu).
KERNELS = (EXAMPLES / "kernels_cpu.py").read_text()
#: ``examples/kernels_cuda.py``: inner runs import it as ``cuda_kernels`` (gemm, elementwise_add).
CUDA_KERNELS = (EXAMPLES / "kernels_cuda.py").read_text()

#: The filter for TileLang 0.1.15's own DeprecationWarning on Python 3.13 (typing._eval_type without
#: type_params, raised as it imports and builds): inner runs that count the plugin's warnings, or turn
#: every warning into an error, pass it (``-W``, ``filterwarnings``).
TILELANG_313_FILTER = "ignore::DeprecationWarning:tilelang.language.eager.builder"
#: A strict project's ini (every warning an error, as TileOPs has it), less TileLang's own on Python 3.13.
STRICT_INI = f"[pytest]\nfilterwarnings =\n    error\n    {TILELANG_313_FILTER}\n"
