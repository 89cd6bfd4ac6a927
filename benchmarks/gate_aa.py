"""A/A and injected-slowdown runs of the latency gate on real TileLang kernels (CPU or CUDA).

Run from the repo root: ``python benchmarks/gate_aa.py [--trials 20] [--threshold 10] [--device cuda]
[--size 128,2048,6144]``.

Each trial is one ordinary ``pytest`` subprocess (the plugin, a cache hit
re-measured in that run) with three tests per size that gate against the *previous*
trial's measurement of the unchanged kernel of that size, i.e. a baseline from another
process:

- ``test_aa_{size}``: the unchanged kernel (a gate failure is a false alarm; want 0);
- ``test_slow30_{size}``/``test_slow10_{size}``: the same GEMM with extra work in the kernel
  (``extra`` rank-1 updates added and subtracted per tile; the kernels are those of
  ``examples/kernels_cpu.py`` and ``examples/kernels_cuda.py``), calibrated here, size by
  size, to cost about +30% and +10% (want 20/20 and >= 18/20 caught). Calibration times
  by CPU time, the clock the gate uses on a CPU device; each unit of ``extra``
  costs about 1.2% of the 128^3 GEMM (3% of 64^3).

``--size`` takes one size or a comma-separated list (``--size 128,2048,6144``): every
size gets its three tests in the same pytest processes, so N trials at several sizes
still take N + 1 pytest runs, and the figures (trial lines, tables, re-judging, JSON)
are per size.

With ``--device cuda`` (the GPU machine) the kernel is a pipelined fp16 tensor-core
GEMM (4096^3 by default) and the extra work is ``extra`` more tile iterations after
the main loop that multiply the A tile by a zeroed B tile into the accumulator (adding
exactly 0): each costs about one more K-step. Calibration times by CUDA events, the
clock the gate uses on a GPU. The sizes meant for CUDA are ``--size 128,2048,6144``:
on an H100/H200 class GPU a ~4 us launch-bound 128^3, a ~30 us 2048^3 and a ~1 ms
6144^3 fp16 GEMM. Each size has one tile config (the calibration times it too):
block 64x64x32, 2 stages, 128 threads below 1024 (128x256 tiles cannot tile 128^3),
else block 128x256x64, 3 stages, 256 threads.

Trial 0 compiles the variants and provides the first baseline, so N
trials take N + 1 pytest runs. The last stdout line is JSON with the figures
(run settings at the top, the figures of each size under ``per_size``).
The same measurements are also re-judged offline with ``gate.decide`` for
other thresholds and for the speedup metric (no extra timing; a row the gate timed again to
confirm a regression, ``--confirm``, is re-judged on its last timing).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pytest_tlautotune import gate  # noqa: E402

KERNELS_CPU = (ROOT / "examples" / "kernels_cpu.py").read_text()  # inner runs import it as `kernels`
KERNELS_CUDA = (ROOT / "examples" / "kernels_cuda.py").read_text()  # as `cuda_kernels`
#: The CUDA GEMM's config from size 1024 up (the calibration times it too).
CUDA_CONFIG = dict(block_M=128, block_N=256, block_K=64, num_stages=3, threads=256)
#: Below 1024 (128^3 has 2x2 such tiles and 4 K-steps; CUDA_CONFIG's 256-wide tile does not fit).
CUDA_CONFIG_SMALL = dict(block_M=64, block_N=64, block_K=32, num_stages=2, threads=128)


def cuda_config(size: int) -> dict:
    """The one tile config of the CUDA GEMM at M=N=K=size."""
    return CUDA_CONFIG_SMALL if size < 1024 else CUDA_CONFIG


KERNEL = '''
import pytest
from kernels import elementwise_add as add, gemm


CONFIGS = [dict(bm=16, bn=16, bk=16), dict(bm=32, bn=32, bk=16)]
ADD_CONFIGS = [dict(bm=16, bn=16)]  # one tiling: the extra work per unit depends on it (calibrated with it)
'''

KERNEL_CUDA = '''
import pytest
from cuda_kernels import gemm

'''

TEST = '''

@pytest.mark.autotune(configs={configs}, target="{target}", out_idx=[-1], ref_prog=lambda A, B: A @ B,
                      warmup={warmup}, rep={rep}{more})
def test_{name}(autotune):
    autotune(gemm, {size}, {size}, {size}, extra={extra})
'''

TEST_ADD = '''

@pytest.mark.autotune(configs=ADD_CONFIGS, target="c", out_idx=[-1], ref_prog=lambda A, B: A + B, warmup={warmup},
                      rep={rep}, rtol=1e-4, atol=1e-4{more})
def test_{name}(autotune):
    autotune(add, {size}, {size}, extra={extra})
'''

ARMS = ("aa", "slow30", "slow10")


def key(arm: str, size: int) -> str:
    """A test's name without ``test_``, as the rows of a trial are keyed."""
    return f"{arm}_{size}"


