"""Reliability: concurrency, killed tuners, corrupt caches, crashing candidates, bad input.

Real TileLang kernels on target "c"; inner runs are pytest subprocesses. The reliability
figures in ``benchmarks/RESULTS.md`` come from these tests and ``benchmarks/fault_injection.py``.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kernel_sources import KERNELS, TILELANG_313_FILTER

ROOT = Path(__file__).resolve().parent.parent

ONE_TEST = """
import pytest, torch
import kernels

@pytest.mark.autotune(configs={configs}, target="c", out_idx=[-1], ref_prog=lambda A, B: A @ B,
                      warmup=1, rep=3{extra})
def test_gemm(autotune{params}):
    result = autotune(kernels.gemm, {size}, {size}, {size})
    A, B = torch.randn({size}, {size}), torch.randn({size}, {size})
    torch.testing.assert_close(result.kernel(A, B), A @ B, rtol=1e-3, atol=1e-3)
"""

TWO = "[dict(bm=16, bn=16, bk=16), dict(bm=32, bn=32, bk=32)]"


def one_test(configs=TWO, extra="", params="", size=32):
    return ONE_TEST.format(configs=configs, extra=extra, params=params, size=size)


def clean_env():
    """The environment for an inner pytest: none of the outer xdist worker's settings."""
    env = dict(os.environ)
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST"):
        env.pop(name, None)
    return env


def tl_cache_values(tl):
    return sorted(v for k, v in sum(tl.properties().values(), []) if k == "tl_cache")


def partial_files(cache: Path) -> list[str]:
    """Staging directories, temp files and moved-aside entries anywhere in the cache."""
    return [str(p.relative_to(cache)) for p in cache.rglob("*")
            if p.name.startswith((".staging-", ".trash-")) or p.name.endswith(".tmp")]


def entries(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "entries").iterdir() if not p.name.startswith("."))


def verify_entry_in_subprocess(entry: Path) -> None:
    """The entry passes every check and loads (in a fresh process: it imports TileLang)."""
    code = (
        "import sys, pathlib\n"
        "from pytest_tlautotune.store import safety\n"
        "from pytest_tlautotune.param import AutotuneResult, CompileArgs\n"
        "from pytest_tlautotune.store.manifest import verify_manifest\n"
        "entry = pathlib.Path(sys.argv[1])\n"
        "safety.check_entry(entry); verify_manifest(entry)\n"
        "ca = CompileArgs(out_idx=[-1], target='c', execution_backend='cython')\n"
        "assert AutotuneResult.load_from_disk(entry, ca) is not None\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(entry)], capture_output=True, text=True,
                          env=clean_env())
    assert proc.returncode == 0, proc.stderr[-3000:]


# ----------------------------------------------------------------------------- xdist


@pytest.mark.slow
def test_eight_xdist_workers_on_one_cold_key_tune_once(tl, pytester):
    pytest.importorskip("xdist")
    test = one_test(configs="[dict(bm=16, bn=16, bk=16)]", params=", copy")
    test = test.replace("def test_gemm", "@pytest.mark.parametrize('copy', range(8))\ndef test_gemm")
    pytester.makepyfile(test_k=test)
    result = tl.run("-n", "8")
    result.assert_outcomes(passed=8)
    assert "INTERNALERROR" not in result.stdout.str()
    assert tl_cache_values(tl) == ["hit"] * 7 + ["miss"]
    assert len(entries(tl.cache_dir)) == 1
    assert partial_files(tl.cache_dir) == []
    assert len(list((tl.cache_dir / "kernels").iterdir())) == 1  # the one config compiled once
    verify_entry_in_subprocess(entries(tl.cache_dir)[0])


# ----------------------------------------------------------------------------- SIGKILL


@pytest.mark.slow
def test_sigkill_while_tuning_and_saving_leaves_nothing_corrupt(tmp_path):
    # Three trials, each killed at an event every run reaches whatever the machine's load: as
    # tuning starts, as the first compiled kernel appears, inside save_to_disk (see the script).
    out = tmp_path / "fault.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fault_injection.py"), "--trials", "3",
                           "--json", str(out)], capture_output=True, text=True, env=clean_env(), timeout=600)
    assert out.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    totals = json.loads(out.read_text())["totals"]
    assert totals["killed"] == 3, proc.stdout
    assert totals["killed_while_saving"] == 1, proc.stdout
    assert totals["corrupt_entries"] == 0, proc.stdout
    assert totals["corrupt_kernels"] == 0, proc.stdout
    assert totals["bad_records"] == 0, proc.stdout
    assert totals["rerun_failed"] == 0, proc.stdout
    assert totals["orphans"] == 0, proc.stdout  # every worker and the fork server exited by itself
    assert proc.returncode == 0, proc.stdout


