"""Several autotune calls in one test, batched samples of short kernels, and the gate's
``undetectable`` verdict on noisy tests.

Inner runs use the real TileLang CPU ``elementwise_add`` kernel of ``examples/kernels_cpu.py`` (target "c"):
a 32x32 add takes about 15 us, far below what one clock reading can time on its own.
"""

from __future__ import annotations

import json
import time

import pytest

from pytest_tlautotune import gate
from pytest_tlautotune.engine.bench import calibrate_loops, min_sample_s, time_fn

TWO_SHAPES = '''
import pytest, torch, kernels


@pytest.mark.autotune(configs=[dict(bm=16, bn=16), dict(bm=32, bn=32)], target="c", out_idx=[-1],
                      ref_prog=lambda A, B: A + B, warmup=1, rep=10)
def test_two(autotune):
    for M in (32, 64):
        r = autotune(kernels.elementwise_add, M, M)
        A, B = torch.randn(M, M), torch.randn(M, M)
        torch.testing.assert_close(r.kernel(A, B), A + B)
        ok = [c for c in r.record["candidates"] if c["status"] == "ok"]
        assert ok and all(c["loops"] > 1 for c in ok), r.record["candidates"]  # short calls are batched
'''

NODE = "test_two.py::test_two"
IDS = [NODE, f"{NODE}[call 2]"]


@pytest.fixture
def two(tl, pytester):
    pytester.makepyfile(test_two=TWO_SHAPES)
    pytester.makeini("[pytest]\n")
    return tl


@pytest.mark.slow
def test_two_shapes_in_one_test_cold_warm_baseline_gate(two, pytester):
    # Cold: the second call gets inputs of its own shape (not "Static shape mismatch ... expected 64 got 32").
    two.run().assert_outcomes(passed=1)
    assert two.prop("test_two", "tl_cache") == ["miss", "miss"]
    assert two.prop("test_two", "tl_id") == IDS
    # Warm: both hits.
    result = two.run()
    result.assert_outcomes(passed=1)
    assert two.prop("test_two", "tl_cache") == ["hit", "hit"]
    result.stdout.fnmatch_lines([f"{NODE} *hit*", f"{NODE}[[]call 2[]] *hit*"])
    # Hits re-timed for the baseline: two rows, both with this run's CPU-time numbers, batched.
    two.run("--tl-save-baseline", "base.json").assert_outcomes(passed=1)
    tests = json.loads((pytester.path / "base.json").read_text())["tests"]
    assert sorted(tests) == IDS
    assert all(t["measured"] == gate.FRESH_CPU and len(t["samples"]) == 10 for t in tests.values())
    # Each row against its own baseline row (a wide threshold keeps a loaded runner out of it).
    result = two.run("--tl-baseline", "base.json", "--tl-max-regression", "1000", "--tl-json", "out.json")
    result.assert_outcomes(passed=1)
    assert two.prop("test_two", "tl_gate") == ["pass", "pass"]
    rows = json.loads((pytester.path / "out.json").read_text())["tests"]
    assert [r["id"] for r in rows] == IDS and [r["call"] for r in rows] == [1, 2]
    assert all(r["loops"] > 1 and r["gate"]["n_baseline"] == 10 for r in rows)
    assert rows[0]["gate"]["baseline_ms"] == pytest.approx(tests[IDS[0]]["latency_ms"], rel=1e-3)
    assert rows[1]["gate"]["baseline_ms"] == pytest.approx(tests[IDS[1]]["latency_ms"], rel=1e-3)


BROKEN_RETIMING = """
import pytest_tlautotune.engine.measure


def broken(*args, **kwargs):
    raise RuntimeError("the timing worker died")


pytest_tlautotune.engine.measure.measure_again = broken
"""


@pytest.mark.slow
def test_failed_retiming_fails_the_test_and_writes_no_row(two, pytester):
    two.run().assert_outcomes(passed=1)
    pytester.makeconftest(BROKEN_RETIMING)  # the inner run is a subprocess: break it from inside
    result = two.run("--tl-save-baseline", "base.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*{NODE}: re-timing elementwise_add (hit, key *) in this run for "
                                 f"--tl-save-baseline failed: RuntimeError: the timing worker died*"])
    assert not (pytester.path / "base.json").exists()  # nothing marked "failed" to skip forever after
    # A history alone asks for this run's numbers too, and is named as what asked.
    result = two.run("--tl-history", "hist.db")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*{NODE}: re-timing elementwise_add (hit, key *) in this run for "
                                 f"--tl-history failed: RuntimeError: the timing worker died*"])


# ----------------------------------------------------------------------------- batching


