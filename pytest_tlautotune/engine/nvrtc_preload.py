"""Imported by the compile workers' fork server: load NVRTC before any worker is forked.

NVRTC uses a precompiled header only in the "dynamic instance" of the library that wrote it (its
PCH heap's address). Loaded here, the library sits at the same address in every worker, so one
PCH per header prefix serves them all (``device_compile._SharedPch``). Nothing happens where
cuda-python or libnvrtc is missing. NVRTC does not initialise the CUDA driver.
"""

from .device_compile import load_library

load_library()
