"""Performance over time: every run appended to a history (a real SQLite file, a real Redis
server), judged against its recent best, its level step found, shown by the CLI.

Inner runs use the real TileLang CPU GEMM of ``examples/kernels_cpu.py`` (target "c"); a slowdown
is injected in the kernel itself (``extra``, as in ``test_gate.py``).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest
from kernel_sources import KERNELS, TILELANG_313_FILTER

KERNEL = '''
import os
import pytest
from kernels import gemm

EXTRA = int(os.environ.get("EXTRA", "0"))


@pytest.mark.autotune(configs=[dict(bm=16, bn=16, bk=16)], target="c", out_idx=[-1],
                      ref_prog=lambda A, B: A @ B, warmup=2, rep=20)
def test_gemm(autotune):
    autotune(gemm, 64, 64, 64, extra=EXTRA)


@pytest.mark.autotune(configs=[dict(bm=32, bn=32, bk=32)], target="c", out_idx=[-1],
                      ref_prog=lambda A, B: A @ B, warmup=2, rep=20)
def test_other(autotune):
    autotune(gemm, 64, 64, 64)
'''

BIG = 128  # several times slower: far beyond the gate threshold the slowdown test sets


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tlcache")


@pytest.fixture
def project(pytester):
    pytester.makepyfile(kernels=KERNELS, test_k=KERNEL)
    pytester.makeini("[pytest]\n")
    subprocess.run(["git", "init", "-q"], cwd=pytester.path, check=True)
    return pytester


def commit(pytester, message: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "add", "-A"], cwd=pytester.path, check=True)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", message], cwd=pytester.path, check=True,
                   env={**os.environ, **env})
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=pytester.path, capture_output=True, text=True,
                          check=True).stdout.strip()


def run(pytester, cache, *args):
    return pytester.runpytest_subprocess(f"--tl-cache-dir={cache}", "-p", "no:cacheprovider", *args)


def rows(db) -> list[dict]:
    con = sqlite3.connect(db)
    try:
        return [json.loads(d) for (d,) in con.execute("SELECT data FROM runs ORDER BY date, id")]
    finally:
        con.close()


def cli(pytester, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest_tlautotune", "history", *args], cwd=pytester.path,
                          capture_output=True, text=True, timeout=120)


# ----------------------------------------------------------------------------- inner runs


@pytest.mark.slow  # several inner runs, each tuning
def test_every_run_is_appended_with_commit_and_machine(project, cache):
    sha = commit(project, "first")
    project.makefile(".ini", pytest="[pytest]\ntl_history = hist.db\n")  # relative to the ini file
    result = run(project, cache, "-n", "2")  # two xdist workers: the controller writes every row once
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([f"tlautotune history: 2 row(s) appended to sqlite:///*hist.db (commit {sha[:12]})"])
    run(project, cache).assert_outcomes(passed=2)  # a warm run: re-timed, appended too
    got = rows(project.path / "hist.db")
    assert sorted(r["test"] for r in got) == ["test_k.py::test_gemm"] * 2 + ["test_k.py::test_other"] * 2
    for r in got:
        assert r["commit"] == sha and r["branch"] in ("master", "main")
        assert len(r["samples"]) == 20 and r["measured"] in ("this run", "this run (cpu time)")
        assert r["machine"] == got[0]["machine"] and r["machine_info"]["device_kind"] == "cpu"
    assert len({r["run"] for r in got}) == 2  # two runs, each one transaction
    shown = cli(project, "show")
    assert shown.returncode == 0, shown.stderr
    assert "test_k.py::test_gemm" in shown.stdout and "(2 runs)" in shown.stdout
    one = cli(project, "show", "test_gemm")
    assert one.returncode == 0 and one.stdout.count(sha[:10]) == 2


@pytest.mark.slow  # several inner runs, each tuning
def test_gate_against_history_fails_a_slowdown_and_names_the_history(project, cache, monkeypatch):
    project.makefile(".ini", pytest="[pytest]\ntl_history = hist.db\n")
    run(project, cache).assert_outcomes(passed=2)
    run(project, cache).assert_outcomes(passed=2)
    monkeypatch.setenv("EXTRA", str(BIG))
    # A 75% threshold: an unchanged kernel was seen +34% off its best on a loaded 2-core runner.
    result = run(project, cache, "--tl-gate-against", "history", "--tl-max-regression", "75")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_k.py::test_gemm regressed*the history*hist.db (best of 14 days)*"])
    assert len(rows(project.path / "hist.db")) == 6  # the failing run is history too


@pytest.mark.slow  # several inner runs, each tuning
def test_an_unreadable_history_never_fails_a_test(project, cache):
    (project.path / "hist.db").write_bytes(b"SQLite format 3\x00" + b"\x07" * 300)  # a truncated file
    result = run(project, cache, "--tl-history", "hist.db", "--tl-gate-against", "history", "-W", "error",
                     "-W", TILELANG_313_FILTER)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["tlautotune history: 2 row(s) appended to *hist.db*",
                                 "*test_k.py::test_gemm: skipped: the history could not be read*"])
    aside = list(project.path.glob("hist.db.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"SQLite format 3")  # kept for the user
    assert len(rows(project.path / "hist.db")) == 2
    unreachable = run(project, cache, "--tl-history", "redis://127.0.0.1:1/0", "--tl-store-timeout", "0.5")
    unreachable.assert_outcomes(passed=2)
    unreachable.stdout.fnmatch_lines(["tlautotune history: this run's 2 row(s) were not recorded: *127.0.0.1:1*"])


@pytest.mark.slow  # several inner runs, each tuning
def test_redis_history(project, cache, store):
    result = run(project, cache, "--tl-history", store.url, "-n", "2")
    result.assert_outcomes(passed=2)
    keys = sorted(k.decode() for k in store.client.scan_iter("tlautotune:history:test_k*"))
    assert keys == ["tlautotune:history:test_k.py::test_gemm", "tlautotune:history:test_k.py::test_other"]
    shown = cli(project, "show", "--history", store.url)
    assert shown.returncode == 0 and "test_k.py::test_other" in shown.stdout, shown.stderr


# ----------------------------------------------------------------------------- the store, many writers

WRITER = '''
import sys, time
from pytest_tlautotune.history import RunContext, entry, open_history

url, who = sys.argv[1], sys.argv[2]
history = open_history(url, 10.0)
for i in range(40):
    run = RunContext(f"{who}-{i}", time.time(), "c" * 40, "main")
    history.append([entry({"id": f"t{j}", "samples": [1.0, 1.1], "latency_ms": 1.0, "machine": {}}, run)
                    for j in range(5)])
history.close()
'''


def _two_writers(url, tmp_path):
    (tmp_path / "writer.py").write_text(WRITER)
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "writer.py"), url, who]) for who in "ab"]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]


def test_two_processes_append_to_sqlite_at_once_and_lose_nothing(tmp_path):
    _two_writers(str(tmp_path / "h.db"), tmp_path)
    got = rows(tmp_path / "h.db")
    assert len(got) == 2 * 40 * 5
    by_run = {}
    for r in got:
        by_run.setdefault(r["run"], []).append(r["test"])
    assert len(by_run) == 80 and all(sorted(t) == [f"t{j}" for j in range(5)] for t in by_run.values())


def test_two_processes_append_to_redis_at_once_and_lose_nothing(tmp_path, store):
    _two_writers(store.url, tmp_path)
    lengths = [store.client.llen(f"tlautotune:history:t{j}") for j in range(5)]
    assert lengths == [80] * 5


# ----------------------------------------------------------------------------- the step

SERIES = '''
import sys, random
from pytest_tlautotune.history import RunContext, entry, open_history

random.seed(7)
history = open_history(sys.argv[1])
for i in range(10):
    level = 1.3 if i >= 7 else 1.0  # the 8th run is 30% slower, and so are the two after it
    samples = [level * random.uniform(0.97, 1.03) for _ in range(20)]
    run = RunContext(f"run{i}", 1_000 + i, f"{i:02d}" + "f" * 38, "main")
    history.append([entry({"id": "test_k.py::test_gemm", "samples": samples, "latency_ms": level,
                           "machine": {"device": "cpu0"}}, run),
                    entry({"id": "test_k.py::test_flat", "samples": [0.5, 0.51], "latency_ms": 0.5,
                           "machine": {"device": "cpu0"}}, run)])
'''


def test_history_regressions_names_the_run_where_the_level_stepped(tmp_path):
    script = tmp_path / "series.py"
    script.write_text(SERIES)
    subprocess.run([sys.executable, str(script), str(tmp_path / "h.db")], check=True, timeout=120)
    out = subprocess.run([sys.executable, "-m", "pytest_tlautotune", "history", "regressions", "--history",
                          str(tmp_path / "h.db"), "--window", "100000"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr  # regressions found: non-zero, for CI
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("test_k.py::test_gemm"), out.stdout
    assert "stepped +" in lines[0] and "at run 8 " in lines[0] and "commit 07ffffffff" in lines[0]
    png = tmp_path / "gemm.png"
    plotted = subprocess.run([sys.executable, "-m", "pytest_tlautotune", "history", "plot", "test_gemm", "-o",
                              str(png), "--history", str(tmp_path / "h.db"), "--window", "100000"],
                             capture_output=True, text=True, timeout=120)
    assert plotted.returncode == 0, plotted.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_find_step_is_the_first_run_at_the_new_level():
    from pytest_tlautotune.history.trend import find_step

    def runs(levels):
        return [{"samples": [v, v * 1.01], "latency_ms": v, "date": i} for i, v in enumerate(levels)]

    assert find_step(runs([1.0] * 7 + [1.3] * 3), 10).index == 7
    assert find_step(runs([1.0, 1.02, 0.99, 1.01, 1.0]), 10) is None
    assert find_step(runs([2.0] * 4 + [1.0] * 4), 10).change_pct == pytest.approx(-50, abs=1)


@pytest.mark.slow  # several inner runs, each tuning
def test_throughput_from_the_work_the_marker_gives(pytester, cache):
    pytester.makepyfile(kernels=KERNELS, test_w='''
import pytest
from kernels import gemm


@pytest.mark.autotune(configs=[dict(bm=16, bn=16, bk=16)], target="c", out_idx=[-1], ref_prog=lambda A, B: A @ B,
                      warmup=1, rep=3, flops=lambda M, N, K: 2 * M * N * K, bytes=4 * 3 * 64 * 64)
def test_work(autotune, record_property):
    r = autotune(gemm, 64, 64, 64)
    record_property("expected_tflops", 2 * 64 ** 3 / (r.latency * 1e-3) / 1e12)


@pytest.mark.autotune(flops="a lot")
def test_bad(autotune):
    pass
''')
    pytester.makeini("[pytest]\n")
    bad = pytester.runpytest_subprocess(f"--tl-cache-dir={cache}", "-p", "no:cacheprovider", "-k", "test_bad")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*test_w.py::test_bad: @pytest.mark.autotune: argument 'flops' must be a number > 0 "
                              "or a callable of the program's arguments, got 'a lot'*"])
    result = pytester.runpytest_subprocess(f"--tl-cache-dir={cache}", "-p", "no:cacheprovider", "--junitxml=j.xml",
                                           "-k", "test_work")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["  test_w.py::test_work: * TFLOP/s, * GB/s"])
    import xml.etree.ElementTree as ET

    case = next(c for c in ET.parse(pytester.path / "j.xml").getroot().iter("testcase") if c.get("name") == "test_work")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert float(props["tl_tflops"]) == pytest.approx(float(props["expected_tflops"]), rel=1e-3)
    assert float(props["tl_gbps"]) > 0


@pytest.mark.slow  # several inner runs, each tuning
def test_reports_show_each_tests_trend(project, cache):
    project.makefile(".ini", pytest="[pytest]\ntl_history = hist.db\n")
    for _ in range(2):
        run(project, cache, "-k", "test_gemm").assert_outcomes(passed=1)
    result = run(project, cache, "-k", "test_gemm", "--tl-markdown", "sum.md", "--tl-report", "report")
    result.assert_outcomes(passed=1)
    md = (project.path / "sum.md").read_text()
    assert "| trend (run medians) |" in md
    row = next(line for line in md.splitlines() if line.startswith("| `test_k.py::test_gemm`"))
    assert "(3 runs)" in row and "→" in row
    page = (project.path / "report" / "index.html").read_text()
    assert 'alt="history of test_k.py::test_gemm" src="data:image/png;base64,' in page
