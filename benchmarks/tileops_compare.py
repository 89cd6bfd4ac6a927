"""TileOPs' tuned tests through TileLang's own tuner and through the plugin's interception, side by
side (``benchmarks/tileops_suite.sh`` runs both and then this): each test's outcome and time in the
plugin's cold and warm runs and in TileLang's run, the whole runs' times, and each tuned kernel's
two winners re-timed in one process.

The winners: TileLang's own run leaves its results in its autotuner cache (``--tilelang-cache``, the
run's ``TILELANG_CACHE_DIR``); the plugin's entries were exported into TileLang's layout
(``--exported``, ``python -m pytest_tlautotune cache export --all DIR``). Both load with TileLang's
``AutotuneResult.load_from_disk``. A pair is the two results under one TileLang key (the export
writes under the key TileLang's tuner gives the call), else the two whose kernels have the same
name and parameters. Each pair is timed in a child process of its own (a kernel that faults takes
only that pair), alternating, on the same inputs.

    python benchmarks/tileops_compare.py --out OUT --tilelang-cache DIR --exported DIR [--export-log F]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def outcomes(xml: Path) -> dict[str, tuple[str, float]]:
    """{test id: (outcome, seconds)} from a junit XML; {} where the run wrote none."""
    if not xml.exists():
        return {}
    out = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        state = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                state = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
        out[name] = (state, float(case.get("time") or 0))
    return out


def entries(root: Path) -> list[Path]:
    """TileLang autotuner results under ``root`` (directories holding a best_config.json)."""
    return sorted({p.parent for p in root.rglob("best_config.json")}) if root.exists() else []


def _load(path: Path):
    from tilelang.autotuner.param import AutotuneResult, CompileArgs

    return AutotuneResult.load_from_disk(path, CompileArgs(target="cuda"))


def signature(path: Path) -> str:
    result = _load(path)
    kernel = result.kernel
    name = str(kernel.prim_func.attrs["global_symbol"]) if kernel.prim_func.attrs else "?"
    params = [(str(p.dtype), [str(d) for d in p.shape]) for p in kernel.params]
    return json.dumps([name, params])


def time_pair(a: str, b: str, rounds: int = 3) -> dict:
    """Child process: both kernels on the same inputs, alternating; median of each one's rounds."""
    import torch

    ka, kb = _load(Path(a)).kernel, _load(Path(b)).kernel
    pa, pb = ka.get_profiler(), kb.get_profiler()
    inputs = pa._get_inputs()
    ms: dict[str, list[float]] = {"a": [], "b": []}
    for _ in range(rounds):
        for name, prof in (("a", pa), ("b", pb)):
            ms[name].append(prof.do_bench(warmup=25, rep=100, input_tensors=inputs))
    torch.cuda.synchronize()
    return {k: statistics.median(v) for k, v in ms.items()}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--pair":
        print(json.dumps(time_pair(sys.argv[2], sys.argv[3])))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="the folder with tops-*.xml and tops-summary.txt")
    ap.add_argument("--tilelang-cache", type=Path, required=True)
    ap.add_argument("--exported", type=Path, required=True)
    ap.add_argument("--export-log", type=Path, help="what `cache export` printed: which test each key is")
    args = ap.parse_args()

    runs = {name: outcomes(args.out / f"tops-{name}.xml") for name in ("plugin-cold", "plugin-warm", "tilelang-cold")}
    tests = sorted(set().union(*runs.values()))
    print(f"{'test':72} {'plugin cold':>16} {'plugin warm':>16} {'TileLang':>16}")
    for test in tests:
        cells = [runs[r].get(test) for r in runs]
        print(f"{test[:72]:72} " + " ".join(f"{c[0]:>8} {c[1]:6.1f}s" if c else f"{'-':>16}" for c in cells))
    for name, run in runs.items():
        passed = sum(1 for s, _ in run.values() if s == "passed")
        print(f"{name}: {passed} passed of {len(run)}, test time {sum(t for _, t in run.values()):.1f} s")
    same = [t for t in tests if runs["tilelang-cold"].get(t, ("",))[0] == "passed"
            and runs["plugin-cold"].get(t, ("",))[0] != "passed"]
    print(f"passed with TileLang's tuner but not through the plugin: {same or 'none'}")

    tests_of = {}
    if args.export_log and args.export_log.exists():
        for line in args.export_log.read_text().splitlines():
            m = re.match(r"exported \S+\s+(\S+)\s+\((.*?)\) -> (\S+)", line)
            if m:
                tests_of[Path(m.group(3)).name] = f"{m.group(1)} ({m.group(2)})"
    own, ours = entries(args.tilelang_cache), entries(args.exported)
    print(f"\nTileLang's own results: {len(own)}; the plugin's, exported: {len(ours)}")
    by_key = {p.name: p for p in own}
    sigs: dict[str, list[Path]] = {}
    for p in own:
        try:
            sigs.setdefault(signature(p), []).append(p)
        except Exception as exc:  # noqa: BLE001 - reported, the others still compare
            print(f"  cannot load TileLang's {p.name}: {type(exc).__name__}: {exc}")
    for p in ours:
        label = tests_of.get(p.name, p.name)
        theirs, how = by_key.get(p.name), "same TileLang key"
        if theirs is None:
            try:
                same_sig = sigs.get(signature(p), [])
            except Exception as exc:  # noqa: BLE001
                print(f"  {label}: cannot load the exported result: {type(exc).__name__}: {exc}")
                continue
            theirs, how = (same_sig[0], "same kernel signature") if len(same_sig) == 1 else (None, "")
        if theirs is None:
            print(f"  {label}: no TileLang result to compare with")
            continue
        cfg_ours = json.loads((p / "best_config.json").read_text())
        cfg_theirs = json.loads((theirs / "best_config.json").read_text())
        proc = subprocess.run([sys.executable, __file__, "--pair", str(theirs), str(p)], capture_output=True,
                              text=True, timeout=120)
        if proc.returncode != 0:
            print(f"  {label}: re-timing failed: {proc.stderr.strip().splitlines()[-1:]}")
            continue
        ms = json.loads(proc.stdout.strip().splitlines()[-1])
        ratio = ms["b"] / ms["a"]
        print(f"  {label} ({how}): plugin {cfg_ours} {ms['b']:.4f} ms, TileLang {cfg_theirs} {ms['a']:.4f} ms: "
              f"plugin/TileLang {ratio:.3f}{'  OVER 2%' if ratio > 1.02 else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
