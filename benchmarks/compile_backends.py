"""What one CUDA candidate's compile costs with each of TileLang's execution backends, and
whether the kernels are the same (same check, same latency).

    python benchmarks/compile_backends.py [--configs 48] [--workers 16] [--backends tvm_ffi,tvm_ffi+nvrtc,nvrtc]

On the GPU machine. For each backend, the same configs of the 48-config 4096^3 fp16 GEMM are
built and compiled the way the plugin does it (in a pool of compile workers forked from the
fork server, GPUs hidden, the device's arch written into the target), and each job reports the CPU
seconds it used, its own and its child processes' (nvcc, g++). Then every kernel is loaded
here, checked against ``torch.matmul`` and timed with CUDA events (median of 200, interleaved
over backends so clock drift hits them alike). The last stdout line is JSON.

``nvrtc`` needs ``cuda-python`` (``cuda.bindings``); with CUDA >= 12.8 TileLang passes NVRTC's
``-pch`` (automatic precompiled headers, kept per process), so a worker's first compile and its
later ones are reported apart. ``tvm_ffi+nvrtc`` is the plugin's ``--tl-device-compiler=nvrtc``:
TileLang's default tvm_ffi kernel with only its device code compiled by NVRTC
(``pytest_tlautotune/engine/device_compile.py``). Latency is measured two ways: one call
between CUDA events (includes the host launch), and 20 back-to-back calls between events
(the kernel's own time when launching is faster than the kernel).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZE = 4096


def compile_job(backend: str, target: str, config: dict, out_dir: str) -> dict:
    """Worker side: build the config's PrimFunc, compile it with ``backend``, write the artifacts
    as the plugin does; the CPU seconds of this process and its children."""
    from pytest_tlautotune.engine.compile_job import private_tempdir
    from pytest_tlautotune.engine.device_compile import last
    from pytest_tlautotune.param import CompileArgs
    from pytest_tlautotune.store.artifacts import save_kernel

    t = os.times()
    cpu0, child0, wall0 = t.user + t.system, t.children_user + t.children_system, time.perf_counter()
    backend = backend.split("+")[0]
    last.clear()
    try:
        func = _func(target, config)
        args = CompileArgs(out_idx=[-1], target=target, execution_backend=backend)
        with private_tempdir():
            kernel = args.compile_program(func)
            save_kernel(kernel, func, Path(out_dir))
        error = None
    except Exception as exc:  # noqa: BLE001 - reported, the benchmark goes on
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else ''}"
    t = os.times()
    return {"pid": os.getpid(), "cpu_s": t.user + t.system - cpu0,
            "children_cpu_s": t.children_user + t.children_system - child0,
            "wall_s": time.perf_counter() - wall0, "error": error, "device_compiler": dict(last)}


def _func(target: str, config: dict):
    """The config's PrimFunc built here (never a deserialised one: see store/artifacts.read_entry)."""
    from tvm.target import Target

    from examples.kernels_cuda import gemm

    with Target(json.loads(target)):
        return gemm(SIZE, SIZE, SIZE, **config)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", type=int, default=48)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--backends", default="tvm_ffi,tvm_ffi+nvrtc,nvrtc")
    parser.add_argument("--visible", action="store_true", help="every backend's workers see the GPU")
    parser.add_argument("--out", help="write the report as JSON here")
    args = parser.parse_args()

    import torch

    from examples.kernels_cuda import GEMM_48_CONFIGS
    from pytest_tlautotune.devices import full_cuda_target
    from pytest_tlautotune.engine.workers import Pools
    from pytest_tlautotune.param import CompileArgs
    from pytest_tlautotune.store.artifacts import load_kernel

    target = full_cuda_target("cuda", 0)
    step = max(1, len(GEMM_48_CONFIGS) // args.configs)
    configs = GEMM_48_CONFIGS[::step][: args.configs]
    work = Path(tempfile.mkdtemp(prefix="tlbackends-"))
    report: dict = {"device": torch.cuda.get_device_name(0), "cores": os.cpu_count(), "workers": args.workers,
                    "configs": len(configs), "backends": {}}
    for backend in args.backends.split(","):
        pools = Pools(args.workers, device_compiler="nvrtc" if backend.endswith("+nvrtc") else "nvcc")
        # NVRTC's adapter loads the cubin while compiling: it needs a GPU, so its workers see it.
        visible = args.visible or backend == "nvrtc"
        pool = pools.device_compile_pool("cuda:0") if visible else pools.compile_pool()
        for f in [pool.schedule(time.sleep, (1.0,)) for _ in range(args.workers)]:
            f.result()  # every worker started: not part of the compile figures
        t0 = time.perf_counter()
        futs = [pool.schedule(compile_job, (backend, target, c, str(work / backend / str(i))))
                for i, c in enumerate(configs)]
        jobs = [f.result() for f in futs]
        wall = time.perf_counter() - t0
        pools.close()
        seen: set[int] = set()
        for j in jobs:  # a worker's first compile (NVRTC builds its PCH then) apart from its later ones
            j["first_in_worker"] = j["pid"] not in seen
            seen.add(j["pid"])
        ok = [j for j in jobs if not j["error"]]
        total = [j["cpu_s"] + j["children_cpu_s"] for j in ok]
        later = [j["cpu_s"] + j["children_cpu_s"] for j in ok if not j["first_in_worker"]]
        entry = {
            "compiled": len(ok), "errors": sorted({j["error"] for j in jobs if j["error"]})[:3],
            "wall_s": round(wall, 2), "workers_see_gpu": visible,
            "cpu_s_per_candidate": round(statistics.mean(total), 3) if total else None,
            "cpu_s_per_candidate_later": round(statistics.mean(later), 3) if later else None,
            "own_cpu_s": round(statistics.mean(j["cpu_s"] for j in ok), 3) if ok else None,
            "children_cpu_s": round(statistics.mean(j["children_cpu_s"] for j in ok), 3) if ok else None,
            "device_compilers": sorted({json.dumps(j["device_compiler"]) for j in jobs})[:3],
        }
        report["backends"][backend] = entry
        print(backend, json.dumps(entry), flush=True)

    # Same kernels? Load each, check against torch, time interleaved over the backends.
    A = torch.randn(SIZE, SIZE, dtype=torch.float16, device="cuda")
    B = torch.randn(SIZE, SIZE, dtype=torch.float16, device="cuda")
    ref = A @ B
    kernels: dict[tuple[str, int], object] = {}
    for backend in report["backends"]:
        for i in range(len(configs)):
            d = work / backend / str(i)
            if not (d / "manifest.json").exists() and not any(d.glob("*")):
                continue
            try:
                args_i = CompileArgs(out_idx=[-1], target=target)
                kernels[backend, i] = load_kernel(d, args_i, _func(target, configs[i]))
            except Exception as exc:  # noqa: BLE001
                print(f"load {backend} {i}: {type(exc).__name__}: {exc}"[:300], flush=True)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    samples: dict[tuple[str, int], list[float]] = {k: [] for k in kernels}
    batched: dict[tuple[str, int], list[float]] = {k: [] for k in kernels}
    checks = {k: bool(torch.allclose(kern(A, B), ref, rtol=1e-2, atol=1e-2)) for k, kern in kernels.items()}
    for _ in range(100):
        for k, kern in kernels.items():
            start.record()
            kern(A, B)
            end.record()
            end.synchronize()
            samples[k].append(start.elapsed_time(end))
    for _ in range(10):
        for k, kern in kernels.items():
            start.record()
            for _ in range(20):
                kern(A, B)
            end.record()
            end.synchronize()
            batched[k].append(start.elapsed_time(end) / 20)
    per_config = []
    for i, c in enumerate(configs):
        row = {"config": c}
        for backend in report["backends"]:
            if (backend, i) in kernels:
                row[backend] = {"ms": round(statistics.median(samples[backend, i]), 5),
                                "ms_batched": round(statistics.median(batched[backend, i]), 5),
                                "ok": checks[backend, i]}
        per_config.append(row)
        print(json.dumps(row), flush=True)
    report["per_config"] = per_config
    base = "tvm_ffi"
    for backend in report["backends"]:
        for field in ("ms", "ms_batched"):
            ratios = [r[backend][field] / r[base][field] for r in per_config if backend in r and base in r]
            if ratios:
                report["backends"][backend][f"{field}_vs_tvm_ffi_median"] = round(statistics.median(ratios), 4)
                report["backends"][backend][f"{field}_vs_tvm_ffi_max"] = round(max(ratios), 4)
                report["backends"][backend][f"{field}_vs_tvm_ffi_min"] = round(min(ratios), 4)
        report["backends"][backend]["passed"] = sum(r[backend]["ok"] for r in per_config if backend in r)
    print("REPORT " + json.dumps(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
