"""Kernels written in TileLang's own style (@tilelang.jit lazy and eager, @tilelang.autotune) with the fixture."""

import glob
import json

import pytest

STYLES = '''
import tilelang
import tilelang.cpu.language as T

CONFIGS = [dict(bm=16, bn=16), dict(bm=32, bn=16), dict(bm=16, bn=32)]


def ref(A, B):
    return A @ B


def _lazy(M, N, K, bm, bn, bk=16, dtype="float32"):
    @T.prim_func
    def main(A: T.Tensor((M, K), dtype), B: T.Tensor((K, N), dtype), C: T.Tensor((M, N), dtype)):
        with T.Kernel(T.ceildiv(N, bn), T.ceildiv(M, bm)) as (bx, by):
            acc = T.alloc_local((bm, bn), dtype)
            for i, j in T.grid(bm, bn):
                acc[i, j] = 0
            for ko in T.serial(K // bk):
                for i, j, k in T.grid(bm, bn, bk):
                    acc[i, j] += A[by * bm + i, ko * bk + k] * B[ko * bk + k, bx * bn + j]
            for i, j in T.grid(bm, bn):
                C[by * bm + i, bx * bn + j] = acc[i, j]
    return main


# Lazy style: returns a PrimFunc; bm and bn have no defaults (they come from the configs).
gemm_lazy = tilelang.jit(out_idx=[-1], target="c", execution_backend="cython")(_lazy)
gemm_lazy_cuda = tilelang.jit(out_idx=[-1], target="cuda")(_lazy)
gemm_tuned = tilelang.autotune(configs=CONFIGS, ref_prog=ref, warmup=1, rep=4)(
    tilelang.jit(out_idx=[-1], target="c", execution_backend="cython")(_lazy))


# Eager style: takes tensors, shapes from T.const, the output from T.empty.
@tilelang.jit(target="c", execution_backend="cython")
def gemm_eager(A, B, bm: int = 16, bn: int = 16, bk: int = 16):
    M, N, K = T.const("M, N, K")
    A: T.Tensor[[M, K], T.float32]
    B: T.Tensor[[K, N], T.float32]
    C = T.empty((M, N), T.float32)
    with T.Kernel(T.ceildiv(N, bn), T.ceildiv(M, bm)) as (bx, by):
        acc = T.alloc_local((bm, bn), T.float32)
        for i, j in T.grid(bm, bn):
            acc[i, j] = 0
        for ko in T.serial(K // bk):
            for i, j, k in T.grid(bm, bn, bk):
                acc[i, j] += A[by * bm + i, ko * bk + k] * B[ko * bk + k, bx * bn + j]
        for i, j in T.grid(bm, bn):
            C[by * bm + i, bx * bn + j] = acc[i, j]
    return C


# Eager style with a symbolic dimension: inputs for the check are copies of the example tensors.
@tilelang.jit(target="c", execution_backend="cython")
def add_dynamic(A, B, bm: int = 16):
    M = T.dynamic("M")
    N = T.const("N")
    A: T.Tensor[[M, N], T.float32]
    B: T.Tensor[[M, N], T.float32]
    C = T.empty((M, N), T.float32)
    with T.Kernel(T.ceildiv(M, bm)) as bx:
        for i, j in T.grid(bm, N):
            if bx * bm + i < M:
                C[bx * bm + i, j] = A[bx * bm + i, j] + B[bx * bm + i, j]
    return C


@tilelang.jit(target="c", execution_backend="cython")
def eager_no_defaults(A, B, bm: int):
    M, N = T.const("M, N")
    A: T.Tensor[[M, N], T.float32]
    B: T.Tensor[[M, N], T.float32]
    C = T.empty((M, N), T.float32)
    with T.Kernel(T.ceildiv(M, bm)) as bx:
        for i, j in T.grid(bm, N):
            C[bx * bm + i, j] = A[bx * bm + i, j] + B[bx * bm + i, j]
    return C


def returns_kernel(M, N, bm=16):
    @T.prim_func
    def main(A: T.Tensor((M, N), "float32"), B: T.Tensor((M, N), "float32")):
        with T.Kernel(T.ceildiv(M, bm)) as bx:
            for i, j in T.grid(bm, N):
                B[bx * bm + i, j] = A[bx * bm + i, j]
    return tilelang.compile(main, out_idx=[-1], target="c", execution_backend="cython")
'''

