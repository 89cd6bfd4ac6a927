"""Latency-regression gate: decisions, confidence intervals, baseline documents.

Pure: no file I/O, no pytest. Flow: with a gate (or a baseline to save) :func:`fresh_clock`
tells the session to have the engine time the winner again in this run: a cache hit, so a
gate never compares stored numbers with stored numbers, and on a CPU device a miss too, so
both sides are timed by CPU time (the wait for a core on a shared runner moved wall-clock
medians by -50% to +120% between runs; CPU-time medians stayed within +-7%:
benchmarks/gate_aa.py). After the test body passed, ``plugin.py`` reads the baseline
(``report/files.py``), and :func:`judge` compares each result row with its baseline entry,
puts the decision into the row (it crosses xdist on the report) and returns the test's
properties, failures and warnings; the plugin fails the test on a regression. On the
controller ``report/files.py`` writes ``--tl-save-baseline``, ``--tl-json`` and
``--tl-markdown``; ``report/terminal.py`` prints the gate's table.

Decision rule, per row, with threshold ``T`` percent and ``alpha``:

- ``skipped`` when the test is not in the baseline, the baseline was measured on
  another device or with another clock (``fail`` under ``--tl-strict-baseline``), or either side has
  too few samples for the one-sided Mann-Whitney U test to ever reach ``alpha``;
- ``fail`` when median(now) / median(baseline) > 1 + T/100 *and* now is
  significantly slower (one-sided Mann-Whitney U, p < alpha);
- ``improved`` when the ratio < 1 - T/100 and now is significantly faster;
- ``pass`` otherwise;
- a ``fail`` is timed again in this run, up to ``--tl-gate-confirm`` times, and stands only when
  every timing fails (:func:`judge`): a runner slowed for seconds moves one timing, a slower
  kernel every one;
- but ``undetectable`` instead of any of these when the noise hides a change of
  T percent: the ratio's bootstrap CI reaches further than T/100 from the ratio on
  either side (its half-width, ``mdc_pct``, the minimum detectable change, exceeds
  T), unless the whole CI lies beyond the threshold (a clear regression still fails,
  a clear improvement is still reported).

With ``--tl-gate-metric=speedup`` the compared values are latency / ref_prog
latency, both timed interleaved in the same run, so a uniformly slower or
faster runner cancels out.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .model import RowStatus, row_id
from .stash import CACHE_HIT

BASELINE_FORMAT = 1
FRESH, FRESH_CPU = "this run", "this run (cpu time)"  # a row's "measured": numbers of this run, and which clock
PASS, FAIL, IMPROVED, SKIPPED = "pass", "fail", "improved", "skipped"
#: The samples are too spread to tell a change of the threshold's size from noise: neither pass nor fail.
UNDETECTABLE = "undetectable"
_BOOTSTRAP_RESAMPLES = 2000
#: A CUDA kernel whose time per call (CUDA events) is under this many times what the host spent
#: launching it is launch-bound: the GPU waited for the host, so its time follows the host
#: process. Measured on an H200 (benchmarks/gate_aa.py): a 128^3 GEMM took 4.6-6.2 us a call
#: against 10-19 us of launching (x0.32-0.50), moved -24..+32% between processes (A/A gate
#: failures 5 of 20) and did not change its time with 16x the work; a 2048^3 GEMM took 33.7 us
#: against 11-16 us (x2.1-3.0) and gated cleanly. Such a row is undetectable, not judged.
LAUNCH_BOUND = 1.0


# ----------------------------------------------------------------------------- re-measure


def fresh_clock(wanted: str | None, device: str, cache: str) -> str | None:
    """Which clock re-times the winner in this run (``"cpu"`` or ``"wall"``), or None when the
    numbers at hand will do. ``wanted``: the option (a gate, a baseline to save, a history) that
    needs numbers of this run, or None (``settings.wants_fresh_numbers``). A cache hit is then
    always re-timed; on a CPU device a miss is too, by CPU time, so that baseline and gate runs
    use the same clock."""
    cpu = not str(device).startswith("cuda")
    if not wanted or (cache != CACHE_HIT and not cpu):
        return None
    return "cpu" if cpu else "wall"


def measured_label(clock: str | None, cache: str) -> str:
    """A row's "measured": ``FRESH``, ``FRESH_CPU`` or ``"stored"`` (a hit no gate asked to re-time)."""
    if clock is None:
        return FRESH if cache != CACHE_HIT else "stored"
    return FRESH_CPU if clock == "cpu" else FRESH


