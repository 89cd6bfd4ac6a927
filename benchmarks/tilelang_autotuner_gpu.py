"""Baseline: TileLang's own autotuner on the 48-config fp16 GEMM 4096^3 space (CUDA).

Run from the repo root on a GPU machine: ``python benchmarks/tilelang_autotuner_gpu.py``.
Uses ``@tilelang.autotune`` over ``@tilelang.jit`` with fresh (cold) TileLang cache dirs,
then times the best kernel and ``torch.matmul`` with CUDA events (median of 100).
The last stdout line is JSON. Without CUDA it prints a skip message and exits 0.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

M = N = K = 4096


def gemm_kernel(M, N, K, block_M=64, block_N=64, block_K=32, num_stages=2, threads=128):
    """Entry point wrapped by ``@tilelang.jit``/``@tilelang.autotune`` in ``main``.

    Module-level with a local import on purpose: AutoTuner asserts that every closure
    variable is an int/float/str/bool/None. Tunables need non-None defaults because
    ``tilelang.jit`` calls the function once with only M, N, K to infer lazy/eager mode.
    """
    from examples.kernels_cuda import gemm

    return gemm(M, N, K, block_M, block_N, block_K, num_stages, threads)


def ref_prog(A, B):
    """Reference used when ``--check`` is given."""
    return A @ B


def cuda_event_median_ms(fn, iters: int = 100, warmup: int = 10) -> float:
    """Median latency of ``fn()`` in ms over ``iters`` CUDA-event-timed calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = (
            torch.cuda.Event(enable_timing=True),
            torch.cuda.Event(enable_timing=True),
        )
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--warmup",
        type=int,
        default=25,
        help="warmup iterations per config (TileLang default)",
    )
    parser.add_argument(
        "--rep",
        type=int,
        default=100,
        help="timed iterations per config (TileLang default)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="validate every config against torch.matmul",
    )
    args = parser.parse_args()

    if not torch.cuda.is_available():
        print("SKIP: torch.cuda.is_available() is False; this benchmark needs an NVIDIA GPU.")
        print(json.dumps({"tool": "tilelang", "skipped": True, "reason": "no CUDA device"}))
        return

    # Fresh cache dir for a cold run; tilelang reads it at import time.
    workdir = tempfile.mkdtemp(prefix="tl-autotuner-gpu-")
    os.environ["TILELANG_CACHE_DIR"] = os.path.join(workdir, "cache")
    import tilelang

    from examples.kernels_cuda import GEMM_48_CONFIGS

    tuned_gemm = tilelang.autotune(
        configs=GEMM_48_CONFIGS,
        warmup=args.warmup,
        rep=args.rep,
        ref_prog=ref_prog if args.check else None,
        skip_check=not args.check,
    )(tilelang.jit(out_idx=[-1])(gemm_kernel))

    os.chdir(workdir)  # AutoTuner writes ./autotuner.log; keep it out of the repo.
    start = time.perf_counter()
    kernel = tuned_gemm(M, N, K)
    wall_s = time.perf_counter() - start
    best_kernel, best_config = next(iter(tuned_gemm._tuner_cache.values()))
    assert best_kernel is kernel

    a = torch.randn(M, K, dtype=torch.float16, device="cuda")
    b = torch.randn(K, N, dtype=torch.float16, device="cuda")
    torch.testing.assert_close(kernel(a, b), a @ b, rtol=1e-2, atol=1e-1)
    best_latency_ms = cuda_event_median_ms(lambda: kernel(a, b))
    torch_latency_ms = cuda_event_median_ms(lambda: torch.matmul(a, b))
    tflops = 2 * M * N * K / 1e9

    print(
        json.dumps(
            {
                "tool": "tilelang",
                "tilelang_version": tilelang.__version__,
                "device": torch.cuda.get_device_name(),
                "n_configs": len(GEMM_48_CONFIGS),
                "wall_s": round(wall_s, 3),
                "best_config": best_config,
                "best_latency_ms": best_latency_ms,
                "best_tflops": tflops / best_latency_ms,
                "torch_matmul_latency_ms": torch_latency_ms,
                "torch_matmul_tflops": tflops / torch_latency_ms,
                "workdir": workdir,
            }
        )
    )


if __name__ == "__main__":
    main()
