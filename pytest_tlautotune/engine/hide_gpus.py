"""Imported first by the compile workers' fork server: hide every GPU from it.

Compiling needs nvcc, not a GPU (the parent writes the device's arch into the target).
A fork server that touched CUDA could not fork usable children, and a compile worker
that creates a CUDA context (TileLang's adapters do) costs start-up time and GPU memory.
With no GPU visible the fork server imports TileLang once and forks workers in
milliseconds.
"""

import os

#: What the test process showed (``device_compile.visible_archs`` asks nvidia-smi for their archs).
SHOWN = os.environ.get("CUDA_VISIBLE_DEVICES")
os.environ["CUDA_VISIBLE_DEVICES"] = ""
