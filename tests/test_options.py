"""Options checked at start-up, markers validated only for the tests that run, cache-dir resolution."""

import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from kernel_sources import TILELANG_313_FILTER

ADD_TEST = """
import pytest, torch
import kernels

@pytest.mark.autotune(configs=[dict(bm=16, bn=16)], target="c", out_idx=[-1], warmup=1, rep=3{extra})
def test_add(autotune):
    result = autotune(kernels.elementwise_add, 32, 32)
    A, B = torch.randn(32, 32), torch.randn(32, 32)
    torch.testing.assert_close(result.kernel(A, B), A + B)
"""


def add_test(extra=", ref_prog=lambda A, B: A + B"):
    return ADD_TEST.format(extra=extra)


def usage_error(result, *lines):
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    result.stderr.fnmatch_lines(list(lines))


@pytest.mark.parametrize(("args", "message"), [
    (["--tl-workers=0"], "*--tl-workers (ini tl_workers, env TL_AUTOTUNE_WORKERS): 0 is not accepted; "
                         "give a number of processes >= 1, or -1 for one per CPU core*"),
    (["--tl-workers=-2"], "*--tl-workers*-2 is not accepted*-1 for one per CPU core*"),
    (["--tl-workers=many"], "*--tl-workers*'many' is not valid*-1 for one per CPU core*"),
    (["--tl-gpus=some"], "*--tl-gpus (ini tl_gpus, env TL_AUTOTUNE_GPUS): 'some' is not accepted; give all, one, "
                         "or comma-separated GPU indices such as 0,1*"),
    (["--tl-device-compiler=clang"], "*--tl-device-compiler*'clang' is not accepted; give auto, nvcc or nvrtc*"),
    (["--tl-gate-metric=bogus"], "*--tl-gate-metric*'bogus' is not accepted; give 'latency'*or 'speedup'*"),
    (["--tl-max-regression", "-5"], "*--tl-max-regression*-5.0 is not accepted; give a percentage > 0*"),
    (["--tl-alpha=1.5"], "*--tl-alpha*1.5 is not accepted; give a significance level between 0 and 0.5*"),
    (["--tl-alpha=0"], "*--tl-alpha*0.0 is not accepted*"),
    (["--tl-report=afile"], "*--tl-report*'afile' is not accepted; give a directory*not an existing file*"),
    (["--tl-json=adir"], "*--tl-json*'adir' is not accepted; give a file path (not a directory)*"),
])
def test_bad_options_are_usage_errors_at_start_up(pytester, args, message):
    pytester.path.joinpath("afile").write_text("x")
    pytester.mkdir("adir")
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    usage_error(pytester.runpytest("-p", "no:cacheprovider", *args), message)


def test_ini_and_environment_twins_are_checked_too(pytester, monkeypatch):
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    pytester.makeini("[pytest]\ntl_workers = 0\n")
    usage_error(pytester.runpytest("-p", "no:cacheprovider"), "*--tl-workers*0 is not accepted*")
    pytester.makeini("[pytest]\n")
    monkeypatch.setenv("TL_AUTOTUNE_WORKERS", "-3")
    usage_error(pytester.runpytest("-p", "no:cacheprovider"), "*--tl-workers*-3 is not accepted*")
    monkeypatch.delenv("TL_AUTOTUNE_WORKERS")
    monkeypatch.setenv("TL_AUTOTUNE_RETUNE", "perhaps")
    usage_error(pytester.runpytest("-p", "no:cacheprovider"), "*--tl-retune*'perhaps' is not valid; give one of 1, "
                                                              "true, yes, on, 0, false, no, off*")


@pytest.mark.slow
def test_all_cores_workers_tune(tl, pytester):
    # -1 reached pebble as max_workers=-1 and the run hung without a line of output.
    pytester.makepyfile(test_k=add_test())
    argv = [f"--tl-cache-dir={tl.cache_dir}", "-p", "no:cacheprovider", "--tl-workers=-1"]
    pytester.runpytest_subprocess(*argv, timeout=240).assert_outcomes(passed=1)


