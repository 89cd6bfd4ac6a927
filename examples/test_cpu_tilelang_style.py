"""A kernel written in TileLang's own style, tuned by the ``autotune`` fixture on the CPU target "c".

``@tilelang.autotune`` carries the config space and the check/timing settings, ``@tilelang.jit``
the compile settings; the marker needs no arguments (any it gives override the decorators').
The same function still works outside pytest: ``gemm(M, N, K)`` tunes it with TileLang's tuner.
"""

import pytest
import tilelang
import tilelang.cpu.language as T
import torch

M = N = K = 128
CONFIGS = [dict(bm=bm, bn=bn) for bm in (16, 32) for bn in (16, 32)]


def reference(A, B):
    return A @ B


@tilelang.autotune(configs=CONFIGS, ref_prog=reference, rtol=1e-3, atol=1e-3, warmup=3, rep=20)
@tilelang.jit(out_idx=[-1], target="c", execution_backend="cython")
def gemm(M, N, K, bm=16, bn=16, bk=16, dtype="float32"):
    @T.prim_func
    def main(A: T.Tensor((M, K), dtype), B: T.Tensor((K, N), dtype), C: T.Tensor((M, N), dtype)):
        with T.Kernel(T.ceildiv(N, bn), T.ceildiv(M, bm)) as (bx, by):
            acc = T.alloc_local((bm, bn), dtype)
            for i, j in T.grid(bm, bn):
                acc[i, j] = 0
            for ko in T.serial(T.ceildiv(K, bk)):
                for i, j, k in T.grid(bm, bn, bk):
                    acc[i, j] += A[by * bm + i, ko * bk + k] * B[ko * bk + k, bx * bn + j]
            for i, j in T.grid(bm, bn):
                C[by * bm + i, bx * bn + j] = acc[i, j]

    return main


@pytest.mark.autotune
def test_gemm_tilelang_style(autotune):
    result = autotune(gemm, M, N, K)
    A, B = torch.randn(M, K), torch.randn(K, N)
    torch.testing.assert_close(result.kernel(A, B), A @ B, rtol=1e-4, atol=1e-4)
    assert result.config in CONFIGS
