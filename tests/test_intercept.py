"""TileLang's own tuner calls inside tests, served by the plugin (``--tl-intercept``, or a marked test
that does not use the fixture), and the check against a reference config where no ``ref_prog`` is given.

The inner kernels are written the way TileOPs writes its operators: a ``@tilelang.jit`` made in a
factory (or in ``__init__``) whose tunables are parameters with defaults, tuned by
``tilelang.autotune(configs=..., do_not_specialize=[...], supply_prog=...)`` called with the seed
values, ``supply_prog`` a closure over the operator object. One inner session (two xdist workers,
intercepted by the module's marker) tunes them cold; a second one, the same tests without the marker
and ``TL_AUTOTUNE_INTERCEPT=1``, finds every tuning in the cache.
"""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from kernel_sources import STRICT_INI

OPS = r'''
import functools

import tilelang
import tilelang.cpu.language as T
import torch

CPU = dict(target="c", execution_backend="cython")
_INHERIT = object()


@functools.lru_cache(maxsize=None)
def _scale_kernel(M, N):
    """A @tilelang.jit made in a factory, its tunables as parameters with defaults (TileOPs' style).
    ``skip`` writes nothing: the fastest config and a wrong one."""

    @tilelang.jit(out_idx=[-1], **CPU)
    def _scale_func(bm: int = 16, skip: bool = False):
        @T.prim_func
        def main(A: T.Tensor((M, N), "float32"), C: T.Tensor((M, N), "float32")):
            with T.Kernel(T.ceildiv(M, bm)) as bx:
                if not skip:
                    for i, j in T.grid(bm, N):
                        C[bx * bm + i, j] = A[bx * bm + i, j] * 2.0

        return main

    return _scale_func


class Kernel:
    """TileOPs' Kernel.tune_jit_kernel, condensed."""

    autotune_configs = None

    @property
    def default_config(self):
        return {}

    @property
    def autotune_supply_prog(self):
        return None

    def tune_jit_kernel(self, jit_kernel, configs, warmup=25, rep=50, seed_config=None, supply_prog=_INHERIT):
        seeds = dict(self.default_config if seed_config is None else seed_config)
        kwargs = dict(configs=configs, warmup=warmup, rep=rep)
        if seeds:
            kwargs["do_not_specialize"] = list(seeds)
        supply_prog = self.autotune_supply_prog if supply_prog is _INHERIT else supply_prog
        if supply_prog is not None:
            kwargs["supply_prog"] = supply_prog
        from tilelang.autotuner import autotune

        return autotune(**kwargs)(jit_kernel)(**seeds)

    def autotune(self, warmup=25, rep=50):
        tuned = self.tune_jit_kernel(self.kernel, self.autotune_configs, warmup=warmup, rep=rep)
        self.config = dict(tuned.config)
        return tuned


class ScaleKernel(Kernel):
    autotune_configs = [dict(bm=16, skip=False), dict(bm=32, skip=False), dict(bm=8, skip=True)]

    def __init__(self, M, N, tune=False):
        self.M, self.N = M, N
        self.kernel = _scale_kernel(M, N)
        self.config = dict(self.default_config)
        if tune:
            self.autotune(warmup=1, rep=3)

    @property
    def default_config(self):
        return {"bm": 16, "skip": False}

    @property
    def autotune_supply_prog(self):
        def supply(params):  # a closure over self, as TileOPs' kernels write it
            return [torch.randn(self.M, self.N)]

        return supply

    def forward(self, A):
        return self.kernel(**self.config)(A)


def scale_prim(M, N, bm=16, skip=False, factor=2.0):
    """The same kernel as a plain function returning a PrimFunc (for the fixture)."""

    @T.prim_func
    def main(A: T.Tensor((M, N), "float32"), C: T.Tensor((M, N), "float32")):
        with T.Kernel(T.ceildiv(M, bm)) as bx:
            if not skip:
                for i, j in T.grid(bm, N):
                    C[bx * bm + i, j] = A[bx * bm + i, j] * factor

    return main


class InitKernel(Kernel):
    """The @tilelang.jit made in __init__, over the op's own state; seed values outside the space."""

    autotune_configs = [dict(bm=16), dict(bm=32)]

    def __init__(self, M, N, factor, tune=False):
        self.M, self.N, self.factor = M, N, factor

        @tilelang.jit(out_idx=[-1], **CPU)
        def kernel(bm: int = 64):
            return scale_prim(M, N, bm=bm, factor=factor)

        self.kernel = kernel
        self.config = dict(self.default_config)
        if tune:
            self.autotune(warmup=1, rep=3)

    @property
    def default_config(self):
        return {"bm": 64}

    def forward(self, A):
        return self.kernel(**self.config)(A)


@tilelang.jit(out_idx=[-1], **CPU)
def scaled(M, N, bm=16):
    """C = A * n with a scalar parameter n: TileLang needs set_autotune_inputs for it."""

    @T.prim_func
    def main(A: T.Tensor((M, N), "float32"), n: T.int32, C: T.Tensor((M, N), "float32")):
        with T.Kernel(T.ceildiv(M, bm)) as bx:
            for i, j in T.grid(bm, N):
                C[bx * bm + i, j] = A[bx * bm + i, j] * T.Cast("float32", n)

    return main


@tilelang.jit(out_idx=[-1], **CPU)
def add(M, N, bm=16):
    @T.prim_func
    def main(A: T.Tensor((M, N), "float32"), B: T.Tensor((M, N), "float32"), C: T.Tensor((M, N), "float32")):
        with T.Kernel(T.ceildiv(M, bm)) as bx:
            for i, j in T.grid(bm, N):
                C[bx * bm + i, j] = A[bx * bm + i, j] + B[bx * bm + i, j]

    return main


@tilelang.jit(**CPU)
def eager_sub(A, B, bm: int = 16):
    M, N = T.const("M, N")
    A: T.Tensor[[M, N], T.float32]
    B: T.Tensor[[M, N], T.float32]
    C = T.empty((M, N), T.float32)
    with T.Kernel(T.ceildiv(M, bm)) as bx:
        for i, j in T.grid(bm, N):
            C[bx * bm + i, j] = A[bx * bm + i, j] - B[bx * bm + i, j]
    return C


@tilelang.jit(out_idx=[-1], **CPU)
def add_par(M, N, bm=16, par=False):
    """``par`` indexes a local buffer with T.Parallel, which TileLang's CPU lowering refuses."""

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
                C[bx * bm + i, j] = acc[i, j] + B[bx * bm + i, j]

    return main


def add_api(M, N):
    """API mode: a closure over the shapes, as TileLang's example_gemm_autotune.py."""

    def kernel(bm=None):
        return add.get_tir(M, N, bm=bm)

    return kernel
'''

