"""The header prefixes shipped for a machine's first tuning (``nvrtc_seeds.json``), and how they are made.

NVRTC compile workers share one precompiled header per header prefix (``device_compile``). A
session writes the PCHs of the prefixes its book remembers before the first candidates need them;
on a machine that never tuned with this TileLang the book is empty, and the whole first wave of
candidates would wait for one of them to write it (measured on H200 hosts: 1.2-2.4 s). Writing it
ahead needs the prefix before the fork server has imported TileLang (6 s on a 2xH200 host): a probe
kernel lowered after that import is ready no earlier than a first candidate's own PCH.

TileLang's CUDA codegen picks its ``#include`` lines by the instructions a kernel uses, not by its
sizes or tiles: every config of a GEMM space on sm_90 starts with the same prefix (wgmma, TMA,
barriers), the prefix a small pipelined ``T.gemm`` lowered for that arch gives. So the plugin ships
the prefixes of two probe kernels written as TileLang's examples write them -- a pipelined fp16
GEMM and the flash-attention forward of ``example_mha_fwd_bshd.py`` (with its fast-math pass
config) -- for each arch and this TileLang version, and ``device_compile.prime`` writes their PCHs
where the book remembers nothing for this TileLang. A kernel with another prefix writes its own as
before; the book then remembers the prefixes real kernels used.

Regenerate after a TileLang upgrade (lowers the probes; no GPU needed)::

    python -m pytest_tlautotune.engine.nvrtc_seeds

``tests/test_device_compile.py`` checks the file against the installed TileLang.
"""

# No ``from __future__ import annotations``: TileLang evaluates the probes' ``T.Tensor(shape, ...)``
# annotations in their scope, which a string annotation would lose.
import json
from typing import Any

#: The archs (``sm_<arch>``) the probes are lowered for: Ampere to Blackwell.
ARCHS = (80, 86, 89, 90, 100, 103, 120)


def probe_gemm(M: int = 1024, N: int = 1024, K: int = 1024, block_M: int = 128, block_N: int = 128,
               block_K: int = 32, num_stages: int = 2, threads: int = 128) -> Any:
    """A pipelined fp16 tensor-core GEMM written as TileLang's examples write it."""
    import tilelang.language as T

    @T.prim_func
    def main(A: T.Tensor((M, K), "float16"), B: T.Tensor((K, N), "float16"), C: T.Tensor((M, N), "float16")):
        with T.Kernel(T.ceildiv(N, block_N), T.ceildiv(M, block_M), threads=threads) as (bx, by):
            A_shared = T.alloc_shared((block_M, block_K), "float16")
            B_shared = T.alloc_shared((block_K, block_N), "float16")
            C_local = T.alloc_fragment((block_M, block_N), "float")
            T.clear(C_local)
            for ko in T.Pipelined(T.ceildiv(K, block_K), num_stages=num_stages):
                T.copy(A[by * block_M, ko * block_K], A_shared)
                T.copy(B[ko * block_K, bx * block_N], B_shared)
                T.gemm(A_shared, B_shared, C_local)
            T.copy(C_local, C[by * block_M, bx * block_N])

    return main


