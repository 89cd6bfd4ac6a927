"""How close does a budgeted search get to the exhaustive best? Replayed on measured data.

    python benchmarks/plugin_runs.py cpu512 --cold 1 --warm 0     # exhaustive: measures every config
    python benchmarks/guided_search.py /tmp/tlbench-XXXX/cache0/entries/*/record.json --seeds 20

The exhaustive tuning's record holds every candidate's measured median, compile time and
timing time. This script replays `pytest_tlautotune.engine.search.Search` (the code the
tuner runs) against those measurements, the way the tuner's pipeline runs it: ``--workers``
compile workers, as many configs proposed as compile slots free up (workers + 1), each
candidate's result known only once it is compiled (its recorded compile time) and then timed
on one device, one at a time (its recorded timing time, or the early-stopped share of it).
Results arriving late is what makes a guided search guess: with results in proposal order
(``--workers 0``: three in flight, each answered at once) it looks better than it runs.
It reports, per strategy and seed, the fraction of the space measured and how far the best
found is from the exhaustive best.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pytest_tlautotune.engine.search import Search, default_budget  # noqa: E402


def replay(configs: list[dict], medians: list[float | None], strategy: str, budget: int | None, seed: int,
           in_flight: int = 3, costs: list[tuple[float, float]] | None = None, workers: int = 0) -> tuple[int, int]:
    """Run the search to completion; returns (configs measured, the index of the best found). With
    ``workers`` and ``costs`` (each config's compile and timing seconds), as the pipeline runs it."""
    search = Search(configs, strategy, budget, seed, workers)
    results: dict[int, float | None] = {}
    if not workers:
        pending: list[int] = []
        while True:
            pending += search.propose(results, set(pending), in_flight - len(pending))
            if not pending:
                break
            i = pending.pop(0)  # the oldest proposal finishes first
            results[i] = medians[i]
    else:
        now, device_free = 0.0, 0.0
        events: list[tuple[float, str, int]] = []  # (when, "compiled" | "timed", index)
        queued: list[int] = []  # proposed, waiting for a compile worker
        compiling: set[int] = set()
        to_time: set[int] = set()
        while True:
            pending = set(queued) | compiling | to_time
            queued += search.propose(results, pending, workers + 1 - len(compiling) - len(queued))
            while queued and len(compiling) < workers:
                i = queued.pop(0)
                compiling.add(i)
                heapq.heappush(events, (now + costs[i][0], "compiled", i))
            if not events:
                break
            now, kind, i = heapq.heappop(events)
            if kind == "compiled":
                compiling.discard(i)
                to_time.add(i)
                device_free = max(now, device_free) + costs[i][1]
                heapq.heappush(events, (device_free, "timed", i))
            else:
                to_time.discard(i)
                results[i] = medians[i]
    return len(results), min((ms, i) for i, ms in results.items() if ms is not None)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("record", help="record.json of an exhaustive tuning")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--fraction", type=float, default=None,
                        help="trial budget as a fraction of the space (default: the tuner's own default budget)")
    parser.add_argument("--within", type=float, default=0.03, help="success: best within this of the optimum")
    parser.add_argument("--workers", type=int, default=16,
                        help="compile workers of the replayed pipeline (0: results in proposal order, 3 in flight)")
    parser.add_argument("--draws", type=int, default=1,
                        help="runs per seed, each with its own noise (--jitter, --noise): a GPU run of one seed "
                             "differs from the next in the order results come back and in the medians measured")
    parser.add_argument("--jitter", type=float, default=0.0,
                        help="log-normal sigma on each compile and timing time (0.3: a compile 26%% faster or slower)")
    parser.add_argument("--noise", type=float, default=0.0,
                        help="log-normal sigma on each measured median (0.01: about 1%% run-to-run)")
    args = parser.parse_args(argv)

    record = json.loads(Path(args.record).read_text())
    cands = sorted(record["candidates"], key=lambda r: r["index"])
    configs = [c["config"] for c in cands]
    # Early-stopped candidates were measured slower than 3x the best: their partial median stands.
    medians = [c.get("median_ms") if c["status"] in ("ok", "early_stop") else None for c in cands]
    costs = [(c.get("compile_s") or 1.0, c.get("bench_s") or 0.1) for c in cands]
    optimum = min(m for m in medians if m is not None)
    # The default budget counts configs that ran (Search's own default); --fraction counts every trial.
    n = len(configs)
    budget = default_budget(n, args.workers) if args.fraction is None else max(1, round(n * args.fraction))
    given = None if args.fraction is None else budget
    print(f"space: {len(configs)} configs, {sum(m is not None for m in medians)} measured ok; "
          f"optimum {optimum:.4g} ms; budget {budget} trials ({budget / len(configs):.0%})"
          f"{' that ran' if given is None else ''}")
    print(f"{'strategy':10} {'hit rate':>9} {'median gap':>11} {'worst gap':>10} {'measured':>9}")
    for strategy in ("random", "guided"):
        gaps, counts, misses = [], [], []
        for seed in range(args.seeds):
            for draw in range(args.draws):
                rng = random.Random(f"{seed}/{draw}")
                noisy = [m * rng.lognormvariate(0, args.noise) if m is not None else None for m in medians]
                cost = [(c * rng.lognormvariate(0, args.jitter), b * rng.lognormvariate(0, args.jitter))
                        for c, b in costs]
                n, best_i = replay(configs, noisy, strategy, given if strategy == "guided" else budget, seed,
                                   costs=cost, workers=args.workers)
                gap = medians[best_i] / optimum - 1  # the found config's true (recorded) median
                gaps.append(gap)
                counts.append(n)
                if gap > args.within:
                    misses.append(f"{seed}/{draw} {gap:+.0%}")
        hits = sum(g <= args.within for g in gaps)
        print(f"{strategy:10} {hits:>4}/{len(gaps):<4} {statistics.median(gaps):>10.2%} {max(gaps):>10.2%} "
              f"{statistics.mean(counts) / len(configs):>9.1%}" + (f"  misses: {', '.join(misses[:8])}"
                                                                    if strategy == "guided" and misses else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