# ----------------------------------------------------------------------------- corrupt entries


def _rewrite_manifest(entry: Path, change) -> None:
    manifest = json.loads((entry / "manifest.json").read_text())
    change(manifest)
    (entry / "manifest.json").write_text(json.dumps(manifest))


def _truncate(path: Path, size: int) -> None:
    # A new file in its place, not the same file cut short: this process may have the entry's
    # kernel_lib.so mapped (it tuned it), and cutting a mapped file short ends it with SIGBUS.
    data = path.read_bytes()[:size]
    path.unlink()
    path.write_bytes(data)


def _other_format(entry: Path) -> None:
    _rewrite_manifest(entry, lambda m: m.update(format=m["format"] + 1))


def _wrong_manifest(entry: Path) -> None:
    def swap(m):
        m["files"]["kernel_lib.so"]["sha256"] = m["files"]["params.pkl"]["sha256"]

    _rewrite_manifest(entry, swap)


def _elsewhere(entry: Path, suffix: str = "") -> Path:
    return entry.parent.parent.parent / f"elsewhere-{entry.name}{suffix}"


def _symlink_file(entry: Path) -> None:
    # Identical bytes elsewhere: only refusing the link itself catches this.
    shutil.copy(entry / "kernel_lib.so", _elsewhere(entry, ".so"))
    (entry / "kernel_lib.so").unlink()
    (entry / "kernel_lib.so").symlink_to(_elsewhere(entry, ".so"))


def _foreign_owner(entry: Path) -> None:
    if os.getuid() != 0:
        pytest.skip("chown to another uid needs root")
    os.chown(entry / "kernel_lib.so", 65534, 65534)


def _entry_symlink(entry: Path) -> None:
    entry.rename(_elsewhere(entry))
    entry.symlink_to(_elsewhere(entry))


# kind -> (corrupt(entry), a phrase of the reason)
CORRUPTIONS = {
    "truncated_so": (lambda e: _truncate(e / "kernel_lib.so", 1000), "kernel_lib.so does not match its manifest"),
    "garbage_json": (lambda e: (e / "best_config.json").write_text("{garbage"), "best_config.json does not match"),
    "bad_pickle": (lambda e: (e / "function.pkl").write_bytes(b"\x80\x05not a pickle."), "function.pkl does not"),
    "missing_file": (lambda e: (e / "params.pkl").unlink(), "params.pkl is missing"),
    "wrong_manifest": (_wrong_manifest, "kernel_lib.so does not match its manifest"),
    "zero_byte": (lambda e: _truncate(e / "latency.json", 0), "latency.json does not match its manifest"),
    "other_format": (_other_format, "format version"),
    "group_writable": (lambda e: os.chmod(e / "kernel_lib.so", 0o666), "writable by other users"),
    "symlink": (_symlink_file, "is a symlink"),
    "foreign_owner": (_foreign_owner, "is owned by uid 65534"),
}
# Not one of the ten: the entry directory itself a link to someone else's directory.
ALL_CORRUPTIONS = {**CORRUPTIONS, "entry_symlink": (_entry_symlink, "is a symlink")}

CORRUPTION_TEST = """
@pytest.mark.autotune(configs=CONFIGS, target="c", out_idx=[-1], ref_prog=lambda A, B: A @ B, warmup=1, rep={rep})
def test_{kind}(autotune):
    result = autotune(kernels.gemm, 32, 32, 32)
    A, B = torch.randn(32, 32), torch.randn(32, 32)
    torch.testing.assert_close(result.kernel(A, B), A @ B, rtol=1e-3, atol=1e-3)
"""


