"""Imported first by the workers' fork server: keep CUDA uninitialised there.

NVRTC (``--tl-device-compiler=nvrtc``) initialises the CUDA driver in each compile worker, and a
CUDA timing worker creates its context. A child forked from a process that already initialised the
driver crashes in ``cuInit`` (SIGSEGV under nvrtcCompileProgram, seen on an H200), so the server
must never initialise it: torch answers ``cuda.is_available()`` through NVML instead of the driver
API (in the server's children too, those the tests start with the forkserver method included).
With this, NVRTC ran in forked workers on H200s (about 990 candidate compiles, none crashed), GPUs
hidden or not.
"""

import os

os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
