"""CUDA behaviour: runs on a GPU machine, skips cleanly without one."""

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
