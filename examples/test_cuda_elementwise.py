"""Autotune an fp16 element-wise add on CUDA (skipped without a GPU)."""

import pytest
import torch

from examples.kernels_cuda import elementwise_add

M = N = 8192
CONFIGS = [dict(block_M=bm, block_N=bn, threads=th) for bm in (32, 64) for bn in (64, 128) for th in (128, 256)]


@pytest.mark.autotune(configs=CONFIGS, target="cuda", out_idx=[-1], ref_prog=lambda A, B: A + B, warmup=10, rep=50)
def test_add_cuda(autotune):
    result = autotune(elementwise_add, M, N)
    A = torch.randn(M, N, device="cuda", dtype=torch.float16)
    B = torch.randn(M, N, device="cuda", dtype=torch.float16)
    torch.testing.assert_close(result.kernel(A, B), A + B)
