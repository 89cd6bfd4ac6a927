"""Kernels written in TileLang's own decorator style, tuned by the ``autotune`` fixture on the CPU
target "c".

``@tilelang.autotune`` carries the config space and the check/timing settings, ``@tilelang.jit``
the compile settings; the marker needs no arguments (any it gives override the decorators'). The
same functions still work outside pytest: ``row_sum(M, N)`` tunes with TileLang's own tuner.
"""

import pytest
import tilelang
import tilelang.cpu.language as T
import torch

M, N = 128, 256


@tilelang.autotune(configs=[dict(bm=bm, bn=bn) for bm in (8, 16) for bn in (32, 64)],
                   ref_prog=lambda A: A.sum(dim=1), rtol=1e-4, atol=1e-4, warmup=3, rep=20)
@tilelang.jit(out_idx=[-1], target="c", execution_backend="cython")
def row_sum(M, N, bm=16, bn=64, dtype="float32"):
    """Lazy style: returns the PrimFunc. ``y[i] = sum_j A[i, j]``, ``bm`` rows at a time."""

    @T.prim_func
    def main(A: T.Tensor((M, N), dtype), y: T.Tensor((M,), dtype)):
        with T.Kernel(T.ceildiv(M, bm)) as bx:
            acc = T.alloc_local((bm,), dtype)
            for i in T.serial(bm):
                acc[i] = 0
            for jo in T.serial(N // bn):
                for i, j in T.grid(bm, bn):
                    acc[i] += A[bx * bm + i, jo * bn + j]
            for i in T.serial(bm):
                y[bx * bm + i] = acc[i]

    return main


@tilelang.autotune(configs=[dict(bm=8), dict(bm=16), dict(bm=32)], ref_prog=lambda A, B: torch.relu(A) + B,
                   warmup=3, rep=20)
@tilelang.jit(target="c", execution_backend="cython")
def relu_add(A, B, bm: int = None):
    """Eager style: shapes from ``T.const``, the output from ``T.empty``; no default tile."""
    M, N = T.const("M, N")
    A: T.Tensor[[M, N], T.float32]
    B: T.Tensor[[M, N], T.float32]
    C = T.empty((M, N), T.float32)
    with T.Kernel(T.ceildiv(M, bm)) as bx:
        for i, j in T.grid(bm, N):
            C[bx * bm + i, j] = T.max(A[bx * bm + i, j], T.float32(0)) + B[bx * bm + i, j]
    return C


@pytest.mark.autotune
def test_row_sum(autotune):
    result = autotune(row_sum, M, N)  # the shape arguments only
    A = torch.randn(M, N)
    torch.testing.assert_close(result.kernel(A), A.sum(dim=1), rtol=1e-4, atol=1e-4)
    assert result.config in [dict(bm=bm, bn=bn) for bm in (8, 16) for bn in (32, 64)]


@pytest.mark.autotune
def test_relu_add(autotune):
    A, B = torch.randn(M, N), torch.randn(M, N)
    result = autotune(relu_add, A, B)  # example tensors, as relu_add is called
    torch.testing.assert_close(result.kernel(A, B), torch.relu(A) + B)
