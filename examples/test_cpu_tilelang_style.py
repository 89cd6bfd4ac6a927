"""A kernel in TileLang's own style, tuned by the ``autotune`` fixture on the CPU target "c".

``@tilelang.autotune`` carries the config space and the check/timing settings, ``@tilelang.jit``
the compile settings; the marker needs no arguments (any it gives override the decorators').
The decorators are applied to the shared GEMM factory of ``kernels_cpu`` (written above a
``def``, they do the same). The same function still works outside pytest: ``gemm(M, N, K)``
tunes it with TileLang's tuner.
"""

import pytest
import tilelang
import torch

from examples import kernels_cpu

M = N = K = 128
CONFIGS = [dict(bm=bm, bn=bn) for bm in (16, 32) for bn in (16, 32)]


def reference(A, B):
    return A @ B


gemm = tilelang.autotune(configs=CONFIGS, ref_prog=reference, rtol=1e-3, atol=1e-3, warmup=3, rep=20)(
    tilelang.jit(out_idx=[-1], target="c", execution_backend="cython")(kernels_cpu.gemm))


@pytest.mark.autotune
def test_gemm_tilelang_style(autotune):
    result = autotune(gemm, M, N, K)
    A, B = torch.randn(M, K), torch.randn(K, N)
    torch.testing.assert_close(result.kernel(A, B), A @ B, rtol=1e-4, atol=1e-4)
    assert result.config in CONFIGS
