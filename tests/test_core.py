"""End-to-end behaviour of the plugin with real TileLang kernels on target "c"."""

import glob
import json
import re
import subprocess
import sys

import pytest

GEMM_TEST = """
import pytest, torch
import kernels

CONFIGS = {configs}

@pytest.mark.autotune(configs=CONFIGS, target="c", out_idx=[-1], ref_prog=lambda A, B: A @ B,
                      warmup=1, rep=5, early_stop_factor=0{extra})
def test_gemm(autotune):
    result = autotune(kernels.gemm, 64, 64, 64{kwargs})
    A, B = torch.randn(64, 64), torch.randn(64, 64)
    torch.testing.assert_close(result.kernel(A, B), A @ B, rtol=1e-3, atol=1e-3)
"""

TWO = "[dict(bm=16, bn=16, bk=16), dict(bm=32, bn=32, bk=32)]"


def gemm_test(configs=TWO, extra="", kwargs=""):
    return GEMM_TEST.format(configs=configs, extra=extra, kwargs=kwargs)


def test_tunes_then_hits_then_retunes(tl, pytester):
    pytester.makepyfile(test_k=gemm_test())
    tl.run().assert_outcomes(passed=1)
    assert tl.prop("test_gemm", "tl_cache") == ["miss"]
    latency = float(tl.prop("test_gemm", "tl_latency_ms")[0])
    assert latency > 0
    assert float(tl.prop("test_gemm", "tl_ref_latency_ms")[0]) > 0
    assert json.loads(tl.prop("test_gemm", "tl_config")[0]) in [dict(bm=16, bn=16, bk=16), dict(bm=32, bn=32, bk=32)]

    result = tl.run()
    result.assert_outcomes(passed=1)
    assert tl.prop("test_gemm", "tl_cache") == ["hit"]
    # A hit reuses the stored numbers; it tunes nothing.
    assert float(tl.prop("test_gemm", "tl_latency_ms")[0]) == latency
    result.stdout.fnmatch_lines(["*tlautotune summary*", "*test_k.py::test_gemm*hit*2/2*"])

    tl.run("--tl-retune").assert_outcomes(passed=1)
    assert tl.prop("test_gemm", "tl_cache") == ["retune"]


@pytest.mark.slow
def test_each_candidate_is_compiled_and_timed_once_when_timing_is_the_bottleneck(tl, pytester):
    """Timing slower than compiling: compiled candidates queue for the timing worker. A queued
    candidate must not be proposed, compiled-checked and queued again (a bug that timed the same
    candidates over and over and made a 10 s tuning take minutes)."""
    configs = "[dict(bm=bm, bn=16, bk=bk) for bm in (8, 16, 32) for bk in (16, 32)]"
    pytester.makepyfile(test_k=gemm_test(configs=configs).replace("rep=5", "rep=400"))
    tl.run().assert_outcomes(passed=1)
    (record,) = [json.loads(p.read_text()) for p in tl.cache_dir.glob("entries/*/record.json")]
    assert record["phases"]["compiled"] == 6
    assert record["phases"]["timed"] == 6
    assert sorted(c["index"] for c in record["candidates"]) == list(range(6))


def test_wrong_candidate_rejected_with_reason(tl, pytester):
    pytester.makepyfile(test_k=gemm_test(kwargs=", bug_when_bk=32"))
    result = tl.run("-v")
    result.assert_outcomes(passed=1)
    assert json.loads(tl.prop("test_gemm", "tl_config")[0])["bk"] == 16
    result.stdout.fnmatch_lines(['*{"bk":32,"bm":32,"bn":32}: mismatch: output 0: * elements mismatch*worst at*'])


def test_all_candidates_wrong_fails_listing_each(tl, pytester):
    pytester.makepyfile(test_k=gemm_test(configs="[dict(bm=16, bn=16, bk=32), dict(bm=32, bn=32, bk=32)]",
                                         kwargs=", bug_when_bk=32"))
    result = tl.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*no candidate passed: 2 of 2 configs*",
        '*{"bk":32,"bm":16,"bn":16}: mismatch:*',
        '*{"bk":32,"bm":32,"bn":32}: mismatch:*',
    ])


