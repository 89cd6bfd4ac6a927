"""Imported by the compile workers' fork server after TileLang: where ``nvrtc_preload`` found no
header prefix remembered for this TileLang (a machine's first tuning with it), a detached child
writes the PCH of a probe GEMM's header prefix (``pch_probe.write``) while the server forks the
compile workers. TileLang is imported by then (6 s on a 2xH200 host, session 10): the child only
asks nvidia-smi for the GPUs' archs, lowers the probe and writes its PCH.
"""

from . import nvrtc_preload
from .device_compile import run_detached
from .pch_probe import write

if nvrtc_preload.PROBE:
    run_detached(write)
