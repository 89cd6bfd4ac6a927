"""Search strategies, trial budgets and early stop."""

import json

import pytest

from pytest_tlautotune.engine.search import Search

GRID = [dict(a=a, b=b) for a in range(8) for b in range(8)]


def drain(search, latency, in_flight=3):
    results, pending = {}, []
    while True:
        pending += search.propose(results, set(pending), in_flight - len(pending))
        if not pending:
            return results
        i = pending.pop(0)
        results[i] = latency(GRID[i])


def test_exhaustive_measures_everything_once_in_a_seeded_order():
    order = list(drain(Search(GRID), lambda c: 1.0))
    assert sorted(order) == list(range(len(GRID))) and order != sorted(order)
    assert order == list(drain(Search(GRID), lambda c: 1.0))  # the same order every run
    assert list(drain(Search(GRID, max_trials=5), lambda c: 1.0)) == [0, 1, 2, 3, 4]  # a budget: the first


def test_random_respects_the_budget_and_its_seed():
    first = drain(Search(GRID, "random", max_trials=10, seed=3), lambda c: 1.0)
    assert len(first) == 10
    assert list(first) == list(drain(Search(GRID, "random", max_trials=10, seed=3), lambda c: 1.0))
    assert list(first) != list(drain(Search(GRID, "random", max_trials=10, seed=4), lambda c: 1.0))


def test_guided_climbs_to_the_optimum_of_a_smooth_space_within_its_budget():
    def bowl(c):
        return 1.0 + (c["a"] - 6) ** 2 + (c["b"] - 1) ** 2

    assert Search(GRID, "guided").budget == min(len(GRID), max(round(len(GRID) / 6), 64))  # the default budget
    for seed in range(10):
        results = drain(Search(GRID, "guided", max_trials=20, seed=seed), bowl)
        assert len(results) == 20
        assert min(results.values()) == 1.0, f"seed {seed} missed the optimum"


def test_guided_lines_vary_one_parameter_through_the_config():
    lines = Search(GRID, "guided").grid().lines(GRID.index(dict(a=0, b=3)))
    as_json = [{json.dumps(GRID[j], sort_keys=True) for j in line} for line in lines]
    assert as_json == [
        {json.dumps(dict(a=a, b=3), sort_keys=True) for a in range(1, 8)},
        {json.dumps(dict(a=0, b=b), sort_keys=True) for b in range(8) if b != 3},
    ]


def test_guided_finds_the_optimum_of_a_noisy_v_shaped_space_that_random_sampling_misses():
    # Not a bowl: |a - 6| + |b - 1| with measurement noise below one step.
    import random as rnd

    noise = [rnd.Random(i).uniform(0, 0.05) for i in range(len(GRID))]

    def v_shape(c):
        return 1.0 + 0.1 * abs(c["a"] - 6) + 0.1 * abs(c["b"] - 1) + noise[GRID.index(c)]

    best = min(v_shape(c) for c in GRID)
    found = {strategy: sum(min(drain(Search(GRID, strategy, max_trials=16, seed=s), v_shape).values()) == best
                           for s in range(20)) for strategy in ("guided", "random")}
    assert found["guided"] >= 18 and found["random"] <= 10, found


SLOW_TEST = """
import pytest, torch
import kernels

@pytest.mark.autotune(configs={configs}, target="c", out_idx=[-1], ref_prog=lambda A, B: A @ B,
                      warmup=1, rep=20, early_stop_factor=2.0{extra})
def test_gemm(autotune):
    autotune(kernels.gemm, 64, 64, 64)
"""


def records(tl):
    found = [json.loads(p.read_text()) for p in tl.cache_dir.glob("entries/*/record.json")]
    return max(found, key=lambda r: len(r["candidates"]))["candidates"]


@pytest.mark.slow
def test_a_clearly_slower_candidate_stops_early(tl, pytester):
    pytester.makepyfile(test_k=SLOW_TEST.format(configs="[dict()]", extra=""))
    tl.run().assert_outcomes(passed=1)
    # The fast config's record is reused, so the best is known before the slow one is timed.
    pytester.makepyfile(test_k=SLOW_TEST.format(configs="[dict(), dict(repeat=20)]", extra=""))
    tl.run().assert_outcomes(passed=1)
    # Reused although the marker line (the lambda ref_prog's source line) changed with the configs.
    assert [r for r in records(tl) if r["config"] == {}][0].get("reused")
    slow = [r for r in records(tl) if r["config"] == {"repeat": 20}][0]
    assert slow["status"] == "early_stop"
    assert len(slow["samples"]) < 20
    assert "stopped after" in slow["reason"]


def test_max_trials_bounds_what_is_measured(tl, pytester):
    configs = "[dict(bm=bm, bn=bn) for bm in (8, 16, 32) for bn in (8, 16, 32)]"
    pytester.makepyfile(test_k=SLOW_TEST.format(configs=configs, extra=', strategy="random", max_trials=3'))
    result = tl.run()
    result.assert_outcomes(passed=1)
    assert len(records(tl)) == 3
    result.stdout.fnmatch_lines(["*test_gemm*[0-9]/3*"])  # 3 measured; load may early-stop one