def test_no_tune_fails_without_stored_result_and_passes_with_one(tl, pytester):
    pytester.makepyfile(test_k=gemm_test())
    result = tl.run("--tl-no-tune")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*--tl-no-tune forbids tuning*without --tl-no-tune*"])
    tl.run().assert_outcomes(passed=1)
    tl.run("--tl-no-tune").assert_outcomes(passed=1)
    assert tl.prop("test_gemm", "tl_cache") == ["hit"]


def test_adding_a_config_measures_only_the_new_one(tl, pytester):
    pytester.makepyfile(test_k=gemm_test())
    tl.run().assert_outcomes(passed=1)
    three = "[dict(bm=16, bn=16, bk=16), dict(bm=32, bn=32, bk=32), dict(bm=16, bn=32, bk=16)]"
    pytester.makepyfile(test_k=gemm_test(configs=three))
    tl.run().assert_outcomes(passed=1)
    assert tl.prop("test_gemm", "tl_cache") == ["miss"]  # a new space is a new key...
    records = [json.loads(p.read_text()) for p in tl.cache_dir.glob("entries/*/record.json")]
    record = max(records, key=lambda r: len(r["candidates"]))
    assert len(record["candidates"]) == 3, [r["candidates"] for r in records]
    reused = {json.dumps(c["config"], sort_keys=True): bool(c.get("reused")) for c in record["candidates"]}
    # ...but only the added config was compiled and measured again.
    assert reused == {
        json.dumps(dict(bm=16, bn=16, bk=16), sort_keys=True): True,
        json.dumps(dict(bm=32, bn=32, bk=32), sort_keys=True): True,
        json.dumps(dict(bm=16, bn=32, bk=16), sort_keys=True): False,
    }


def test_editing_the_reference_invalidates(tl, pytester):
    pytester.makepyfile(test_k=gemm_test())
    tl.run().assert_outcomes(passed=1)
    pytester.makepyfile(test_k=gemm_test().replace("lambda A, B: A @ B", "lambda A, B: torch.matmul(A, B)"))
    tl.run().assert_outcomes(passed=1)
    assert tl.prop("test_gemm", "tl_cache") == ["miss"]


def test_xdist_tunes_each_key_once(tl, pytester):
    pytest.importorskip("xdist")
    pytester.makepyfile(test_k=gemm_test().replace("def test_gemm(autotune):", (
        "@pytest.mark.parametrize('copy', range(4))\ndef test_gemm(autotune, copy):")))
    result = tl.run("-n", "2", subprocess=True)
    result.assert_outcomes(passed=4)
    caches = [v for k, v in sum(tl.properties().values(), []) if k == "tl_cache"]
    assert sorted(caches) == ["hit", "hit", "hit", "miss"]
    result.stdout.fnmatch_lines(["*tlautotune summary*"])