# ----------------------------------------------------------------------------- baseline


def row_ids(rows: list[dict]) -> list[str]:
    """Baseline ids: the node id, with ``[call N]`` for a test's second and later autotune calls
    (``report.record_outcome`` names each row; rows without a name are counted here)."""
    seen: dict[str, int] = {}
    ids = []
    for row in rows:
        n = seen[row["nodeid"]] = seen.get(row["nodeid"], 0) + 1
        ids.append(row.get("id") or row_id(row["nodeid"], n))
    return ids


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)


def baseline_entry(row: dict) -> dict:
    """What a baseline keeps of one result row."""
    return {
        "program": row.get("program"),
        "config": row.get("config"),
        "latency_ms": _r(row.get("latency_ms")),
        "samples": [_r(s) for s in row.get("samples") or []],
        "ref_latency_ms": _r(row.get("ref_latency_ms")),
        "ref_samples": [_r(s) for s in row.get("ref_samples") or []],
        "device": row.get("device"),
        "device_name": row.get("device_name"),
        "machine": row.get("machine"),
        "measured": row.get("measured", FRESH),
        "host_ms": _r(row.get("host_ms")),
    }


def baseline_document(rows: list[dict], old: dict | None = None) -> dict:
    """The baseline file's content: ``old``'s tests updated with this run's rows."""
    tests = dict((old or {}).get("tests", {}))
    for rid, row in zip(row_ids(rows), rows, strict=True):
        if row.get("status") != RowStatus.FAILED:  # a failed tuning keeps the test's old entry
            tests[rid] = baseline_entry(row)
    return {"format": BASELINE_FORMAT, "tool": "pytest-tlautotune",
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "tests": dict(sorted(tests.items()))}


def check_baseline(data: object, path: str) -> dict:
    """``data`` (a baseline file's parsed JSON) when it is a baseline, else ValueError with a sentence."""
    if not isinstance(data, dict) or not isinstance(data.get("tests"), dict):
        raise ValueError(f"baseline file {path} has no 'tests' mapping; was it written by --tl-save-baseline?")
    if data.get("format") != BASELINE_FORMAT:
        raise ValueError(f"baseline file {path} has format {data.get('format')!r}, this plugin reads "
                         f"{BASELINE_FORMAT}; write it again with --tl-save-baseline")
    return data


# ----------------------------------------------------------------------------- statistics


def _min_p(n: int, m: int) -> float:
    """The smallest p-value an exact one-sided Mann-Whitney U test can give with n and m samples."""
    return 1.0 / math.comb(n + m, n) if n and m else 1.0


def median_ci(values: list[float], level: float) -> tuple[float, float]:
    """Distribution-free CI of the median from order statistics (binomial), at ``level``."""
    from scipy.stats import binom

    xs = sorted(values)
    n = len(xs)
    k = int(binom.ppf((1 - level) / 2, n, 0.5))  # P(Binom(n, 1/2) < k) <= (1 - level) / 2
    if k < 1:
        return xs[0], xs[-1]
    return xs[k - 1], xs[n - k]


def ratio_ci(now: list[float], base: list[float], level: float) -> tuple[float, float]:
    """Percentile-bootstrap CI of median(now) / median(base), the two sides resampled independently."""
    import numpy as np
    from scipy.stats import bootstrap

    def stat(a, b, axis=-1):
        return np.median(a, axis=axis) / np.median(b, axis=axis)

    res = bootstrap((np.asarray(now), np.asarray(base)), stat, n_resamples=_BOOTSTRAP_RESAMPLES,
                    confidence_level=level, method="percentile", vectorized=True, random_state=0)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _one_sided_p(now: list[float], base: list[float], alternative: str) -> float:
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(now, base, alternative=alternative).pvalue)


def _metric_values(side: dict, metric: str) -> list[float] | None:
    """Latency samples, or latency / ref_prog latency (paired by position when interleaved alike)."""
    samples = [float(s) for s in side.get("samples") or []]
    if metric == "latency":
        return samples
    ref = [float(s) for s in side.get("ref_samples") or []]
    if not ref or not samples:
        return None
    if len(ref) == len(samples):
        return [s / r for s, r in zip(samples, ref, strict=True)]
    ref_median = statistics.median(ref)
    return [s / ref_median for s in samples]


