"""CUDA behaviour: runs on a GPU machine, skips cleanly without one."""

import json
import re

import pytest
from kernel_sources import CUDA_KERNELS

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TEST = '''
import pytest, torch
import cuda_kernels

CONFIGS = [dict(block_M=bm, block_N=bn, threads=128) for bm in (32, 64) for bn in (64, 128)]

@pytest.mark.autotune(configs=CONFIGS, target="cuda", out_idx=[-1], ref_prog=lambda A, B: A + B,
                      warmup=5, rep=30, backend="{backend}")
def test_add(autotune):
    result = autotune(cuda_kernels.elementwise_add, 4096, 4096)
    A = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
    torch.testing.assert_close(result.kernel(A, A), A + A)
'''


@pytest.fixture
def cuda_tl(tl, pytester):
    pytester.makepyfile(cuda_kernels=CUDA_KERNELS)
    return tl


@pytest.mark.parametrize("backend", ["event", "cudagraph", "cupti"])
def test_cuda_tunes_and_hits(cuda_tl, pytester, backend):
    pytester.makepyfile(test_k=TEST.format(backend=backend))
    cuda_tl.run().assert_outcomes(passed=1)
    assert cuda_tl.prop("test_add", "tl_cache") == ["miss"]
    assert float(cuda_tl.prop("test_add", "tl_latency_ms")[0]) > 0
    # The timing worker was forked from the fork server and could use its GPU (not spawned); the
    # compile workers were forked from it too, TileLang preloaded.
    [record] = [json.loads(p.read_text()) for p in cuda_tl.cache_dir.glob("entries/*/record.json")]
    assert "ready_s_cuda:0" in record["phases"]
    assert record["phases"]["compile_workers"] == "forked", record["phases"]
    assert not [note for note in record["notes"] if "was spawned" in note], record["notes"]
    cuda_tl.run().assert_outcomes(passed=1)
    assert cuda_tl.prop("test_add", "tl_cache") == ["hit"]


def test_out_of_bounds_candidate_does_not_take_the_session_down(cuda_tl, pytester):
    test = TEST.format(backend="event").replace(
        "CONFIGS = [", "CONFIGS = [dict(block_M=32, block_N=64, threads=128, offset=1 << 18)] + [")
    pytester.makepyfile(test_k=test)
    result = cuda_tl.run("-v")
    result.assert_outcomes(passed=1)
    # Whether the stray write faults (crash, worker restarted) or lands in mapped memory
    # (the NaN-poisoned output then mismatches) depends on the allocator: both are rejections.
    assert re.search(r'"offset":262144.*: (crash|mismatch): ', result.stdout.str())
    assert "offset" not in cuda_tl.prop("test_add", "tl_config")[0]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_one_tuning_times_on_every_gpu_and_confirms_on_one(cuda_tl, pytester):
    """Candidates are compiled once and timed on both GPUs; the record says which GPU timed each;
    the winner is confirmed on the test's own GPU (the first)."""
    configs = "[dict(block_M=bm, block_N=bn, threads=th) for bm in (32, 64) for bn in (64, 128) for th in (128, 256)]"
    test = TEST.format(backend="event").replace("CONFIGS = [dict(block_M=bm, block_N=bn, threads=128) "
                                                "for bm in (32, 64) for bn in (64, 128)]", f"CONFIGS = {configs}")
    pytester.makepyfile(test_k=test)
    json_path = pytester.path / "out.json"
    cuda_tl.run(f"--tl-json={json_path}").assert_outcomes(passed=1)
    from conftest import load_json

    result = load_json(json_path)["tests"][0]
    timed_on = {c["timed_on"] for c in result["candidates"] if c.get("timed_on")}
    assert timed_on == {"cuda:0", "cuda:1"}
    assert result["device"] == "cuda:0" and result["timing_devices"] == ["cuda:0", "cuda:1"]
    # --tl-gpus=one keeps every candidate on the test's own GPU
    cuda_tl.run(f"--tl-json={json_path}", "--tl-retune", "--tl-gpus=one").assert_outcomes(passed=1)
    result = load_json(json_path)["tests"][0]
    assert {c["timed_on"] for c in result["candidates"] if c.get("timed_on")} == {"cuda:0"}
