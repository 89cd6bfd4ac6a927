"""Device code through NVRTC with precompiled headers (compile workers, CUDA targets).

TileLang compiles a kernel's device code with a new nvcc process per kernel
(``tilelang_callback_cuda_compile``); that process parses the CUTLASS/CuTe headers again
each time, about 2.8 of the 3.2 CPU-seconds a 4096^3 GEMM candidate costs on an H200 host.
NVRTC (CUDA >= 12.8, through ``cuda-python``) keeps a precompiled header per process, so a
compile worker's later candidates skip that parse. Only the device compiler changes: the
host side (TileLang's ``tvm_ffi`` launcher) and every file of the kernel stay as they are,
so the kernel is launched exactly as before. The flags follow TileLang's nvcc call
(``-std=c++20 -lineinfo``, the same include directories, fast math and ptxas options from
the pass configs). Sources or targets NVRTC is not used for (several code targets, extra
nvcc flags) and any NVRTC failure go to nvcc as before.

Measured by ``benchmarks/compile_backends.py`` (README, "GPU figures").
"""

from __future__ import annotations

import re
from typing import Any

CALLBACK = "tilelang_callback_cuda_compile"
NVCC, NVRTC, AUTO = "nvcc", "nvrtc", "auto"

#: What compiled this process's last device code: "nvrtc", or "nvcc" (with why NVRTC was not used).
last: dict[str, Any] = {}


class _NotForNvrtc(Exception):
    """A target or flag NVRTC is not used for: nvcc compiles it, as TileLang does."""


def available() -> bool:
    """Whether NVRTC with precompiled headers can be used here (cuda-python, CUDA >= 12.8)."""
    try:
        from tilelang.contrib.nvrtc import get_nvrtc_version
        from tilelang.jit.adapter.nvrtc import is_nvrtc_available

        return bool(is_nvrtc_available) and tuple(get_nvrtc_version()) >= (12, 8)
    except Exception:  # noqa: BLE001 - no cuda-python, no libnvrtc, no CUDA: not available
        return False


def resolve(choice: str) -> str:
    """The device compiler a ``tl_device_compiler`` choice means on this machine."""
    return NVRTC if choice in (NVRTC, AUTO) and available() else NVCC


def install() -> None:
    """Compile device code with NVRTC in this process (a compile worker), nvcc as the fallback."""
    import tvm_ffi
    from tilelang.cuda.backend import tilelang_callback_cuda_compile as with_nvcc

    def compile_device(code: str, target: Any, pass_config: Any = None) -> bytearray:
        try:
            binary = _with_nvrtc(code, target, pass_config)
        except Exception as exc:  # noqa: BLE001 - NVRTC could not: nvcc, as TileLang would
            last.clear()
            last.update(compiler=NVCC, why=f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:200]}"
                        if str(exc).strip() else type(exc).__name__)
            return with_nvcc(code, target, pass_config)
        last.clear()
        last.update(compiler=NVRTC)
        return binary

    tvm_ffi.register_global_func(CALLBACK, f=compile_device, override=True)


def _with_nvrtc(code: str, target: Any, pass_config: Any) -> bytearray:
    from tilelang.contrib import nvcc, nvrtc
    from tilelang.env import CUDA_HOME, CUTLASS_INCLUDE_DIR, TILELANG_TEMPLATE_PATH
    from tilelang.jit.adapter.nvrtc.include_paths import discover_cuda_include_paths
    from tilelang.transform import PassConfigKey

    arch, codes = nvcc.get_target_arch_and_code(target)
    if codes and len(codes) > 1:
        raise _NotForNvrtc("several code targets (a fatbin)")
    match = re.fullmatch(r"(\d+)(a?)", str(arch))
    # TileLang's NVRTC call writes sm_XXa for XX >= 90: use it only where that is the target.
    if not match or (int(match.group(1)) >= 90) != (match.group(2) == "a"):
        raise _NotForNvrtc(f"arch sm_{arch}")
    cfg = pass_config or {}
    if cfg.get(PassConfigKey.TL_DEVICE_COMPILE_FLAGS):
        raise _NotForNvrtc("extra nvcc flags")
    options = [
        "-std=c++20",
        "-lineinfo",
        f"-I{TILELANG_TEMPLATE_PATH}",
        f"-I{CUTLASS_INCLUDE_DIR}",
        *(f"-I{path}" for path in discover_cuda_include_paths(CUDA_HOME or "/usr/local/cuda")),
        f"-D__CUDACC_VER_MAJOR__={nvrtc.get_nvrtc_version()[0]}",
    ]
    if cfg.get(PassConfigKey.TL_ENABLE_FAST_MATH, False):
        options.append("--use_fast_math")
    level = cfg.get(PassConfigKey.TL_PTXAS_REGISTER_USAGE_LEVEL, None)
    if level is not None:
        options.append(f"--ptxas-options=--register-usage-level={int(level)}")
    return bytearray(nvrtc.compile_cuda(code, target_format="cubin", arch=int(match.group(1)), options=options))