def _device(side: dict) -> str | None:
    return side.get("device_name") or (side.get("machine") or {}).get("device")


def _clock(side: dict) -> str:
    return "cpu time" if side.get("measured") == FRESH_CPU else "wall clock"


def is_fresh(measured: str | None) -> bool:
    """Whether a row's numbers were timed in its own run (``measured`` defaults to that)."""
    return measured in (None, FRESH, FRESH_CPU)


def decide(base: dict | None, now: dict, *, threshold_pct: float, alpha: float, metric: str = "latency",
           strict: bool = False) -> dict:
    """Compare one result row ``now`` with its baseline entry ``base``; return the decision as a dict.

    Pure (no pytest), so the benchmark and tools can call it. Keys: status,
    reason, metric, baseline_ms, now_ms, their CIs, ratio, ratio_ci,
    regression_pct, threshold_pct, p_value, alpha, n_baseline, n_now.
    """
    level = 1 - alpha
    d: dict[str, Any] = {"status": SKIPPED, "reason": None, "metric": metric, "threshold_pct": threshold_pct,
                         "alpha": alpha, "ci_level": level, "baseline_ms": None, "now_ms": _median(now.get("samples")),
                         "ratio": None, "ratio_ci": None, "regression_pct": None, "p_value": None,
                         "n_baseline": 0, "n_now": len(now.get("samples") or [])}
    if base is None:
        d["reason"] = "not in the baseline (new test?)"
        return d
    d["baseline_ms"] = _median(base.get("samples")) or base.get("latency_ms")
    d["baseline_device"] = _device(base)
    if _device(base) != _device(now):
        d["status"] = FAIL if strict else SKIPPED
        d["reason"] = (f"baseline measured on {_device(base)!r}, this run on {_device(now)!r}: not compared"
                       + (" (--tl-strict-baseline)" if strict else ""))
        return d
    d["clock"] = _clock(now)
    if _clock(base) != _clock(now):
        d["status"] = FAIL if strict else SKIPPED
        d["reason"] = (f"baseline timed by {_clock(base)}, this run by {_clock(now)}: not compared; write the "
                       f"baseline again with --tl-save-baseline" + (" (--tl-strict-baseline)" if strict else ""))
        return d
    bound = next((side for side in (now, base) if _launch_bound(side)), None)
    if bound is not None:
        d["status"] = UNDETECTABLE
        d["reason"] = (f"launch-bound: {_median(bound['samples']) * 1e3:.3g} us a call by CUDA events, "
                       f"{bound['host_ms'] * 1e3:.3g} us of it launching from the host ({_side(bound, now)}); its time "
                       f"follows the host process, not the kernel: time a bigger problem or use "
                       f"backend=\"cupti\" (kernel time alone)")
        return d
    b, n = _metric_values(base, metric), _metric_values(now, metric)
    if b is None or n is None:
        d["reason"] = "the speedup metric needs ref_prog samples on both sides"
        return d
    d["n_baseline"], d["n_now"] = len(b), len(n)
    if len(b) < 2 or len(n) < 2 or _min_p(len(n), len(b)) > alpha:
        d["reason"] = (f"insufficient samples: {len(b)} baseline vs {len(n)} now cannot reach alpha={alpha:g} "
                       f"(raise rep)")
        return d
    if base.get("samples"):
        d["baseline_ci"] = list(median_ci(base["samples"], level))
    if now.get("samples"):
        d["now_ci"] = list(median_ci(now["samples"], level))
    ratio = statistics.median(n) / statistics.median(b)
    d["ratio"], d["ratio_ci"] = ratio, list(ratio_ci(n, b, level))
    d["regression_pct"] = (ratio - 1) * 100
    if metric == "speedup":
        d["baseline_speedup"], d["now_speedup"] = 1 / statistics.median(b), 1 / statistics.median(n)
    limit = threshold_pct / 100
    lo, hi = d["ratio_ci"]
    d["mdc_pct"] = (hi - lo) / 2 * 100
    if ratio > 1 + limit:
        d["p_value"] = _one_sided_p(n, b, "greater")
        d["status"] = FAIL if d["p_value"] < alpha else PASS
        if d["status"] == PASS:
            d["reason"] = f"slower by more than {threshold_pct:g}% but not significant (p={d['p_value']:.2g})"
    elif ratio < 1 - limit:
        d["p_value"] = _one_sided_p(n, b, "less")
        d["status"] = IMPROVED if d["p_value"] < alpha else PASS
    else:
        d["status"] = PASS
    if d["mdc_pct"] > threshold_pct and not (d["status"] == FAIL and lo > 1 + limit) \
            and not (d["status"] == IMPROVED and hi < 1 - limit):
        d["status"] = UNDETECTABLE
        d["reason"] = (f"too noisy to judge: the ratio's {level:.0%} CI [{lo:.3f}, {hi:.3f}] spans "
                       f"+-{d['mdc_pct']:.0f}%, wider than the {threshold_pct:g}% threshold (raise rep, quiet the "
                       f"machine, or use --tl-gate-metric=speedup)")
    return d


