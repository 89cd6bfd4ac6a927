"""How long one autotuned call takes against its ``max_tuning_s``, on the CPU target.

    python benchmarks/budget_bound.py --configs 5000 --budget 5 --runs 2

Each run is a separate ``python -m pytest`` process with a fresh cache directory (a first
tuning): one test tunes ``elementwise_add`` (64x64, target "c") over a space of ``--configs``
distinct configs (tile sizes times ``extra``, each its own PrimFunc) with ``max_tuning_s=--budget``.
Printed per run: the call's own time (``tl_tuning_s`` from the junit XML: program resolution,
builds, search, confirmation, loading), the test's time, the whole process, and from the stored
record how many configs were built, compiled and measured.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TEST = """
import pytest
from kernels import elementwise_add

CONFIGS = [dict(bm=bm, bn=bn, extra=e) for e in range({per_tile}) for bm in (16, 32) for bn in (16, 32)][:{configs}]


@pytest.mark.autotune(configs=CONFIGS, target="c", out_idx=[-1], ref_prog=lambda A, B: A + B,
                      warmup=1, rep=5, max_tuning_s={budget})
def test_space(autotune):
    autotune(elementwise_add, 64, 64)
"""


def run_once(configs: int, budget: float, workers: int | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="tl-budget-") as tmp:
        work = Path(tmp)
        (work / "kernels.py").write_text((ROOT / "examples" / "kernels_cpu.py").read_text())
        (work / "test_space.py").write_text(TEST.format(per_tile=-(-configs // 4), configs=configs, budget=budget))
        (work / "pytest.ini").write_text("[pytest]\n")
        cache, junit = work / "cache", work / "junit.xml"
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                f"--tl-cache-dir={cache}", f"--junitxml={junit}"]
        if workers:
            argv.append(f"--tl-workers={workers}")
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=3600,
                              env={**os.environ, "PYTHONPATH": f"{work}{os.pathsep}{ROOT}"})
        process_s = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"the run failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
        case = next(ET.parse(junit).getroot().iter("testcase"))
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        record = json.loads(next((cache / "entries").glob("*/record.json")).read_text())
        phases = record.get("phases", {})
        return {
            "call_s": float(props["tl_tuning_s"]),
            "test_s": float(case.get("time")),
            "process_s": process_s,
            "built": record.get("builds", {}).get("built", configs),
            "compiled": phases.get("compiled"),
            "measured": len(record.get("candidates", [])),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", type=int, default=5000)
    parser.add_argument("--budget", type=float, default=5.0, help="max_tuning_s")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=None, help="--tl-workers (default: the plugin's)")
    args = parser.parse_args()
    rows = [run_once(args.configs, args.budget, args.workers) for _ in range(args.runs)]
    print(f"{args.configs} configs, max_tuning_s={args.budget:g}")
    print("run  call_s  test_s  process_s  built  compiled  measured")
    for i, r in enumerate(rows, 1):
        print(f"{i:>3}  {r['call_s']:6.1f}  {r['test_s']:6.1f}  {r['process_s']:9.1f}  {r['built']:>5}  "
              f"{r['compiled']!s:>8}  {r['measured']:>8}")
    print(f"median call_s {statistics.median(r['call_s'] for r in rows):.1f}")


if __name__ == "__main__":
    main()
