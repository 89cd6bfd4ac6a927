"""Autotune a tiled GEMM on the CPU target "c" and check it against torch."""

import itertools

import pytest
import torch

from examples.kernels_cpu import gemm

M = N = K = 128
CONFIGS = [dict(bm=bm, bn=bn, bk=bk) for bm, bn, bk in itertools.product([16, 32], [16, 32], [16, 32])]


@pytest.mark.autotune(configs=CONFIGS, target="c", out_idx=[-1], ref_prog=lambda A, B: A @ B,
                      rtol=1e-3, atol=1e-3, warmup=3, rep=30)
def test_gemm_cpu(autotune):
    result = autotune(gemm, M, N, K)
    A, B = torch.randn(M, K), torch.randn(K, N)
    torch.testing.assert_close(result.kernel(A, B), A @ B, rtol=1e-4, atol=1e-4)
    assert result.config in CONFIGS