def corruption_tests() -> str:
    """One test per kind of corruption: each its own key (rep differs), all sharing two compiled kernels."""
    head = f"import pytest, torch\nimport kernels\n\nCONFIGS = {TWO}\n"
    return head + "".join(CORRUPTION_TEST.format(rep=3 + i, kind=kind) for i, kind in enumerate(ALL_CORRUPTIONS))


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A cache holding one tuned entry per kind of corruption (tuned once per module): (cache, {kind: key})."""
    base = tmp_path_factory.mktemp("tuned")
    (base / "kernels.py").write_text(KERNELS)
    (base / "test_corrupt.py").write_text(corruption_tests())
    (base / "pytest.ini").write_text("[pytest]\n")
    cache = base / "cache"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--tl-cache-dir={cache}"],
                          cwd=base, capture_output=True, text=True, env=clean_env())
    assert proc.returncode == 0, proc.stdout[-3000:]
    keys = {json.loads((e / "record.json").read_text())["nodeid"].split("::test_")[-1]: e.name
            for e in entries(cache)}
    assert sorted(keys) == sorted(ALL_CORRUPTIONS)
    return cache, keys


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
@pytest.mark.slow
@pytest.mark.xdist_group("corrupt_entries")
def test_load_from_disk_refuses_each_corruption(tuned, tmp_path, kind):
    from pytest_tlautotune.param import AutotuneResult, CompileArgs
    from pytest_tlautotune.store import safety
    from pytest_tlautotune.store.manifest import CorruptEntry, verify_manifest

    compile_args = CompileArgs(out_idx=[-1], target="c", execution_backend="cython")
    cache, keys = tuned
    entry = tmp_path / "cache" / "entries" / keys[kind]
    shutil.copytree(cache / "entries" / keys[kind], entry)
    assert AutotuneResult.load_from_disk(entry, compile_args) is not None  # the copy itself is good
    corrupt, phrase = CORRUPTIONS[kind]
    corrupt(entry)
    # Caught by the checks, before anything in the entry is unpickled or dlopen'ed.
    with pytest.raises((CorruptEntry, safety.UnsafeCache), match=phrase):
        safety.check_entry(entry)
        verify_manifest(entry)
    assert AutotuneResult.load_from_disk(entry, compile_args) is None


@pytest.mark.slow
@pytest.mark.xdist_group("corrupt_entries")
def test_every_corrupt_entry_is_quarantined_and_retuned(tuned, tl, pytester):
    # One inner run for all kinds (one test each, named after its kind): 11 runs would take minutes.
    cache, keys = tuned
    shutil.copytree(cache, tl.cache_dir, symlinks=True)
    skipped = set()
    for kind, (corrupt, _) in ALL_CORRUPTIONS.items():
        try:
            corrupt(tl.cache_dir / "entries" / keys[kind])
        except pytest.skip.Exception:
            skipped.add(kind)
    pytester.makepyfile(test_corrupt=corruption_tests())
    result = tl.run()
    result.assert_outcomes(passed=len(ALL_CORRUPTIONS))
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    quarantine = tl.cache_dir / "quarantine"
    for kind, (_, phrase) in ALL_CORRUPTIONS.items():
        if kind in skipped:
            continue
        assert tl.prop(f"test_{kind}", "tl_cache") == ["miss"], kind
        moved = sorted(quarantine.glob(f"{keys[kind]}-*"))
        if kind == "entry_symlink":  # the link is moved; its reason lies beside it, never written through it
            assert [p.suffix for p in moved] == ["", ".WHY"] and moved[0].is_symlink(), moved
            assert phrase in moved[1].read_text()
            assert not (_elsewhere(tl.cache_dir / "entries" / keys[kind]) / "WHY").exists()
        else:
            assert len(moved) == 1, (kind, moved)
            assert phrase in (moved[0] / "WHY").read_text(), kind
        entry = tl.cache_dir / "entries" / keys[kind]
        assert entry.is_dir() and not entry.is_symlink(), kind  # re-tuned and stored again
    assert partial_files(tl.cache_dir) == []
    # The re-tuned entries are whole: hits now.
    tl.run().assert_outcomes(passed=len(ALL_CORRUPTIONS))
    assert tl_cache_values(tl) == ["hit"] * len(ALL_CORRUPTIONS)


# ----------------------------------------------------------------------------- crashing candidates

def test_segfaulting_hanging_raising_candidates_are_named_records(tl, pytester):
    pytester.makepyfile(test_k="""
import pytest
import kernels

