"""Which configs to measure next: exhaustive, random sampling, or a guided search.

A search proposes config indices a few at a time, while earlier ones are still
compiling, so the worker pool never idles. The guided search is a hill climb
over the config grid: after a random start it measures the unmeasured
neighbours (one parameter one step away) of the best configs so far, and
restarts at random configs when the neighbourhoods are exhausted.
"""

from __future__ import annotations

import random
from typing import Any

from .key import canonical_json

GUIDED_DEFAULT_FRACTION = 0.2
CLIMB_FROM = 5


class Search:
    """Proposes indices into ``configs``; ``results`` maps index -> median ms (None: failed)."""

    def __init__(self, configs: list[dict], strategy: str = "exhaustive", max_trials: int | None = None,
                 seed: int = 0):
        self.configs = configs
        self.strategy = strategy
        n = len(configs)
        if strategy == "guided" and max_trials is None:
            max_trials = max(1, min(n, round(n * GUIDED_DEFAULT_FRACTION)))
        self.budget = min(n, max_trials) if max_trials else n
        self.order = list(range(n))
        if strategy != "exhaustive":
            random.Random(seed).shuffle(self.order)
        # A third of the budget samples at random; the rest climbs (replayed on a measured
        # 512-config space: benchmarks/guided_search.py).
        self.n_init = max(4, self.budget // 3)
        self._neighbours: list[list[int]] | None = None

    def propose(self, results: dict[int, float | None], pending: set[int], n: int) -> list[int]:
        """Up to ``n`` new indices to measure, within the trial budget."""
        seen = set(results) | pending
        n = min(n, self.budget - len(seen))
        if n <= 0:
            return []
        out: list[int] = []
        if self.strategy == "guided" and len(seen) >= self.n_init:
            out = self._climb(results, seen, n)
        for i in self.order:
            if len(out) >= n:
                break
            if i not in seen and i not in out:
                out.append(i)
        return out

    def _climb(self, results: dict[int, float | None], seen: set[int], n: int) -> list[int]:
        # Climb only from the few best: widening to every measured config wanders into
        # mediocre regions; when these neighbourhoods are exhausted, proposals go random.
        ranked = sorted((ms, i) for i, ms in results.items() if ms is not None)[:CLIMB_FROM]
        out: list[int] = []
        for _, i in ranked:
            for j in self.neighbours()[i]:
                if j not in seen and j not in out:
                    out.append(j)
                    if len(out) >= n:
                        return out
        return out

    def neighbours(self) -> list[list[int]]:
        """For each config, the configs that differ in one parameter by one step."""
        if self._neighbours is None:
            self._neighbours = _grid_neighbours(self.configs)
        return self._neighbours


def _grid_neighbours(configs: list[dict]) -> list[list[int]]:
    keys = sorted({k for c in configs for k in c})
    axes: dict[str, list[Any]] = {}
    for k in keys:
        values = {canonical_json(c.get(k)): c.get(k) for c in configs}
        axes[k] = [values[v] for v in sorted(values, key=lambda s: _sort_key(values[s]))]
    index = {canonical_json(c): i for i, c in enumerate(configs)}
    result = []
    for c in configs:
        near = []
        for k in keys:
            axis = axes[k]
            pos = next(p for p, v in enumerate(axis) if canonical_json(v) == canonical_json(c.get(k)))
            for step in (-1, 1):
                if 0 <= pos + step < len(axis):
                    other = dict(c)
                    other[k] = axis[pos + step]
                    j = index.get(canonical_json(other))
                    if j is not None:
                        near.append(j)
        result.append(near)
    return result


def _sort_key(value: Any) -> tuple:
    if isinstance(value, bool) or value is None:
        return (0, str(value))
    if isinstance(value, (int, float)):
        return (1, value)
    return (2, canonical_json(value))