def make_test_file(device: str, kernel: str, sizes: list[int], extra: dict[int, dict[str, int]], rep: int,
                   warmup: int) -> str:
    """The inner runs' ``test_gate_bench.py``: the three arms of every size (``extra[size][arm]``)."""
    cuda = device == "cuda"
    head = KERNEL_CUDA + "".join(f"CONFIGS_{s} = [{cuda_config(s)!r}]\n" for s in sizes) if cuda else KERNEL
    template = TEST_ADD if kernel == "add" else TEST
    tests = "".join(template.format(name=key(a, s), extra=extra[s][a], size=s, rep=rep, warmup=warmup,
                                    configs=f"CONFIGS_{s}" if cuda else "CONFIGS", target="cuda" if cuda else "c",
                                    more=", rtol=1e-2, atol=1e-2" if cuda else "")
                    for s in sizes for a in ARMS)
    return head + tests


def calibrate(size: int, targets: dict[str, float], reps: int = 60,
              kernel: str = "gemm") -> dict[str, tuple[int, float]]:
    """Pick ``extra`` per arm: in-process, interleaved CPU-time timing of the unchanged and slowed kernels
    (each sample batched as the plugin batches it, ``bench.calibrate_loops``)."""
    import tilelang
    import torch

    from examples import kernels_cpu
    from pytest_tlautotune.engine.bench import calibrate_loops

    torch.set_num_threads(1)
    a, b = torch.randn(size, size), torch.randn(size, size)
    cache: dict[int, object] = {}

    def build(e: int):
        if e not in cache:
            prog = (kernels_cpu.gemm(size, size, size, extra=e) if kernel == "gemm"
                    else kernels_cpu.elementwise_add(size, size, bm=16, bn=16, extra=e))
            cache[e] = tilelang.compile(prog, out_idx=[-1], target="c", execution_backend="cython")
        return cache[e]

    def measure(extras: list[int], n: int) -> dict[int, float]:
        fns = {e: (lambda k=build(e): k(a, b)) for e in extras}
        loops = {e: calibrate_loops(f, "cpu", "cpu") for e, f in fns.items()}
        times: dict[int, list[float]] = {e: [] for e in fns}
        for _ in range(n):
            for e, f in fns.items():
                t0 = time.process_time_ns()
                for _ in range(loops[e]):
                    f()
                times[e].append((time.process_time_ns() - t0) / 1e6 / loops[e])
        return {e: statistics.median(t) for e, t in times.items()}

    probe = 8 if kernel == "gemm" else 32
    first = measure([0, probe], 10)
    per_unit = max(1e-4, (first[probe] / first[0] - 1) / probe)  # cost of one unit of extra, relative
    near = {round((t - 1) / per_unit) for t in targets.values()}
    extras = sorted({0} | {e for c in near for e in range(max(1, c - 3), c + 4)})
    times = measure(extras, reps)
    base = times[0]
    ratio = {e: t / base for e, t in times.items()}
    # The smallest extra that costs at least the target: a "10% slowdown" is not 9%.
    return {arm: min(((e, r) for e, r in ratio.items() if e and r >= target), default=max(ratio.items()))
            for arm, target in targets.items()}


