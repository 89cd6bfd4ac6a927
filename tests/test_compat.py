"""Every way TileLang lets a kernel be declared and tuned, called unchanged through the fixture
(issue: "Every TileLang kernel, unchanged"), and the true reason whenever a config fails.

One inner pytest session (cold, then warm) runs one inner test per style; each outer test below
checks its style passed cold and was served from the cache warm.
"""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

KERNELS = r'''
import os

import tilelang
import tilelang.cpu.language as T
from tilelang.autotuner import AutoTuner, autotune

CPU = dict(target="c", execution_backend="cython")


# Eager, a tunable defaulting to None (TileLang's GEMV style), two outputs (a tuple), a scalar argument.
@tilelang.jit(**CPU)
def eager_two(A, B, scale: float, bm: int = None):
    M, N = T.const("M, N")
    A: T.Tensor[[M, N], T.float32]
    B: T.Tensor[[M, N], T.float32]
    C = T.empty((M, N), T.float32)
    D = T.empty((M, N), T.float32)
    with T.Kernel(T.ceildiv(M, bm)) as bx:
        for i, j in T.grid(bm, N):
            C[bx * bm + i, j] = A[bx * bm + i, j] + B[bx * bm + i, j]
            D[bx * bm + i, j] = (A[bx * bm + i, j] - B[bx * bm + i, j]) * scale
    return C, D


# Eager, a tunable with no default at all (TileLang's elementwise example).
@tilelang.jit(**CPU)
def eager_nodefault(A, B, bm: int):
    M, N = T.const("M, N")
    A: T.Tensor[[M, N], T.float32]
    B: T.Tensor[[M, N], T.float32]
    C = T.empty((M, N), T.float32)
    with T.Kernel(T.ceildiv(M, bm)) as bx:
        for i, j in T.grid(bm, N):
            C[bx * bm + i, j] = A[bx * bm + i, j] + B[bx * bm + i, j]
    return C


def add(M, N, bm=16, mul=False, par=False):
    """C = A + B; ``mul`` computes A * B instead (right only where they agree), ``par`` indexes a
    local buffer with T.Parallel, which TileLang's semantic check refuses while lowering."""

    @T.prim_func
    def main(A: T.Tensor((M, N), "float32"), B: T.Tensor((M, N), "float32"), C: T.Tensor((M, N), "float32")):
        with T.Kernel(T.ceildiv(M, bm)) as bx:
            acc = T.alloc_local((bm, N), "float32")
            if par:
                for i, j in T.Parallel(bm, N):
                    acc[i, j] = A[bx * bm + i, j]
            else:
                for i, j in T.grid(bm, N):
                    acc[i, j] = A[bx * bm + i, j]
            for i, j in T.grid(bm, N):
                if mul:
                    C[bx * bm + i, j] = acc[i, j] * B[bx * bm + i, j]
                else:
                    C[bx * bm + i, j] = acc[i, j] + B[bx * bm + i, j]
    return main


add_jit = tilelang.jit(out_idx=[-1], **CPU)(add)


def two_outputs(M, N, bm=16, bug=False):
    """(A + B, A - B); ``bug`` gets the second output wrong."""

    @T.prim_func
    def main(A: T.Tensor((M, N), "float32"), B: T.Tensor((M, N), "float32"),
             C: T.Tensor((M, N), "float32"), D: T.Tensor((M, N), "float32")):
        with T.Kernel(T.ceildiv(M, bm)) as bx:
            for i, j in T.grid(bm, N):
                C[bx * bm + i, j] = A[bx * bm + i, j] + B[bx * bm + i, j]
                if bug:
                    D[bx * bm + i, j] = A[bx * bm + i, j] + B[bx * bm + i, j]
                else:
                    D[bx * bm + i, j] = A[bx * bm + i, j] - B[bx * bm + i, j]
    return main


def scaled(M, N, bm=16):
    """C = A * n with a scalar parameter n (TileLang needs set_autotune_inputs for it)."""

    @T.prim_func
    def main(A: T.Tensor((M, N), "float32"), n: T.int32, C: T.Tensor((M, N), "float32")):
        with T.Kernel(T.ceildiv(M, bm)) as bx:
            for i, j in T.grid(bm, N):
                C[bx * bm + i, j] = A[bx * bm + i, j] * T.Cast("float32", n)
    return main


def symbolic_add(N, bm=16):
    M = T.symbolic("m")

    @T.prim_func
    def main(A: T.Tensor((M, N), "float32"), B: T.Tensor((M, N), "float32"), C: T.Tensor((M, N), "float32")):
        with T.Kernel(T.ceildiv(M, bm)) as bx:
            for i, j in T.grid(bm, N):
                if bx * bm + i < M:
                    C[bx * bm + i, j] = A[bx * bm + i, j] + B[bx * bm + i, j]
    return main


def options(M, N, tile=None, order="ij", unroll=False):
    """Config values that are a nested dict, a string and a bool."""
    bm = tile["bm"]

    @T.prim_func
    def main(A: T.Tensor((M, N), "float32"), B: T.Tensor((M, N), "float32"), C: T.Tensor((M, N), "float32")):
        with T.Kernel(T.ceildiv(M, bm)) as bx:
            if order == "ij":
                for i, j in T.grid(bm, N):
                    C[bx * bm + i, j] = A[bx * bm + i, j] + B[bx * bm + i, j]
            else:
                for j, i in T.grid(N, bm):
                    C[bx * bm + i, j] = A[bx * bm + i, j] + B[bx * bm + i, j] + (0.0 if unroll else 0.0)
    return main


def make_tuner(M, N):
    """API mode, as TileLang's example_gemm_autotune.py: a closure over the shapes."""

    def kernel(bm=None):
        @T.prim_func
        def main(A: T.Tensor((M, N), "float32"), B: T.Tensor((M, N), "float32"), C: T.Tensor((M, N), "float32")):
            with T.Kernel(T.ceildiv(M, bm)) as bx:
                for i, j in T.grid(bm, N):
                    C[bx * bm + i, j] = A[bx * bm + i, j] + B[bx * bm + i, j]
        return main

    return (AutoTuner.from_kernel(kernel=kernel, configs=[dict(bm=16), dict(bm=32)])
            .set_compile_args(out_idx=[-1], **CPU)
            .set_profile_args(ref_prog=lambda A, B: A + B, warmup=1, rep=3))


def device_space(M, N):
    """A config space that depends on the device, like TileLang's carver/roller hints."""
    sizes = [16, 32] if os.environ.get("COMPAT_ARCH", "a") == "a" else [16, 32, 64]
    return [dict(bm=b) for b in sizes if M % b == 0]


FACTOR = 2.0


def scaled_by_global(M, N, bm=16):
    """Reads module state at build time, as a kernel asking torch.cuda for the device does."""
    factor = FACTOR

    @T.prim_func
    def main(A: T.Tensor((M, N), "float32"), B: T.Tensor((M, N), "float32"), C: T.Tensor((M, N), "float32")):
        with T.Kernel(T.ceildiv(M, bm)) as bx:
            for i, j in T.grid(bm, N):
                C[bx * bm + i, j] = A[bx * bm + i, j] * factor + B[bx * bm + i, j]
    return main


def broken(M, N, bm=16):
    M + "rows"  # a TypeError before any config matters


# The decorator stack exactly as TileLang's examples and README write it: @autotune over a lazy @jit.
@autotune(configs=[dict(bm=16), dict(bm=32)], warmup=1, rep=3, ref_prog=lambda A, B: A + B)
@tilelang.jit(out_idx=[-1], **CPU)
def lazy_stack(M, N, bm=16):
    @T.prim_func
    def main(A: T.Tensor((M, N), "float32"), B: T.Tensor((M, N), "float32"), C: T.Tensor((M, N), "float32")):
        with T.Kernel(T.ceildiv(M, bm)) as bx:
            for i, j in T.grid(bm, N):
                C[bx * bm + i, j] = A[bx * bm + i, j] + B[bx * bm + i, j]

    return main


# The same stack over an eager @jit (T.const shapes, T.empty output).
@autotune(configs=[dict(bm=16), dict(bm=32)], warmup=1, rep=3, ref_prog=lambda A, B: A - B)
@tilelang.jit(**CPU)
def eager_stack(A, B, bm: int = 16):
    M, N = T.const("M, N")
    A: T.Tensor[[M, N], T.float32]
    B: T.Tensor[[M, N], T.float32]
    C = T.empty((M, N), T.float32)
    with T.Kernel(T.ceildiv(M, bm)) as bx:
        for i, j in T.grid(bm, N):
            C[bx * bm + i, j] = A[bx * bm + i, j] - B[bx * bm + i, j]
    return C


def scale_kernel(scale):
    """A @tilelang.jit made inside a factory function (TileOPs' style): a closure, shipped by value."""

    @tilelang.jit(out_idx=[-1], **CPU)
    def kernel(M, N, bm=16):
        @T.prim_func
        def main(A: T.Tensor((M, N), "float32"), C: T.Tensor((M, N), "float32")):
            with T.Kernel(T.ceildiv(M, bm)) as bx:
                for i, j in T.grid(bm, N):
                    C[bx * bm + i, j] = A[bx * bm + i, j] * scale

        return main

    return kernel


class ScaleOp:
    """An operator object whose bound method builds the PrimFunc from its own state."""

    def __init__(self, scale):
        self.scale = scale

    def build(self, M, N, bm=16):
        scale = self.scale

        @T.prim_func
        def main(A: T.Tensor((M, N), "float32"), C: T.Tensor((M, N), "float32")):
            with T.Kernel(T.ceildiv(M, bm)) as bx:
                for i, j in T.grid(bm, N):
                    C[bx * bm + i, j] = A[bx * bm + i, j] * scale

        return main
'''