STYLE_TESTS = '''
import pytest, torch
import styles

CHECK = dict(ref_prog=styles.ref, rtol=1e-3, atol=1e-3, warmup=1, rep=3)


@pytest.mark.autotune(configs=styles.CONFIGS[:2], **CHECK)
def test_lazy(autotune):
    result = autotune(styles.gemm_lazy, 64, 64, 64)
    A, B = torch.randn(64, 64), torch.randn(64, 64)
    torch.testing.assert_close(result.kernel(A, B), A @ B, rtol=1e-3, atol=1e-3)  # out_idx=[-1] from @jit
    assert result.record["compile_args"]["target"] == "c"
    assert result.record["compile_args"]["execution_backend"] == "cython"


@pytest.mark.autotune(configs=styles.CONFIGS[:2], **CHECK)
def test_eager(autotune):
    A, B = torch.randn(64, 64), torch.randn(64, 64)
    result = autotune(styles.gemm_eager, A, B)
    torch.testing.assert_close(result.kernel(A, B), A @ B, rtol=1e-3, atol=1e-3)  # C from T.empty
    assert result.record["compile_args"]["out_idx"] == [-1]


@pytest.mark.autotune(configs=[dict(bm=16), dict(bm=32)], ref_prog=lambda A, B: A + B, warmup=1, rep=3)
def test_eager_symbolic(autotune):
    A, B = torch.randn(48, 32), torch.randn(48, 32)
    result = autotune(styles.add_dynamic, A, B)
    A, B = torch.randn(40, 32), torch.randn(40, 32)
    torch.testing.assert_close(result.kernel(A, B), A + B)


@pytest.mark.autotune
def test_autotune_decorator(autotune):
    autotune(styles.gemm_tuned, 64, 64, 64)


def test_autotune_decorator_without_marker(autotune):
    autotune(styles.gemm_tuned, 64, 64, 64)


@pytest.mark.autotune(configs=[dict(bm=32, bn=32)], ref_prog=lambda A, B: torch.matmul(A, B), rep=2)
def test_marker_wins(autotune):
    autotune(styles.gemm_tuned, 64, 64, 64)
'''


def _records(cache_dir):
    """{test name: record.json} of every stored entry."""
    records = [json.loads(p.read_text()) for p in cache_dir.glob("entries/*/record.json")]
    return {r["nodeid"].split("::")[-1]: r for r in records}


@pytest.fixture
def styles(pytester):
    pytester.makepyfile(styles=STYLES)


def test_tilelang_styles_tune_with_their_settings_and_quietly(tl, pytester, styles):
    pytester.makepyfile(test_styles=STYLE_TESTS)
    result = tl.run("-s")  # -s: anything TileLang printed in any process would reach stdout
    result.assert_outcomes(passed=6)
    configs = [dict(bm=16, bn=16), dict(bm=32, bn=16), dict(bm=16, bn=32)]
    for test in ("test_lazy", "test_eager"):
        assert json.loads(tl.prop(test, "tl_config")[0]) in configs[:2]
    assert json.loads(tl.prop("test_eager_symbolic", "tl_config")[0]) in [dict(bm=16), dict(bm=32)]
    records = _records(tl.cache_dir)
    # No marker configs: the decorator's three configs, its rep=4, its ref_prog (checked, so timed).
    for test in ("test_autotune_decorator", "test_autotune_decorator_without_marker"):
        assert json.loads(tl.prop(test, "tl_config")[0]) in configs
        assert float(tl.prop(test, "tl_ref_latency_ms")[0]) > 0
    tuned = records["test_autotune_decorator"]["candidates"]
    assert sorted(json.dumps(c["config"], sort_keys=True) for c in tuned) == sorted(
        json.dumps(c, sort_keys=True) for c in configs)
    # The decorator's rep=4 for every candidate timed to the end; one stopped early (more than 3x slower
    # than the best so far, which a loaded CI runner can make of any config) has fewer, never more.
    full = [c for c in tuned if c["status"] != "early_stop"]
    assert full and {len(c["samples"]) for c in full} == {4}
    assert all(len(c["samples"]) < 4 for c in tuned if c["status"] == "early_stop")
    # Marker configs and settings win over the decorator's.
    assert json.loads(tl.prop("test_marker_wins", "tl_config")[0]) == dict(bm=32, bn=32)
    assert [len(c["samples"]) for c in records["test_marker_wins"]["candidates"]] == [2]
    result.stdout.fnmatch_lines(["*test_styles.py::test_autotune_decorator *[0-9]/3*", "*test_marker_wins*1/1*"])
    # TileLang's own tuner never runs: no autotuner.log, no tqdm bars, no INFO compile lines.
    out = result.stdout.str() + result.stderr.str()
    assert not (pytester.path / "autotuner.log").exists()
    for noise in ("it/s", "%|", "Tuned Latency", "TileLang begins to compile", ":INFO]"):
        assert noise not in out, noise


