"""A hit is checked against today's reference, and the user's code it runs cannot end the run."""

import json

import pytest

SCALE_KERNEL = '''
import tilelang.cpu.language as T


def scale_add(M, N, bm=16, scale=1.0):
    @T.prim_func
    def main(A: T.Tensor((M, N), "float32"), B: T.Tensor((M, N), "float32"), C: T.Tensor((M, N), "float32")):
        with T.Kernel(T.ceildiv(M, bm)) as bx:
            for i, j in T.grid(bm, N):
                C[bx * bm + i, j] = (A[bx * bm + i, j] + B[bx * bm + i, j]) * scale
    return main
'''

# Three references whose behaviour comes from data, not code: a value read from a file, a dict in the
# test module, an attribute of the object whose method is the reference.
DATA_REFS = '''
import json

import pytest
import pytest
import kern

CONFIGS = [dict(bm=16, scale=1.0), dict(bm=32, scale=1.0), dict(bm=16, scale=2.0)]
SCALES = {{"scale": {scale}}}


def from_file(A, B):
    with open("ref.json") as f:
        return (A + B) * json.load(f)["scale"]


class Op:
    def __init__(self, scale):
        self.scale = scale

    def ref(self, A, B):
        return (A + B) * self.scale


OP = Op({scale})


@pytest.mark.autotune(configs=CONFIGS, target="c", out_idx=[-1], ref_prog=from_file, warmup=1, rep=3)
def test_file(autotune):
    assert autotune(kern.scale_add, 64, 32).config["scale"] == {scale}


@pytest.mark.autotune(configs=CONFIGS, target="c", out_idx=[-1], ref_prog=lambda A, B: (A + B) * SCALES["scale"],
                      warmup=1, rep=3)
def test_dict(autotune):
    assert autotune(kern.scale_add, 64, 32).config["scale"] == {scale}


@pytest.mark.autotune(configs=CONFIGS, target="c", out_idx=[-1], ref_prog=OP.ref, warmup=1, rep=3)
def test_attribute(autotune):
    assert autotune(kern.scale_add, 64, 32).config["scale"] == {scale}
'''


def test_a_hit_whose_reference_data_changed_is_tuned_again(tl, pytester):
    pytester.makepyfile(kern=SCALE_KERNEL, test_d=DATA_REFS.format(scale=1.0))
    (pytester.path / "ref.json").write_text(json.dumps({"scale": 1.0}))
    tl.run().assert_outcomes(passed=3)
    # The references now double, the code that reaches them unchanged: every stored winner
    # (scale 1) fails today's check, so none is served; each key is tuned again, its earlier
    # verdicts (the scale-2 config's mismatch among them) measured again.
    pytester.makepyfile(test_d=DATA_REFS.format(scale=2.0))
    (pytester.path / "ref.json").write_text(json.dumps({"scale": 2.0}))
    result = tl.run("--tl-no-tune", "-k", "test_file")
    result.assert_outcomes(failed=1, deselected=2)
    result.stdout.fnmatch_lines(["*the stored winner {*} fails today's check: output 0: * elements mismatch*"
                                 "--tl-no-tune forbids tuning it again*"])
    result = tl.run("-v")
    result.assert_outcomes(passed=3)
    for test in ("test_file", "test_dict", "test_attribute"):
        assert tl.prop(test, "tl_cache") == ["retune"], test
        (why,) = tl.prop(test, "tl_stale")
        assert why.startswith('the stored winner {"bm":') and '"scale":1.0} fails today\'s check: output 0: ' in why
    result.stdout.fnmatch_lines_random([
        f"*test_d.py::{test}: the stored result was not served and was tuned again: the stored winner "
        f"*fails today's check: output 0: * elements mismatch*"
        for test in ("test_file", "test_dict", "test_attribute")
    ])
    # The new winners pass: hits now.
    tl.run().assert_outcomes(passed=3)
    assert [tl.prop(t, "tl_cache") for t in ("test_file", "test_dict", "test_attribute")] == [["hit"]] * 3


LAZY_KERNEL = '''
import tilelang.cpu.language as T


def add(M, N, bm=16):
    import helper  # imported when a config is built, not when the test module is: no part of the fast key

    helper.at_build(bm)

    @T.prim_func
    def main(A: T.Tensor((M, N), "float32"), B: T.Tensor((M, N), "float32"), C: T.Tensor((M, N), "float32")):
        with T.Kernel(T.ceildiv(M, bm)) as bx:
            for i, j in T.grid(bm, N):
                C[bx * bm + i, j] = A[bx * bm + i, j] + B[bx * bm + i, j]
    return main
'''

LAZY_TEST = '''
import pytest
import kern


@pytest.mark.autotune(configs=[dict(bm=16), dict(bm=32)], target="c", out_idx=[-1],
                      ref_prog=lambda A, B: A + B, warmup=1, rep=3, compile_timeout=20)
def test_add(autotune):
    autotune(kern.add, 64, 32)


def test_after():
    pass
'''

FAULTS = {
    "segfault": "import os, signal\n    os.kill(os.getpid(), signal.SIGSEGV)",
    "hang": "import time\n    time.sleep(120)",
}


def _winner(tl):
    (entry,) = (tl.cache_dir / "entries").iterdir()
    return json.loads((entry / "best_config.json").read_text())["bm"]


@pytest.mark.parametrize("fault", [pytest.param(f, marks=[pytest.mark.slow] if f == "hang" else [])
                                   for f in sorted(FAULTS)])
def test_a_hit_whose_build_now_crashes_or_hangs_is_a_record_and_a_retune(tl, pytester, fault):
    pytester.makepyfile(kern=LAZY_KERNEL, test_l=LAZY_TEST, helper="def at_build(bm):\n    pass\n")
    tl.run().assert_outcomes(passed=2)
    winner = _winner(tl)
    # An edit reached only through the lazy import: the stored winner's build now segfaults (or hangs).
    pytester.makepyfile(helper=f"def at_build(bm):\n    if bm != {winner}:\n        return\n    {FAULTS[fault]}\n")
    result = tl.run("-v")
    # The run survives (junit written, the next test ran); the winner's config is a record, the other wins.
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=2)
    assert tl.prop("test_add", "tl_cache") == ["miss"]
    assert [json.loads(c) for c in tl.prop("test_add", "tl_config")] == [{"bm": 48 - winner}]
    status = "crash" if fault == "segfault" else "timeout"
    result.stdout.fnmatch_lines([f'*test_l.py::test_add {{"bm":{winner}}}: build_error: *{status}*'])
