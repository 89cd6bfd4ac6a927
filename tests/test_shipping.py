"""How a program reaches the compile workers: by reference what a module global reaches, by
value the rest with its source, whatever name the installed cloudpickle gives by-value code; and
a fault of that machinery is named as the plugin's, with the versions a report needs."""

import subprocess
import sys
import textwrap

import pytest
from kernel_sources import KERNELS, TILELANG_313_FILTER

FACTORY = textwrap.dedent('''
    def make(scale):
        def scaled(x):
            """Multiply by the factory's scale."""
            if x is None:
                raise ValueError("no x")
            return x * scale
        return scaled
''')


def _python(code, cwd):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_by_value_code_keeps_its_file_and_source(tmp_path):
    (tmp_path / "factory_mod.py").write_text(FACTORY)
    _python(f'''
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import factory_mod
        from pytest_tlautotune.engine.shipping import dumps
        open("blob.pkl", "wb").write(dumps(factory_mod.make(3)))
    ''', tmp_path)
    (tmp_path / "factory_mod.py").unlink()  # the worker cannot read the file: the shipped lines serve
    out = _python('''
        import inspect, pickle, traceback
        fn = pickle.loads(open("blob.pkl", "rb").read())
        assert fn(2) == 6
        print(fn.__code__.co_filename)
        print(inspect.getsource(fn))
        try:
            fn(None)
        except ValueError:
            print(traceback.format_exc())
    ''', tmp_path)
    assert out.splitlines()[0] == str(tmp_path / "factory_mod.py")
    assert '"""Multiply by the factory\'s scale."""' in out
    assert f'File "{tmp_path / "factory_mod.py"}", line 6, in scaled' in out
    assert 'raise ValueError("no x")' in out


def test_by_reference_reaches_attributes_of_module_globals(tmp_path):
    (tmp_path / "tl_mod.py").write_text(textwrap.dedent('''
        import tilelang
        import tilelang.cpu.language as T
        from tilelang.autotuner import autotune

        @autotune(configs=[dict(bm=16)])
        @tilelang.jit(out_idx=[-1], target="c")
        def vecadd(N, bm=16):
            @T.prim_func
            def main(A: T.Tensor((N,), "float32"), C: T.Tensor((N,), "float32")):
                with T.Kernel(T.ceildiv(N, bm)) as bx:
                    for i in T.serial(bm):
                        C[bx * bm + i] = A[bx * bm + i]
            return main

        class Ops:
            kernel = vecadd.jit_impl

        class Holder:
            def __init__(self, k):
                self.k = k

        holder = Holder(vecadd.jit_impl)
    '''))
    out = _python(f'''
        import sys, pickle
        sys.path.insert(0, {str(tmp_path)!r})
        import tl_mod
        from pytest_tlautotune.engine.shipping import dumps, module_ref
        print(module_ref(tl_mod.vecadd))
        print(module_ref(tl_mod.vecadd.jit_impl))
        del tl_mod.vecadd
        print(module_ref(tl_mod.Ops.kernel))
        del tl_mod.Ops
        print(module_ref(tl_mod.holder.k))
        assert pickle.loads(dumps(tl_mod.holder.k)) is tl_mod.holder.k  # by reference
    ''', tmp_path)
    lines = out.splitlines()
    file = str(tmp_path / "tl_mod.py")
    assert lines == [str(("tl_mod", file, ("vecadd",))), str(("tl_mod", file, ("vecadd", "jit_impl"))),
                     str(("tl_mod", file, ("Ops", "kernel"))), str(("tl_mod", file, ("holder", "k")))]


LOSING_CONFTEST = '''
import marshal
import types

import cloudpickle

from pytest_tlautotune.engine import shipping


def lost_file(data):
    return marshal.loads(data).replace(co_filename="<dynamic-code>")


class LosingPickler(cloudpickle.Pickler):
    """An environment where by-value code loses its file (as cloudpickle 3.1.3 names it)."""

    def reducer_override(self, obj):
        if isinstance(obj, types.CodeType):
            return lost_file, (marshal.dumps(obj),)
        return super().reducer_override(obj)


shipping._pickler = lambda: LosingPickler
'''

