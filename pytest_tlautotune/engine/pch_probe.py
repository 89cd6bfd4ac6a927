"""A machine's first tuning: the PCH of a probe GEMM's header prefix, written as the fork server starts.

A later session writes the PCHs of the header prefixes its book remembers before its first
candidates need them (``device_compile.prime_detached``). On a machine that never tuned with this
TileLang the book is empty, and the whole first wave of candidates waits for one of them to write
the PCH (1.3-2.7 s on H200 hosts, session 9). The header prefix TileLang's CUDA codegen writes
depends on the instructions a kernel uses, not on its sizes or tiles: every config of the 48- and
288-config GEMM spaces on sm_90 starts with the same one (wgmma, TMA copies, barriers), and so does a
small pipelined ``T.gemm`` lowered for that arch. So where the book has nothing for this TileLang,
a detached child of the fork server (``probe_preload``, once the server imported TileLang) asks
``nvidia-smi`` for the visible GPUs' archs, lowers such a GEMM for each (its device code
generated, not compiled, with the options of a candidate's compile for that arch) and writes the
PCH of its prefix while the server forks the compile workers; ``probe.json`` beside the PCHs says
what it did (the tuning's record: phases ``pch_probe``).

A first tuning whose kernels start with that prefix finds the PCH written, or being written (its
compiles wait for the child while it lives, as for any worker writing one); a kernel with
another prefix writes its own as before. The probe costs one core for a few seconds beside the
imports and one PCH file (``device_compile.PCH_KEEP``). Its prefix is not remembered: the book
holds the prefixes real kernels used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Probe GEMMs lowered, one per arch; the book's own prefixes are written instead where it has any.
PROBE_MAX = 2


def visible_archs(shown: str | None) -> list[tuple[int, int]]:
    """The compute capabilities of the GPUs a process with ``CUDA_VISIBLE_DEVICES=shown`` sees
    (every GPU where None; every GPU where it names none by index), distinct, in that order, asked
    of ``nvidia-smi``: the CUDA driver is not initialised here (``cuInit`` in a child of the fork
    server crashed on a 2xH200 host, session 10 call 4). Empty where it cannot say."""
    import subprocess

    query = ["nvidia-smi", "--query-gpu=index,compute_cap", "--format=csv,noheader"]
    try:
        lines = subprocess.run(query, capture_output=True, text=True, timeout=30, check=True).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return []
    caps = {}
    for line in lines:
        index, _, cap = (part.strip() for part in line.partition(","))
        major, _, minor = cap.partition(".")
        if index.isdigit() and major.isdigit() and minor.isdigit():
            caps[index] = (int(major), int(minor))
    order = [d.strip() for d in (shown or "").split(",") if d.strip() in caps] or list(caps)
    return list(dict.fromkeys(caps[d] for d in order))


def probe_gemm(M: int = 1024, N: int = 1024, K: int = 1024, block_M: int = 128, block_N: int = 128,
               block_K: int = 32, num_stages: int = 2, threads: int = 128) -> Any:
    """A pipelined fp16 tensor-core GEMM written as TileLang's examples write it."""
    import tilelang.language as T

    @T.prim_func
    def main(A: T.Tensor((M, K), "float16"), B: T.Tensor((K, N), "float16"), C: T.Tensor((M, N), "float16")):
        with T.Kernel(T.ceildiv(N, block_N), T.ceildiv(M, block_M), threads=threads) as (bx, by):
            A_shared = T.alloc_shared((block_M, block_K), "float16")
            B_shared = T.alloc_shared((block_K, block_N), "float16")
            C_local = T.alloc_fragment((block_M, block_N), "float")
            T.clear(C_local)
            for ko in T.Pipelined(T.ceildiv(K, block_K), num_stages=num_stages):
                T.copy(A[by * block_M, ko * block_K], A_shared)
                T.copy(B[ko * block_K, bx * block_N], B_shared)
                T.gemm(A_shared, B_shared, C_local)
            T.copy(C_local, C[by * block_M, bx * block_N])

    return main


def probe_prefix(capability: tuple[int, int]) -> tuple[str, list[str]]:
    """The header prefix of the probe GEMM's device code for a GPU of compute ``capability``, and
    the options a candidate's NVRTC compile for that arch uses (no pass configs: the default)."""
    import tilelang  # noqa: F401 - first: it puts its own tvm on the path
    import tvm
    from tilelang.backend.module import create_backend_context
    from tilelang.contrib import nvcc
    from tilelang.engine.lower import lower_with_context
    from tvm.target import Target

    from .device_compile import arch_flag, header_prefix, nvrtc_options, nvrtc_source

    target = Target({"kind": "cuda", "arch": f"sm_{nvcc.get_target_arch(capability)}"})
    with target:
        func = probe_gemm()
    context = create_backend_context(target, None, "tvm_ffi")
    with tvm.transform.PassContext(opt_level=3, config={}), context.target:
        artifact = lower_with_context(func, context, enable_host_codegen=False, enable_device_compile=False)
    arch, options = nvrtc_options(context.target, {})
    return header_prefix(nvrtc_source(artifact.kernel_source)), ["-default-device", arch_flag(arch), *options]


#: What ``write`` did, in the shared PCH directory (the tuning's record reads it: ``outcome``).
OUTCOME = "probe.json"


def write(capabilities: list[tuple[int, int]] | None = None) -> list[str]:
    """Write the PCH of the probe GEMM's header prefix for each GPU arch (``visible_archs`` where
    None; at most ``PROBE_MAX``): what became of each, as ``device_compile.write_pch`` says; the
    same, with the archs, any error and the time it ended, into ``OUTCOME``."""
    import time

    from ..store.files import atomic_write
    from .device_compile import shared_dir, write_pch

    done, error = [], None
    try:
        if capabilities is None:
            from . import hide_gpus  # the fork server's: what the test process showed

            capabilities = visible_archs(hide_gpus.SHOWN)
        for capability in capabilities[:PROBE_MAX]:
            prefix, options = probe_prefix(capability)
            done.append(write_pch(prefix, options))
    except Exception as exc:  # noqa: BLE001 - a head start lost, nothing else: the candidates write theirs
        error = f"{type(exc).__name__}: {exc}"[:300]
    where = shared_dir()
    if where is not None:
        outcome = {"archs": [f"{a}.{b}" for a, b in capabilities or []], "done": done, "error": error,
                   "ended": time.time()}
        try:
            atomic_write(where / OUTCOME, json.dumps(outcome))
        except OSError:
            pass
    return done


def outcome(pch_dir: Path) -> dict | None:
    """What the probe did for the fork server whose PCHs are in ``pch_dir`` (``write``), if it ran."""
    from ..store.files import read_json

    found = read_json(pch_dir / OUTCOME)
    return found if isinstance(found, dict) and found else None