TESTS = r'''
import functools
import json
import os

import pytest
import tilelang
import torch
from tilelang.autotuner import set_autotune_inputs

import compat_kernels as K

QUICK = dict(warmup=1, rep=3)
A, B = torch.randn(64, 32), torch.randn(64, 32)


@pytest.mark.autotune(configs=[dict(bm=16), dict(bm=32)], ref_prog=lambda A, B: (A + B, (A - B) * 2.0), **QUICK)
def test_eager_none_default_tuple_scalar(autotune):
    result = autotune(K.eager_two, A, B, 2.0)
    C, D = result.kernel(A, B, 2.0)
    torch.testing.assert_close(C, A + B)
    torch.testing.assert_close(D, (A - B) * 2.0)
    assert result.config in (dict(bm=16), dict(bm=32))


@pytest.mark.autotune(configs=[dict(bm=16), dict(bm=32)], ref_prog=lambda A, B: (A + B, (A - B) * 3.0), **QUICK)
def test_eager_scalar_by_name(autotune):
    result = autotune(K.eager_two, A, B, scale=3.0)
    C, D = result.kernel(A, B, scale=3.0)
    torch.testing.assert_close(D, (A - B) * 3.0)


@pytest.mark.autotune(configs=[dict(bm=b) for b in (8, 16, 32)], ref_prog=lambda A, B: A + B, **QUICK)
def test_eager_no_defaults(autotune):
    result = autotune(K.eager_nodefault, A, B)
    torch.testing.assert_close(result.kernel(A, B), A + B)


@pytest.mark.autotune(configs=[dict(bm=16, pass_configs={"tl.disable_safe_memory_legalize": True}),
                               dict(bm=32, pass_configs={"tl.disable_safe_memory_legalize": True}),
                               dict(bm=16, pass_configs={"tl.no_such_pass_option": True})],
                      pass_configs={"tirx.disable_cse_tir": True}, out_idx=[-1], target="c",
                      ref_prog=lambda A, B: A + B, **QUICK)
def test_pass_configs_in_config(autotune):
    result = autotune(K.add, 64, 32)
    assert result.config["pass_configs"] == {"tl.disable_safe_memory_legalize": True}
    # Merged over the marker's pass_configs.
    assert result.record["compile_args"]["pass_configs"] == {"tirx.disable_cse_tir": True,
                                                              "tl.disable_safe_memory_legalize": True}
    by_option = {json.dumps(c["config"], sort_keys=True): c for c in result.record["candidates"]}
    bad = [c for c in by_option.values() if "tl.no_such_pass_option" in json.dumps(c["config"])][0]
    assert bad["status"] == "compile_error" and "no_such_pass_option" in bad["reason"], bad
    assert len({c["ckey"] for c in result.record["candidates"]}) == 3  # part of each candidate's key
    torch.testing.assert_close(result.kernel(A, B), A + B)


@pytest.mark.autotune(configs=[dict(bm=16), dict(bm=32, bug=True)], out_idx=[-2, -1], target="c",
                      ref_prog=lambda A, B: (A + B, A - B), **QUICK)
def test_several_outputs(autotune):
    result = autotune(K.two_outputs, 64, 32)
    assert result.config == dict(bm=16)
    bug = [c for c in result.record["candidates"] if c["config"].get("bug")][0]
    assert bug["status"] == "mismatch" and bug["reason"].startswith("output 1:"), bug
    C, D = result.kernel(A, B)
    torch.testing.assert_close(D, A - B)


@pytest.mark.autotune(configs=[dict(mul=False), dict(mul=True)], out_idx=[-1], target="c",
                      supply_prog=lambda params: [torch.full((64, 32), 2.0), torch.full((64, 32), 2.0)],
                      ref_prog=lambda A, B: A + B, **QUICK)
def test_supply_prog(autotune):
    # 2 + 2 == 2 * 2: on these inputs (and only on them) the mul candidate passes too.
    result = autotune(K.add, 64, 32)
    assert sorted(c["status"] for c in result.record["candidates"]) == ["ok", "ok"]


@pytest.mark.autotune(configs=[dict(mul=False), dict(mul=True)], out_idx=[-1], target="c",
                      supply_type=tilelang.TensorSupplyType.Zero, ref_prog=lambda A, B: A + B, **QUICK)
def test_supply_type(autotune):
    result = autotune(K.add, 64, 32)
    assert sorted(c["status"] for c in result.record["candidates"]) == ["ok", "ok"]


@pytest.mark.autotune(configs=[dict(bm=16), dict(bm=32)], out_idx=[-1], target="c",
                      ref_prog=lambda A, n: A * n, **QUICK)
def test_set_autotune_inputs_with_a_scalar(autotune):
    with set_autotune_inputs(A, 3):
        result = autotune(K.scaled, 64, 32)
    torch.testing.assert_close(result.kernel(A, 3), A * 3)


@pytest.mark.autotune(configs=[dict(bm=16), dict(bm=32)], out_idx=[-1], target="c",
                      ref_prog=lambda A, n: A * n, **QUICK)
def test_set_autotune_inputs_from_a_forward_pass(autotune):
    W = torch.randn(64, 32, requires_grad=True)
    X = W * 1.5  # not a graph leaf: what a backward kernel's inputs are
    with set_autotune_inputs(X, 3):
        result = autotune(K.scaled, 64, 32)
    torch.testing.assert_close(result.kernel(X.detach(), 3), X.detach() * 3)


@pytest.mark.autotune(configs=[dict(bm=16), dict(bm=32)], out_idx=[-1], target="c",
                      ref_prog=lambda A, B: A + B, **QUICK)
def test_symbolic_shape_lazy(autotune):
    A48, B48 = torch.randn(48, 32), torch.randn(48, 32)
    with set_autotune_inputs(A48, B48):
        result = autotune(K.symbolic_add, 32)
    A40, B40 = torch.randn(40, 32), torch.randn(40, 32)
    torch.testing.assert_close(result.kernel(A40, B40), A40 + B40)


HERE = os.path.dirname(os.path.abspath(__file__))


def _counting_supply(name):
    def supply(params):
        with open(os.path.join(HERE, name), "a") as f:
            f.write("x")
        return [torch.ones(64, 32), torch.ones(64, 32)]
    return supply


def _cache_inputs(cache):
    return pytest.param(cache, marks=pytest.mark.autotune(
        configs=[dict(bm=16), dict(bm=32)], out_idx=[-1], target="c", ref_prog=lambda A, B: A + B,
        supply_prog=_counting_supply(f"supplied-{cache}"), cache_input_tensors=cache, top_k=1, **QUICK))


@pytest.mark.parametrize("cache", [_cache_inputs(True), _cache_inputs(False)])
def test_cache_input_tensors(autotune, cache, request):
    count = os.path.join(HERE, f"supplied-{cache}")
    if os.path.exists(count):
        os.remove(count)
    autotune(K.add, 64, 32)
    calls = len(open(count).read()) if os.path.exists(count) else 0
    hit = dict(request.node.user_properties)["tl_cache"] == "hit"
    # Inputs made once and reused, or once per candidate; a hit makes them once, to check its kernel.
    assert calls == 1 if hit else (calls <= 1 if cache else calls != 1), calls


@pytest.mark.autotune
def test_autotuner_from_kernel(autotune):
    result = autotune(K.make_tuner(64, 32))
    torch.testing.assert_close(result.kernel(A, B), A + B)
    assert {len(c["samples"]) for c in result.record["candidates"]} == {3}  # its set_profile_args(rep=3)


@pytest.mark.autotune(rep=2, warmup=1)
def test_autotuner_marker_overrides(autotune):
    result = autotune(K.make_tuner(64, 32))
    assert {len(c["samples"]) for c in result.record["candidates"]} == {2}


@pytest.mark.autotune(configs=K.device_space, out_idx=[-1], target="c", ref_prog=lambda A, B: A + B, **QUICK)
def test_configs_from_a_device_dependent_callable(autotune):
    result = autotune(K.add, 64, 32)
    assert len(result.record["candidates"]) == len(K.device_space(64, 32))


@pytest.mark.autotune(configs=[dict(tile={"bm": 16}, order="ij", unroll=False),
                               dict(tile={"bm": 32}, order="ji", unroll=True)],
                      out_idx=[-1], target="c", ref_prog=lambda A, B: A + B, **QUICK)
def test_config_values_str_bool_nested(autotune):
    result = autotune(K.options, 64, 32)
    assert result.config in (dict(tile={"bm": 16}, order="ij", unroll=False),
                             dict(tile={"bm": 32}, order="ji", unroll=True))


@pytest.mark.autotune(configs=[dict(bm=16), dict(bm=None)], ref_prog=lambda A, B: A + B, **QUICK)
def test_a_config_that_crashes_tvm_is_a_record(autotune):
    # bm=None makes TVM segfault in T.ceildiv(M, None): in a worker, not in this process.
    result = autotune(K.eager_nodefault, A, B)
    crashed = [c for c in result.record["candidates"] if c["config"] == dict(bm=None)][0]
    assert crashed["status"] == "build_error", crashed
    assert result.config == dict(bm=16)


@pytest.mark.autotune(configs=[dict(par=False), dict(par=True)], ref_prog=lambda A, B: A + B, **QUICK)
def test_true_reason(autotune):
    result = autotune(K.add_jit, 64, 32)
    bad = [c for c in result.record["candidates"] if c["config"] == dict(par=True)][0]
    assert bad["status"] == "compile_error", bad


@pytest.mark.autotune(configs=[dict(bm=16), dict(bm=32)], out_idx=[-1], target="c",
                      ref_prog=lambda A, B: A * 3.0 + B, **QUICK)
def test_program_reading_run_time_state(autotune):
    K.FACTOR = 3.0  # a worker process would build with 2.0: the test process builds instead
    result = autotune(K.scaled_by_global, 64, 32)
    assert "built here" in result.record["built_here"]
    torch.testing.assert_close(result.kernel(A, B), A * 3.0 + B)


@pytest.mark.autotune(configs=[dict(bm=16), dict(bm=32)], out_idx=[-1], target="c", ref_prog=lambda A, B: A + B)
def test_wrong_arguments(autotune):
    autotune(K.add, 64)


@pytest.mark.autotune(configs=[dict(bm=16), dict(bm=32)], out_idx=[-1], target="c", ref_prog=lambda A, B: A + B)
def test_typeerror_in_the_program(autotune):
    autotune(K.broken, 64, 32)


@pytest.mark.autotune
def test_decorator_stack_lazy(autotune):
    result = autotune(K.lazy_stack, 64, 32)  # shape args only; the decorators' settings apply
    torch.testing.assert_close(result.kernel(A, B), A + B)
    assert result.config in (dict(bm=16), dict(bm=32))


@pytest.mark.autotune
def test_decorator_stack_eager(autotune):
    result = autotune(K.eager_stack, A, B)
    torch.testing.assert_close(result.kernel(A, B), A - B)


@pytest.mark.autotune(configs=[dict(bm=16), dict(bm=32)], ref_prog=lambda A: A * 2.0, **QUICK)
def test_jit_made_in_a_factory(autotune):
    result = autotune(K.scale_kernel(2.0), 64, 32)
    torch.testing.assert_close(result.kernel(A), A * 2.0)


@pytest.mark.autotune(configs=[dict(bm=16), dict(bm=32)], out_idx=[-1], target="c",
                      ref_prog=lambda A: A * 3.0, **QUICK)
def test_bound_method(autotune):
    result = autotune(K.ScaleOp(3.0).build, 64, 32)
    torch.testing.assert_close(result.kernel(A), A * 3.0)


@pytest.mark.autotune(configs=[dict(bm=16), dict(bm=32)], out_idx=[-1], target="c",
                      ref_prog=lambda A, B: A + B, **QUICK)
def test_functools_partial(autotune):
    result = autotune(functools.partial(K.add, 64), 32)
    torch.testing.assert_close(result.kernel(A, B), A + B)


@pytest.mark.autotune(configs=[dict(bm=16), dict(bm=32)], out_idx=[-1], target="c",
                      ref_prog=lambda A: A * 4.0, **QUICK)
def test_lambda(autotune):
    op = K.ScaleOp(4.0)
    result = autotune(lambda M, N, bm=16: op.build(M, N, bm=bm), 64, 32)
    torch.testing.assert_close(result.kernel(A), A * 4.0)


def bad_ref(A, B):
    return A / 0 + B.missing


@pytest.mark.autotune(configs=[dict(bm=16), dict(bm=32)], out_idx=[-1], target="c", ref_prog=bad_ref)
def test_ref_prog_raises(autotune):
    autotune(K.add, 64, 32)
'''