def _launch_bound(side: dict) -> bool:
    """Whether a row's CUDA event samples mostly timed the host launching the kernel."""
    host, median = side.get("host_ms"), _median(side.get("samples"))
    return bool(host and median and median < LAUNCH_BOUND * host)


def _side(side: dict, now: dict) -> str:
    return "this run" if side is now else "the baseline"


def _median(samples: Sequence[float] | None) -> float | None:
    return statistics.median(samples) if samples else None


# ----------------------------------------------------------------------------- the test


def failure_message(rid: str, d: dict, path: str) -> str:
    """The test's failure text: baseline vs now (median and CI), the ratio and the threshold."""
    level = f"{d['ci_level']:.0%} CI"
    what = "latency" if d["metric"] == "latency" else "latency relative to ref_prog"
    what += f", {d['clock']}" if d.get("clock") else ""
    if d["status"] == FAIL and d["ratio"] is None:  # strict baseline, other device
        return f"tlautotune gate: {rid}: {d['reason']}"
    lines = [
        f"tlautotune gate: {rid} regressed ({what}, baseline {path}):",
        f"  baseline {ms_text(d['baseline_ms'])} [{level} {_pair(d.get('baseline_ci'))}], n={d['n_baseline']}",
        f"  now      {ms_text(d['now_ms'])} [{level} {_pair(d.get('now_ci'))}], n={d['n_now']}",
        f"  ratio {d['ratio']:.3f} [{level} {_pair(d['ratio_ci'], '.3f')}] = {d['regression_pct']:+.1f}% exceeds "
        f"the {d['threshold_pct']:g}% threshold (one-sided Mann-Whitney U p={d['p_value']:.2g} < "
        f"alpha {d['alpha']:g})",
    ]
    if d["metric"] == "speedup":
        lines.append(f"  speedup over ref_prog: baseline {d['baseline_speedup']:.3f}x, now {d['now_speedup']:.3f}x")
    if len(d.get("timings") or ()) > 1:
        lines.append(f"  every timing in this run regressed: {_timings_text(d['timings'])} (--tl-gate-confirm)")
    return "\n".join(lines)


def _timing(d: dict) -> dict:
    """What the decision ``d`` says of one timing of the kernel (the gate's ``timings``)."""
    return {k: d.get(k) for k in ("status", "now_ms", "ratio", "regression_pct", "p_value", "mdc_pct")}


def _timings_text(timings: Sequence[dict]) -> str:
    return ", ".join(f"{t['regression_pct']:+.1f}%" if t.get("regression_pct") is not None else t["status"]
                     for t in timings)


def ms_text(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g} ms"


def _pair(p: Sequence[float] | None, spec: str = ".4g") -> str:
    return "-" if not p else f"{p[0]:{spec}}, {p[1]:{spec}}"


