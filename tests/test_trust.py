"""A hit is never a stale kernel, a reused verdict is never stale (issue "Trust")."""

import json
import os

import pytest

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


@pytest.mark.slow
def test_an_edit_outside_the_rootdir_is_never_served_stale(tl, pytester, tmp_path, monkeypatch):
    lib = tmp_path / "lib"  # a kernel library on PYTHONPATH, outside the rootdir (a monorepo, an install)
    lib.mkdir()
    (lib / "kern.py").write_text(SCALED)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(lib), os.environ.get("PYTHONPATH", "")]))
    pytester.makepyfile(test_s=SCALED_TEST)
    tl.run().assert_outcomes(passed=1)
    tl.run().assert_outcomes(passed=1)
    assert tl.prop("test_scaled", "tl_cache") == ["hit"]
    (lib / "kern.py").write_text(SCALED.replace("SCALE = 2.0", "SCALE = 5.0"))
    result = tl.run()
    # The kernel now disagrees with ref_prog: it is built and checked again, not served from the cache.
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no candidate passed*", "*: mismatch: output 0*"])


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


# A kernel whose every build is logged, with a helper it imports lazily (each build) from a
# directory outside the rootdir: the warm path's index must cover exactly what the builds read.
COUNTED = '''
import kernels

LOG = {log!r}


def gemm(M, N, K, bm=16):
    import helper  # lazily: the test process never imports it before a build does

    with open(LOG, "a") as f:
        f.write(f"{{M}} {{bm}}\\n")
    return kernels.gemm(M, N, K, bm=bm, bn=16, bk=16, repeat=helper.repeat(bm))
'''

HELPER = "def repeat(bm):\n    return {repeats}[bm]\n"

COUNTED_TEST = '''
import pytest
import kern

CONFIGS = [dict(bm=bm) for bm in (4, 8, 16, 32)]


@pytest.mark.autotune(configs=CONFIGS, target="c", out_idx=[-1], ref_prog=lambda A, B: A @ B,
                      warmup=1, rep=5, early_stop_factor=0)
def test_gemm(autotune):
    autotune(kern.gemm, 32, 32, 32)
'''


class Counted:
    """The kernel module, its helper outside the rootdir, and the log of builds."""

    def __init__(self, pytester, tmp_path, monkeypatch):
        self.log = tmp_path / "builds.log"
        self.log.write_text("")
        self.lib = tmp_path / "lib"
        self.lib.mkdir()
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(self.lib), os.environ.get("PYTHONPATH", "")]))
        self.helper({4: 30, 8: 30, 16: 6, 32: 30})
        pytester.makepyfile(kern=COUNTED.format(log=str(self.log)))
        self.seen = 0

    def helper(self, repeats):
        (self.lib / "helper.py").write_text(HELPER.format(repeats=repeats))

    def builds(self):
        """The builds since the last call."""
        lines = self.log.read_text().splitlines()
        new, self.seen = lines[self.seen:], len(lines)
        return new


@pytest.fixture
def counted(tl, pytester, tmp_path, monkeypatch):
    return Counted(pytester, tmp_path, monkeypatch)


def test_a_comment_in_the_test_file_does_not_rebuild_the_space(counted, tl, pytester):
    pytester.makepyfile(test_c=COUNTED_TEST)
    tl.run().assert_outcomes(passed=1)
    assert len(counted.builds()) >= 4  # cold: every config was built
    pytester.makepyfile(test_c="# Tiles tuned on the CPU target.\n" + COUNTED_TEST)
    tl.run().assert_outcomes(passed=1)
    assert tl.prop("test_gemm", "tl_cache") == ["hit"]
    # The stored winner is built to check its IR; the space is not built again.
    assert len(counted.builds()) <= 2


@pytest.mark.slow
def test_an_edit_to_a_lazily_imported_helper_outside_the_rootdir_tunes_again(counted, tl, pytester):
    pytester.makepyfile(test_c=COUNTED_TEST)
    tl.run().assert_outcomes(passed=1)
    assert tl.prop("test_gemm", "tl_config") == ['{"bm":16}']
    # The edit leaves the winner's kernel as it was and makes another config the fastest.
    counted.helper({4: 30, 8: 30, 16: 6, 32: 0})
    tl.run().assert_outcomes(passed=1)
    assert tl.prop("test_gemm", "tl_cache") == ["miss"]
    assert tl.prop("test_gemm", "tl_config") == ['{"bm":32}']


SHAPES_TEST = '''
import pytest
import kern


def gemm_of(size):
    def build(bm=16):
        return kern.gemm(size, size, size, bm=bm)
    return build


@pytest.mark.autotune(configs=[dict(bm=bm) for bm in (4, 8, 16, 32)], target="c", out_idx=[-1],
                      ref_prog=lambda A, B: A @ B, warmup=1, rep=3)
@pytest.mark.parametrize("size", [32, 64])
def test_gemm(autotune, size):
    autotune(gemm_of(size))
'''


@pytest.mark.slow
def test_each_shape_of_a_parametrized_test_keeps_its_own_index_entry(counted, tl, pytester):
    pytester.makepyfile(test_s=SHAPES_TEST)
    tl.run().assert_outcomes(passed=2)
    counted.builds()
    assert len(list((tl.cache_dir / "index").iterdir())) == 2
    tl.run().assert_outcomes(passed=2)
    assert tl.prop("test_gemm[32]", "tl_cache") == tl.prop("test_gemm[64]", "tl_cache") == ["hit"]
    # Each shape found its own entry through the index: its winner built, nothing else.
    builds = counted.builds()
    assert len(builds) <= 4 and {b.split()[0] for b in builds} == {"32", "64"}, builds