def test_confirmation_adds_candidates_whose_fastest_sample_beat_the_best_median():
    from pytest_tlautotune.engine.measure import to_confirm

    def rec(name, samples):
        return {"name": name, "samples": samples, "median_ms": sorted(samples)[len(samples) // 2]}

    # "disturbed" measured 7.6 ms in most samples (a compile on the sibling core), 3.4 ms once.
    passed = sorted([rec("best", [3.5, 3.6, 3.55]), rec("second", [3.9, 4.0, 4.1]), rec("third", [4.2, 4.3, 4.4]),
                     rec("disturbed", [3.4, 7.6, 7.6]), rec("slow", [9.0, 9.1, 9.2])], key=lambda r: r["median_ms"])
    assert [r["name"] for r in to_confirm(passed, 2)] == ["best", "second", "disturbed"]
    assert [r["name"] for r in to_confirm(passed, 3)] == ["best", "second", "third", "disturbed"]


def test_auto_strategy_measures_small_spaces_whole_and_guides_big_ones():
    from pytest_tlautotune.settings import (
        AUTO_EXHAUSTIVE_MAX,
        GPU_EARLY_STOP_FACTOR,
        TUNER_DEFAULTS,
        resolve_tuner,
    )

    assert TUNER_DEFAULTS["strategy"] == "auto"
    small = resolve_tuner(dict(TUNER_DEFAULTS), AUTO_EXHAUSTIVE_MAX)
    big = resolve_tuner(dict(TUNER_DEFAULTS), AUTO_EXHAUSTIVE_MAX + 1)
    assert small["strategy"] == "exhaustive" and big["strategy"] == "guided"
    # a budget the user gave keeps its old meaning (the first max_trials configs); explicit choices stand
    assert resolve_tuner({**TUNER_DEFAULTS, "max_trials": 5}, 500)["strategy"] == "exhaustive"
    assert resolve_tuner({**TUNER_DEFAULTS, "strategy": "random"}, 500)["strategy"] == "random"
    # early stop: twice the best on a GPU, three times on a CPU, what the marker says where it says it
    assert resolve_tuner(dict(TUNER_DEFAULTS), 8, device_kind="cuda")["early_stop_factor"] == GPU_EARLY_STOP_FACTOR
    assert resolve_tuner(dict(TUNER_DEFAULTS), 8, device_kind="cpu")["early_stop_factor"] == 3.0
    given = {**TUNER_DEFAULTS, "early_stop_factor": 0}
    assert resolve_tuner(given, 8, {"early_stop_factor"}, device_kind="cuda")["early_stop_factor"] == 0
    big_space = [{"i": i} for i in range(AUTO_EXHAUSTIVE_MAX * 4)]
    assert Search(big_space, big["strategy"]).budget == max(round(len(big_space) / 6), 64)
    huge = [{"i": i} for i in range(1000)]
    assert Search(huge, "guided").budget == 167  # a sixth once that is more than 64
    # ... and at least 4 rounds of the compile workers: with more of them, more is proposed blind
    assert Search(big_space, "guided", workers=16).budget == max(round(len(big_space) / 6), 64)
    assert Search(big_space, "guided", workers=32).budget == min(len(big_space), 128)
    assert Search(huge, "guided", workers=64).budget == 256
    assert Search(huge, "guided", max_trials=50, workers=64).budget == 50  # a budget given stands


def test_configs_that_fail_do_not_count_against_the_default_guided_budget():
    space = [{"i": i} for i in range(200)]
    fails = set(range(0, 200, 2))  # every other config fails to compile

    def measured(search):
        results, pending = {}, []
        while True:
            pending += search.propose(results, set(pending), 4 - len(pending))
            if not pending:
                return results
            i = pending.pop(0)
            results[i] = None if i in fails else 1.0 + i / 1000

    default = measured(Search(space, "guided", seed=1))
    assert sum(ms is not None for ms in default.values()) == 64  # 64 that ran, however many failed
    assert len(default) > 64
    given = measured(Search(space, "guided", max_trials=64, seed=1))
    assert len(given) == 64  # a budget the user gives counts every trial
    everything = measured(Search(space[:100], "guided", seed=1))
    assert len(everything) == 100  # fewer than 64 can run: the whole space, once


def test_a_guided_search_imports_its_model_while_its_random_start_compiles():
    """The model's import (scipy.interpolate) starts in the background with the first proposals, not
    at the first fit inside the tuning loop, where it held up proposals while compile workers idled."""
    import subprocess
    import sys

    code = """
import sys, threading
from pytest_tlautotune.engine.search import Search
first = Search([dict(a=a, b=b) for a in range(8) for b in range(8)], {strategy!r}).propose({{}}, set(), 4)
for t in threading.enumerate():
    if t.name == "tlautotune-model-import":
        t.join()
print(len(first), "scipy.interpolate" in sys.modules)
"""
    imported = {strategy: subprocess.run([sys.executable, "-c", code.format(strategy=strategy)], capture_output=True,
                                         text=True, check=True).stdout.strip()
                for strategy in ("guided", "exhaustive", "random")}
    assert imported == {"guided": "4 True", "exhaustive": "4 False", "random": "4 False"}
