"""A run that cannot do what it was asked says so: stable test ids whatever pytest's rootdir, a gate
that compared nothing, failed tunings in every report, a reference that does not fit the kernel.

Inner runs use the real TileLang CPU GEMM of ``examples/kernels_cpu.py`` (target "c").
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from kernel_sources import KERNELS, TILELANG_313_FILTER

TUNE = '''
import pytest
from kernels import gemm

TUNE = dict(configs=[dict(bm=16, bn=16, bk=16), dict(bm=32, bn=32, bk=16)], target="c", out_idx=[-1], warmup=2,
            rep=10)


@pytest.mark.autotune(**TUNE, ref_prog=lambda A, B: A @ B)
def test_a(autotune):
    autotune(gemm, 64, 64, 64)
'''

FAILING = '''
import pytest
from kernels import gemm

TUNE = dict(configs=[dict(bm=16, bn=16, bk=16), dict(bm=32, bn=32, bk=16)], target="c", out_idx=[-1], warmup=2,
            rep=10)


@pytest.mark.autotune(**TUNE, ref_prog=lambda A, B, C: A @ B)  # C is the output: the kernel takes A and B
def test_arity(autotune):
    autotune(gemm, 64, 64, 64)


@pytest.mark.autotune(**TUNE, ref_prog=lambda A, B: (A @ B)[:32])  # half the rows of C
def test_shape(autotune):
    autotune(gemm, 64, 64, 64)


@pytest.mark.autotune(**TUNE, ref_prog=lambda A, B: A @ B)
def test_every_candidate_wrong(autotune):
    autotune(gemm, 64, 64, 64, bug_when_bk=16)  # both configs drop a k-step
'''


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache for the module, outside every pytester directory."""
    return tmp_path_factory.mktemp("tlcache")


def cases(xml_path) -> dict[str, ET.Element]:
    return {case.get("name"): case for case in ET.parse(xml_path).getroot().iter("testcase")}


def props(xml_path) -> dict[str, dict[str, str]]:
    return {name: {p.get("name"): p.get("value") for p in case.iter("property")}
            for name, case in cases(xml_path).items()}


@pytest.mark.slow
def test_baseline_and_cache_outside_the_project_in_space_form_judge_every_test(pytester, cache, tmp_path_factory):
    """As the README's CI example writes it (``--tl-baseline FILE``), with the files elsewhere: pytest
    takes each value for a test path and roots at the common parent, without the project's ini file."""
    pytester.makepyfile(kernels=KERNELS, test_k=TUNE)
    pytester.makeini("[pytest]\ntl_gate_metric = speedup\n")  # a tl_* setting only this ini file gives
    outside = tmp_path_factory.mktemp("outside")
    base = outside / "base.json"
    saved = pytester.runpytest("-p", "no:cacheprovider", "--tl-cache-dir", str(cache),
                               "--tl-save-baseline", str(base),
                               "-W", TILELANG_313_FILTER)
    saved.assert_outcomes(passed=1, warnings=1)
    saved.stdout.fnmatch_lines([f"*RootdirWarning: pytest chose the rootdir *Write `--tl-cache-dir={cache}`*"])
    assert set(json.loads(base.read_text())["tests"]) == {"test_k.py::test_a"}

    result = pytester.runpytest("-p", "no:cacheprovider", "--tl-cache-dir", str(cache), "--tl-baseline", str(base),
                                "--tl-max-regression=1000", f"--tl-json={outside / 'out.json'}",
                                f"--junitxml={outside / 'j.xml'}",
                                "-W", TILELANG_313_FILTER)
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines([f"*--tl-baseline={base}*"])
    assert props(outside / "j.xml")["test_a"]["tl_gate"] == "pass"
    doc = json.loads((outside / "out.json").read_text())
    row = doc["tests"][0]
    assert row["id"] == "test_k.py::test_a" and row["gate"]["in_baseline"] is True
    assert row["nodeid"] != row["id"]  # pytest's own node id has the directory in front
    # The tl_* settings of the project's ini file count although pytest did not read that file.
    assert doc["gate_metric"] == "speedup" and row["gate"]["metric"] == "speedup"
    result.stdout.fnmatch_lines(["speedup = ref_prog latency / kernel latency*"])
    assert "none of the" not in result.stdout.str()