def probe_flash_attention(batch: int = 8, heads: int = 32, seq_len: int = 4096, dim: int = 128, block_M: int = 128,
                          block_N: int = 64, num_stages: int = 2, threads: int = 256) -> Any:
    """The non-causal flash-attention forward of TileLang's ``example_mha_fwd_bshd.py``."""
    import tilelang.language as T

    scale = (1.0 / dim) ** 0.5 * 1.44269504  # log2(e)
    shape = [batch, seq_len, heads, dim]
    dtype, accum = "float16", "float32"

    @T.prim_func
    def main(Q: T.Tensor(shape, dtype), K: T.Tensor(shape, dtype), V: T.Tensor(shape, dtype),
             Output: T.Tensor(shape, dtype)):
        with T.Kernel(T.ceildiv(seq_len, block_M), heads, batch, threads=threads) as (bx, by, bz):
            Q_shared = T.alloc_shared([block_M, dim], dtype)
            K_shared = T.alloc_shared([block_N, dim], dtype)
            V_shared = T.alloc_shared([block_N, dim], dtype)
            O_shared = T.alloc_shared([block_M, dim], dtype)
            acc_s = T.alloc_fragment([block_M, block_N], accum)
            acc_s_cast = T.alloc_fragment([block_M, block_N], dtype)
            acc_o = T.alloc_fragment([block_M, dim], accum)
            scores_max = T.alloc_fragment([block_M], accum)
            scores_max_prev = T.alloc_fragment([block_M], accum)
            scores_scale = T.alloc_fragment([block_M], accum)
            scores_sum = T.alloc_fragment([block_M], accum)
            logsum = T.alloc_fragment([block_M], accum)

            T.copy(Q[bz, bx * block_M:(bx + 1) * block_M, by, :], Q_shared)
            T.fill(acc_o, 0)
            T.fill(logsum, 0)
            T.fill(scores_max, -T.infinity(accum))
            for k in T.Pipelined(T.ceildiv(seq_len, block_N), num_stages=num_stages):
                T.copy(K[bz, k * block_N:(k + 1) * block_N, by, :], K_shared)
                for i, j in T.Parallel(block_M, block_N):
                    acc_s[i, j] = T.if_then_else(k * block_N + j >= seq_len, -T.infinity(acc_s.dtype), 0)
                T.gemm(Q_shared, K_shared, acc_s, transpose_B=True, policy=T.GemmWarpPolicy.FullRow)
                T.copy(scores_max, scores_max_prev)
                T.fill(scores_max, -T.infinity(accum))
                T.reduce_max(acc_s, scores_max, dim=1, clear=False)
                for i in T.Parallel(block_M):
                    scores_max[i] = T.max(scores_max[i], scores_max_prev[i])
                for i in T.Parallel(block_M):
                    scores_scale[i] = T.exp2(scores_max_prev[i] * scale - scores_max[i] * scale)
                for i, j in T.Parallel(block_M, block_N):
                    acc_s[i, j] = T.exp2(acc_s[i, j] * scale - scores_max[i] * scale)
                T.reduce_sum(acc_s, scores_sum, dim=1)
                for i in T.Parallel(block_M):
                    logsum[i] = logsum[i] * scores_scale[i] + scores_sum[i]
                T.copy(acc_s, acc_s_cast)
                for i, j in T.Parallel(block_M, dim):
                    acc_o[i, j] *= scores_scale[i]
                T.copy(V[bz, k * block_N:(k + 1) * block_N, by, :], V_shared)
                T.gemm(acc_s_cast, V_shared, acc_o, policy=T.GemmWarpPolicy.FullRow)
            for i, j in T.Parallel(block_M, dim):
                acc_o[i, j] /= logsum[i]
            T.copy(acc_o, O_shared)
            T.copy(O_shared, Output[bz, bx * block_M:(bx + 1) * block_M, by, :])

    return main


#: The probes, in the order a session writes their PCHs: name, kernel, whether fast math is on (the
#: flash-attention example sets ``TL_ENABLE_FAST_MATH``; it is an NVRTC option, part of the PCH's key).
PROBES = (("gemm", probe_gemm, False), ("flash_attention", probe_flash_attention, True))


def lowered_prefix(make: Any, arch: int) -> str:
    """The header prefix of ``make()``'s device code lowered for ``sm_<arch>`` (generated, not
    compiled), as ``device_compile`` hands it to NVRTC."""
    import tilelang  # noqa: F401 - first: it puts its own tvm on the path
    import tvm
    from tilelang.backend.module import create_backend_context
    from tilelang.engine.lower import lower_with_context
    from tvm.target import Target

    from .device_compile import header_prefix, nvrtc_source

    target = Target({"kind": "cuda", "arch": f"sm_{arch}{'a' if arch >= 90 else ''}"})
    with target:
        func = make()
    context = create_backend_context(target, None, "tvm_ffi")
    with tvm.transform.PassContext(opt_level=3, config={}), context.target:
        artifact = lower_with_context(func, context, enable_host_codegen=False, enable_device_compile=False)
    return header_prefix(nvrtc_source(artifact.kernel_source))


def generate(archs: tuple[int, ...] = ARCHS) -> dict:
    """The seed file's content for the installed TileLang: each probe's prefix with the archs it is
    theirs for (one entry per distinct prefix, in ``PROBES``' order)."""
    from .device_compile import _tilelang_version

    seeds: list[dict] = []
    for name, make, fast_math in PROBES:
        for arch in archs:
            prefix = lowered_prefix(make, arch)
            same = [s for s in seeds if s["kernel"] == name and s["prefix"] == prefix]
            if same:
                same[0]["archs"].append(arch)
            else:
                seeds.append({"kernel": name, "archs": [arch], "fast_math": fast_math, "prefix": prefix})
    return {"tilelang": _tilelang_version(), "seeds": seeds}


def main() -> None:
    from .device_compile import SEEDS

    SEEDS.write_text(json.dumps(generate(), indent=1) + "\n")
    print(f"wrote {SEEDS}")


if __name__ == "__main__":
    main()