PASSING = [
    "test_eager_none_default_tuple_scalar", "test_eager_scalar_by_name", "test_eager_no_defaults",
    "test_pass_configs_in_config", "test_several_outputs", "test_supply_prog", "test_supply_type",
    "test_set_autotune_inputs_with_a_scalar", "test_set_autotune_inputs_from_a_forward_pass",
    "test_symbolic_shape_lazy", "test_cache_input_tensors[True]",
    "test_cache_input_tensors[False]", "test_autotuner_from_kernel", "test_autotuner_marker_overrides",
    "test_configs_from_a_device_dependent_callable", "test_config_values_str_bool_nested",
    "test_a_config_that_crashes_tvm_is_a_record", "test_true_reason", "test_program_reading_run_time_state",
    "test_decorator_stack_lazy", "test_decorator_stack_eager", "test_jit_made_in_a_factory", "test_bound_method",
    "test_functools_partial", "test_lambda",
]
FAILING = ["test_wrong_arguments", "test_typeerror_in_the_program", "test_ref_prog_raises"]


def _run(path, name, *args, env=None):
    junit = path / f"{name}.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-v",
         f"--tl-cache-dir={path / 'cache'}", f"--junitxml={junit}", f"--tl-json={path / name}.json", *args],
        cwd=path, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=900)
    cases = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = "failed" if case.find("failure") is not None or case.find("error") is not None else (
            "skipped" if case.find("skipped") is not None else "passed")
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        cases[case.get("name")] = (outcome, props, case)
    return proc, cases


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    path = tmp_path_factory.mktemp("compat")
    (path / "compat_kernels.py").write_text(KERNELS)
    (path / "test_compat_inner.py").write_text(TESTS)
    (path / "pytest.ini").write_text("[pytest]\n")
    cold = _run(path, "cold")
    warm = _run(path, "warm")
    return path, cold, warm