@pytest.mark.autotune(configs=[dict(segv=True), dict(repeat=10**7), dict(bm=7), dict()], target="c", out_idx=[-1],
                      ref_prog=lambda A, B: A @ B, warmup=1, rep=3, timeout=6,
                      pass_configs={"tl.disable_safe_memory_legalize": True})
def test_gemm(autotune):
    result = autotune(kernels.gemm, 64, 64, 64)
    assert result.config == {}
""")
    result = tl.run("-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines_random([
        '*{"segv":true}: crash: check/timing worker died with exit code -11 (SIGSEGV)*',
        '*{"repeat":10000000}: timeout: check/timing exceeded 6 s and was killed*',
        '*{"bm":7}: build_error: building the config: ValueError: M=64 must be a multiple of its tile size 7 '
        '(no bounds checks are generated) (kernels.py:*)',
    ])
    record = json.loads((entries(tl.cache_dir)[0] / "record.json").read_text())
    statuses = {json.dumps(c["config"], sort_keys=True): c["status"] for c in record["candidates"]}
    assert statuses == {'{"segv": true}': "crash", '{"repeat": 10000000}': "timeout", '{"bm": 7}': "build_error",
                        "{}": "ok"}


# ----------------------------------------------------------------------------- bad input

BAD_INPUT = """
import pytest
import kernels

ONE = [dict(bm=16, bn=16, bk=16)]

def broken(M, N, K, **config):
    raise RuntimeError("the program is broken")

def mark(**kw):
    return pytest.mark.autotune(**{**dict(configs=ONE, target="c", out_idx=[-1], ref_prog=lambda A, B: A @ B,
                                          warmup=1, rep=3), **kw})

@mark()
def test_good(autotune):
    autotune(kernels.gemm, 32, 32, 32)

@mark()
def test_program_raises(autotune):
    autotune(broken, 32, 32, 32)

@mark()
def test_not_a_program(autotune):
    autotune(42)

@mark(ref_prog=lambda A, B: (A @ B)[:, :16])
def test_ref_wrong_shape(autotune):
    autotune(kernels.gemm, 32, 32, 32)

@mark(ref_prog=lambda A, B: (A @ B).int())
def test_ref_wrong_dtype(autotune):
    autotune(kernels.gemm, 32, 32, 32)

@mark(ref_prog=lambda A, B: 1 / 0)
def test_ref_raises(autotune):
    autotune(kernels.gemm, 32, 32, 32)

@mark(out_idx=[5])
def test_out_idx_out_of_range(autotune):
    autotune(kernels.gemm, 32, 32, 32)