BAD_MARKER = """
import pytest

@pytest.mark.autotune(configs=[dict(bm=16)], rtool=0.1)
def test_bad(autotune):
    pass

def test_good():
    pass
"""


@pytest.mark.parametrize("select", [["-k", "good"], pytest.param(["-m", "not autotune"], marks=pytest.mark.slow),
                                    pytest.param(["--deselect", "test_m.py::test_bad"], marks=pytest.mark.slow)])
def test_bad_marker_on_a_deselected_test_does_not_abort_the_run(pytester, select):
    pytester.makepyfile(test_m=BAD_MARKER)
    result = pytester.runpytest("-p", "no:cacheprovider", *select)
    result.assert_outcomes(passed=1, deselected=1)
    # A bad marker on a test that runs still fails the run, naming the test and the argument.
    usage_error(pytester.runpytest("-p", "no:cacheprovider"),
                "*test_m.py::test_bad: @pytest.mark.autotune: unknown argument 'rtool'; did you mean 'rtol'?*")


SHOW_DIR = """
from pytest_tlautotune.plugin import cache_dir
def test_dir(request):
    print("DIR=" + cache_dir(request.config))
"""


def test_relative_cache_dir_in_ini_is_relative_to_the_ini_file(pytester, monkeypatch):
    pytester.makeini("[pytest]\ntl_cache_dir = .tlcache\n")
    sub = pytester.mkdir("tests")
    sub.joinpath("test_dir.py").write_text(SHOW_DIR)
    root = pytester.path
    pytester.runpytest("-s", "-p", "no:cacheprovider").stdout.fnmatch_lines([f"*DIR={root}/.tlcache"])
    monkeypatch.chdir(sub)
    pytester.runpytest("-s", "-p", "no:cacheprovider").stdout.fnmatch_lines([f"*DIR={root}/.tlcache"])
    # On the command line: relative to where pytest was invoked; in the environment: to the cwd.
    pytester.runpytest("-s", "-p", "no:cacheprovider", "--tl-cache-dir=mine").stdout.fnmatch_lines(
        [f"*DIR={sub}/mine"])
    pytester.makeini("[pytest]\n")
    monkeypatch.setenv("TL_AUTOTUNE_CACHE_DIR", "envcache")
    pytester.runpytest("-s", "-p", "no:cacheprovider").stdout.fnmatch_lines([f"*DIR={sub}/envcache"])


TWO_ADDS = """
import pytest, torch
import kernels

SETTINGS = dict(configs=[dict(bm=16, bn=16)], target="c", out_idx=[-1], warmup=1, rep=3)

@pytest.mark.autotune(**SETTINGS, ref_prog=lambda A, B: A + B)
def test_checked(autotune):
    autotune(kernels.elementwise_add, 32, 32)

@pytest.mark.autotune(**SETTINGS)
def test_unchecked(autotune):
    autotune(kernels.elementwise_add, 16, 16)
"""


@pytest.mark.slow
def test_log_output_keeps_pytests_lines_and_says_unchecked(tl, pytester):
    # pytester's output is not a terminal, as a CI log is not.
    pytester.makepyfile(test_k=TWO_ADDS)
    json_path = pytester.path / "out.json"
    result = tl.run(f"--tl-json={json_path}")
    result.assert_outcomes(passed=2)
    progress = [line for line in result.stdout.lines if line.startswith("test_k.py ")]
    assert len(progress) == 1 and re.fullmatch(r"test_k\.py \.\. +\[100%\]", progress[0]), progress
    assert "[tlautotune]" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*test_k.py::test_checked *1/1", "*test_k.py::test_unchecked *1/1 unchecked"])
    rows = {row["nodeid"].split("::")[1]: row for row in json.loads(json_path.read_text())["tests"]}
    assert rows["test_checked"]["check"] == "checked" and rows["test_unchecked"]["check"] == "unchecked"

    # -v: one line per tuning, after pytest's own line for the test.
    result = tl.run("-v", "--tl-retune")
    result.stdout.fnmatch_lines([
        "test_k.py::test_checked PASSED*",
        "[[]tlautotune[]] test_k.py::test_checked: 1/1 measured, 1 passed, best *",
        "test_k.py::test_unchecked PASSED*",
        "[[]tlautotune[]] test_k.py::test_unchecked: 1/1 measured, 1 passed, best *",
        "*test_k.py::test_unchecked: unchecked: no ref_prog or manual_check_prog*",
    ])

    # A long tuning writes a line now and then under -v (every LOG_EVERY_S; 0 here: every event).
    pytester.makeconftest("""
import pytest_tlautotune.report.terminal as terminal

SAVED = terminal.LOG_EVERY_S


def pytest_configure(config):
    terminal.LOG_EVERY_S = 0.0


def pytest_unconfigure(config):
    terminal.LOG_EVERY_S = SAVED
""")
    result = tl.run("-v", "--tl-retune")
    result.stdout.fnmatch_lines(["test_k.py::test_checked *",
                                 "[[]tlautotune[]] test_k.py::test_checked: (still tuning) *",
                                 "*PASSED*"])
    result = tl.run("--tl-retune")  # without -v: pytest's progress line stays whole
    assert "(still tuning)" not in result.stdout.str()