TESTS = r'''
import pytest
import tilelang
import torch
from tilelang.autotuner import AutoTuner, autotune, set_autotune_inputs
from tilelang.autotuner.param import AutotuneResult
from tilelang.autotuner.tuner import AutoTuneImpl

import tileops_style as ops

pytestmark = pytest.mark.autotune  # served by the plugin without --tl-intercept (the warm run has no marker)

ORIGINAL = AutoTuneImpl.__dict__["__call__"]
A, B = torch.randn(64, 32), torch.randn(64, 32)


@pytest.fixture(scope="session")
def outside_the_test():
    return AutoTuneImpl.__dict__["__call__"] is ORIGINAL


def test_tileops_style(outside_the_test):
    assert outside_the_test  # a fixture runs outside the test's call: TileLang as it is
    assert AutoTuneImpl.__dict__["__call__"] is not ORIGINAL
    torch.manual_seed(1)
    state = torch.random.get_rng_state()
    op = ops.ScaleKernel(64, 32)
    tuned = op.autotune(warmup=1, rep=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # as the test seeded it
    assert isinstance(tuned, tilelang.JITKernel)
    assert tuned.config == op.config and op.config in (dict(bm=16, skip=False), dict(bm=32, skip=False))
    assert tuned.latency > 0 and tuned.ref_latency is None
    torch.testing.assert_close(op.forward(A), A * 2.0)


def test_tunable_already_provided():
    kernel = autotune(configs=[dict(bm=16), dict(bm=32)])(ops.add)(64, 32, bm=32)
    assert kernel.config is None and kernel.latency is None  # TileLang's short cut: compiled as called
    torch.testing.assert_close(kernel(A, B), A + B)


def test_seed_outside_the_space_made_in_init():
    op = ops.InitKernel(64, 32, 3.0, tune=True)
    assert op.config in (dict(bm=16), dict(bm=32))
    torch.testing.assert_close(op.forward(A), A * 3.0)


def test_set_autotune_inputs():
    with set_autotune_inputs(A, 3):
        kernel = autotune(configs=[dict(bm=16), dict(bm=32)], warmup=1, rep=3)(ops.scaled)(64, 32)
    torch.testing.assert_close(kernel(A, 3), A * 3)


def test_callable_config_space_tuned_once_per_key():
    space = lambda M, N: [dict(bm=b) for b in (16, 32, 48) if M % b == 0]  # noqa: E731
    tuned = autotune(configs=space, warmup=1, rep=3)(ops.add)
    kernel = tuned(64, 32)
    assert kernel.config in space(64, 32)
    assert tuned(64, 32) is kernel  # the same function and key: one tuning, as TileLang's own cache


def test_groups_in_a_loop():
    ops_by_group = [ops.ScaleKernel(m, 32) for m in (32, 64)]
    for op in ops_by_group:
        op.autotune(warmup=1, rep=3)
    again = ops_by_group[0].autotune(warmup=1, rep=3)  # a new @autotune function: a tuning of its own
    assert again.config == ops_by_group[0].config


def test_autotuner_run():
    tuner = AutoTuner.from_kernel(ops.add_api(64, 32), configs=[dict(bm=16), dict(bm=32)])
    result = tuner.set_compile_args(out_idx=[-1], **ops.CPU).run(warmup=1, rep=3)
    assert isinstance(result, AutotuneResult)
    assert result.config in (dict(bm=16), dict(bm=32)) and result.kernel.config == result.config
    assert result.kernel.latency == result.latency > 0
    torch.testing.assert_close(result.kernel(A, B), A + B)


def test_reference_falls_back_to_the_next_config_that_compiles():
    space = [dict(bm=16, par=True), dict(bm=16), dict(bm=32)]
    kernel = autotune(configs=space, warmup=1, rep=3)(ops.add_par)(64, 32)
    assert kernel.config in (dict(bm=16), dict(bm=32))
    torch.testing.assert_close(kernel(A, B), A + B)


@pytest.mark.autotune(reference_config=False)
def test_reference_off():
    op = ops.ScaleKernel(64, 32, tune=True)
    assert op.config


def test_eager():
    tuned = autotune(configs=[dict(bm=16), dict(bm=32)], warmup=1, rep=3)(ops.eager_sub)
    torch.testing.assert_close(tuned(A, B), A - B)  # the outputs, as TileLang returns them
    kernel = tuned.compile(A, B)
    assert kernel.config in (dict(bm=16), dict(bm=32))


@pytest.mark.autotune(configs=[dict(bm=16), dict(bm=8, skip=True), dict(bm=32)], reference_config=True,
                      out_idx=[-1], target="c", warmup=1, rep=3)
def test_fixture_reference(autotune):
    result = autotune(ops.scale_prim, 64, 32)
    assert result.record["reference"]["config"] == dict(bm=16)
    assert result.config != dict(bm=8, skip=True)
'''