def test_decorator_target_is_used_and_the_marker_overrides_it(tl, pytester, styles):
    # Not torch.cuda here: pytester unloads modules imported during a test, and torch cannot be re-imported.
    if glob.glob("/dev/nvidia[0-9]*"):
        pytest.skip("this machine may have a GPU")
    pytester.makepyfile(test_target="""
import pytest, styles

@pytest.mark.autotune(configs=[dict(bm=16, bn=16)], ref_prog=styles.ref, warmup=1, rep=2)
def test_decorator_target(autotune):
    autotune(styles.gemm_lazy_cuda, 32, 32, 32)

@pytest.mark.autotune(configs=[dict(bm=16, bn=16)], ref_prog=styles.ref, warmup=1, rep=2, target="c",
                      execution_backend="cython")
def test_marker_target(autotune):
    assert autotune(styles.gemm_lazy_cuda, 32, 32, 32).record["compile_args"]["target"] == "c"
""")
    result = tl.run("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*target 'cuda' needs a GPU*"])


def test_programs_that_cannot_be_tuned_fail_clearly(tl, pytester, styles):
    pytester.makepyfile(test_bad="""
import pytest, torch
import styles

SETTINGS = dict(ref_prog=lambda A, B: A + B, target="c", out_idx=[-1], warmup=1, rep=2)

@pytest.mark.autotune(configs=[dict(bm=16), dict(bm=32)], ref_prog=lambda A: A, target="c", warmup=1, rep=2)
def test_returns_kernel(autotune):
    autotune(styles.returns_kernel, 64, 64)

@pytest.mark.autotune(configs=[dict(bm=16)], **SETTINGS)
def test_not_callable(autotune):
    autotune(42, 64, 64)

@pytest.mark.autotune(configs=[dict(bm=16)], ref_prog=lambda A, B: A + B, warmup=1, rep=2)
def test_eager_without_defaults(autotune):
    autotune(styles.eager_no_defaults, torch.randn(32, 32), torch.randn(32, 32))
""")
    result = tl.run("-s")
    result.assert_outcomes(failed=2, passed=1)
    result.stdout.fnmatch_lines_random([
        # The same failure for every config is the program's fault: said once, nothing compiled.
        "*test_bad.py::test_returns_kernel: every config failed the same way, so the program or the call is at "
        "fault: building the config: ProgramError: program returns a compiled kernel (JITKernel), not a PrimFunc*"
        "return the @T.prim_func*",
        "*test_bad.py::test_not_callable: autotune(program=...): program must be callable*got int: 42*",
    ])
    assert "Traceback" not in result.stdout.str()
    # An eager kernel whose tunable has no default builds each config directly.
    assert tl.prop("test_eager_without_defaults", "tl_config") == ['{"bm":16}']
    # The kernel-returning program compiled in a worker, with TileLang's INFO lines quieted.
    out = result.stdout.str() + result.stderr.str()
    assert "TileLang begins to compile" not in out and ":INFO]" not in out


UNIT = r'''
import logging

import pytest
import tilelang
import tilelang.cpu.language as T

from pytest_tlautotune.engine.programs import ProgramError, quiet_tilelang, resolve


def test_resolve_rejects_kernels_and_primfuncs_before_tuning():
    class JITKernel:
        def __call__(self, *args):
            return None

    with pytest.raises(ProgramError, match=r"got a compiled kernel \(JITKernel\); pass the function"):
        resolve(JITKernel(), (), {})

    @T.prim_func
    def main(A: T.Tensor((4,), "float32")):
        with T.Kernel(1):
            for i in T.serial(4):
                A[i] = 0.0

    with pytest.raises(ProgramError, match="got a PrimFunc; pass the function that returns it"):
        resolve(main, (), {})
    with pytest.raises(ProgramError, match="must be callable.*got NoneType"):
        resolve(None, (), {})


def test_autotune_settings_are_those_the_user_wrote():
    def ref(A, B):
        return A

    @tilelang.autotune(configs=[dict(bm=16)], ref_prog=ref, rep=7, rtol=0.5)
    @tilelang.jit(out_idx=[-1], target="c", execution_backend="cython")
    def kernel(M, bm=16):
        raise AssertionError("never built in this test")

    prog = resolve(kernel, (), {})
    # TileLang's defaults (warmup=25, timeout=100, cache_input_tensors=False) leave the plugin's in place.
    assert prog.profile_defaults == dict(ref_prog=ref, rep=7, rtol=0.5)
    assert prog.configs == [dict(bm=16)]
    assert prog.compile_defaults == dict(out_idx=[-1], target="c", execution_backend="cython")


def test_quiet_tilelang_restores_the_levels():
    log = logging.getLogger("tilelang")
    old = log.level
    log.setLevel(logging.INFO)
    try:
        with quiet_tilelang():
            assert not log.isEnabledFor(logging.INFO)
        assert log.level == logging.INFO
    finally:
        log.setLevel(old)
'''


def test_resolve_units(pytester):
    # In a subprocess: importing TileLang (and so torch) in this process breaks later pytester tests.
    pytester.makepyfile(test_units=UNIT)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=3)
