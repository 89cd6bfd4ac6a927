"""Bounds hold: ``max_tuning_s`` bounds the builds too, and a reference that hangs or returns what
cannot be compared is found once and blamed on the reference (issue "Trust", item 6)."""

import json
import shutil

import pytest
from kernel_sources import KERNELS

BUDGET_TEST = """
import pytest
from kernels import elementwise_add

# 600 configs, each its own PrimFunc (extra changes the kernel's body, not its result).
SPACE = [dict(bm=bm, bn=bn, extra=e) for e in range(150) for bm in (16, 32) for bn in (16, 32)]
SMALL = [dict(bm=16), dict(bm=32)]


@pytest.mark.autotune(configs=SPACE, target="c", out_idx=[-1], ref_prog=lambda A, B: A + B,
                      warmup=1, rep=3, max_tuning_s=0.5)
def test_space(autotune):
    result = autotune(elementwise_add, 64, 64)
    assert result.config in SPACE


@pytest.mark.autotune(configs=SMALL, target="c", out_idx=[-1], ref_prog=lambda A, B: A + B,
                      warmup=1, rep=3, max_tuning_s=600)
def test_small(autotune):
    assert autotune(elementwise_add, 64, 64).config in SMALL
"""


def _records(cache_dir):
    """{test name: the record of its stored entry}."""
    out = {}
    for path in cache_dir.glob("entries/*/record.json"):
        record = json.loads(path.read_text())
        out[record["nodeid"].split("::")[-1]] = record
    return out


@pytest.mark.slow
def test_max_tuning_s_stops_the_builds_and_a_hit_still_checks_the_winner(tl, pytester):
    pytester.makepyfile(test_budget=BUDGET_TEST)
    result = tl.run()
    result.assert_outcomes(passed=2)
    records = _records(tl.cache_dir)
    space = records["test_space"]
    # The space was not all built before the search began: the budget stopped the builds.
    assert space["builds"]["stopped_by"] == "max_tuning_s"
    assert space["builds"]["configs"] == 600
    assert 0 < space["builds"]["built"] < 600
    assert 0 < len(space["candidates"]) <= space["builds"]["built"]
    unbuilt = 600 - space["builds"]["built"]
    assert any(f"{unbuilt} of 600 configs were never built" in note for note in space["notes"])
    result.stdout.fnmatch_lines([f"*test_space: {unbuilt} of 600 configs never built (max_tuning_s ran out)*"])
    # A small space builds whole, within its budget: keyed by every IR, as without a budget.
    assert "builds" not in records["test_small"]
    assert not any("test_small" in line and "never built" in line for line in result.outlines)

    # Without the fast index, the budgeted tuning is found again by what was asked: a hit.
    shutil.rmtree(tl.cache_dir / "index")
    tl.run().assert_outcomes(passed=2)
    assert tl.prop("test_space", "tl_cache") == ["hit"]

    # A helper the kernel uses changes the winner's IR (elementwise_add's own source does not
    # change): the stored winner is not served; the key is tuned again.
    edited = KERNELS.replace(
        "acc[i, j] = A[by * bm + i, bx * bn + j] + B[by * bm + i, bx * bn + j]",
        "acc[i, j] = T.max(A[by * bm + i, bx * bn + j] + B[by * bm + i, bx * bn + j], "
        "A[by * bm + i, bx * bn + j] + B[by * bm + i, bx * bn + j])")
    assert edited != KERNELS
    pytester.makepyfile(kernels=edited)
    tl.run().assert_outcomes(passed=2)
    assert tl.prop("test_space", "tl_cache") == ["miss"]
    assert _records(tl.cache_dir)["test_space"]["winner_ir_sha"] != space["winner_ir_sha"]


REFERENCE_TEST = """
import time

import pytest
import torch
from kernels import elementwise_add

CONFIGS = [dict(bm=bm, bn=bn) for bm in (16, 32, 64) for bn in (16, 32)]


def hangs(A, B):
    with open({calls!r}, "a") as f:
        f.write("called\\n")
    while True:
        time.sleep(1)


def crashes(A, B):
    with open({crashes!r}, "a") as f:
        f.write("called\\n")
    import ctypes

    ctypes.string_at(0)  # SIGSEGV


def on_meta(A, B):
    return torch.empty(A.shape, device="meta")


@pytest.mark.autotune(configs=CONFIGS, target="c", out_idx=[-1], ref_prog=hangs, warmup=1, rep=3, timeout=4)
def test_hangs(autotune):
    autotune(elementwise_add, 64, 64)


@pytest.mark.autotune(configs=CONFIGS, target="c", out_idx=[-1], ref_prog=crashes, warmup=1, rep=3)
def test_crashes(autotune):
    autotune(elementwise_add, 64, 64)


@pytest.mark.autotune(configs=CONFIGS, target="c", out_idx=[-1], ref_prog=on_meta, warmup=1, rep=3)
def test_meta(autotune):
    autotune(elementwise_add, 64, 64)
"""


