"""Autotune a pipelined fp16 GEMM on CUDA (skipped without a GPU)."""

import pytest
import torch

from examples.kernels_cuda import gemm

M = N = K = 4096
CONFIGS = [
    dict(block_M=bm, block_N=bn, block_K=bk, num_stages=ns, threads=th)
    for bm, bn, bk, ns, th in [(128, 128, 32, 2, 128), (128, 256, 64, 3, 256), (64, 128, 32, 3, 128),
                               (128, 128, 64, 3, 256)]
]


@pytest.mark.autotune(configs=CONFIGS, target="cuda", out_idx=[-1], ref_prog=lambda A, B: A @ B,
                      rtol=1e-2, atol=1e-2, warmup=10, rep=50)
def test_gemm_cuda(autotune):
    result = autotune(gemm, M, N, K)
    A = torch.randn(M, K, device="cuda", dtype=torch.float16)
    B = torch.randn(K, N, device="cuda", dtype=torch.float16)
    torch.testing.assert_close(result.kernel(A, B), A @ B, rtol=1e-2, atol=1e-1)
