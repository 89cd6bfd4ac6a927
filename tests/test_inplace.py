"""Kernels that write their inputs: in-place results are compared, timing never changes what is checked."""

import glob
import json

import pytest

INPLACE_KERNELS = '''
import tilelang
import tilelang.cpu.language as T


@tilelang.jit(target="c", execution_backend="cython")
def add_into(M, N, bm=16, sign=1.0):
    """A += sign * B, in place: the kernel has no output (sign=-1.0 is the wrong kernel A -= B)."""

    @T.prim_func
    def main(A: T.Tensor((M, N), "float32"), B: T.Tensor((M, N), "float32")):
        with T.Kernel(T.ceildiv(M, bm)) as bx:
            for i, j in T.grid(bm, N):
                A[bx * bm + i, j] = A[bx * bm + i, j] + B[bx * bm + i, j] * sign

    return main


@tilelang.jit(out_idx=[-1], target="c", execution_backend="cython")
def accumulate(M, N, bm=16, forget=False):
    """S += X; Y = 2 * S: S is the kernel's state, Y its output (forget=True leaves S as it was)."""

    @T.prim_func
    def main(S: T.Tensor((M, N), "float32"), X: T.Tensor((M, N), "float32"), Y: T.Tensor((M, N), "float32")):
        with T.Kernel(T.ceildiv(M, bm)) as bx:
            for i, j in T.grid(bm, N):
                Y[bx * bm + i, j] = (S[bx * bm + i, j] + X[bx * bm + i, j]) * 2.0
                if not forget:
                    S[bx * bm + i, j] = S[bx * bm + i, j] + X[bx * bm + i, j]

    return main
'''

REFERENCE_STYLES = '''
import pytest, torch
import inpl

QUICK = dict(configs=[dict(), dict(sign=-1.0)], warmup=1, rep=3, top_k=1)


def add_in_place(A, B):
    A.add_(B)


def check(result):
    assert result.config == {}
    wrong = [c for c in result.record["candidates"] if c["config"] == {"sign": -1.0}][0]
    assert wrong["status"] == "mismatch" and wrong["reason"].startswith("input A"), wrong
    A, B = torch.randn(64, 32), torch.randn(64, 32)
    expected = A + B
    result.kernel(A, B)
    torch.testing.assert_close(A, expected)


@pytest.mark.autotune(ref_prog=add_in_place, **QUICK)
def test_reference_in_place(autotune):
    check(autotune(inpl.add_into, 64, 32))


@pytest.mark.autotune(ref_prog=lambda A, B: A + B, **QUICK)
def test_reference_returns_the_new_input(autotune):
    check(autotune(inpl.add_into, 64, 32))


@pytest.mark.autotune(ref_prog=lambda A, B: A + B, inplace=["A"], **QUICK)
def test_named_in_place_reference_returns(autotune):
    check(autotune(inpl.add_into, 64, 32))


@pytest.mark.autotune(ref_prog=add_in_place, inplace=[0], **QUICK)
def test_indexed_in_place_reference_in_place(autotune):
    check(autotune(inpl.add_into, 64, 32))
'''


def test_an_in_place_kernel_is_compared_whatever_the_reference_style(tl, pytester):
    pytester.makepyfile(inpl=INPLACE_KERNELS, test_styles=REFERENCE_STYLES)
    json_path = pytester.path / "out.json"
    result = tl.run(f"--tl-json={json_path}")
    result.assert_outcomes(passed=4)
    rows = json.loads(json_path.read_text())["tests"]
    assert sorted((r["n_passed"], r["n_measured"], r["check"]) for r in rows) == [(1, 2, "checked")] * 4


FORGOT_RETURN = '''
import pytest
import inpl


def reference(A, B):
    A + B  # forgot to return it


@pytest.mark.autotune(configs=[dict(), dict(bm=32)], ref_prog=reference, warmup=1, rep=3)
def test_forgot(autotune):
    autotune(inpl.add_into, 64, 32)
'''


def test_a_reference_that_returns_and_changes_nothing_is_an_error_naming_the_fix(tl, pytester):
    pytester.makepyfile(inpl=INPLACE_KERNELS, test_forgot=FORGOT_RETURN)
    result = tl.run()
    result.assert_outcomes(failed=1)
    # The test's failure, then (its failed row in the summary repeats the first line).
    result.stdout.fnmatch_lines([
        "*test_forgot: ref_prog: *returned nothing and changed none of its inputs*"
        "return the expected outputs*or change the inputs the kernel changes*",
        "*nothing else was measured*",
    ])


STATEFUL = '''
import pytest, torch
import inpl


def supply(params):
    return [torch.full((64, 32), 1.0), torch.full((64, 32), 0.25)]


def step(S, X):
    S += X
    return 2 * S


@pytest.mark.autotune(configs=[dict(bm=8), dict(bm=16), dict(bm=32), dict(bm=64), dict(bm=16, forget=True)],
                      out_idx=[-1], supply_prog=supply, ref_prog=step, warmup=3, rep=10, top_k=4,
                      early_stop_factor=0)
def test_state(autotune):
    result = autotune(inpl.accumulate, 64, 32)
    statuses = {json.dumps(c["config"], sort_keys=True): (c["status"], c["reason"])
                for c in result.record["candidates"]}
    forgot = statuses.pop('{"bm": 16, "forget": true}')
    assert forgot[0] == "mismatch" and forgot[1].startswith("input S"), forgot
    assert all(status == "ok" for status, _ in statuses.values()), statuses
    S, X = supply(None)
    Y = result.kernel(S, X)
    torch.testing.assert_close(S, torch.full((64, 32), 1.25))
    torch.testing.assert_close(Y, torch.full((64, 32), 2.5))
'''


