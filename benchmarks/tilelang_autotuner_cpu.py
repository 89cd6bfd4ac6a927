"""Baseline: TileLang's own AutoTuner on the 16-config CPU GEMM 128^3 space.

Run from the repo root: ``python benchmarks/tilelang_autotuner_cpu.py``.
Uses a fresh TileLang cache dir (cold compile). The last stdout line is JSON:
``{"tool": "tilelang", "wall_s": ..., "best_config": ..., "best_latency_ms": ...}``.
"""

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

M = N = K = 128
CONFIGS = [{"bm": bm, "bn": bn, "bk": bk} for bm, bn, bk in itertools.product((8, 16, 32, 64), (16, 32), (16, 32))]


def kernel(bm=None, bn=None, bk=None):
    """Tunable entry point: the AutoTuner calls this with one config's kwargs.

    Module-level with a local import on purpose: AutoTuner asserts that every
    closure variable of the kernel function is an int/float/str/bool/None.
    """
    from examples.kernels_cpu import gemm

    return gemm(M, N, K, bm, bn, bk)


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
    args = parser.parse_args()

    # Fresh cache dir for a cold run; tilelang reads it at import time.
    workdir = tempfile.mkdtemp(prefix="tl-autotuner-cpu-")
    os.environ["TILELANG_CACHE_DIR"] = os.path.join(workdir, "cache")
    import tilelang
    from tilelang.autotuner import AutoTuner

    os.chdir(workdir)  # AutoTuner writes ./autotuner.log; keep it out of the repo.
    start = time.perf_counter()
    result = (
        AutoTuner.from_kernel(kernel=kernel, configs=CONFIGS)
        .set_compile_args(out_idx=[-1], target="c", execution_backend="cython")
        .set_profile_args(skip_check=True, backend="wall")
        .run(warmup=args.warmup, rep=args.rep)
    )
    wall_s = time.perf_counter() - start

    print(
        json.dumps(
            {
                "tool": "tilelang",
                "tilelang_version": tilelang.__version__,
                "n_configs": len(CONFIGS),
                "wall_s": round(wall_s, 3),
                "best_config": result.config,
                "best_latency_ms": result.latency,
                "workdir": workdir,
            }
        )
    )


if __name__ == "__main__":
    main()
