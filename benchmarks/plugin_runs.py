"""Time whole pytest processes that autotune one space with the plugin.

    python benchmarks/plugin_runs.py cpu16 --cold 1 --warm 3 [--vs-tilelang]
    python benchmarks/plugin_runs.py gpu48 --cold 5 --warm 3 --out results.json

Each cold run gets fresh plugin and TileLang cache directories (nothing compiled
before; with --book the later ones keep the first's remembered NVRTC header
prefixes); warm runs reuse the last cold run's caches. A run is a separate
`python -m pytest` process, timed from outside; the junit XML gives the chosen
config, its latency and the per-test time. With --vs-tilelang (cpu16 only) the
same space is tuned by TileLang's own AutoTuner (benchmarks/tilelang_autotuner_cpu.py)
in the same invocation and the ratio is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOK_DIR = "nvrtc-headers"  # pytest_tlautotune.engine.device_compile.BOOK_DIR

SPACES = {
    "cpu16": dict(
        module="kernels_cpu", fn="gemm", args="128, 128, 128", target="c",
        configs="[dict(bm=bm, bn=bn, bk=bk) for bm in (8, 16, 32, 64) for bn in (16, 32) for bk in (16, 32)]",
        ref="lambda A, B: A @ B", extra="warmup=3, rep=30",
    ),
    "cpu512": dict(
        module="kernels_cpu", fn="gemm", args="128, 128, 128", target="c",
        configs="[dict(bm=bm, bn=bn, bk=bk) for bm in (1, 2, 4, 8, 16, 32, 64, 128)"
                " for bn in (1, 2, 4, 8, 16, 32, 64, 128) for bk in (1, 2, 4, 8, 16, 32, 64, 128)]",
        ref="lambda A, B: A @ B", extra="warmup=2, rep=10",
    ),
    # A second 500+ space, other shape and tile ranges: an out-of-sample check of the guided search.
    "cpu504": dict(
        module="kernels_cpu", fn="gemm", args="64, 256, 128", target="c",
        configs="[dict(bm=bm, bn=bn, bk=bk) for bm in (1, 2, 4, 8, 16, 32, 64)"
                " for bn in (1, 2, 4, 8, 16, 32, 64, 128, 256) for bk in (1, 2, 4, 8, 16, 32, 64, 128)]",
        ref="lambda A, B: A @ B", extra="warmup=2, rep=10",
    ),
    "gpu48": dict(
        module="kernels_cuda", fn="gemm", args="4096, 4096, 4096", target="cuda",
        configs="GEMM_48_CONFIGS", ref="lambda A, B: A @ B", extra="warmup=10, rep=100, rtol=1e-2, atol=1e-2",
    ),
    # TileLang's advanced GEMM autotune example's 288-config space (bf16 A @ B.T, rasterization).
    "gpu288": dict(
        module="kernels_cuda", fn="gemm_nt", args="4096, 4096, 4096", target="cuda",
        configs="GEMM_288_CONFIGS", ref="lambda A, B: A @ B.T", extra="warmup=3, rep=20, rtol=1e-2, atol=1e-2",
    ),
}

TEST = """
import pytest
from examples.{module} import *

@pytest.mark.autotune(configs={configs}, target="{target}", out_idx=[-1], ref_prog={ref}, {extra}{more})
def test_space(autotune):
    autotune({fn}, {args})
