"""A hit is never a stale kernel, a reused verdict is never stale (issue "Trust")."""

import json

SCALED = '''
import os
import tilelang.cpu.language as T

SCALE = 2.0


def scale_add(M, N, bm=16):
    scale = float(os.environ.get("KSCALE", SCALE))

    @T.prim_func
    def main(A: T.Tensor((M, N), "float32"), B: T.Tensor((M, N), "float32"), C: T.Tensor((M, N), "float32")):
        with T.Kernel(T.ceildiv(M, bm)) as bx:
            for i, j in T.grid(bm, N):
                C[bx * bm + i, j] = A[bx * bm + i, j] * scale + B[bx * bm + i, j]
    return main
'''

SCALED_TEST = '''
import pytest
import kern

@pytest.mark.autotune(configs=[dict(bm=16), dict(bm=32)], target="c", out_idx=[-1],
                      ref_prog=lambda A, B: A * 2.0 + B, warmup=1, rep=3)
def test_scaled(autotune):
    autotune(kern.scale_add, 64, 32)
'''


def test_an_edit_outside_the_rootdir_is_never_served_stale(tl, pytester, tmp_path, monkeypatch):
    lib = tmp_path / "lib"  # a kernel library on PYTHONPATH, outside the rootdir (a monorepo, an install)
    lib.mkdir()
    (lib / "kern.py").write_text(SCALED)
    monkeypatch.setenv("PYTHONPATH", str(lib))
    pytester.makepyfile(test_s=SCALED_TEST)
    tl.run().assert_outcomes(passed=1)
    tl.run().assert_outcomes(passed=1)
    assert tl.prop("test_scaled", "tl_cache") == ["hit"]
    (lib / "kern.py").write_text(SCALED.replace("SCALE = 2.0", "SCALE = 5.0"))
    result = tl.run()
    # The kernel now disagrees with ref_prog: it is built and checked again, not served from the cache.
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no candidate passed*", "*: mismatch: output 0*"])


def test_an_environment_variable_read_at_build_time_is_seen(tl, pytester, monkeypatch):
    pytester.makepyfile(kern=SCALED, test_s=SCALED_TEST)
    monkeypatch.setenv("KSCALE", "2.0")
    tl.run().assert_outcomes(passed=1)
    tl.run().assert_outcomes(passed=1)
    assert tl.prop("test_scaled", "tl_cache") == ["hit"]
    monkeypatch.setenv("KSCALE", "5.0")
    result = tl.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no candidate passed*", "*: mismatch: output 0*"])


HELPER_TEST = '''
import pytest
import refs
from kernels import elementwise_add as add


def _fix(C):
    return C{local}


def reference(A, B):
    return _fix(refs.plus(A, B))


@pytest.mark.autotune(configs=[dict(bm=16), dict(bm=32)], target="c", out_idx=[-1],
                      ref_prog=reference, warmup=1, rep=3)
def test_add(autotune):
    autotune(add, 64, 32)
'''


def test_a_fixed_ref_prog_helper_rechecks_instead_of_replaying(tl, pytester):
    # The reference's helper in another module has a bug: every candidate is a mismatch.
    pytester.makepyfile(refs="def plus(A, B):\n    return A * B\n", test_h=HELPER_TEST.format(local=""))
    result = tl.run()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no candidate passed*", "*: mismatch: output 0*"])
    pytester.makepyfile(refs="def plus(A, B):\n    return A + B\n")
    tl.run().assert_outcomes(passed=1)
    # The same with a helper in the test file itself.
    pytester.makepyfile(test_h=HELPER_TEST.format(local=" * 0"))
    tl.run().assert_outcomes(failed=1)
    pytester.makepyfile(test_h=HELPER_TEST.format(local=""))
    result = tl.run("-v")
    result.assert_outcomes(passed=1)
    assert tl.prop("test_add", "tl_cache") in (["miss"], ["hit"])


SLOW = """
import pytest, kernels

@pytest.mark.autotune(configs={configs}, target="c", out_idx=[-1], ref_prog=lambda A, B: A @ B,
                      warmup=1, rep=20, early_stop_factor=2.0, top_k=1)
def test_gemm(autotune):
    autotune(kernels.gemm, 64, 64, 64)
"""


def _candidates(tl):
    found = [json.loads(p.read_text()) for p in tl.cache_dir.glob("entries/*/record.json")]
    return max(found, key=lambda r: len(r["candidates"]))["candidates"]


def test_early_stop_verdicts_are_timed_again_when_reused(tl, pytester):
    pytester.makepyfile(test_k=SLOW.format(configs="[dict()]"))
    tl.run().assert_outcomes(passed=1)
    pytester.makepyfile(test_k=SLOW.format(configs="[dict(), dict(repeat=30)]"))
    tl.run().assert_outcomes(passed=1)
    slow = [c for c in _candidates(tl) if c["config"] == {"repeat": 30}][0]
    assert slow["status"] == "early_stop", slow
    # One config more: the early stop from that run is not kept as a verdict, it is timed again
    # (its kernel is cached: no compile); the pass and its kernel are reused.
    pytester.makepyfile(test_k=SLOW.format(configs="[dict(), dict(repeat=30), dict(bm=32)]"))
    result = tl.run("-v")
    result.assert_outcomes(passed=1)
    by_config = {json.dumps(c["config"], sort_keys=True): c for c in _candidates(tl)}
    assert not by_config['{"repeat": 30}'].get("reused")
    assert by_config['{"repeat": 30}']["compile_s"] == 0.0  # re-timed from its cached kernel
    assert by_config["{}"].get("reused")
    result.stdout.fnmatch_lines(["*test_gemm: 1 of 3 verdicts reused from earlier runs*--tl-retune*"])
