"""Imported first by the compile workers' fork server: keep CUDA uninitialised there.

NVRTC (``--tl-device-compiler=nvrtc``) initialises the CUDA driver in each compile worker. A
child forked from a process that already initialised the driver crashes in ``cuInit``
(SIGSEGV under nvrtcCompileProgram, seen on an H200), so the server must never initialise it:
torch answers ``cuda.is_available()`` through NVML instead of the driver API (measured on H200
hosts: about 990 NVRTC compiles in forked workers, GPUs hidden or not, none crashed).
"""

import os

os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