def calibrate_cuda(size: int, targets: dict[str, float], reps: int = 30) -> dict[str, tuple[int, float]]:
    """Pick ``extra`` per arm on the GPU: CUDA-event timing, interleaved, of extra in {0, 8, 24} with
    ``cuda_config(size)``, a straight line through the ratios, and the nearest whole number of extra iterations."""
    import tilelang
    import torch

    from examples import kernels_cuda

    a = torch.randn(size, size, dtype=torch.float16, device="cuda")
    b = torch.randn(size, size, dtype=torch.float16, device="cuda")
    config = cuda_config(size)
    kernels = {e: tilelang.compile(kernels_cuda.gemm(size, size, size, **config, extra=e), out_idx=[-1],
                                   target="cuda")
               for e in (0, 8, 24)}
    times: dict[int, list[float]] = {e: [] for e in kernels}
    for _ in range(reps):
        for e, k in kernels.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(10):
                k(a, b)
            end.record()
            torch.cuda.synchronize()
            times[e].append(start.elapsed_time(end) / 10)
    base = statistics.median(times[0])
    ratio = {e: statistics.median(t) / base for e, t in times.items()}
    slope = statistics.linear_regression(list(ratio), list(ratio.values())).slope
    print(f"size {size}: extra=0 {base * 1000:.1f} us, calibration ratios {ratio}, "
          f"{slope * 100:.2f}% per extra iteration", flush=True)
    out = {}
    for arm, target in targets.items():
        e = max(1, math.ceil((target - 1) / slope))  # at least the target
        out[arm] = (e, 1 + slope * e)
    return out