"""


def test_bad_programs_and_references_fail_naming_the_test_and_keep_stored_results(tl, pytester):
    pytester.makepyfile(kernels=KERNELS, test_bad=BAD_INPUT)
    tl.run("-k", "test_good").assert_outcomes(passed=1)
    stored = entries(tl.cache_dir)
    result = tl.run()
    result.assert_outcomes(passed=1, failed=6)
    assert "INTERNALERROR" not in result.stdout.str()
    result.stdout.fnmatch_lines_random([
        "test_bad.py::test_program_raises: every config failed the same way*building the config: RuntimeError: "
        "the program is broken (test_bad.py:*)",
        "test_bad.py::test_not_a_program: autotune(program=...): program must be callable*got int: 42",
        "test_bad.py::test_ref_wrong_dtype: no candidate passed*",
        # The reference's fault, said once; not an error (or a mismatch) on every candidate.
        "test_bad.py::test_ref_raises: ref_prog: ZeroDivisionError: division by zero (test_bad.py:*)",
        "test_bad.py::test_ref_wrong_shape: ref_prog: ReferenceMismatch: ref_prog's output 0 has shape [[]32, 16[]] "
        "but the kernel's output C has [[]32, 32[]]; out_idx=[[]-1[]]*",
        "test_bad.py::test_out_idx_out_of_range: out_idx=[[]5[]] is out of range: gemm's PrimFunc has 3 parameters*",
    ])
    assert tl.prop("test_good", "tl_cache") == ["hit"]
    assert entries(tl.cache_dir) == stored  # the failures stored no entry and removed none
    assert partial_files(tl.cache_dir) == []


def _file_as_cache(cache: Path) -> None:
    cache.write_text("not a directory")


def _file_as_entries(cache: Path) -> None:
    cache.mkdir(mode=0o700)
    (cache / "entries").write_text("not a directory")


@pytest.mark.parametrize(("make", "message"), [
    (_file_as_cache, "*test_k.py::test_gemm: cache directory refused: cache directory * is not a directory; "
                     "remove it or use another --tl-cache-dir"),
    (_file_as_entries, "*test_k.py::test_gemm: cache directory refused: cache directory */entries is not a "
                       "directory*"),
])
def test_unusable_cache_dir_fails_with_a_sentence(tl, pytester, make, message):
    make(tl.cache_dir)
    pytester.makepyfile(test_k=one_test(configs="[dict(bm=16, bn=16, bk=16)]"))
    result = tl.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([message])
    assert "Traceback" not in result.stdout.str() and "Error: [Errno" not in result.stdout.str()


def test_an_unwritable_cache_dir_costs_one_warning_not_the_test(tl, pytester):
    # Neither readable nor writable by the user: nothing is served or stored, every config is
    # measured all the same (kernels kept in a temporary directory), and one warning says why.
    tl.cache_dir.mkdir(mode=0o700)
    pytester.makepyfile(test_k=one_test().replace("def test_gemm", "def test_a") + one_test(size=64).replace(
        "def test_gemm", "def test_b"))
    argv = [sys.executable, "-m", "pytest", f"--tl-cache-dir={tl.cache_dir}", "-p", "no:cacheprovider", "-rw",
            "-W", TILELANG_313_FILTER]
    if os.getuid() == 0:
        # Root reads and writes mode-000 directories anyway; drop that privilege for the inner run.
        capsh = shutil.which("capsh")
        if capsh is None:
            pytest.skip("running as root without capsh to drop CAP_DAC_OVERRIDE")
        argv = [capsh, "--drop=cap_dac_override,cap_dac_read_search", "--", "-c", " ".join(argv)]
    tl.cache_dir.chmod(0)
    try:
        result = pytester.run(*argv)
    finally:
        tl.cache_dir.chmod(0o700)
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines([f"*TuneWarning: the cache directory {tl.cache_dir} is not writable by you (mode 0, "
                                 f"owner uid *): run `chmod u+rwx {tl.cache_dir}`*"])
    assert "compile_error" not in result.stdout.str()
    assert list(tl.cache_dir.iterdir()) == []


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a tmpfs of the given size (root only); unmounted afterwards."""
    if os.getuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    mounted = []

    def mount(size: str) -> Path:
        mnt = tmp_path / f"disk{len(mounted)}"
        mnt.mkdir(mode=0o700)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=700", "tmpfs", str(mnt)],
                              capture_output=True)
        if proc.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def tiny_disk(tmpfs):
    """A 4 MiB tmpfs: room for two small tuned entries, then filled up."""
    return tmpfs("4m")


