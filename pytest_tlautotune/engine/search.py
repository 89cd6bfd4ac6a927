"""Which configs to measure next: exhaustive, random sampling, or a guided search.

A search proposes config indices a few at a time, while earlier ones are still
compiling, so the worker pool never idles. The guided search starts with a random
quarter of its budget, then alternates two kinds of proposal:

- a surrogate model: a thin-plate-spline RBF fit (scipy) of log-latency over each
  parameter's position on its axis, and the unmeasured configs it predicts fastest;
- a line search: every other value of one parameter through the best config so far.

The model finds a promising region from few samples; the lines settle each
parameter exactly where the model is smooth and the space is not (a replay on two
measured 500-config spaces: ``benchmarks/guided_search.py``).
"""

from __future__ import annotations

import random
import threading
from typing import Any

from .key import canonical_json

GUIDED_DEFAULT_FRACTION = 1 / 6
#: The default guided budget: a sixth of the space, at least this many configs that ran (or the
#: whole space); configs that fail to compile or run tell the model nothing, so they do not count.
#: Measured by replaying exhaustive records as the pipeline runs (benchmarks/guided_search.py: 16
#: compile workers, 20 seeds, best within 2%): TileLang's 288-config GEMM space on an H200, 19-20 of
#: 20 at 64 and 17-19 at 48 (a seed that guesses from too few results settles 24-37% off); a
#: 96-config flash-attention space whose 41 failing configs count for nothing, 20 of 20; a 512-config
#: CPU GEMM space on a 2-core VM (2 workers), 18 of 20 at a sixth (85).
GUIDED_MIN_TRIALS = 64
#: ... and at least this many rounds of the pipeline's compile workers (64 is 4 rounds of 16): the
#: pipeline proposes a config per free worker, so the more workers, the more of a fixed budget is
#: proposed before the earlier proposals' results are in. Replayed on an H200 record of the 288 space
#: with 32 workers (a two-GPU host), 64 trials ended 23-31% off in 4 of 60 runs (and in 3 of 4 real
#: runs on a 2xH200 host), with 48 and 64 workers in 25 and 39 of 60; 4 rounds: 60/60 at 32, 48, 64.
GUIDED_MIN_ROUNDS = 4
RANDOM_START = 4  # the random start is 1/4 of the budget
MODEL_POINTS = 256  # the surrogate fits the best this many measurements (bounded cost)


def _import_model() -> None:
    from scipy.interpolate import RBFInterpolator  # noqa: F401


def default_budget(n: int, workers: int = 0) -> int:
    """The guided search's trial budget for a space of ``n`` configs when none is given, for a
    pipeline of ``workers`` compile workers."""
    return max(1, min(n, max(round(n * GUIDED_DEFAULT_FRACTION), GUIDED_MIN_TRIALS, GUIDED_MIN_ROUNDS * workers)))