@dataclass
class Judgement:
    """What the gate says about one test: its properties, its failures and its warnings (text),
    and the rows whose kernel it timed again (row id: the row's new numbers, already in the row)."""

    properties: list[tuple[str, object]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    retimed: dict[str, dict] = field(default_factory=dict)


def judge(rows: list[dict], tests: dict, path: str, *, metric: str, alpha: float, threshold_pct: float,
          strict: bool, confirm: int = 0, retime: Callable[[str], dict | None] | None = None) -> Judgement:
    """Gate a test's result rows against the baseline's ``tests`` (read from ``path``): each row
    gets its decision as ``row["gate"]``; the test fails when the judgement has failures.

    A row that would fail is timed again, up to ``confirm`` times (``retime(row id)`` returns the
    row's new numbers, or None when it cannot be timed again), and fails only when every timing
    regressed: a runner that was slow for a few seconds (another process on the core, a noisy
    neighbour of a VM) fails no test, a kernel that got slower fails each time. The row keeps the
    numbers of its last timing; ``row["gate"]["timings"]`` says what each timing read."""
    out = Judgement()
    for rid, row in zip(row_ids(rows), rows, strict=True):
        if row.get("status") == RowStatus.FAILED:
            continue  # the call failed its test already; there is nothing to compare
        measured = row.get("measured", FRESH)
        if not is_fresh(measured):
            d = decide(None, row, threshold_pct=0, alpha=alpha)
            d.update(status=FAIL if strict else SKIPPED, reason=f"no numbers from this run ({measured})")
        else:
            again = functools.partial(decide, tests.get(rid), metric=metric, alpha=alpha,
                                      threshold_pct=threshold_pct, strict=strict)
            d = again(row)
            if d["status"] == FAIL and d["ratio"] is not None and confirm and retime is not None:
                d = _confirmed(rid, row, d, again, confirm, retime, out)
        d["in_baseline"] = rid in tests
        row["gate"] = d
        out.properties.extend([
            ("tl_baseline_ms", _r(d["baseline_ms"])),
            ("tl_regression_pct", None if d["regression_pct"] is None else round(d["regression_pct"], 2)),
            ("tl_gate", d["status"]),
        ])
        if d["status"] == FAIL:
            out.failures.append(failure_message(rid, d, path))
        elif d["status"] == SKIPPED and (rid in tests or not is_fresh(measured)):
            out.warnings.append(f"tlautotune gate: {rid}: {d['reason']}")
    return out


def _confirmed(rid: str, row: dict, d: dict, again: Callable[[dict], dict], confirm: int,
               retime: Callable[[str], dict | None], out: Judgement) -> dict:
    """The decision on ``row`` after timing its kernel again, up to ``confirm`` times, while each
    timing regressed (``d``: the first timing's failing decision; ``again`` decides on new numbers).
    A timing that cannot be made leaves the last decision standing, with the reason."""
    timings = [_timing(d)]
    while d["status"] == FAIL and len(timings) <= confirm:
        try:
            numbers, error = retime(rid), None
        except Exception as exc:  # noqa: BLE001 - the timing worker's failure, said in the decision
            numbers, error = None, f"{type(exc).__name__}: {exc}"
        if numbers is None:
            d["reason"] = f"could not time it again to confirm: {error or 'no timing for this call'}"
            break
        row.update(numbers)
        out.retimed[rid] = numbers
        d = again(row)
        timings.append(_timing(d))
    d["timings"] = timings
    if d["status"] != FAIL:
        first = _timings_text(timings[:1])
        note = f"a first timing read {first} (p={timings[0]['p_value']:.2g}), timing again {_timings_text(timings[1:])}"
        d["reason"] = f"{note}: not confirmed" + (f"; {d['reason']}" if d.get("reason") else "")
    return d


def unmatched(rows: list[dict], tests: dict, path: str) -> str | None:
    """A sentence when the gate judged rows but none of them is in the baseline ``tests`` (read
    from ``path``): the run compared nothing, which must not pass unnoticed; else None."""
    gated = [rid for rid, row in zip(row_ids(rows), rows, strict=True) if isinstance(row.get("gate"), dict)]
    if not gated or any(row["gate"].get("in_baseline") for row in rows if isinstance(row.get("gate"), dict)):
        return None
    theirs = sorted(tests)[:2]
    there = (f"its {len(tests)} test(s) are named like {', '.join(theirs)}" if theirs else "it holds no test")
    return (f"none of the {len(gated)} test(s) of this run is in the baseline {path} ({there}; this run's like "
            f"{', '.join(sorted(gated)[:2])}): nothing was compared. Save the baseline again from this project "
            f"with --tl-save-baseline, or check that it is the right file")
