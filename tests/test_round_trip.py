"""What a hit gives the test is what the miss gave it: configs and records come back as they went in."""

import subprocess
import sys

import pytest

TILED = '''
import kernels


def add(M, N, tile=(16, 16)):
    bm, bn = tile
    return kernels.elementwise_add(M, N, bm, bn)
'''

ROUND_TRIP = '''
import enum, pathlib
import pytest
from tilelang.transform import PassConfigKey
import tiled


class Order(enum.IntEnum):
    ROWS = 0
    COLUMNS = 1


CONFIGS = [
    dict(tile=(16, 16), order=Order.ROWS, pass_configs={PassConfigKey.TL_DISABLE_WARP_SPECIALIZED: True}),
    dict(tile=(32, 16), order=Order.COLUMNS, pass_configs={}),
]


def program(M, N, tile, order):
    if not (isinstance(tile, tuple) and isinstance(order, Order)):  # not as the test wrote them
        pathlib.Path(__file__).with_name("built_with.txt").write_text(repr((tile, order)))
    return tiled.add(M, N, tile)


@pytest.mark.autotune(configs=CONFIGS, target="c", out_idx=[-1], ref_prog=lambda A, B: A + B, warmup=1, rep=3)
def test_round_trip(autotune):
    result = autotune(program, 64, 32)
    assert result.config in CONFIGS
    assert type(result.config["tile"]) is tuple and type(result.config["order"]) is Order
    keys = [type(k) for c in result.record["candidates"] for k in c["config"]["pass_configs"]]
    assert keys == [PassConfigKey], keys
    seen = (result.config, result.record, result.samples, result.ref_samples, result.latency, result.ref_latency)
    with open(pathlib.Path(__file__).with_name("seen.txt"), "a") as f:
        f.write(repr(seen) + "\\n")
'''


def test_a_hit_returns_what_the_miss_returned(tl, pytester):
    pytester.makepyfile(tiled=TILED, test_rt=ROUND_TRIP)
    tl.run().assert_outcomes(passed=1)
    result = tl.run()
    result.assert_outcomes(passed=1)
    assert tl.prop("test_round_trip", "tl_cache") == ["hit"]
    miss, hit = (pytester.path / "seen.txt").read_text().splitlines()
    assert hit == miss
    # The hit built the stored winner (to compare its IR) from the config as the test wrote it.
    assert not (pytester.path / "built_with.txt").exists(), (pytester.path / "built_with.txt").read_text()
    # TileLang's own loader still reads the entry: best_config.json stays plain JSON.
    entry = next(p for p in (tl.cache_dir / "entries").iterdir() if not p.name.startswith("."))
    code = ("import sys, pathlib, json\n"
            "from tilelang.autotuner.param import AutotuneResult, CompileArgs\n"
            "args = CompileArgs(out_idx=[-1], target='c', execution_backend='cython')\n"
            "result = AutotuneResult.load_from_disk(pathlib.Path(sys.argv[1]), args)\n"
            "print(json.dumps(result.config, sort_keys=True))\n")
    proc = subprocess.run([sys.executable, "-c", code, str(entry)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1].startswith('{"order": ')


@pytest.mark.parametrize(("value", "why"), [
    ("{1: 16}", "*key 1 is not a string*"),
    ("Wrapped(3)", "*Wrapped is not one of*"),
    ("Local.A", "*Local cannot be found by name*"),
    ("[{2, 3}]", "*cannot be serialised to JSON*"),
])
def test_a_config_value_that_cannot_round_trip_is_refused_at_collection(pytester, value, why):
    pytester.makepyfile(test_bad=f"""
import enum
import pytest


class Wrapped(int):
    pass


def _local():
    class Local(enum.IntEnum):
        A = 1
    return Local


Local = _local()


@pytest.mark.autotune(configs=[dict(bm={value})])
def test_x(autotune):
    pass
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    where = "argument 'configs'[[]0[]][[]'bm'[]]"
    result.stderr.fnmatch_lines([f"*test_bad.py::test_x: @pytest.mark.autotune: {where}{why}"])