PLAIN = r'''
from tilelang.autotuner.tuner import AutoTuneImpl

import tileops_style  # noqa: F401

ORIGINAL = AutoTuneImpl.__dict__["__call__"]


def test_unmarked_without_the_option():
    assert AutoTuneImpl.__dict__["__call__"] is ORIGINAL
'''

MARK = "pytestmark = pytest.mark.autotune  # served by the plugin without --tl-intercept (the warm run has no marker)\n"
assert MARK in TESTS

TUNED = ["test_tileops_style", "test_seed_outside_the_space_made_in_init", "test_set_autotune_inputs",
         "test_callable_config_space_tuned_once_per_key", "test_groups_in_a_loop", "test_autotuner_run",
         "test_reference_off", "test_eager", "test_fixture_reference",
         "test_reference_falls_back_to_the_next_config_that_compiles"]


def _write(path, marked):
    path.mkdir(exist_ok=True)
    (path / "tileops_style.py").write_text(OPS)
    (path / "test_ops.py").write_text(TESTS if marked else TESTS.replace(MARK, ""))
    (path / "pytest.ini").write_text(STRICT_INI)


def _run(path, cache, name, *args, env=None):
    junit = path / f"{name}.xml"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", f"--tl-cache-dir={cache}",
         f"--junitxml={junit}", f"--tl-json={path / name}.json", *args],
        cwd=path, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=900)
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        failed = case.find("failure") is not None or case.find("error") is not None
        outcomes.setdefault(case.get("name"), set()).add("failed" if failed else "passed")
    rows = json.loads((path / f"{name}.json").read_text())["tests"]
    return proc, outcomes, rows


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    path = tmp_path_factory.mktemp("intercept")
    cache = path / "cache"
    _write(path / "marked", marked=True)
    (path / "marked" / "test_plain.py").write_text(PLAIN)
    # Every test on both workers: each tuning is asked for twice at once, and must run once.
    cold = _run(path / "marked", cache, "cold", "-n", "2", "--dist=each")
    # The same tests without the marker, served by the option alone (its environment twin).
    _write(path / "option", marked=False)
    warm = _run(path / "option", cache, "warm", "-p", "no:xdist", env={"TL_AUTOTUNE_INTERCEPT": "1"})
    return cold, warm


def _by_id(rows):
    out = {}
    for row in rows:
        out.setdefault(row["id"].split("::")[-1], []).append(row)
    return out


