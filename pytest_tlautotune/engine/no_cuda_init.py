"""Imported first by the NVRTC compile workers' fork server: keep CUDA uninitialised there.

NVRTC initialises the CUDA driver in each compile worker. A child forked from a process
that already initialised the driver crashes in ``cuInit`` (SIGSEGV, seen on an H200), so the
server itself must never initialise it: torch answers ``cuda.is_available()`` through NVML
instead of the driver API.
"""

import os

os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