@pytest.mark.slow
def test_tuning_leaves_nothing_in_tmpdir(tl, pytester, tmp_path, monkeypatch):
    # TileLang's C backend writes tmp*.cpp / tmp*.so per compile in the temp directory and keeps them.
    # A short path: the fork server's socket lives there (AF_UNIX paths are limited to 108 bytes).
    tmpdir = Path(tempfile.mkdtemp(prefix="tlt-"))
    pytester.makepyfile(test_k=add_test().replace("configs=[dict(bm=16, bn=16)]",
                                                  "configs=[dict(bm=16, bn=16), dict(bm=32, bn=32)]"))
    basetemp = tmp_path / "basetemp"  # pytest's own temp folder, kept out of the one we watch
    monkeypatch.setenv("TMPDIR", str(tmpdir))  # for the inner run: this process has read its own already
    result = pytester.run(sys.executable, "-m", "pytest", f"--tl-cache-dir={tl.cache_dir}", "-p", "no:cacheprovider",
                          f"--basetemp={basetemp}", timeout=240)
    try:
        result.assert_outcomes(passed=1)
        assert sorted(p.name for p in tmpdir.iterdir()) == []
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def test_a_run_that_starts_the_fork_server_but_tunes_nothing_leaves_nothing_in_tmpdir(pytester, tmp_path, monkeypatch):
    """A module that mentions autotune starts the fork server at collection (where NVRTC is
    installed it places its PCH heap in a directory of its own, on a GPU machine it writes the
    seeds' PCHs there); after a run that tunes nothing (only hits, or no tuned test selected) the
    server, still importing TileLang when the run ends, removes that directory as it exits."""
    import time

    tmpdir = Path(tempfile.mkdtemp(prefix="tlt-"))  # short: the fork server's socket lives there
    pytester.makepyfile(test_a=PRESTART_PROBE + "\n\n# autotune\n")
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    result = pytester.run(sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:benchmark", "-s",
                          f"--basetemp={tmp_path / 'basetemp'}", timeout=240)
    try:
        result.stdout.fnmatch_lines(["*PRESTARTED True*"])
        deadline = time.monotonic() + 120
        while any(tmpdir.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sorted(p.name for p in tmpdir.iterdir()) == []
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def test_a_quarantined_entry_is_retuned_visibly(tl, pytester):
    pytester.makepyfile(test_k=add_test())
    tl.run().assert_outcomes(passed=1)
    (entry,) = (tl.cache_dir / "entries").iterdir()
    (entry / "best_config.json").write_text("{garbage")
    json_path = pytester.path / "out.json"
    # Exactly one warning of the plugin's: TileLang's own DeprecationWarning on Python 3.13
    # (typing._eval_type without type_params, raised while it builds) is left out of the count.
    result = tl.run(f"--tl-json={json_path}", "-W", TILELANG_313_FILTER)
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines([
        "*QuarantineWarning: test_k.py::test_add: the stored result * was corrupt (*best_config.json does not match*"
        "moved to quarantine and tuned again",
        "*tlautotune summary*",
        "*test_k.py::test_add: the stored result was corrupt and tuned again: *best_config.json*",
    ])
    (row,) = json.loads(json_path.read_text())["tests"]
    assert "best_config.json does not match" in row["quarantined"] and row["cache"] == "miss"
    # Under filterwarnings=error the warning fails the test, but the new result is stored: a hit next.
    (entry / "latency.json").write_text("{garbage")
    error = ("-W", "error::pytest_tlautotune.report.QuarantineWarning")
    tl.run(*error).assert_outcomes(failed=1)
    tl.run(*error).assert_outcomes(passed=1)
    assert tl.prop("test_add", "tl_cache") == ["hit"]


def test_help_and_version_do_not_start_a_session(tmp_path):
    """`pytest --help` stays fast: no session, no store, torch and TileLang not imported."""
    import subprocess
    import sys

    code = ("import sys, io, contextlib, pytest\n"
            "for args in (['--help'], ['--version']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        pytest.main([*args, '-p', 'no:cacheprovider'])\n"
            "print(sorted(m for m in ('pytest_tlautotune.plugin', 'pytest_tlautotune.session', "
            "'pytest_tlautotune.engine.call', 'pytest_tlautotune.devices', 'pytest_tlautotune.store.remote', "
            "'torch', 'tilelang') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "['pytest_tlautotune.plugin']", out.stdout + out.stderr


def test_nvrtc_header_prefixes_are_remembered_beside_the_results_and_for_the_user(pytester, monkeypatch, tmp_path):
    """With --tl-nvrtc-book, a run with its own cache directory (a CI job's, on a runner that stays)
    also remembers NVRTC header prefixes in the user's default cache directory, and reads both: the
    machine's next run writes the PCH ahead whatever cache directory it uses. With the default
    directory, one book. Without the option, no book."""
    import os

    from pytest_tlautotune.engine.device_compile import BOOK_DIR, book_dirs
    from pytest_tlautotune.stash import session_key

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("TL_AUTOTUNE_CACHE_DIR", raising=False)
    user = tmp_path / "xdg" / "tlautotune" / BOOK_DIR
    config = pytester.parseconfigure("-p", "no:benchmark", "--tl-nvrtc-book", f"--tl-cache-dir={tmp_path / 'job'}")
    assert book_dirs(config.stash[session_key].pch_book) == [tmp_path / "job" / BOOK_DIR, user]
    config = pytester.parseconfigure("-p", "no:benchmark", "--tl-nvrtc-book")
    assert config.stash[session_key].pch_book == str(user)
    assert os.pathsep not in config.stash[session_key].pch_book
    # Off by default: no directory remembers anything, the shipped seeds alone are written ahead.
    config = pytester.parseconfigure("-p", "no:benchmark", f"--tl-cache-dir={tmp_path / 'job'}")
    assert config.stash[session_key].pch_book == ""
    assert book_dirs(config.stash[session_key].pch_book) == []


def test_the_shipped_nvrtc_seeds_are_what_the_installed_tilelang_generates():
    """The header prefixes shipped for a machine's first tuning (``nvrtc_seeds.json``) are the ones
    the installed TileLang writes for the probe kernels: stale seeds would write PCHs no candidate
    uses. Regenerate with ``python -m pytest_tlautotune.engine.nvrtc_seeds``."""
    from importlib.metadata import version

    from pytest_tlautotune.engine import device_compile, nvrtc_seeds

    shipped = json.loads(device_compile.SEEDS.read_text())
    if shipped["tilelang"] != version("tilelang"):
        pytest.skip(f"seeds made by TileLang {shipped['tilelang']}, {version('tilelang')} installed: "
                    "python -m pytest_tlautotune.engine.nvrtc_seeds")
    assert device_compile.has_seeds()
    by_arch = {(s["kernel"], arch): s for s in shipped["seeds"] for arch in s["archs"]}
    assert set(by_arch) == {(name, arch) for name, _, _ in nvrtc_seeds.PROBES for arch in nvrtc_seeds.ARCHS}
    for name, make, fast_math in nvrtc_seeds.PROBES:
        seed = by_arch[(name, 90)]
        assert seed["fast_math"] is fast_math
        assert nvrtc_seeds.lowered_prefix(make, 90) == seed["prefix"]
        assert seed["prefix"].startswith("#include <tl_templates/cuda/nvrtc_std.h>")
    assert nvrtc_seeds.lowered_prefix(nvrtc_seeds.probe_gemm, 80) == by_arch[("gemm", 80)]["prefix"]
    assert by_arch[("gemm", 80)]["prefix"] != by_arch[("gemm", 90)]["prefix"]  # wgmma and TMA on sm_90


def test_the_seeds_are_written_for_the_archs_of_the_gpus_the_tests_see(tmp_path, monkeypatch):
    """A machine's first tuning writes the seeds' PCHs for the archs of the GPUs the test process
    sees (its CUDA_VISIBLE_DEVICES, every GPU where it names none by index), each arch once, as
    nvidia-smi lists them (stands in for the real one here: no GPU); none where it cannot say."""
    import os
    import stat

    from pytest_tlautotune.engine.device_compile import visible_archs

    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf '0, 9.0\\n1, 8.0\\n2, 9.0\\n'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert visible_archs("") == [90, 80]
    assert visible_archs("1") == [80]
    assert visible_archs("2,0") == [90]
    assert visible_archs("GPU-5c1f") == [90, 80]  # UUIDs: every GPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert visible_archs() == [80]  # this process's, outside the fork server
    smi.write_text("#!/bin/sh\nexit 9\n")
    assert visible_archs("") == []
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    assert visible_archs("") == []


PRESTART_PROBE = """
import pytest_tlautotune
from pytest_tlautotune.stash import session_key


def test_a(request):
    print("PRESTARTED", request.config.stash[session_key].prestarted)
"""


def test_only_a_module_that_mentions_autotune_starts_the_fork_server_at_collection(pytester):
    """Collecting a module that mentions the marker or fixture starts the workers' fork server
    (its TileLang import runs beside the test process's); one that only imports this package (its own
    tests) starts nothing."""
    pytester.makepyfile(test_a=PRESTART_PROBE)
    result = pytester.runpytest("-p", "no:benchmark", "-s")
    result.stdout.fnmatch_lines(["*PRESTARTED False*"])
    pytester.makepyfile(test_b="import pytest\n\n\n@pytest.mark.autotune(configs=[{}])\ndef test_b():\n    pass\n")
    result = pytester.runpytest("-p", "no:benchmark", "-s", "-k", "test_a")
    result.stdout.fnmatch_lines(["*PRESTARTED True*"])



WIDE_CONFIG = """
import pytest, kernels

WIDE = {f"k{i}": 1 for i in range(10_000)}


@pytest.mark.autotune(configs=[WIDE], target="c", out_idx=[-1])
def test_wide(autotune):
    autotune(kernels.gemm, 32, 32, 32)
"""

UNSERIALISABLE = """
import pytest


@pytest.mark.autotune(configs=[dict(bm=16, table=[object()] * 10_000)], target="c", out_idx=[-1])
def test_table(autotune):
    pass
"""


@pytest.mark.slow
def test_long_lists_in_messages_are_cut(tl, pytester):
    # A config of 10,000 unknown keys printed them all, on one line of 89 KB.
    pytester.makepyfile(test_w=WIDE_CONFIG)
    result = tl.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "test_w.py::test_wide: config key(s) 'k0', 'k1', 'k10', 'k100', 'k1000', *, ... and 9,990 more are not "
        "parameters of gemm(M: int, N: int, K: int, *"])
    assert max(map(len, result.outlines)) < 1000
    pytester.makepyfile(test_w=UNSERIALISABLE)
    result = tl.run()
    usage_error(result, "*test_w.py::test_table: @pytest.mark.autotune: argument 'configs'[[]0[]][[]'table'[]] = "
                        "[[]<object object at 0x*... (350,000 characters) cannot be serialised to JSON*")
    assert max(map(len, result.errlines)) < 1000
