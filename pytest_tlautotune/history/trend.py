"""What a test's history says: its best run in a window, the run where its level stepped, and
whether its latest run regressed. Pure: rows in, values out (no I/O, no pytest).

A level step is found as the single change point of the run medians' logarithms that leaves
the least squared deviation on both sides (the run medians before and after it are each as flat
as one split can make them); it is reported when the median of the medians after it differs
from the median before it by more than the threshold.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

DAY_S = 86400.0


def measured(rows: list[dict]) -> list[dict]:
    """The rows that carry numbers (a tuning that failed has none), oldest first."""
    return sorted((r for r in rows if r.get("samples") and r.get("latency_ms") is not None),
                  key=lambda r: r.get("date", 0))


def median_ms(row: dict) -> float:
    return statistics.median(row["samples"])


def series(rows: list[dict], test: str, machine: str | None = None, since: float | None = None) -> list[dict]:
    """One test's measured rows on one machine (every machine when None), oldest first."""
    return [r for r in measured(rows) if r.get("test") == test and (machine is None or r.get("machine") == machine)
            and r.get("date", 0) >= (since or 0)]


def best_per_test(rows: list[dict], machine: str, since: float) -> dict[str, dict]:
    """{test: its fastest row (lowest median) on ``machine`` since ``since``}: what the history
    gate compares a run with."""
    best: dict[str, dict] = {}
    for r in measured(rows):
        if r.get("machine") != machine or r.get("date", 0) < since:
            continue
        if r["test"] not in best or median_ms(r) < median_ms(best[r["test"]]):
            best[r["test"]] = r
    return best


@dataclass(frozen=True)
class Step:
    """A change of a test's level: ``row`` is the first run at the new level."""

    index: int  # of ``row`` in the series
    row: dict
    before_ms: float
    after_ms: float

    @property
    def change_pct(self) -> float:
        return (self.after_ms / self.before_ms - 1) * 100


def find_step(runs: list[dict], threshold_pct: float) -> Step | None:
    """The run after which ``runs``' level (run medians) moved by more than ``threshold_pct``."""
    if len(runs) < 2:
        return None
    logs = [math.log(median_ms(r)) for r in runs]
    best_k, best_cost = None, math.inf
    for k in range(1, len(logs)):
        cost = _sse(logs[:k]) + _sse(logs[k:])
        if cost < best_cost - 1e-12:
            best_k, best_cost = k, cost
    before = statistics.median(median_ms(r) for r in runs[:best_k])
    after = statistics.median(median_ms(r) for r in runs[best_k:])
    if abs(after / before - 1) * 100 <= threshold_pct:
        return None
    return Step(best_k, runs[best_k], before, after)


def _sse(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values)


@dataclass(frozen=True)
class Regression:
    """A test whose latest run is slower than its best in the window by more than the threshold."""

    test: str
    machine: str
    best: dict
    latest: dict
    step: Step | None  # where the level moved up, when a step explains it

    @property
    def change_pct(self) -> float:
        return (median_ms(self.latest) / median_ms(self.best) - 1) * 100


def regressions(rows: list[dict], threshold_pct: float, since: float) -> list[Regression]:
    """Every (test, machine) whose latest run in the window is slower than its best there."""
    out = []
    for test, machine in sorted({(r["test"], r.get("machine")) for r in measured(rows)}):
        runs = series(rows, test, machine, since)
        if len(runs) < 2:
            continue
        latest = runs[-1]
        best = min(runs, key=median_ms)
        if median_ms(latest) / median_ms(best) - 1 <= threshold_pct / 100:
            continue
        step = find_step(runs, threshold_pct)
        out.append(Regression(test, machine, best, latest, step if step and step.change_pct > 0 else None))
    return out


def trend_line(runs: list[dict], width: int = 12) -> str:
    """A one-line trend of the run medians (oldest to newest), e.g. ``▂▂▃▂▇ 1.02 → 1.31 ms``."""
    if not runs:
        return ""
    values = [median_ms(r) for r in runs[-width:]]
    lo, hi = min(values), max(values)
    bars = "▁▂▃▄▅▆▇█"
    spark = "".join(bars[0 if hi == lo else round((v - lo) / (hi - lo) * (len(bars) - 1))] for v in values)
    return f"{spark} {values[0]:.4g} → {values[-1]:.4g} ms ({len(runs)} runs)"