@pytest.mark.parametrize("name", PASSING)
@pytest.mark.slow
@pytest.mark.xdist_group("compat_runs")
def test_style_tunes_passes_and_hits(runs, name):
    _, (proc, cold), (_, warm) = runs
    outcome, props, case = cold[name]
    assert outcome == "passed", proc.stdout[-6000:]
    assert props.get("tl_cache") in ("miss", "hit")
    outcome, props, _ = warm[name]
    assert outcome == "passed"
    assert props.get("tl_cache") == "hit", props


@pytest.mark.slow
@pytest.mark.xdist_group("compat_runs")
def test_failures_name_who_raised_and_where(runs):
    path, (proc, cold), _ = runs
    out = proc.stdout
    # A lowering error (a tvm_ffi error, which does not pickle) keeps its real text; the worker survives.
    assert "TileLang lowering: ValueError: [Tilelang Semantic Check] Local buffer `acc` is indexed by T.Parallel" in out
    assert "compile worker died" not in out
    rows = {r["nodeid"].split("::")[-1]: r for r in json.loads((path / "cold.json").read_text())["tests"]}
    assert sorted(c["status"] for c in rows["test_true_reason"]["candidates"]) == ["compile_error", "ok"]
    reasons = [c["reason"] for c in rows["test_true_reason"]["candidates"] if c["status"] != "ok"]
    assert len(reasons) == 1 and "Local buffer `acc`" in reasons[0] and "compat_kernels.py:" in reasons[0]
    # A pass option that does not exist: the compiler's own words, for that config only.
    assert any("Invalid config option 'tl.no_such_pass_option'" in (c["reason"] or "")
               for c in rows["test_pass_configs_in_config"]["candidates"])
    # The TVM segfault of bm=None was a record on that config, in a worker.
    crashed = [c for c in rows["test_a_config_that_crashes_tvm_is_a_record"]["candidates"] if c["status"] != "ok"]
    assert len(crashed) == 1 and "SIGSEGV" in crashed[0]["reason"], crashed