def test_short_calls_are_batched_samples_stay_per_call():
    calls = []
    loops = calibrate_loops(lambda: calls.append(1), "cpu")
    assert loops > 1
    calls.clear()
    samples, _ = time_fn(lambda: calls.append(1), None, "cpu", rep=5, warmup=0, loops=loops)
    assert len(samples) == 5 and len(calls) == 5 * loops
    assert max(samples) * loops * 1e-3 < 1.0  # ms per call, not per batch of `loops` calls
    # A call that outlasts the clock's minimum is timed alone; one that only waits (no CPU time)
    # stops growing once a batch has lasted long on the wall clock, instead of looping for ever.
    assert calibrate_loops(lambda: time.sleep(2 * min_sample_s("wall")), "cpu") == 1
    assert calibrate_loops(lambda: time.sleep(0.01), "cpu", clock="cpu") <= 10


# ----------------------------------------------------------------------------- undetectable


def _side(samples):
    return {"samples": samples, "ref_samples": [], "device_name": "cpu-x", "measured": gate.FRESH_CPU}


def test_decide_says_undetectable_when_noise_hides_the_threshold():
    tight = [1.0 + 0.001 * (i % 7) for i in range(20)]
    spread = [f * 1.0 for f in (0.25, 0.5, 1.0, 2.0, 4.0) * 4]
    d = gate.decide(_side(spread), _side(tight), threshold_pct=10, alpha=0.01)
    assert d["status"] == gate.UNDETECTABLE and d["mdc_pct"] > 10 and "too noisy" in d["reason"]
    assert gate.decide(_side(tight), _side(tight), threshold_pct=10, alpha=0.01)["status"] == gate.PASS
    # A regression far beyond the noise still fails: the whole CI lies above the threshold.
    wide_but_slow = [10 * x for x in (0.8, 0.9, 1.0, 1.1, 1.2) * 4]
    assert gate.decide(_side(tight), _side(wide_but_slow), threshold_pct=10, alpha=0.01)["status"] == gate.FAIL



def test_decide_says_undetectable_when_the_kernel_is_launch_bound():
    # CUDA rows carry host_ms, the host's time to launch one call: a kernel whose event time is
    # not well above it timed the host, whose speed moves between processes (seen on an H200).
    def cuda(samples, host_ms):
        return {"samples": samples, "ref_samples": [], "device_name": "gpu-x", "host_ms": host_ms}

    fast = [0.005 + 0.0001 * (i % 5) for i in range(20)]
    slow = [1.3 * x for x in fast]
    d = gate.decide(cuda(fast, 0.001), cuda(slow, 0.012), threshold_pct=10, alpha=0.01)
    assert d["status"] == gate.UNDETECTABLE and d["reason"].startswith("launch-bound") and "this run" in d["reason"]
    d = gate.decide(cuda(fast, 0.012), cuda(slow, 0.001), threshold_pct=10, alpha=0.01)
    assert d["status"] == gate.UNDETECTABLE and "the baseline" in d["reason"]
    # The same samples with a cheap launch (or none recorded, as on a CPU) are judged as before.
    assert gate.decide(cuda(fast, 0.001), cuda(slow, 0.001), threshold_pct=10, alpha=0.01)["status"] == gate.FAIL
    assert gate.decide(cuda(fast, None), cuda(slow, None), threshold_pct=10, alpha=0.01)["status"] == gate.FAIL
    # The baseline file keeps host_ms, so a later gate run sees the baseline's side too.
    entry = gate.baseline_entry({**cuda(fast, 0.012), "latency_ms": 0.005})
    assert entry["host_ms"] == 0.012


ONE_ADD = '''
import pytest, kernels


@pytest.mark.autotune(configs=[dict(bm=16, bn=16)], target="c", out_idx=[-1], ref_prog=lambda A, B: A + B,
                      warmup=1, rep=10)
def test_add(autotune):
    autotune(kernels.elementwise_add, 32, 32)
'''


@pytest.mark.slow
def test_noisy_baseline_is_undetectable_not_failed(tl, pytester):
    pytester.makepyfile(test_add=ONE_ADD)
    pytester.makeini("[pytest]\n")
    tl.run("--tl-save-baseline", "base.json").assert_outcomes(passed=1)
    doc = json.loads((pytester.path / "base.json").read_text())
    entry = doc["tests"]["test_add.py::test_add"]
    # Samples spread 16x around the median, two of them above any slowdown this run could show.
    entry["samples"] = [entry["latency_ms"] * f for f in (0.25, 0.5, 1.0, 2.0, 4.0) * 2]
    (pytester.path / "base.json").write_text(json.dumps(doc))
    result = tl.run("--tl-baseline", "base.json", "--tl-json", "out.json", "--tl-markdown", "out.md")
    result.assert_outcomes(passed=1)
    assert tl.prop("test_add", "tl_gate") == ["undetectable"]
    result.stdout.fnmatch_lines(["*tlautotune latency gate*", "test_add.py::test_add *undetectable",
                                 "*test_add.py::test_add: undetectable: too noisy to judge*"])
    row = json.loads((pytester.path / "out.json").read_text())["tests"][0]
    assert row["gate"]["status"] == "undetectable" and row["gate"]["mdc_pct"] > 10
    assert "undetectable" in (pytester.path / "out.md").read_text()