def test_a_gate_that_matches_no_test_warns_and_fails_strict(pytester, cache):
    pytester.makepyfile(kernels=KERNELS, test_k=TUNE)
    pytester.makeini("[pytest]\n")
    base = pytester.path / "base.json"
    base.write_text(json.dumps({"format": 1, "tests": {"elsewhere/test_k.py::test_a": {"samples": [1.0]}}}))
    args = ("-p", "no:cacheprovider", f"--tl-cache-dir={cache}", f"--tl-baseline={base}")
    result = pytester.runpytest(*args, "--tl-markdown=out.md", "--tl-json=out.json")
    result.assert_outcomes(passed=1)
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "*tlautotune latency gate*",
        "WARNING: tlautotune gate: none of the 1 test(s) of this run is in the baseline *base.json (its 1 test(s) "
        "are named like elsewhere/test_k.py::test_a; this run's like test_k.py::test_a): nothing was compared*",
    ])
    assert "nothing was compared" in (pytester.path / "out.md").read_text()
    assert "nothing was compared" in json.loads((pytester.path / "out.json").read_text())["notes"][0]

    strict = pytester.runpytest(*args, "--tl-strict-baseline")
    strict.assert_outcomes(passed=1)
    assert strict.ret == pytest.ExitCode.TESTS_FAILED
    strict.stdout.fnmatch_lines(["WARNING: tlautotune gate: none of the 1 test(s)*(--tl-strict-baseline: the run fails)"
                                 ])


def test_failed_tunings_are_rows_everywhere_and_reference_faults_name_out_idx(pytester, tmp_path):
    pytester.makepyfile(kernels=KERNELS, test_f=FAILING)
    out = tmp_path / "out"
    result = pytester.runpytest("-p", "no:cacheprovider", f"--tl-cache-dir={tmp_path / 'cache'}",
                                f"--tl-json={out / 'out.json'}", f"--tl-markdown={out / 'out.md'}",
                                f"--tl-report={out / 'report'}", f"--junitxml={out / 'j.xml'}")
    result.assert_outcomes(failed=3)
    text = result.stdout.str()

    # A reference that cannot take the kernel's inputs: its fault, once, naming out_idx and the parameters.
    result.stdout.fnmatch_lines([
        "test_f.py::test_arity: ref_prog: ReferenceMismatch: ref_prog cannot take the kernel's 2 input(s) "
        "(missing a required argument: 'C'); out_idx=[[]-1[]]: the kernel takes A[[]64, 64[]], B[[]64, 64[]] and "
        "returns C[[]64, 64[]]*",
        "test_f.py::test_shape: ref_prog: ReferenceMismatch: ref_prog's output 0 has shape [[]32, 64[]] but the "
        "kernel's output C has [[]64, 64[]]; out_idx=[[]-1[]]*",
    ])
    failures = {name: case.find("failure").get("message") for name, case in cases(out / "j.xml").items()}
    assert failures["test_arity"].count("ref_prog cannot take") == 1  # once, not once per candidate
    assert failures["test_shape"].count("ref_prog's output 0 has shape") == 1
    assert "mismatch" not in failures["test_shape"] and "nothing else was measured" in failures["test_shape"]
    assert "takes 3 positional arguments" not in text

    # Every call that tried to tune is a row of the summary, with why it failed.
    result.stdout.fnmatch_lines([
        "*tlautotune summary*",
        "test_f.py::test_arity  *-  *failed  *0/0",
        "test_f.py::test_every_candidate_wrong  *-  *failed  *0/2",
        "test_f.py::test_shape  *-  *failed  *0/0",
        "  test_f.py::test_arity: tuning failed: ref_prog: ReferenceMismatch: *",
        "  test_f.py::test_every_candidate_wrong: tuning failed: no candidate passed: 2 of 2 configs measured*",
    ])
    doc = json.loads((out / "out.json").read_text())
    rows = {r["id"]: r for r in doc["tests"]}
    assert set(rows) == {"test_f.py::test_arity", "test_f.py::test_shape", "test_f.py::test_every_candidate_wrong"}
    assert all(r["status"] == "failed" and r["latency_ms"] is None for r in rows.values())
    assert "out_idx=[-1]" in rows["test_f.py::test_arity"]["reason"]
    wrong = rows["test_f.py::test_every_candidate_wrong"]
    assert [c["status"] for c in wrong["candidates"]] == ["mismatch", "mismatch"]
    assert all("elements mismatch" in c["reason"] for c in wrong["candidates"])
    assert props(out / "j.xml")["test_arity"]["tl_failed"].startswith("ref_prog: ReferenceMismatch:")

    md = (out / "out.md").read_text()
    assert md.count("❌ tuning failed") == 3
    html = (out / "report" / "index.html").read_text()
    assert "No test called the autotune fixture" not in html and "3 of them failed" in html
    for name in rows:
        section = html[html.index(f"<h2>{name}</h2>"):]
        section = section[:section.index("</section>")]
        assert "<strong>Tuning failed</strong>" in section
    assert "out_idx=[-1]: the kernel takes A[64, 64], B[64, 64] and returns C[64, 64]" in html