@pytest.mark.slow
@pytest.mark.xdist_group("compat_runs")
def test_a_failure_of_the_call_fails_once_before_any_compile(runs):
    _, (proc, cold), _ = runs
    out = proc.stdout
    for name in FAILING:
        assert cold[name][0] == "failed", name
    text = {name: ET.tostring(cold[name][2], encoding="unicode") for name in FAILING}
    assert "cannot be called with these arguments: missing a required argument: 'N'" in text["test_wrong_arguments"]
    assert "nothing was built or compiled" in text["test_wrong_arguments"]
    assert "every config failed the same way" in text["test_typeerror_in_the_program"]
    assert "TypeError" in text["test_typeerror_in_the_program"]
    assert "compat_kernels.py:" in text["test_typeerror_in_the_program"]
    ref = text["test_ref_prog_raises"]
    assert "ref_prog: ZeroDivisionError" not in ref or "test_compat_inner.py:" in ref
    assert "ref_prog" in ref and "test_compat_inner.py:" in ref and "not a candidate" in ref
    # Said once in each place (the failure, its row in the tlautotune summary, pytest's short summary), not
    # once per config.
    lines = [line for line in out.splitlines() if "test_typeerror_in_the_program" in line]
    assert sum("every config failed the same way" in line for line in lines) <= 3
    assert "mismatch" not in ref


@pytest.mark.slow
@pytest.mark.xdist_group("compat_runs")
def test_the_space_a_callable_produces_is_in_the_key(runs):
    path, _, _ = runs
    _, other = _run(path, "arch_b", "-k", "device_dependent", env={"COMPAT_ARCH": "b"})
    outcome, props, _ = other["test_configs_from_a_device_dependent_callable"]
    assert outcome == "passed"
    assert props["tl_cache"] == "miss"  # another space: tuned, not served the other device's result