class Search:
    """Proposes indices into ``configs``; ``results`` maps index -> median ms (None: failed)."""

    def __init__(self, configs: list[dict], strategy: str = "exhaustive", max_trials: int | None = None,
                 seed: int = 0, workers: int = 0):
        self.configs = configs
        self.strategy = strategy
        n = len(configs)
        # The default budget counts configs that ran; a budget the user gives counts every trial.
        self.counts_failures = not (strategy == "guided" and max_trials is None)
        if not self.counts_failures:
            max_trials = default_budget(n, workers)
        self.budget = min(n, max_trials) if max_trials else n
        # A seeded random order, an exhaustive search's too (unless its budget keeps the first
        # configs): a fast config is met early, so early stop spares the slow ones' samples, and
        # the heavy compiles of one end of the grid do not all come last.
        self.order = list(range(n))
        if strategy != "exhaustive" or self.budget == n:
            random.Random(seed).shuffle(self.order)
        self.n_init = max(4, self.budget // RANDOM_START)
        self._grid: _Grid | None = None
        self._turn = 0
        self._model_imported = strategy != "guided"

    def propose(self, results: dict[int, float | None], pending: set[int], n: int) -> list[int]:
        """Up to ``n`` new indices to measure, within the trial budget."""
        seen = set(results) | pending
        used = len(seen) if self.counts_failures else len(seen) - sum(ms is None for ms in results.values())
        n = min(n, self.budget - used, len(self.configs) - len(seen))
        if n <= 0:
            return []
        if not self._model_imported:
            # The model's import (scipy.interpolate: 0.4 s on a 2-core VM, more on a GPU host) runs
            # while the random start compiles: at its first fit, in the tuning's loop, it would hold up
            # every proposal while the compile workers run dry (measured on an H200: 5 of 16 busy).
            self._model_imported = True
            threading.Thread(target=_import_model, name="tlautotune-model-import", daemon=True).start()
        out: list[int] = []
        if self.strategy == "guided" and len(seen) >= self.n_init:
            out = self._guided(results, seen, n)
        for i in self.order:  # the random start, and whatever the guided steps left over
            if len(out) >= n:
                break
            if i not in seen and i not in out:
                out.append(i)
        return out

    def _guided(self, results: dict[int, float | None], seen: set[int], n: int) -> list[int]:
        """Alternately the model's next pick and the lines' next pick, the model first."""
        rankings = [iter(self._lines(results, seen)), iter(self._model(results, seen))]  # odd turns: [1]
        out: list[int] = []
        while len(out) < n and rankings:
            self._turn += 1
            ranking = rankings[self._turn % len(rankings)] if len(rankings) > 1 else rankings[0]
            pick = next((j for j in ranking if j not in out), None)
            if pick is None:
                rankings.remove(ranking)
            else:
                out.append(pick)
        return out

    def grid(self) -> _Grid:
        if self._grid is None:
            self._grid = _Grid(self.configs)
        return self._grid

    def _lines(self, results: dict[int, float | None], seen: set[int]) -> list[int]:
        """Unmeasured configs on the axis lines through the measured configs, best config first."""
        ranked = sorted((ms, i) for i, ms in results.items() if ms is not None)
        out: dict[int, None] = {}
        for _, i in ranked:
            for line in self.grid().lines(i):
                out.update((j, None) for j in line if j not in seen)
        return list(out)

    def _model(self, results: dict[int, float | None], seen: set[int]) -> list[int]:
        """The unmeasured configs, fastest first as predicted by a surrogate fitted to the measurements."""
        import numpy as np

        ok = sorted((ms, i) for i, ms in results.items() if ms is not None and ms > 0)[:MODEL_POINTS]
        x = self.grid().x
        candidates = [j for j in range(len(self.configs)) if j not in seen]
        if len(ok) <= x.shape[1] + 1 or not candidates:
            return []
        try:
            from scipy.interpolate import RBFInterpolator

            fit = RBFInterpolator(x[[i for _, i in ok]], np.log([ms for ms, _ in ok]),
                                  kernel="thin_plate_spline", smoothing=1e-3)
            predicted = fit(x[candidates])
        except (np.linalg.LinAlgError, ValueError):  # degenerate points: leave it to the lines
            return []
        return [candidates[k] for k in np.argsort(predicted, kind="stable")]


class _Grid:
    """The config space as a grid: each parameter's sorted values (its axis)."""

    def __init__(self, configs: list[dict]):
        import numpy as np

        self.configs = configs
        self.keys = sorted({k for c in configs for k in c})
        self.axes: dict[str, list[Any]] = {}
        for k in self.keys:
            values = {canonical_json(c.get(k)): c.get(k) for c in configs}
            self.axes[k] = [values[v] for v in sorted(values, key=lambda s: _sort_key(values[s]))]
        self.pos = {k: {canonical_json(v): p for p, v in enumerate(axis)} for k, axis in self.axes.items()}
        self.index = {canonical_json(c): i for i, c in enumerate(configs)}
        # Each config's position on every axis, scaled to [0, 1]: the surrogate's inputs.
        self.x = np.array([[self.pos[k][canonical_json(c.get(k))] / max(1, len(self.axes[k]) - 1)
                            for k in self.keys] for c in configs], dtype=float).reshape(len(configs), len(self.keys))

    def lines(self, i: int) -> list[list[int]]:
        """For config ``i``, per parameter: the configs that differ from it in that parameter only."""
        c = self.configs[i]
        out = []
        for k in self.keys:
            line = []
            for v in self.axes[k]:
                other = dict(c)
                other[k] = v
                j = self.index.get(canonical_json(other))
                if j is not None and j != i:
                    line.append(j)
            out.append(line)
        return out


def _sort_key(value: object) -> tuple:
    if isinstance(value, bool) or value is None:
        return (0, str(value))
    if isinstance(value, (int, float)):
        return (1, value)
    return (2, canonical_json(value))
