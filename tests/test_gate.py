"""The latency gate: baselines, regressions, improvements, devices, reports, xdist.

Inner runs use the real TileLang CPU GEMM of ``examples/kernels_cpu.py`` (target "c").
Slowdowns are injected in the kernel itself: ``extra`` adds and subtracts ``extra`` rank-1
updates per tile, which keeps the result and costs about 3% of the 64^3 GEMM per unit.
"""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET

import pytest
from kernel_sources import KERNELS, TILELANG_313_FILTER

from pytest_tlautotune import gate
from pytest_tlautotune.report import files, terminal

KERNEL = '''
import pytest, torch
from kernels import gemm


TUNE = dict(configs=[dict(bm=16, bn=16, bk=16), dict(bm=32, bn=32, bk=16)], target="c", out_idx=[-1],
            ref_prog=lambda A, B: A @ B, warmup=2, rep=20)
'''

TEST = '''

@pytest.mark.autotune(**TUNE{marker})
def {name}(autotune):
    autotune(gemm, 64, 64, 64, extra={extra})
'''

BIG = 48  # about +150%: far beyond any noise on a shared 2-core runner


def write(pytester: pytest.Pytester, *tests: tuple[str, int, str]) -> None:
    """One module ``test_k.py`` with tests (name, extra, marker arguments)."""
    body = "".join(TEST.format(name=n, extra=e, marker=m) for n, e, m in tests)
    pytester.makepyfile(kernels=KERNELS, test_k=KERNEL + body)
    pytester.makeini("[pytest]\n")  # rootdir here, so node ids are test_k.py::...


def run(pytester: pytest.Pytester, cache, *args: str) -> pytest.RunResult:
    base = (f"--tl-cache-dir={cache}", "-p", "no:cacheprovider")  # one arg: it must not move the rootdir
    return pytester.runpytest_subprocess(*base, *args)  # -n 2 needs a subprocess anyway