def run_trial(work: Path, cache: Path, out: Path, baseline: Path | None, threshold: float,
              metric: str = "latency", confirm: int = 1) -> dict:
    cmd = [sys.executable, "-m", "pytest", "test_gate_bench.py", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
           f"--tl-cache-dir={cache}", f"--tl-json={out}", f"--tl-max-regression={threshold}",
           f"--tl-gate-metric={metric}", f"--tl-gate-confirm={confirm}"]
    if baseline is not None:
        cmd.append(f"--tl-baseline={baseline}")
    else:  # as a user writes a baseline: the gate's clock (CPU time on a CPU device), not tuning's numbers
        cmd.append(f"--tl-save-baseline={out.with_suffix('.base.json')}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env)
    if proc.returncode not in (0, 1) or not out.exists():
        raise SystemExit(f"pytest failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    rows = {r["id"].split("::test_")[-1]: r for r in json.loads(out.read_text())["tests"]}  # "aa_128": row
    return {"rc": proc.returncode, "rows": rows}


def baseline_from(rows: dict, sizes: list[int], path: Path) -> None:
    """This trial's unchanged-kernel row of each size as the baseline of every arm of that size in the next
    trial."""
    entries = []
    for s in sizes:
        aa = rows[key("aa", s)]
        entries += [{**aa, "nodeid": f"test_gate_bench.py::test_{key(arm, s)}",
                     "id": f"test_gate_bench.py::test_{key(arm, s)}"} for arm in ARMS]
    path.write_text(json.dumps(gate.baseline_document(entries)))


def int_list(text: str) -> list[int]:
    """``"128,2048"`` -> [128, 2048] (argparse type)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of ints: {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("empty list")
    return values


def _launch_text(row: dict) -> str:
    """A CUDA row's event time per call against the host's launch time (gate.LAUNCH_BOUND)."""
    host, samples = row.get("host_ms"), row.get("samples")
    if not host or not samples:
        return ""
    event = statistics.median(samples)
    return f"  aa: {event * 1e3:.1f} us/call, host launch {host * 1e3:.1f} us (x{event / host:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--threshold", type=float, default=10.0, help="--tl-max-regression for the gate runs")
    parser.add_argument("--metric", choices=("latency", "speedup"), default="latency", help="--tl-gate-metric")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="target c, or target cuda")
    parser.add_argument("--kernel", choices=("gemm", "add"), default="gemm",
                        help="gemm (M=N=K=size) or, on cpu, a size x size elementwise add (32: ~15 us, 576: ~1 ms)")
    parser.add_argument("--size", type=int_list, default=None,
                        help="M=N=K of the GEMM, M=N of the add; one int or a comma-separated list, all measured "
                        "in the same trials (default 128 on cpu, 4096 on cuda; meant on cuda: 128,2048,6144)")
    parser.add_argument("--rep", type=int, default=None, help="timed runs of the kernel and ref_prog per test "
                        "(30 on cpu, 100 on cuda)")
    parser.add_argument("--warmup", type=int, default=None, help="(5 on cpu, 10 on cuda)")
    parser.add_argument("--confirm", type=int, default=1, help="--tl-gate-confirm: re-timings of a regression "
                        "before it fails (default 1, the plugin's)")
    parser.add_argument("--out", help="also write the final JSON here")
    parser.add_argument("--extra30", type=int_list, default=None,
                        help="skip calibration: extra for the +30%% arm, one per size (comma-separated)")
    parser.add_argument("--extra10", type=int_list, default=None,
                        help="skip calibration: extra for the +10%% arm, one per size (comma-separated)")
    args = parser.parse_args()

    cuda = args.device == "cuda"
    if cuda and args.kernel != "gemm":
        parser.error("--kernel add is CPU only")
    sizes = list(dict.fromkeys(args.size or [4096 if cuda else 128]))  # in order, each once
    args.rep = args.rep or (100 if cuda else 30)
    args.warmup = args.warmup or (10 if cuda else 5)
    t_start = time.perf_counter()
    extra: dict[int, dict[str, int]] = {}
    if args.extra30 is None or args.extra10 is None:
        targets = {"slow30": 1.30, "slow10": 1.10}
        for s in sizes:
            cal = calibrate_cuda(s, targets) if cuda else calibrate(s, targets, kernel=args.kernel)
            extra[s] = {"aa": 0, "slow30": cal["slow30"][0], "slow10": cal["slow10"][0]}
            print(f"calibration, size {s} (in-process, interleaved, {'CUDA events' if cuda else 'CPU time'}): "
                  f"slow30 extra={cal['slow30'][0]} -> x{cal['slow30'][1]:.3f}, "
                  f"slow10 extra={cal['slow10'][0]} -> x{cal['slow10'][1]:.3f}", flush=True)
    else:
        if not len(args.extra30) == len(args.extra10) == len(sizes):
            parser.error(f"--extra30 and --extra10 need one value per size ({len(sizes)})")
        extra = {s: {"aa": 0, "slow30": e30, "slow10": e10}
                 for s, e30, e10 in zip(sizes, args.extra30, args.extra10, strict=True)}

    work = Path(tempfile.mkdtemp(prefix="tl-gate-aa-"))
    cache = work / "cache"
    (work / "pytest.ini").write_text("[pytest]\n")
    (work / "test_gate_bench.py").write_text(make_test_file(args.device, args.kernel, sizes, extra, args.rep,
                                                            args.warmup))
    (work / ("cuda_kernels.py" if cuda else "kernels.py")).write_text(KERNELS_CUDA if cuda else KERNELS_CPU)

    def what(s: int) -> str:
        return f"GEMM {s}^3" if args.kernel == "gemm" else f"add {s}x{s}"

    first = run_trial(work, cache, work / "run0.json", None, args.threshold, args.metric)  # compiles; first baseline
    baseline_from(first["rows"], sizes, work / "base0.json")
    print(f"trial 0 (tune + first baseline) done at {time.perf_counter() - t_start:.0f} s", flush=True)
    trials = []
    for i in range(1, args.trials + 1):
        t = run_trial(work, cache, work / f"run{i}.json", work / f"base{i - 1}.json", args.threshold, args.metric,
                      args.confirm)
        trials.append(t)
        baseline_from(t["rows"], sizes, work / f"base{i}.json")
        if args.out:  # so that a run cut short still leaves its trials
            Path(args.out).with_suffix(".partial.json").write_text(json.dumps(
                {"sizes": sizes, "extra": {str(s): extra[s] for s in sizes},
                 "trials": [{str(s): {a: {k: r["rows"][key(a, s)]["gate"][k] for k in ("status", "regression_pct")}
                                      for a in ARMS} for s in sizes} for r in trials]}))
        for s in sizes:
            g = {a: t["rows"][key(a, s)]["gate"] for a in ARMS}
            pct = {a: math.nan if g[a]["regression_pct"] is None else g[a]["regression_pct"] for a in ARMS}
            ci = {a: g[a]["ratio_ci"] or [math.nan, math.nan] for a in ARMS}
            print(f"trial {i:2d} {what(s):>12s}: "
                  + "  ".join(f"{a} {g[a]['status']:8s} {pct[a]:+6.1f}% "
                              f"[{(ci[a][0] - 1) * 100:+.1f},{(ci[a][1] - 1) * 100:+.1f}]" for a in ARMS)
                  + f"   ({time.perf_counter() - t_start:.0f} s)" + _launch_text(t["rows"][key("aa", s)]), flush=True)

    # Offline re-judging of the very same samples (gate.decide is what gate.judge calls).
    prev = [first] + trials[:-1]
    settings = [(m, th) for m in ("latency", "speedup") for th in (5.0, 10.0)]
    n = len(trials)
    want = {"aa": "0", "slow30": f"{n}/{n}", "slow10": f">={int(0.9 * n)}/{n}"}
    wall = time.perf_counter() - t_start
    per_size = {}
    for s in sizes:
        table = {}
        for metric, th in settings:
            for arm in ARMS:
                table[(metric, th, arm)] = sum(
                    gate.decide(before["rows"][key("aa", s)], now["rows"][key(arm, s)], threshold_pct=th,
                                alpha=0.01, metric=metric)["status"] == gate.FAIL
                    for before, now in zip(prev, trials, strict=True))
        g = {a: [t["rows"][key(a, s)]["gate"] for t in trials] for a in ARMS}
        caught = {a: sum(x["status"] == gate.FAIL for x in g[a]) for a in ARMS}
        undetectable = {a: sum(x["status"] == gate.UNDETECTABLE for x in g[a]) for a in ARMS}
        # rows the gate timed again (a first timing regressed), and of those how many it passed then
        retimed = {a: sum(len(x.get("timings") or ()) > 1 for x in g[a]) for a in ARMS}
        unconfirmed = {a: sum(len(x.get("timings") or ()) > 1 and x["status"] != gate.FAIL for x in g[a])
                       for a in ARMS}
        loops = sorted({t["rows"][key("aa", s)].get("loops") for t in trials} - {None})
        pcts = {a: [x["regression_pct"] for x in g[a] if x["regression_pct"] is not None] for a in ARMS}
        realized = {a: statistics.median(pcts[a]) if pcts[a] else math.nan for a in ARMS}
        spread = {a: (min(pcts[a]), max(pcts[a])) if pcts[a] else (math.nan, math.nan) for a in ARMS}
        print()
        print(f"{what(s)}" + (f" {cuda_config(s)}" if cuda else "") + f": gate runs: {n} trials, pytest "
              f"--tl-max-regression={args.threshold:g} --tl-alpha=0.01 --tl-gate-metric={args.metric} "
              f"--tl-gate-confirm={args.confirm} "
              f"({'CUDA events' if cuda else 'CPU time on this CPU device'}), rep={args.rep}, "
              f"calls per sample {loops or '?'}, baseline = previous trial's process")
        print(f"{'arm':8s} {'extra':>5s} {'median change':>14s} {'min..max change':>18s} {'gate failures':>14s} "
              f"{'undetectable':>12s} {'timed again':>11s} {'not confirmed':>13s}  want")
        for a in ARMS:
            print(f"{a:8s} {extra[s][a]:5d} {realized[a]:+13.1f}% {spread[a][0]:+8.1f}..{spread[a][1]:+.1f}% "
                  f"{caught[a]:>10d}/{n} {undetectable[a]:>10d}/{n} {retimed[a]:>9d}/{n} {unconfirmed[a]:>11d}/{n}"
                  f"  {want[a]}")
        print(f"{what(s)}: the same samples re-judged with gate.decide (failures / trials):")
        print(f"{'metric':8s} {'threshold':>9s} " + " ".join(f"{a:>8s}" for a in ARMS))
        for metric, th in settings:
            print(f"{metric:8s} {th:8g}% " + " ".join(f"{table[(metric, th, a)]:>5d}/{n}" for a in ARMS))
        per_size[str(s)] = {"size": s, "config": cuda_config(s) if cuda else None, "extra": extra[s], "loops": loops,
                            "failures": caught, "undetectable": undetectable, "timed_again": retimed,
                            "not_confirmed": unconfirmed, "median_change_pct": realized,
                            "rejudged": {f"{m}/{th:g}/{a}": v for (m, th, a), v in table.items()}}
    print(f"\nwall {wall:.0f} s; work dir {work}")
    result = {"device": args.device, "kernel": args.kernel, "metric": args.metric, "confirm": args.confirm, "trials": n,
              "threshold_pct": args.threshold, "rep": args.rep, "warmup": args.warmup, "sizes": sizes,
              "wall_s": round(wall, 1), "per_size": per_size}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