@pytest.mark.slow
def test_a_reference_that_hangs_crashes_or_returns_meta_fails_once_as_the_references_fault(tl, pytester, tmp_path):
    calls, crashes = tmp_path / "ref_calls.txt", tmp_path / "ref_crashes.txt"
    pytester.makepyfile(test_ref=REFERENCE_TEST.format(calls=str(calls), crashes=str(crashes)))
    result = tl.run()
    result.assert_outcomes(failed=3)
    out, failures = result.stdout.str(), tl.failures()
    # Found once, not as a timeout of each of the 6 configs: the reference ran in one timing job
    # (two at most: one may have been handed to the worker before the first was killed). The
    # summary's failed row repeats it ("tuning failed: ..."), the test's failure says it once.
    assert failures["test_hangs"].count("ref_prog did not return within 4 s") == 1
    assert out.count("test_hangs: tuning failed: ref_prog did not return within 4 s") == 1
    assert "the reference's fault, not a candidate's" in failures["test_hangs"]
    assert 1 <= len(calls.read_text().splitlines()) <= 2
    # A crash may be a kernel's that corrupted its worker: the reference is blamed when it crashes
    # a fresh worker too (two or three of the 6 configs, one handed over before the second crash).
    assert failures["test_crashes"].count(
        "ref_prog crashed its timing job (check/timing worker died with exit code -11 (SIGSEGV))") == 1
    assert 2 <= len(crashes.read_text().splitlines()) <= 3
    assert failures["test_meta"].count("ref_prog: ValueError: ref_prog returned a tensor on meta (output 0), "
                                       "the kernel's outputs are on cpu") == 1
    assert "kernel at run time" not in out
    # No candidate carries the reference's fault.
    stored = [json.loads(p.read_text()) for p in tl.cache_dir.glob("candidates/*.json")]
    assert [r for r in stored if r["status"] in ("timeout", "error")] == []


BUDGET_REFERENCE_TEST = """
import time

import pytest
import tilelang.language as T


def scale(M, N, bm=16, skip=False, extra=0):
    time.sleep(0.02)  # a build that takes a while, as a large kernel's does

    @T.prim_func
    def main(A: T.Tensor((M, N), "float32"), C: T.Tensor((M, N), "float32")):
        with T.Kernel(T.ceildiv(M, bm)) as bx:
            if not skip:  # a fast wrong config: it writes nothing
                for i, j in T.grid(bm, N):
                    C[bx * bm + i, j] = A[bx * bm + i, j] * 2.0 + T.float32(extra) * 0.0

    return main


# 800 configs, half of them wrong; no ref_prog: each is checked against a reference config's outputs.
SPACE = [dict(bm=bm, skip=skip, extra=e) for e in range(200) for bm in (16, 32) for skip in (False, True)]
SEARCH = dict(strategy="exhaustive", max_trials=32, max_tuning_s=20, target="c", out_idx=[-1], warmup=1, rep=3)


@pytest.mark.autotune(configs=SPACE, reference_config=dict(bm=64, skip=False, extra=0), **SEARCH)
def test_seed(autotune):
    assert not autotune(scale, 64, 32).config["skip"]


@pytest.mark.autotune(configs=SPACE, reference_config=True, **SEARCH)
def test_first(autotune):
    assert not autotune(scale, 64, 32).config["skip"]
"""


@pytest.mark.slow
def test_a_budgeted_tuning_builds_the_reference_config_first_and_checks_every_config_against_it(tl, pytester):
    pytester.makepyfile(test_budget_ref=BUDGET_REFERENCE_TEST)
    result = tl.run()
    result.assert_outcomes(passed=2)
    records = _records(tl.cache_dir)
    seed, first = records["test_seed"], records["test_first"]
    for record in (seed, first):
        assert 0 < record["builds"]["ahead"] <= record["builds"]["built"] < 800  # the budget cut the builds
        measured = record["candidates"]
        assert any(c["config"]["skip"] for c in measured)
        # Each wrong config, built ahead or as the search asked for it, failed the check.
        assert {c["status"] for c in measured if c["config"]["skip"]} == {"mismatch"}
        assert all(c.get("vs") for c in measured if c["status"] in ("ok", "mismatch"))
        # The search went past the configs built ahead (a quarter of the budget would not build the
        # space): those it built as it asked for them were checked against the reference too.
        assert record["builds"]["ahead"] < len(measured) == 32
    # The seed beside the space is the reference; where there is none, the space's first config,
    # as without a budget (not whichever config the builds ahead happened to reach).
    assert seed["reference"]["config"] == dict(bm=64, skip=False, extra=0) and seed["reference"]["seed"]
    assert first["reference"]["config"] == dict(bm=16, skip=False, extra=0) and not first["reference"]["seed"]
    # The warm path's index holds what the builds read (the test file that builds the kernels).
    index = [json.loads(p.read_text()) for p in (tl.cache_dir / "index").glob("*.json")]
    assert len(index) == 2
    assert all(any(path.endswith("test_budget_ref.py") for path in i["files"]) for i in index)
    tl.run().assert_outcomes(passed=2)
    assert tl.prop("test_seed", "tl_cache") == ["hit"] and tl.prop("test_first", "tl_cache") == ["hit"]
