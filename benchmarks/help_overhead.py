"""What the plugin adds to `pytest --help`: whole processes, with and without it, interleaved.

    python benchmarks/help_overhead.py [--runs 9]

Prints the median wall time of `python -m pytest --help` with the plugin loaded and
with `-p no:tlautotune`, and the difference (goal: at most +50 ms). The children run
without PYTHONDONTWRITEBYTECODE, as in a normal install: bytecode is cached after the
first (untimed) run instead of every module being compiled again in every process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def once(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", "--help", "-p", "no:cacheprovider", *args], cwd=ROOT,
                   check=True, capture_output=True, env=ENV)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    once([])  # warm the page cache
    with_plugin, without = [], []
    for _ in range(args.runs):
        with_plugin.append(once([]))
        without.append(once(["-p", "no:tlautotune"]))
    a, b = statistics.median(with_plugin), statistics.median(without)
    print(f"pytest --help, median of {args.runs}: with the plugin {a * 1000:.0f} ms, "
          f"-p no:tlautotune {b * 1000:.0f} ms, difference {(a - b) * 1000:+.0f} ms")
    print(json.dumps({"with_ms": round(a * 1000, 1), "without_ms": round(b * 1000, 1),
                      "delta_ms": round((a - b) * 1000, 1), "runs": args.runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