def test_cuda_target_skips_without_gpu(tl, pytester):
    # No torch import here: pytester unloads modules imported during a test, and torch
    # cannot be imported twice in one process.
    if glob.glob("/dev/nvidia[0-9]*"):
        pytest.skip("this machine has a GPU")
    pytester.makepyfile(test_k=gemm_test().replace('target="c"', 'target="cuda"'))
    result = tl.run("-rs")
    result.assert_outcomes(skipped=1)
    # The reason points at the test, not at the plugin's source line.
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] test_k.py:*: target 'cuda' needs a GPU*"])


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("configs=[dict(bm=16)], rtool=0.1", "*test_bad.py::test_x: @pytest.mark.autotune: unknown argument 'rtool'; "
                                             "did you mean 'rtol'?*"),
        ("configs=[]", "*test_bad.py::test_x: *'configs' is an empty config space*"),
        ("configs=[dict(bm=object())]", "*test_bad.py::test_x: *'configs'[[]0[]][[]'bm'[]]*cannot be serialised*"),
        ("configs=[dict(bm=16)], rep='many'", "*test_bad.py::test_x: *argument 'rep' must be an int >= 1, got 'many'*"),
        ("configs=[dict(bm=16)], target='tpu'", "*test_bad.py::test_x: *argument 'target' must be one of auto, cuda*"),
    ],
)
def test_bad_marker_arguments_fail_at_collection(pytester, marker, message):
    pytester.makepyfile(test_bad=f"""
import pytest
@pytest.mark.autotune({marker})
def test_x(autotune):
    pass
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_help_imports_neither_torch_nor_tilelang(pytester):
    pytester.makeconftest("""
import sys
def pytest_unconfigure(config):
    print("HEAVY", sorted(m for m in ("torch", "tilelang", "tvm") if m in sys.modules))
""")
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--tl-retune*", "HEAVY []"])


def test_plugin_can_be_disabled_by_name(pytester):
    result = pytester.runpytest_subprocess("-p", "no:tlautotune", "--help")
    assert "--tl-retune" not in result.stdout.str()


def test_option_resolution_cli_over_ini_over_env(pytester, monkeypatch, tmp_path):
    pytester.makeini("[pytest]\ntl_cache_dir = from-ini\n")
    pytester.makepyfile(test_opt="""
from pytest_tlautotune.plugin import cache_dir
def test_dir(request):
    print("DIR=" + cache_dir(request.config))
""")
    monkeypatch.setenv("TL_AUTOTUNE_CACHE_DIR", "from-env")
    pytester.runpytest("-s", "-p", "no:cacheprovider").stdout.fnmatch_lines(["*DIR=*/from-ini"])
    pytester.runpytest("-s", "-p", "no:cacheprovider", "--tl-cache-dir", "from-cli").stdout.fnmatch_lines(
        ["*DIR=*/from-cli"])
    pytester.makeini("[pytest]\n")
    pytester.runpytest("-s", "-p", "no:cacheprovider").stdout.fnmatch_lines(["*DIR=*/from-env"])


def test_seed_hashes_are_stable_across_processes():
    code = (
        "from pytest_tlautotune.param import CompileArgs, ProfileArgs\n"
        "ref = lambda A, B: A @ B\n"
        "print(hash(CompileArgs(out_idx=[-1], target='c')), hash(ProfileArgs(ref_prog=ref, rtol=0.5)))\n"
    )
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}).stdout for seed in ("1", "2")}
    assert len(runs) == 1


@pytest.mark.slow
def test_crashing_and_hanging_candidates_are_records_not_failures(tl, pytester):
    # offset writes past C: TileLang drops a store it can prove out of range, so C is never
    # written and the NaN-poisoned output mismatches (tests/test_reliability.py has a real segfault);
    # repeat=10**7 repeats the accumulation for minutes (killed at timeout); bm=7 makes the
    # program raise. The plain config must still win.
    pytester.makepyfile(test_k="""
import pytest, torch
import kernels

@pytest.mark.autotune(configs=[dict(offset=1 << 24), dict(repeat=10**7), dict(bm=7), dict()], target="c",
                      out_idx=[-1], ref_prog=lambda A, B: A @ B, warmup=1, rep=3, timeout=8)
def test_gemm(autotune):
    result = autotune(kernels.gemm, 64, 64, 64)
    assert result.config == {}
""")
    result = tl.run("-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines_random([
        '*{"repeat":10000000}: timeout: check/timing exceeded 8 s and was killed*',
        '*{"bm":7}: build_error: building the config: ValueError: M=64 must be a multiple of its tile size 7 '
        '(no bounds checks are generated) (kernels.py:*)',
    ])
    assert re.search(r'"offset":16777216}: (crash|mismatch): ', result.stdout.str())


@pytest.mark.slow
def test_editing_a_helper_module_the_kernel_uses_invalidates(tl, pytester):
    # The factory lives in the test module; the loop count comes from a helper module.
    pytester.makepyfile(tiles="def steps(K, bk):\n    return K // bk\n")
    kernel = '''
import pytest, torch
import tilelang.cpu.language as T
import tiles

def gemm(M, N, K, bm=16, bn=16, bk=16, dtype="float32"):
    @T.prim_func
    def main(A: T.Tensor((M, K), dtype), B: T.Tensor((K, N), dtype), C: T.Tensor((M, N), dtype)):
        with T.Kernel(T.ceildiv(N, bn), T.ceildiv(M, bm)) as (bx, by):
            acc = T.alloc_local((bm, bn), dtype)
            for i, j in T.grid(bm, bn):
                acc[i, j] = 0
            for ko in T.serial(tiles.steps(K, bk)):
                for i, j, k in T.grid(bm, bn, bk):
                    acc[i, j] += A[by * bm + i, ko * bk + k] * B[ko * bk + k, bx * bn + j]
            for i, j in T.grid(bm, bn):
                C[by * bm + i, bx * bn + j] = acc[i, j]
    return main

@pytest.mark.autotune(configs=[dict(bk=16), dict(bk=32)], target="c", out_idx=[-1],
                      ref_prog=lambda A, B: A @ B, warmup=1, rep=3)
def test_gemm(autotune):
    autotune(gemm, 64, 64, 64)
'''
    pytester.makepyfile(test_h=kernel)
    tl.run().assert_outcomes(passed=1)
    tl.run().assert_outcomes(passed=1)
    assert tl.prop("test_gemm", "tl_cache") == ["hit"]
    # A comment-only edit changes no IR: the fast key misses, the IR key still hits.
    pytester.makepyfile(tiles="# tuned\ndef steps(K, bk):\n    return K // bk\n")
    tl.run().assert_outcomes(passed=1)
    assert tl.prop("test_gemm", "tl_cache") == ["hit"]
    # Now the helper drops a k-step: every candidate is wrong, and a stale hit would hide it.
    pytester.makepyfile(tiles="def steps(K, bk):\n    return K // bk - 1\n")
    result = tl.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no candidate passed*"])


def test_xdist_workers_spread_over_gpus(monkeypatch):
    from pytest_tlautotune.devices import _own_gpu, gpu_share

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw5")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "6")
    assert _own_gpu(4, 0) == 1
    assert _own_gpu(1, 0) == 0
    assert gpu_share(4, 1) == [1]  # fewer GPUs than workers: each worker its own card
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    assert gpu_share(4, _own_gpu(4, 0)) == [1, 3]  # two workers on four GPUs: two cards each
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert _own_gpu(4, 2) == 2
    assert gpu_share(4, 2) == [2, 0, 1, 3]  # one process: every GPU, its own first
    assert gpu_share(4, 2, "one") == [2]
    assert gpu_share(4, 2, "3,1") == [3, 1]
    assert gpu_share(4, 1, "3,1") == [1, 3]
    monkeypatch.setenv("LOCAL_RANK", "3")  # a torch.distributed rank: its own card first, every card
    assert _own_gpu(4, 0) == 3
    assert gpu_share(4, _own_gpu(4, 0)) == [3, 0, 1, 2]


def test_builtin_reference_hashes_the_same_in_every_process():
    code = ("from pytest_tlautotune.param import ProfileArgs; import torch; "
            "print(hash(ProfileArgs(ref_prog=torch.relu)))")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)}
    assert len(runs) == 1


WORKERS_TEST = """
import concurrent.futures, multiprocessing, os
import pytest, torch
import kernels
from pytest_tlautotune.engine import workers

CONFIGS = [dict(bm=16, bn=16, bk=16), dict(bm=32, bn=32, bk=32)]


def test_0_fork_server_started_at_collection():
    # No autotune yet in this session: the fork server runs because this file mentions it.
    assert workers.server_running()


def test_1_own_forkserver_processes_keep_their_environment():
    # Compile workers hide the GPUs as they start; the fork server, which the tests' forkserver
    # processes come from too, keeps them.
    ctx = multiprocessing.get_context("forkserver")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        assert pool.submit(os.getenv, "CUDA_VISIBLE_DEVICES", "unset").result() == "unset"


@pytest.mark.autotune(configs=CONFIGS, target={target}, out_idx=[-1], ref_prog=lambda A, B: A @ B,
                      warmup=1, rep=5, early_stop_factor=0)
@pytest.mark.parametrize("size", [32, 64])
def test_gemm(autotune, size):
    result = autotune(kernels.gemm, size, size, size)
    A, B = torch.randn(size, size), torch.randn(size, size)
    torch.testing.assert_close(result.kernel(A, B), A @ B, rtol=1e-3, atol=1e-3)
"""


def test_compile_workers_start_at_collection_and_serve_every_test(tl, pytester, monkeypatch, tmp_path):
    tl_cache = tmp_path / "tilelang-cache"
    monkeypatch.setenv("TILELANG_CACHE_DIR", str(tl_cache))
    # A target given as TVM's JSON dict form works like "c".
    pytester.makepyfile(test_w=WORKERS_TEST.format(target='{"kind": "c"}'))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    tl.run("--tl-workers=2", subprocess=True).assert_outcomes(passed=4)
    records = [json.loads(p.read_text()) for p in tl.cache_dir.glob("entries/*/record.json")]
    assert len(records) == 2
    pids = [{c["pid"] for c in r["candidates"] if c.get("pid")} for r in records]
    # Two tests, four compiles, one pool of two workers: the second test reused the first's.
    assert all(pids) and len(pids[0] | pids[1]) <= 2, pids
    from pytest_tlautotune.engine import workers

    for r in records:
        # Forked from the fork server the plugin started with TileLang preloaded (no import of their own).
        assert r["phases"]["compile_workers"] == workers.FORKED, r["phases"]
        assert r["notes"] == []
    for r in records:
        phases = r["phases"]
        assert 0 <= phases["first_compile_start_s"] <= phases["last_compile_end_s"] <= phases["last_timing_end_s"]
    # Compile workers keep kernels in our cache only, not a second copy in TileLang's.
    assert not [p for p in tl_cache.rglob("*") if p.is_file() and p.suffix in (".so", ".cubin")]


FORK_SERVER_STARTED_FIRST = """
import multiprocessing
import os


def pytest_configure(config):
    # The tests' own code starts this process's fork server before the plugin does (at collection).
    process = multiprocessing.get_context("forkserver").Process(target=os.getpid)
    process.start()
    process.join()
"""


@pytest.mark.slow
def test_a_fork_server_the_plugin_could_not_preload_is_noted_in_the_record(tl, pytester, monkeypatch):
    """Where the tests' code started multiprocessing's fork server before the plugin could preload
    TileLang into it, compile workers still fork from it, each importing TileLang itself, and the
    record's notes say so in one line (no warning, which filterwarnings=error would turn into a failure)."""
    from pytest_tlautotune.engine import workers

    pytester.makeconftest(FORK_SERVER_STARTED_FIRST)
    pytester.makepyfile(test_w=WORKERS_TEST.format(target='"c"'))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    result = tl.run("--tl-workers=1", "-k", "test_gemm and 32", subprocess=True)
    result.assert_outcomes(passed=1)
    assert "fork server" not in result.stdout.str()  # not a warning (TileLang's own may be there)
    (record,) = [json.loads(p.read_text()) for p in tl.cache_dir.glob("entries/*/record.json")]
    assert record["phases"]["compile_workers"] == workers.FORKED_IMPORTING, record["phases"]
    assert record["notes"] == [workers.NOTE_NOT_PRELOADED]


def test_no_tune_starts_the_fork_server_too(tl, pytester):
    # Nothing is tuned, but every hit is checked in a timing worker: its fork server starts at collection.
    pytester.makepyfile(test_w=WORKERS_TEST.format(target='"c"'))
    result = tl.run("--tl-no-tune", "-k", "fork_server", subprocess=True)
    result.assert_outcomes(passed=1)


CUDA_WORKER_FALLBACK = """
import os
from pytest_tlautotune.engine import workers

pools = workers.Pools(1)
try:
    pool = pools.bench_pool("cuda:0")  # forked from the fork server: no GPU here, so it fails
    print("FALLBACK", "cuda:0" in pools.fallbacks)
    print("REASON", pools.fallbacks.get("cuda:0") or "none")
    print("PARENT_IS_US", pool.schedule(os.getppid).result(timeout=300) == os.getpid())
    print("SERVER", workers.server_running())
finally:
    pools.close()
"""


def test_forked_cuda_timing_worker_that_cannot_use_its_gpu_is_spawned_instead():
    """A CUDA timing worker forked from the fork server must create its context before it gets
    a candidate; where it cannot, its device's worker is spawned by this process and the reason kept."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("needs a machine whose GPU a forked worker cannot use")
    out = subprocess.run([sys.executable, "-c", CUDA_WORKER_FALLBACK], capture_output=True, text=True,
                         timeout=600).stdout
    lines = dict(line.split(" ", 1) for line in out.splitlines() if line.split(" ", 1)[0].isupper())
    assert lines.get("FALLBACK") == "True", out
    assert lines["REASON"] != "none"  # the reason is kept (here: torch has no CUDA, or no GPU)
    assert lines["PARENT_IS_US"] == "True"  # the replacement was spawned here, not forked by the server
    assert lines["SERVER"] == "True"  # the first worker was forked from the fork server


def test_gpus_are_not_looked_for_where_cuda_visible_devices_hides_them(monkeypatch):
    from pytest_tlautotune.engine import workers

    for hidden in ("", "-1", " "):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert not workers.gpus_present()