def test_a_stateful_kernel_is_checked_on_fresh_inputs_whatever_timing_did(tl, pytester):
    # The reference and every candidate are timed on the shared inputs (cache_input_tensors): each
    # check still sees the inputs supply_prog made, and the kernel's new state S is compared too.
    pytester.makepyfile(inpl=INPLACE_KERNELS, test_state="import json\n" + STATEFUL)
    tl.run().assert_outcomes(passed=1)


NOTHING_COMPARED = '''
import pytest
import inpl


def add_in_place(A, B):
    A.add_(B)


# Both configs are timed whole (early_stop_factor=0): on a loaded runner one 15 us candidate's first
# samples once read 3.7x the other's and it stopped early, which is not what this test is about.
@pytest.mark.autotune(configs=[dict(), dict(sign=-1.0)], ref_prog=add_in_place, inplace=[], warmup=1, rep=3,
                      early_stop_factor=0)
def test_nothing(autotune):
    autotune(inpl.add_into, 64, 32)
'''


def test_nothing_compared_is_unchecked(tl, pytester):
    # inplace=[] says no input is a result, and the kernel has no output: nothing can be compared.
    pytester.makepyfile(inpl=INPLACE_KERNELS, test_nothing=NOTHING_COMPARED)
    result = tl.run("-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_nothing.py::test_nothing *2/2 unchecked",
                                 "*test_nothing.py::test_nothing: unchecked: *nothing was compared*"])


@pytest.mark.parametrize(("value", "message"), [
    ("'A'", "'inplace' must be a list of parameter names or indices, got 'A'"),
    ("[True]", "'inplace' must be a list of parameter names or indices, got [[]True[]]"),
    ("['A', 'A']", "'inplace' names 'A' twice"),
])
def test_a_bad_inplace_fails_at_collection(pytester, value, message):
    pytester.makepyfile(test_bad=f"""
import pytest
@pytest.mark.autotune(configs=[dict(bm=16)], inplace={value})
def test_x(autotune):
    pass
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*test_bad.py::test_x: @pytest.mark.autotune: argument {message}"])


BAD_NAMES = '''
import pytest
import inpl


@pytest.mark.autotune(configs=[dict(), dict(bm=32)], ref_prog=lambda S, X: 2 * (S + X), inplace=["Q"])
def test_name(autotune):
    autotune(inpl.accumulate, 64, 32)


@pytest.mark.autotune(configs=[dict(), dict(bm=32)], ref_prog=lambda S, X: 2 * (S + X), inplace=[5])
def test_index(autotune):
    autotune(inpl.accumulate, 64, 32)


@pytest.mark.autotune(configs=[dict(), dict(bm=32)], ref_prog=lambda S, X: 2 * (S + X), inplace=["Y"])
def test_output(autotune):
    autotune(inpl.accumulate, 64, 32)
'''


def test_inplace_must_name_inputs_of_the_kernel(tl, pytester):
    pytester.makepyfile(inpl=INPLACE_KERNELS, test_names=BAD_NAMES)
    result = tl.run()
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines([
        "*test_name: inplace=[[]'Q'[]]: 'Q' is not a parameter of accumulate (S, X, Y)*nothing was compiled*",
        "*test_index: inplace=[[]5[]]: 5 is out of range: accumulate has 3 parameters (S, X, Y)*",
        "*test_output: inplace=[[]'Y'[]]: 'Y' is an output (out_idx), not an input*",
    ])


CUDA_STATEFUL = '''
import pytest, torch
import tilelang
import tilelang.language as T


@tilelang.jit(out_idx=[-1], target="cuda")
def accumulate(M, N, block_M=64, forget=False):
    """S += X; Y = 2 * S on the GPU (forget=True leaves S as it was)."""

    @T.prim_func
    def main(S: T.Tensor((M, N), "float32"), X: T.Tensor((M, N), "float32"), Y: T.Tensor((M, N), "float32")):
        with T.Kernel(T.ceildiv(M, block_M), threads=128) as bx:
            for i, j in T.Parallel(block_M, N):
                Y[bx * block_M + i, j] = (S[bx * block_M + i, j] + X[bx * block_M + i, j]) * 2.0
                if not forget:
                    S[bx * block_M + i, j] = S[bx * block_M + i, j] + X[bx * block_M + i, j]

    return main


def supply(params):
    return [torch.full((1024, 256), 1.0, device="cuda"), torch.full((1024, 256), 0.25, device="cuda")]


def step(S, X):
    S += X
    return 2 * S


@pytest.mark.autotune(configs=[dict(block_M=32), dict(block_M=64), dict(block_M=128), dict(forget=True)],
                      supply_prog=supply, ref_prog=step, warmup=3, rep=20, top_k=3, early_stop_factor=0,
                      backend="{backend}")
def test_state(autotune):
    result = autotune(accumulate, 1024, 256)
    statuses = {{json.dumps(c["config"], sort_keys=True): (c["status"], c["reason"])
                for c in result.record["candidates"]}}
    forgot = statuses.pop('{{"forget": true}}')
    assert forgot[0] == "mismatch" and forgot[1].startswith("input S"), forgot
    assert all(status == "ok" for status, _ in statuses.values()), statuses
'''


@pytest.mark.cuda
@pytest.mark.skipif(not glob.glob("/dev/nvidia[0-9]*"), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["event", "cudagraph", "cupti"])
def test_a_stateful_cuda_kernel_is_timed_on_inputs_put_back(tl, pytester, backend):
    # No torch import here (pytester unloads what a test imports; torch cannot load twice).
    pytester.makepyfile(test_state="import json\n" + CUDA_STATEFUL.format(backend=backend))
    tl.run().assert_outcomes(passed=1)