FACTORY_TEST = '''
import pytest
import tilelang
import tilelang.cpu.language as T
import torch


def scale_kernel(scale):
    @tilelang.jit(out_idx=[-1], target="c")
    def kernel(M, bm=16):
        @T.prim_func
        def main(A: T.Tensor((M,), "float32"), C: T.Tensor((M,), "float32")):
            with T.Kernel(T.ceildiv(M, bm)) as bx:
                for i in T.serial(bm):
                    C[bx * bm + i] = A[bx * bm + i] * scale
        return main
    return kernel


@pytest.mark.autotune(configs=[dict(bm=16), dict(bm=32)], ref_prog=lambda A: A * 2.0, warmup=1, rep=3)
def test_factory(autotune):
    result = autotune(scale_kernel(2.0), 64)
    assert "the compile workers could not build it" in result.record["built_here"]
    A = torch.randn(64)
    torch.testing.assert_close(result.kernel(A), A * 2.0)
'''


def test_a_fault_of_the_shipping_is_named_and_built_here(pytester, tmp_path):
    pytester.makeconftest(LOSING_CONFTEST)
    pytester.makepyfile(test_factory=FACTORY_TEST)
    result = pytester.runpytest(f"--tl-cache-dir={tmp_path / 'cache'}", "-p", "no:cacheprovider", "-W",
                                "always::pytest_tlautotune.model.TuneWarning",
                                "-W", TILELANG_313_FILTER)
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines([
        "*TuneWarning: test_factory.py::test_factory: the compile workers could not build it (building the config: "
        "OSError: could not get source code*; this is a fault of pytest-tlautotune or of the packages it runs with "
        "(pytest-tlautotune *, tilelang *, torch *, cloudpickle *, Python *): please report it*",
    ])


PATH_FIRST = '''
import pytest
import kernels


@pytest.mark.autotune(configs=[dict(bm=16), dict(bm=32)], ref_prog=lambda A, B: A + B, target="c", out_idx=[-1],
                      warmup=1, rep=3)
def test_first(autotune):
    autotune(kernels.elementwise_add, 32, 32)
'''

PATH_LATER = '''
import functools
import importlib

import kernels
from tilelang.autotuner import AutoTuner


def test_later(autotune, monkeypatch, pytestconfig):
    monkeypatch.syspath_prepend(str(pytestconfig.rootpath / "refs"))
    refs = importlib.import_module("adding_refs")
    tuner = (AutoTuner.from_kernel(functools.partial(kernels.elementwise_add, 32, 32), [dict(bm=16), dict(bm=32)])
             .set_compile_args(out_idx=[-1], target="c").set_profile_args(ref_prog=refs.ref_add))
    result = autotune(tuner)
    assert [c["status"] for c in result.record["candidates"]] == ["ok", "ok"], result.record["candidates"]
'''


@pytest.mark.slow
def test_a_reference_from_a_folder_a_test_puts_on_sys_path_later_imports_in_the_timing_worker(pytester, tmp_path):
    # The timing worker starts as collection begins (it checks every hit) and the first test tunes
    # on it; the second test's ref_prog lives in a module whose folder that test puts on sys.path
    # itself. cloudpickle ships the function by reference to that module, so the worker must
    # import it with the test's sys.path, not the one it started with.
    refs = pytester.mkdir("refs")
    (refs / "adding_refs.py").write_text("def ref_add(A, B):\n    return A + B\n")
    pytester.makepyfile(kernels=KERNELS, test_a_first=PATH_FIRST, test_b_later=PATH_LATER)
    args = (f"--tl-cache-dir={tmp_path / 'cache'}", "-p", "no:cacheprovider", "-rf")
    cold = pytester.runpytest(*args)
    cold.assert_outcomes(passed=2)
    warm = pytester.runpytest(*args, "-v")  # hits: each is checked in the timing worker against ref_prog
    warm.assert_outcomes(passed=2)
    assert "No module named" not in warm.stdout.str() + cold.stdout.str()