def props(xml_path) -> dict[str, dict[str, str]]:
    """{test name: {property: value}} from a junit XML file."""
    root = ET.parse(xml_path).getroot()
    return {case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
            for case in root.iter("testcase")}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache for the module: each kernel variant compiles once; hits are re-measured anyway."""
    return tmp_path_factory.mktemp("tlcache")


def save_baseline(pytester, cache, *tests) -> dict:
    write(pytester, *tests)
    run(pytester, cache, "--tl-save-baseline", "base.json").assert_outcomes(passed=len(tests))
    return json.loads((pytester.path / "base.json").read_text())


# ----------------------------------------------------------------------------- inner runs


def test_unchanged_kernel_passes_remeasured_with_reports(pytester, cache):
    doc = save_baseline(pytester, cache, ("test_a", 0, ""))
    entry = doc["tests"]["test_k.py::test_a"]
    assert entry["config"] in ({"bm": 16, "bn": 16, "bk": 16}, {"bm": 32, "bn": 32, "bk": 16})
    assert len(entry["samples"]) == 20 and len(entry["ref_samples"]) == 20
    assert min(entry["samples"]) <= entry["latency_ms"] <= max(entry["samples"])
    assert entry["ref_latency_ms"] > 0
    assert entry["device_name"] and entry["machine"]["device_kind"] == "cpu"
    assert entry["measured"] == "this run (cpu time)"  # hit or miss: re-timed by the gate's clock
    assert '\n      "samples": [' in (pytester.path / "base.json").read_text()  # readable: one line per list

    # The same kernel against its own baseline. The subject is the pass path and its reports, not the
    # machine's steadiness: a threshold no load reaches (a CI runner's other worker once moved this
    # kernel's CPU time by +66% between two runs).
    result = run(pytester, cache, "--tl-baseline", "base.json", "--tl-max-regression", "1000",
                 "--tl-json", "out.json", "--tl-markdown", "out.md", "--junitxml", "j.xml")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*tlautotune latency gate*", "test_k.py::test_a*latency*pass*"])
    p = props(pytester.path / "j.xml")["test_a"]
    assert p["tl_gate"] == "pass" and p["tl_cache"] == "hit"
    assert float(p["tl_baseline_ms"]) == pytest.approx(entry["latency_ms"], rel=1e-3)
    row = json.loads((pytester.path / "out.json").read_text())["tests"][0]
    assert row["id"] == "test_k.py::test_a" and row["gate"]["status"] == "pass"
    # A cache hit was timed again in this run: never stored numbers against stored numbers.
    assert row["cache"] == "hit" and row["measured"] == "this run (cpu time)"
    assert row["samples"] != entry["samples"] and len(row["samples"]) == 20
    md = (pytester.path / "out.md").read_text()
    assert "| test | config | latency | ref | speedup | cache | baseline | change [CI] | p | gate |" in md
    assert "`test_k.py::test_a`" in md and "pass" in md


def test_slowdown_fails_improvement_reported_marker_threshold(pytester, cache):
    save_baseline(pytester, cache, ("test_a", 0, ""), ("test_b", 0, ""), ("test_c", BIG, ""))
    write(pytester, ("test_a", BIG, ""), ("test_b", BIG, ", max_regression=100000"), ("test_c", 0, ""))
    result = run(pytester, cache, "--tl-baseline", "base.json", "--junitxml", "j.xml", "--tl-json", "out.json")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "*tlautotune gate: test_k.py::test_a regressed (latency, cpu time, baseline base.json):",
        "*baseline * ms [[]99% CI *, *[]], n=20",
        "*now * ms [[]99% CI *, *[]], n=20",
        "*ratio * [[]99% CI *[]] = +*% exceeds the 10% threshold (one-sided Mann-Whitney U p=* < alpha 0.01)",
        "*every timing in this run regressed: +*%, +*% (--tl-gate-confirm)",
    ])
    # The regression was timed again before it failed (--tl-gate-confirm's default, 1): the row and
    # the test's properties carry the numbers of that second timing.
    row = next(r for r in json.loads((pytester.path / "out.json").read_text())["tests"] if r["id"].endswith("test_a"))
    assert [t["status"] for t in row["gate"]["timings"]] == ["fail", "fail"]
    assert row["gate"]["now_ms"] == row["gate"]["timings"][1]["now_ms"] == pytest.approx(row["latency_ms"])
    p = props(pytester.path / "j.xml")
    assert float(p["test_a"]["tl_latency_ms"]) == pytest.approx(row["latency_ms"])
    # Behaviour, not magnitudes (a loaded machine moves the measured size of the injected work).
    assert p["test_a"]["tl_gate"] == "fail" and float(p["test_a"]["tl_regression_pct"]) > 0
    assert p["test_b"]["tl_gate"] == "pass"  # the marker's max_regression overrides the option
    assert p["test_c"]["tl_gate"] == "improved" and float(p["test_c"]["tl_regression_pct"]) < 0


@pytest.mark.slow
def test_other_device_is_skipped_with_warning_or_fails_strict(pytester, cache):
    save_baseline(pytester, cache, ("test_a", 0, ""))
    path = pytester.path / "base.json"
    doc = json.loads(path.read_text())
    doc["tests"]["test_k.py::test_a"]["device_name"] = "Imaginary Accelerator 9000"
    path.write_text(json.dumps(doc))
    write(pytester, ("test_a", BIG, ""))  # a regression that must not be judged across devices
    result = run(pytester, cache, "--tl-baseline", "base.json", "--junitxml", "j.xml",
                 "-W", TILELANG_313_FILTER)
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*GateWarning*Imaginary Accelerator 9000*not compared*"])
    assert props(pytester.path / "j.xml")["test_a"]["tl_gate"] == "skipped"
    strict = run(pytester, cache, "--tl-baseline", "base.json", "--tl-strict-baseline")
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines(["*test_a*Imaginary Accelerator 9000*--tl-strict-baseline*"])


@pytest.mark.slow
def test_speedup_metric_under_xdist(pytester, cache):
    """Baseline written by the controller only; failures and gate rows cross from the workers."""
    write(pytester, ("test_a", 0, ""), ("test_b", 0, ""))
    run(pytester, cache, "-n", "2", "--tl-save-baseline", "base.json").assert_outcomes(passed=2)
    assert set(json.loads((pytester.path / "base.json").read_text())["tests"]) == {
        "test_k.py::test_a", "test_k.py::test_b"}
    # test_b, unchanged, passes whatever the runner's load does to it (its own threshold); the subject
    # is the speedup metric's verdicts crossing from the workers, not the machine's steadiness.
    write(pytester, ("test_a", BIG, ""), ("test_b", 0, ", max_regression=1000"))
    result = run(pytester, cache, "-n", "2", "--tl-baseline", "base.json", "--tl-gate-metric", "speedup",
                 "--tl-max-regression", "40", "--tl-json", "out.json")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_k.py::test_a regressed (latency relative to ref_prog*",
                                 "*speedup over ref_prog: baseline *x, now *x"])
    gates = {r["id"]: r["gate"]["status"] for r in json.loads((pytester.path / "out.json").read_text())["tests"]}
    assert gates == {"test_k.py::test_a": "fail", "test_k.py::test_b": "pass"}


def test_baseline_file_errors_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="does not exist; write one with --tl-save-baseline"):
        files.load_baseline(str(tmp_path / "nope.json"))
    (tmp_path / "old.json").write_text(json.dumps({"format": 99, "tests": {}}))
    with pytest.raises(ValueError, match="format 99"):
        files.load_baseline(str(tmp_path / "old.json"))


def test_baseline_document_merges_and_keeps_samples():
    rows = [{"nodeid": "t.py::a", "samples": [1.0, 2.0], "ref_samples": [3.0], "latency_ms": 1.5,
             "device_name": "cpu-x", "config": {"b": 1}}]
    doc = gate.baseline_document(rows, {"format": 1, "tests": {"t.py::old": {"samples": [9.0]}}})
    assert set(doc["tests"]) == {"t.py::a", "t.py::old"}
    assert doc["tests"]["t.py::a"]["samples"] == [1.0, 2.0]
    assert json.loads(files.dump_readable(doc)) == doc


# ----------------------------------------------------------------------------- the decision rule


def noisy(median: float, n: int = 20, seed: int = 0, spread: float = 0.05) -> list[float]:
    rng = random.Random(seed)
    return [median * (1 + rng.uniform(-spread, spread)) for _ in range(n)]


def side(samples, ref=None, device="cpu-x", measured="this run (cpu time)"):
    return {"samples": samples, "ref_samples": ref or [], "device_name": device, "measured": measured}


@pytest.mark.parametrize(("factor", "status"), [(1.0, "pass"), (1.3, "fail"), (1.08, "pass"), (0.7, "improved")])
def test_decide_thresholds(factor, status):
    d = gate.decide(side(noisy(1.0)), side(noisy(factor, seed=1)), threshold_pct=10, alpha=0.01)
    assert d["status"] == status
    assert d["ratio_ci"][0] <= d["ratio"] <= d["ratio_ci"][1]


def test_decide_needs_significance_not_just_a_ratio():
    # Medians 15% apart, but two overlapping wide distributions and few samples: no verdict of fail
    # (and too noisy to say a 10% change would show: undetectable, not pass).
    base = [1.0, 3.0, 1.1, 2.9, 1.2, 2.8]
    now = [1.3, 3.1, 1.25, 3.0, 2.0, 2.6]
    d = gate.decide(side(base), side(now), threshold_pct=10, alpha=0.01)
    assert d["ratio"] > 1.1 and d["status"] == "undetectable" and d["p_value"] >= 0.01
    assert gate.decide(side(base), side(now), threshold_pct=1000, alpha=0.01)["status"] == "pass"


def test_decide_insufficient_samples_never_fails():
    d = gate.decide(side([1.0] * 4), side([3.0] * 4), threshold_pct=10, alpha=0.01)
    assert d["status"] == "skipped" and d["reason"].startswith("insufficient samples")


def test_speedup_metric_survives_a_uniformly_slower_runner():
    base = side(noisy(1.0), noisy(10.0, seed=2))
    slower_runner = side([2 * x for x in noisy(1.0, seed=3)], [2 * x for x in noisy(10.0, seed=4)])
    assert gate.decide(base, slower_runner, threshold_pct=10, alpha=0.01)["status"] == "fail"
    d = gate.decide(base, slower_runner, threshold_pct=10, alpha=0.01, metric="speedup")
    assert d["status"] == "pass" and abs(d["regression_pct"]) < 10


def test_a_regression_fails_only_when_every_timing_regressed():
    """--tl-gate-confirm: a row that would fail is timed again; a slow moment of the runner passes,
    a slower kernel fails each time. The row keeps the numbers the gate decided on."""
    base = {"t.py::a": side(noisy(1.0)), "t.py::b": side(noisy(1.0, seed=5)), "t.py::c": side(noisy(1.0, seed=6))}
    rows = [{"nodeid": f"t.py::{n}", **side(noisy(1.66, seed=i + 1))} for i, n in enumerate("abc")]
    later = {"t.py::a": noisy(1.01, seed=7), "t.py::b": noisy(1.5, seed=8)}  # c cannot be timed again
    asked = []

    def retime(rid):
        asked.append(rid)
        if rid not in later:
            raise RuntimeError("the timing worker died")
        return {"samples": later[rid], "latency_ms": 0.0}

    out = gate.judge(rows, base, "base.json", metric="latency", alpha=0.01, threshold_pct=10, strict=False,
                     confirm=2, retime=retime)
    a, b, c = (row["gate"] for row in rows)
    assert a["status"] == "pass" and [t["status"] for t in a["timings"]] == ["fail", "pass"]
    assert a["reason"].startswith("a first timing read +6") and a["reason"].endswith(": not confirmed")
    assert rows[0]["samples"] == later["t.py::a"] and set(out.retimed) == {"t.py::a", "t.py::b"}
    assert b["status"] == "fail" and [t["status"] for t in b["timings"]] == ["fail", "fail", "fail"]
    assert c["status"] == "fail" and "could not time it again to confirm: RuntimeError: the timing worker died" in c[
        "reason"]
    assert asked == ["t.py::a", "t.py::b", "t.py::b", "t.py::c"]  # b: confirm=2 timings more, then it fails
    assert len(out.failures) == 2 and "every timing in this run regressed: +6" in out.failures[0]
    # --tl-gate-confirm 0: the first timing decides
    rows = [{"nodeid": "t.py::a", **side(noisy(1.66, seed=1))}]
    out = gate.judge(rows, base, "base.json", metric="latency", alpha=0.01, threshold_pct=10, strict=False,
                     confirm=0, retime=retime)
    assert rows[0]["gate"]["status"] == "fail" and "timings" not in rows[0]["gate"] and not out.retimed


def test_gate_lines_and_row_ids():
    rows = [{"nodeid": "t.py::a"}, {"nodeid": "t.py::a"}, {"nodeid": "t.py::b"}]
    assert gate.row_ids(rows) == ["t.py::a", "t.py::a[call 2]", "t.py::b"]
    assert terminal.gate_lines(rows) == []


def test_decide_never_compares_wall_clock_with_cpu_time():
    old = side(noisy(1.0), measured="this run")  # a CPU baseline timed by wall clock
    d = gate.decide(old, side(noisy(3.0, seed=1)), threshold_pct=10, alpha=0.01)
    assert d["status"] == "skipped" and "wall clock" in d["reason"] and "--tl-save-baseline" in d["reason"]
    assert gate.decide(old, side(noisy(3.0, seed=1)), threshold_pct=10, alpha=0.01, strict=True)["status"] == "fail"
    assert gate.decide(old, side(noisy(3.0, seed=1), measured="this run"), threshold_pct=10, alpha=0.01)[
        "status"] == "fail"
    assert gate.is_fresh(None) and gate.is_fresh("this run (cpu time)") and not gate.is_fresh("stored")


def test_cpu_clock_leaves_out_waiting():
    """What kept the gate from failing A/A runs on a loaded runner: time spent off the CPU is not counted."""
    import time

    from pytest_tlautotune.engine.bench import time_fn

    wall, _ = time_fn(lambda: time.sleep(0.02), None, "cpu", rep=3, warmup=0)
    cpu, _ = time_fn(lambda: time.sleep(0.02), None, "cpu", rep=3, warmup=0, clock="cpu")
    assert min(wall) >= 19 and max(cpu) < 5