def test_every_test_passes_and_the_unmarked_one_is_left_alone(runs):
    (proc, outcomes, _), (warm_proc, warm_outcomes, _) = runs
    assert outcomes and all(o == {"passed"} for o in outcomes.values()), proc.stdout[-8000:]
    assert "test_unmarked_without_the_option" in outcomes
    assert warm_outcomes and all(o == {"passed"} for o in warm_outcomes.values()), warm_proc.stdout[-8000:]


def test_each_tuning_is_a_row_named_after_the_test_and_the_kernel(runs):
    (_, _, rows), _ = runs
    ids = _by_id(rows)
    assert set(ids) == {*TUNED, "test_groups_in_a_loop[call 2]", "test_groups_in_a_loop[call 3]"}
    # TileLang's short cut tunes nothing; a function called again with the same key is tuned once.
    assert "test_tunable_already_provided" not in ids
    assert len(ids["test_callable_config_space_tuned_once_per_key"]) == 2  # one per worker
    assert {r["program"].split(".")[-1] for r in ids["test_tileops_style"]} == {"_scale_func"}
    assert {r["program"] for r in ids["test_autotuner_run"]} == {"add_api.<locals>.kernel"}


def test_workers_tune_each_key_once(runs):
    (_, _, rows), _ = runs
    misses = {}
    for row in rows:
        misses[row["key"]] = misses.get(row["key"], 0) + (row["cache"] == "miss")
    assert set(misses.values()) == {1}, misses  # each asked for on both workers, and again in later tests


def test_a_fast_wrong_config_fails_the_check_against_the_seed_config(runs):
    (proc, _, rows), _ = runs
    ids = _by_id(rows)
    for row in ids["test_tileops_style"]:
        assert row["check"] == 'vs {"bm":16,"skip":false}'  # the seed values TileOPs passes
        skipped = [c for c in row["candidates"] if c["config"]["skip"]]
        if row["cache"] == "miss":
            assert skipped[0]["status"] == "mismatch" and "mismatch" in skipped[0]["reason"], skipped
    assert 'vs {"bm":16,"skip":false}' in proc.stdout  # the summary says what was compared
    # Seed values outside the space: the seed's own kernel is the reference.
    assert {r["check"] for r in ids["test_seed_outside_the_space_made_in_init"]} == {'vs {"bm":64}'}
    # The first config of the space that builds, where no seed is given; the fixture asks for it by marker.
    assert {r["check"] for r in ids["test_eager"]} == {'vs {"bm":16}'}
    assert {r["check"] for r in ids["test_fixture_reference"]} == {'vs {"bm":16}'}
    fixture_miss = [r for r in ids["test_fixture_reference"] if r["cache"] == "miss"][0]
    assert [c["status"] for c in fixture_miss["candidates"] if c["config"].get("skip")] == ["mismatch"]
    # The first config does not compile: the next one is the reference.
    fallback = ids["test_reference_falls_back_to_the_next_config_that_compiles"]
    assert {r["check"] for r in fallback} == {'vs {"bm":16}'}
    miss = [r for r in fallback if r["cache"] == "miss"][0]
    assert [c["status"] for c in miss["candidates"] if c["config"].get("par")] == ["compile_error"]


def test_reference_config_false_turns_the_check_off(runs):
    (_, _, rows), _ = runs
    for row in _by_id(rows)["test_reference_off"]:
        assert row["check"] == "unchecked"
        if row["cache"] == "miss":
            assert "mismatch" not in {c["status"] for c in row["candidates"]}  # the wrong config passes unseen


def test_warm_every_tuning_is_served_from_the_cache(runs):
    _, (proc, _, rows) = runs
    ids = _by_id(rows)
    assert set(ids) == {*TUNED, "test_groups_in_a_loop[call 2]", "test_groups_in_a_loop[call 3]"}, proc.stdout
    assert {r["cache"] for r in rows} == {"hit"}, [(r["id"], r["cache"]) for r in rows]


def test_the_option_and_its_twins_are_checked(pytester, monkeypatch):
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    monkeypatch.setenv("TL_AUTOTUNE_INTERCEPT", "perhaps")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--tl-intercept (ini tl_intercept, env TL_AUTOTUNE_INTERCEPT): 'perhaps' is not "
                                 "valid*"])


def test_a_bad_reference_config_fails_at_collection(pytester):
    pytester.makepyfile(test_x="import pytest\n\n\n@pytest.mark.autotune(reference_config='first')\n"
                               "def test_x():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_x.py::test_x: @pytest.mark.autotune: argument 'reference_config' must be "
                                 "True (the first config that builds), a config dict, or False, got 'first'*"])
