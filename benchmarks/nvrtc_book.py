"""What the remembered NVRTC header prefixes buy a session's first compiles (no GPU needed).

    python benchmarks/nvrtc_book.py [--configs 8] [--workers 2] [--rounds 3] [--arch 90]

The plugin writes remembered PCHs ahead only with ``workers.PRIME_MIN_WORKERS`` compile workers or
more; this script does it at any count, to measure both sides of that line.

Needs NVRTC and the CUDA headers (``pip install pytest-tlautotune[nvrtc]``; a GPU is not
needed: NVRTC compiles for any arch). Each round runs two compile sessions of the same GEMM
configs, the way the plugin compiles candidates (a pool forked from the fork server, GPUs hidden,
NVRTC with one shared PCH): one whose cache directory remembers no header prefix (its first
candidate writes the PCH while the others wait), and one whose book was filled by an earlier
session (its first compile job writes the PCH ahead of the candidates: ``device_compile.prime``).
As in the plugin, every config is built first (the prime job runs meanwhile), then compiled.
It reports each session's wall time to the first and the last compiled candidate (from the
builds' start) and what the PCH did per candidate. The last stdout line is JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def compile_one(target: str, config: dict, out_dir: str) -> dict:
    """Worker side: build one GEMM config and compile it as a candidate is."""
    from tvm.target import Target

    from examples.kernels_cuda import gemm
    from pytest_tlautotune.engine.compile_job import _compile
    from pytest_tlautotune.param import CompileArgs

    with Target(json.loads(target)):
        func = gemm(4096, 4096, 4096, **config)
    out = _compile(func, CompileArgs(out_idx=[-1], target=target), out_dir)
    out["done_at"] = time.time()
    return out


def build_one(target: str, config: dict) -> str:
    """Worker side: build one GEMM config's PrimFunc, as the plugin does for every config before
    any compile (to key the candidates)."""
    from tvm.target import Target

    from examples.kernels_cuda import gemm

    with Target(json.loads(target)):
        return str(len(gemm(4096, 4096, 4096, **config).script()))


def session(book: Path, target: str, arch: int, configs: list[dict], workers: int, work: Path) -> dict:
    import pytest_tlautotune.engine.workers as w
    from pytest_tlautotune.engine.workers import Pools

    w.PRIME_MIN_WORKERS = 1  # measure priming at any worker count
    pools = Pools(workers, "nvrtc", pch_book=str(book))
    try:
        pool = pools.compile_pool()
        for f in [pool.schedule(time.sleep, (0.5,)) for _ in range(workers)]:
            f.result()  # every worker started: not part of the figures
        t0 = time.time()
        pools.warm_up([], arch=arch)  # the prime job, when the book has a prefix for this arch
        for build in [pool.schedule(build_one, (target, c)) for c in configs]:
            build.result()  # the plugin builds every config first (while the prime job runs)
        jobs = [pool.schedule(compile_one, (target, c, str(work / str(i)))) for i, c in enumerate(configs)]
        out = [j.result(timeout=900) for j in jobs]
        primed = pools.primed.get(arch)
    finally:
        pools.close()
    done = sorted(o["done_at"] - t0 for o in out)
    dev = [o.get("device_compiler", {}) for o in out]
    return {"first_s": round(done[0], 2), "last_s": round(done[-1], 2), "primed": primed,
            "pch": dict(Counter(d.get("pch") for d in dev)),
            "pch_wait_s": round(sum(d.get("pch_wait_s", 0) for d in dev), 2),
            "compile_s": round(statistics.mean(o["compile_s"] for o in out), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--arch", type=int, default=90)
    args = parser.parse_args()

    from examples.kernels_cuda import GEMM_48_CONFIGS
    from pytest_tlautotune.engine import device_compile

    if not device_compile.available():
        print("NVRTC (cuda-python, CUDA >= 12.8) is not installed: nothing to measure")
        return 0
    target = json.dumps({"kind": "cuda", "arch": f"sm_{args.arch}{'a' if args.arch >= 90 else ''}"})
    configs = GEMM_48_CONFIGS[: args.configs]
    work = Path(tempfile.mkdtemp(prefix="tl-nvrtc-book-"))
    filled = work / "filled-book"
    session(filled, target, args.arch, configs[:1], args.workers, work / "fill")  # remembers the prefix
    rounds = []
    for r in range(args.rounds):
        empty = work / f"empty-book-{r}"
        rounds.append({
            "no_book": session(empty, target, args.arch, configs, args.workers, work / f"a{r}"),
            "book": session(filled, target, args.arch, configs, args.workers, work / f"b{r}"),
        })
        print(r, json.dumps(rounds[-1]), flush=True)
    summary = {kind: {"first_s": [x[kind]["first_s"] for x in rounds], "last_s": [x[kind]["last_s"] for x in rounds]}
               for kind in ("no_book", "book")}
    print(json.dumps({"configs": len(configs), "workers": args.workers, "arch": args.arch, "summary": summary,
                      "rounds": rounds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
