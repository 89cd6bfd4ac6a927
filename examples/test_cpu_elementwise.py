"""Autotune element-wise kernels (add, relu) on the CPU target "c"."""

import pytest
import torch

from examples.kernels_cpu import elementwise_add, relu

M, N = 256, 256
TILES = [dict(bm=bm, bn=bn) for bm in (8, 32) for bn in (16, 64)]


@pytest.mark.autotune(configs=TILES, target="c", out_idx=[-1], ref_prog=lambda A, B: A + B, warmup=3, rep=30)
def test_add_cpu(autotune):
    result = autotune(elementwise_add, M, N)
    A, B = torch.randn(M, N), torch.randn(M, N)
    torch.testing.assert_close(result.kernel(A, B), A + B)


@pytest.mark.autotune(configs=TILES, target="c", out_idx=[-1], ref_prog=torch.relu, warmup=3, rep=30)
def test_relu_cpu(autotune):
    result = autotune(relu, M, N)
    A = torch.randn(M, N)
    torch.testing.assert_close(result.kernel(A), torch.relu(A))