"""


def write_test(workdir: Path, space: str, more: str) -> Path:
    spec = SPACES[space]
    path = workdir / f"test_bench_{space}.py"
    path.write_text(TEST.format(more=more, **spec))
    return path


def _installed() -> bool:
    """Whether the plugin is installed (its pytest11 entry point loads it by itself)."""
    from importlib.metadata import entry_points

    return any(ep.name == "tlautotune" for ep in entry_points(group="pytest11"))


def run_once(test: Path, cache: Path, tl_cache: Path, extra_args: list[str], profile: str | None = None,
             stages: bool = False, home: Path | None = None) -> dict:
    """One pytest process; ``profile``: under cProfile, stats there; ``stages``: the fixture's stages
    timed (benchmarks/hit_profile_plugin.py)."""
    junit = cache / "junit.xml"
    env = dict(os.environ, **({"TL_HIT_PROFILE": "1"} if stages else {}))
    # The user's cache directory (the plugin remembers NVRTC header prefixes there too): the run's
    # own unless given, so that a fresh run is the first tuning on a machine.
    env.update(XDG_CACHE_HOME=str(home or cache / "home"))
    env.pop("TL_AUTOTUNE_CACHE_DIR", None)
    env.update(TILELANG_CACHE_DIR=str(tl_cache), PYTHONPATH=f"{ROOT}{os.pathsep}"
               f"{os.environ.get('PYTHONPATH', '')}", TL_T0=repr(time.time()))
    load = [] if _installed() or "PYTEST_PLUGINS" in os.environ else ["-p", "pytest_tlautotune.plugin"]
    # --profile: the run under cProfile (its figures then include cProfile's overhead)
    prof = ["-m", "cProfile", "-o", profile] if profile else []
    cmd = [sys.executable, *prof, "-m", "pytest", str(test), "-q", "-p", "no:cacheprovider", *load,
           "-p", "benchmarks.timeline_plugin", "-p", "benchmarks.hit_profile_plugin",
           f"--tl-cache-dir={cache}", f"--junitxml={junit}", f"--rootdir={ROOT}", *extra_args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"pytest failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    case = next(ET.parse(junit).getroot().iter("testcase"))
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    phases = {}
    candidates = []
    notes = []
    for record in cache.glob("entries/*/record.json"):
        data = json.loads(record.read_text())
        if data.get("phases"):
            phases = {k: round(v, 2) if isinstance(v, float) else v for k, v in data["phases"].items()}
        candidates = data.get("candidates", [])
        notes = data.get("notes", [])
    timeline, times = _printed(proc.stderr, "TIMELINE "), _printed(proc.stderr, "HITPROFILE ")
    return {
        "timeline": timeline,
        "stages": times,  # benchmarks/hit_profile_plugin.py, with --stages
        "phases": phases,
        "notes": notes,
        "wall_s": round(wall, 2),
        "test_time_s": float(case.get("time")),
        "cache": props.get("tl_cache"),
        "config": json.loads(props["tl_config"]),
        "latency_ms": float(props["tl_latency_ms"]),
        "ref_latency_ms": float(props["tl_ref_latency_ms"]) if "tl_ref_latency_ms" in props else None,
        "tuning_s": float(props["tl_tuning_s"]),
        "candidates": candidates,
        "timed_on": dict(Counter(c.get("timed_on") for c in candidates if c.get("timed_on") and not c.get("reused"))),
        "early_stopped": sum(c.get("status") == "early_stop" for c in candidates),
        "compiles": compile_summary(candidates),
    }


def _printed(stderr: str, tag: str) -> dict:
    """The JSON a benchmark plugin printed on the line starting with ``tag``, else {}."""
    return next((json.loads(line[len(tag):]) for line in stderr.splitlines() if line.startswith(tag)), {})


def compile_summary(candidates: list[dict]) -> dict:
    """Mean seconds per compiled candidate (whole job, device code, artifacts) and what the
    shared NVRTC PCH did, from the record."""
    done = [c for c in candidates if c.get("compile_s") and not c.get("reused")]
    if not done:
        return {}
    dev = [c["device_compiler"] for c in done if isinstance(c.get("device_compiler"), dict)]

    def mean(values: list[float]) -> float | None:
        return round(statistics.mean(values), 3) if values else None

    return {"n": len(done), "compile_s": mean([c["compile_s"] for c in done]),
            "device_s": mean([d["device_s"] for d in dev if "device_s" in d]),
            "save_s": mean([c["save_s"] for c in done if c.get("save_s") is not None]),
            "compiler": dict(Counter(d.get("compiler") for d in dev)),
            "pch": dict(Counter(d.get("pch") for d in dev if d.get("pch"))),
            # the longest a compile waited for a PCH another process was writing (a first wave's)
            "pch_wait_s": max((d.get("pch_wait_s", 0.0) for d in dev), default=None)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("space", choices=sorted(SPACES))
    parser.add_argument("--cold", type=int, default=1, help="cold runs (fresh caches each)")
    parser.add_argument("--warm", type=int, default=1, help="warm runs after the last cold one")
    parser.add_argument("--more", default="", help="extra marker settings, e.g. ', strategy=\"guided\"'")
    parser.add_argument("--vs-tilelang", action="store_true", help="also time TileLang's AutoTuner (cpu16)")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--book", action="store_true",
                        help="with --tl-nvrtc-book, cold runs after the first start from a cache directory "
                             "that holds only the first run's remembered NVRTC header prefixes (nvrtc-headers/): "
                             "a new kernel on a machine that has tuned before, the plugin's default cache "
                             "directory being per user")
    parser.add_argument("--shared-home", action="store_true",
                        help="with --tl-nvrtc-book, cold runs share one user cache directory ($XDG_CACHE_HOME): "
                             "each run's own cache directory is fresh, the header prefixes the plugin remembers "
                             "for the user are not "
                             "(a CI job's cache directory on a runner that stays)")
    parser.add_argument("--stages", action="store_true",
                        help="time the stages of the plugin's fixture in every run (benchmarks/hit_profile_plugin.py)")
    parser.add_argument("--profile", help="run the last warm run under cProfile, its stats in this directory")
    parser.add_argument("--records", help="write the first cold run's candidate records as JSON here, a later "
                        "cold run's beside it (NAME_1.json, ...): the input of benchmarks/guided_search.py")
    parser.add_argument("--seeds", help="the search seed of each cold run in turn, e.g. 0,0-19 (a seed=S marker "
                        "setting each; the 288 default-strategy figure is a rate over 20 seeds)")
    parser.add_argument("--reference", help="an exhaustive tuning's records (--records): each cold run's chosen "
                        "config is judged by its median there, and the runs within --within of its best counted")
    parser.add_argument("--within", type=float, default=0.02)
    parser.add_argument("pytest_args", nargs="*")
    args, more_pytest = parser.parse_known_args(argv)  # e.g. `-- --tl-device-compiler=nvrtc`
    args.pytest_args += [a for a in more_pytest if a != "--"]

    work = Path(tempfile.mkdtemp(prefix="tlbench-"))
    test = write_test(work, args.space, args.more)
    seeds = _seeds(args.seeds) if args.seeds else []
    if seeds:
        args.cold = len(seeds)
    home = work / "home" if args.shared_home else None  # else each run's own (run_once)
    if args.book or args.shared_home:  # both measure what the remembered prefixes buy
        args.pytest_args = ["--tl-nvrtc-book", *args.pytest_args]
    cold, warm = [], []
    for i in range(args.cold):
        cache, tl_cache = work / f"cache{i}", work / f"tlcache{i}"
        cache.mkdir()
        if args.book and i > 0 and (work / "cache0" / BOOK_DIR).is_dir():
            shutil.copytree(work / "cache0" / BOOK_DIR, cache / BOOK_DIR)
        if seeds:
            (work / f"seed{i}").mkdir()
            test = write_test(work / f"seed{i}", args.space, f"{args.more}, seed={seeds[i]}")
        cold.append(run_once(test, cache, tl_cache, args.pytest_args, stages=args.stages, home=home))
        if seeds:
            cold[-1]["seed"] = seeds[i]
        if args.records:  # the first run's at the path given, the later ones' beside it (_1, _2, ...)
            path = Path(args.records) if i == 0 else Path(args.records).with_stem(f"{Path(args.records).stem}_{i}")
            path.write_text(json.dumps({"candidates": cold[-1]["candidates"]}))
        print("cold", json.dumps({k: v for k, v in cold[-1].items() if k != "candidates"}), flush=True)
    for i in range(args.warm):
        profile = str(Path(args.profile) / f"warm{i}.prof") if args.profile and i == args.warm - 1 else None
        warm.append(run_once(test, cache, tl_cache, args.pytest_args, profile, args.stages, home=home))
        print("warm", json.dumps({k: v for k, v in warm[-1].items() if k != "candidates"}), flush=True)
    for r in cold + warm:
        r.pop("candidates", None)
    out = {"space": args.space, "cold": cold, "warm": warm}
    lat = [r["latency_ms"] for r in cold]
    if len(lat) > 1:
        out["latency_cv"] = statistics.stdev(lat) / statistics.mean(lat)
        out["distinct_configs"] = len({json.dumps(r["config"], sort_keys=True) for r in cold})
    if args.vs_tilelang:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tilelang_autotuner_cpu.py")],
                              capture_output=True, text=True, cwd=ROOT)
        tl = json.loads(proc.stdout.strip().splitlines()[-1])
        tl["process_s"] = round(time.perf_counter() - t0, 2)
        out["tilelang"] = tl
        out["ratio_plugin_over_tilelang"] = round(cold[0]["wall_s"] / tl["process_s"], 3)
    if args.reference:
        ref = json.loads(Path(args.reference).read_text())["candidates"]
        medians = {json.dumps(r["config"], sort_keys=True): r.get("median_ms") for r in ref
                   if r["status"] in ("ok", "early_stop")}
        best = min(m for m in medians.values() if m)
        for r in cold:
            found = medians.get(json.dumps(r["config"], sort_keys=True))
            r["gap_vs_exhaustive"] = None if found is None else found / best - 1
        gaps = [r["gap_vs_exhaustive"] for r in cold]
        out["within"] = sum(g is not None and g <= args.within for g in gaps)
        print(f"reference: exhaustive best {best:.5g} ms; gaps " +
              " ".join(f"{r.get('seed', '')}:{'?' if g is None else f'{g:+.1%}'}" for r, g in zip(cold, gaps)) +
              f"; within {args.within:.0%}: {out['within']}/{len(gaps)}")
    print(summary(out))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


def _seeds(text: str) -> list[int]:
    """``0,0-19`` -> [0, 0, 1, ..., 19]."""
    out = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        out += list(range(int(first), int(last or first) + 1))
    return out


def summary(out: dict) -> str:
    lines = [f"space {out['space']}", f"{'run':6} {'wall s':>8} {'test s':>8} {'cache':6} {'latency ms':>11}  config"]
    for kind in ("cold", "warm"):
        for r in out[kind]:
            lines.append(f"{kind:6} {r['wall_s']:8.2f} {r['test_time_s']:8.3f} {r['cache']:6} "
                         f"{r['latency_ms']:11.5g}  {json.dumps(r['config'], sort_keys=True)}")
    if "latency_cv" in out:
        lines.append(f"cold latency CV {out['latency_cv']:.2%}, distinct best configs {out['distinct_configs']}")
    if "tilelang" in out:
        tl = out["tilelang"]
        lines.append(f"TileLang AutoTuner: process {tl['process_s']} s, best {tl.get('best_config')} "
                     f"{tl.get('best_latency_ms')} ms; plugin/TileLang = {out['ratio_plugin_over_tilelang']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