def _fill(disk: Path, leave: int = 0) -> None:
    """Fill ``disk`` up, then free ``leave`` bytes."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    assert os.statvfs(disk).f_bavail == 0
    if leave:
        os.truncate(disk / "filler", os.path.getsize(disk / "filler") - leave)


@pytest.mark.slow
def test_full_disk_while_saving_loses_nothing_stored_before(tl, pytester, tiny_disk):
    pytester.makepyfile(test_k=one_test().replace("def test_gemm", "def test_a") + one_test(size=64).replace(
        "def test_gemm", "def test_b"))
    cache = tiny_disk / "cache"
    argv = [f"--tl-cache-dir={cache}", "-p", "no:cacheprovider", f"--junitxml={tl.junit}",
            "-W", TILELANG_313_FILTER]
    pytester.runpytest(*argv).assert_outcomes(passed=2)
    by_test = {json.loads((e / "record.json").read_text())["nodeid"].split("::")[-1]: e for e in entries(cache)}
    shutil.rmtree(by_test["test_b"])  # b is tuned again (from its compiled kernels): only the save writes
    shutil.rmtree(cache / "index", ignore_errors=True)
    _fill(tiny_disk)

    result = pytester.runpytest(*argv)
    # The cache write fails; the test still gets its tuned kernel, with a warning.
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(["*TuneWarning: the cache directory * is on a filesystem that is full (tmpfs "
                                 "filesystem mounted at *): free space there, or point --tl-cache-dir*"])
    assert "INTERNALERROR" not in result.stdout.str()
    assert tl.prop("test_a", "tl_cache") == ["hit"]
    # Re-tuning a on a full disk cannot store, and the entry stored before stays whole.
    pytester.runpytest(*argv, "-k", "test_a", "--tl-retune")
    assert entries(cache) == [by_test["test_a"]]
    assert partial_files(cache) == []
    (tiny_disk / "filler").unlink()
    verify_entry_in_subprocess(by_test["test_a"])
    pytester.runpytest(*argv, "-k", "test_a").assert_outcomes(passed=1)
    assert tl.prop("test_a", "tl_cache") == ["hit"]


# Four configs, the plain one fastest by far: the winner says whether every config was measured.
SPREAD = "[dict(bm=16, bn=16, bk=16, repeat=8), dict(bm=16, bn=16, bk=16, repeat=4), dict(bm=16, bn=16, bk=16), " \
         "dict(bm=16, bn=16, bk=16, repeat=12)]"


def _scratch_dirs() -> list[str]:
    import tempfile

    return [p.name for p in Path(tempfile.gettempdir()).glob(f"tlautotune-scratch-{os.getpid()}-*")]


@pytest.mark.parametrize("free", [8 << 10, pytest.param(120 << 10, marks=pytest.mark.slow)])
def test_a_nearly_full_cache_disk_costs_one_warning_and_every_config_is_measured(tl, pytester, tmpfs, free):
    disk = tmpfs("2m")
    _fill(disk, leave=free)
    pytester.makepyfile(test_k=one_test(configs=SPREAD, size=64, extra=", early_stop_factor=0"))
    out, base = pytester.path / "out.json", pytester.path / "base.json"
    # A baseline to save re-times the winner: from where this run kept it.
    result = pytester.runpytest(f"--tl-cache-dir={disk / 'cache'}", "-p", "no:cacheprovider", "-rw",
                                f"--tl-json={out}", f"--tl-save-baseline={base}",
                                "-W", TILELANG_313_FILTER)
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines([f"*TuneWarning: the cache directory {disk / 'cache'} is on a filesystem that is "
                                 f"full (tmpfs filesystem mounted at {disk}, * free of 2.0 MiB): free space there, "
                                 f"or point --tl-cache-dir*. This run's results are kept in a temporary directory "
                                 f"and not stored"])
    row = json.loads(out.read_text())["tests"][0]
    assert [c["status"] for c in row["candidates"]] == ["ok"] * 4, row["candidates"]
    assert row["config"] == {"bm": 16, "bn": 16, "bk": 16}  # the fastest, measured with the others
    assert json.loads(base.read_text())["tests"]["test_k.py::test_gemm"]["config"] == row["config"]
    assert _scratch_dirs() == []  # the kernels kept aside are gone with the run


@pytest.mark.slow
def test_a_read_only_cache_serves_its_hits_and_tunes_the_rest_with_one_warning(tl, pytester, tmpfs):
    disk = tmpfs("64m")
    pytester.makepyfile(test_k=one_test().replace("def test_gemm", "def test_a") + one_test(size=64).replace(
        "def test_gemm", "def test_b"))
    argv = [f"--tl-cache-dir={disk / 'cache'}", "-p", "no:cacheprovider", f"--junitxml={tl.junit}", "-rw",
            "-W", TILELANG_313_FILTER]
    pytester.runpytest(*argv, "-k", "test_a").assert_outcomes(passed=1)
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    stored = sorted(p.relative_to(disk) for p in disk.rglob("*"))

    result = pytester.runpytest(*argv, "-k", "test_a")
    result.assert_outcomes(passed=1)  # a hit needs no write: no warning
    assert tl.prop("test_a", "tl_cache") == ["hit"]

    result = pytester.runpytest(*argv)
    result.assert_outcomes(passed=2, warnings=1)
    assert tl.prop("test_a", "tl_cache") == ["hit"] and tl.prop("test_b", "tl_cache") == ["miss"]
    result.stdout.fnmatch_lines([f"*TuneWarning: the cache directory {disk / 'cache'} is on a read-only filesystem "
                                 f"(tmpfs filesystem mounted at {disk}): stored results are used, new ones cannot be "
                                 f"stored; remount it read-write, or point --tl-cache-dir*"])
    assert "chmod" not in result.stdout.str()
    assert sorted(p.relative_to(disk) for p in disk.rglob("*")) == stored
    assert _scratch_dirs() == []
