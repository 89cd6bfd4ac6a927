"""TileLang CUDA kernels: the one copy that the GPU examples, the benchmarks and the plugin's
CUDA tests use (inner pytest runs get this file's text as their ``cuda_kernels`` module).

Importing this module needs no GPU: the factories only build ``PrimFunc`` objects.
Compile with ``tilelang.compile(func, out_idx=[-1], target="cuda")`` on a GPU machine.
The keyword-only arguments make a kernel slower or wrong on purpose, for the tests and
benchmarks; left at their defaults the kernel is the plain one.
"""

import itertools

import tilelang.language as T

__all__ = ["GEMM_288_CONFIGS", "GEMM_48_CONFIGS", "elementwise_add", "gemm", "gemm_nt"]

#: 48-point GEMM space: block_M x block_N x block_K x num_stages x threads.
GEMM_48_CONFIGS = [
    {"block_M": bm, "block_N": bn, "block_K": bk, "num_stages": ns, "threads": th}
    for bm, bn, bk, ns, th in itertools.product((64, 128), (64, 128, 256), (32, 64), (2, 3), (128, 256))
]

#: TileLang's advanced GEMM example's space (examples/gemm/example_gemm_autotune.py, without the
#: roller): 3 x 3 x 2 x 4 x 2 x 2 = 288 configs.
GEMM_288_CONFIGS = [
    {"block_M": bm, "block_N": bn, "block_K": bk, "num_stages": ns, "threads": th, "rasterization": r}
    for bm, bn, bk, ns, th, r in itertools.product(
        (64, 128, 256), (64, 128, 256), (32, 64), (0, 1, 2, 3), (128, 256), (True, False))
]


def gemm(
    M: int,
    N: int,
    K: int,
    block_M: int,
    block_N: int,
    block_K: int,
    num_stages: int,
    threads: int,
    dtype: str = "float16",
    accum_dtype: str = "float",
    *,
    extra: int | None = None,
):
    """Pipelined tensor-core ``C = A @ B`` with ``A: (M, K)``, ``B: (K, N)``, ``C: (M, N)``.

    ``extra`` (``benchmarks/gate_aa.py --device cuda``): ``extra`` more tile iterations after the
    main loop that multiply the A tile by a zeroed B tile into the accumulator (adding exactly 0),
    each about one more K-step. Every int, 0 included, allocates their two shared tiles, so the
    benchmark's arms differ only in the extra work.
    """
    if extra is not None:
        return _gemm_with_extra(M, N, K, block_M, block_N, block_K, num_stages, threads, dtype, accum_dtype, extra)

    @T.prim_func
    def main(
        A: T.Tensor((M, K), dtype),
        B: T.Tensor((K, N), dtype),
        C: T.Tensor((M, N), dtype),
    ):
        with T.Kernel(T.ceildiv(N, block_N), T.ceildiv(M, block_M), threads=threads) as (bx, by):
            A_shared = T.alloc_shared((block_M, block_K), dtype)
            B_shared = T.alloc_shared((block_K, block_N), dtype)
            C_local = T.alloc_fragment((block_M, block_N), accum_dtype)
            T.clear(C_local)
            for ko in T.Pipelined(T.ceildiv(K, block_K), num_stages=num_stages):
                T.copy(A[by * block_M, ko * block_K], A_shared)
                T.copy(B[ko * block_K, bx * block_N], B_shared)
                T.gemm(A_shared, B_shared, C_local)
            T.copy(C_local, C[by * block_M, bx * block_N])

    return main


def _gemm_with_extra(M: int, N: int, K: int, block_M: int, block_N: int, block_K: int, num_stages: int,
                     threads: int, dtype: str, accum_dtype: str, extra: int):
    @T.prim_func
    def main(
        A: T.Tensor((M, K), dtype),
        B: T.Tensor((K, N), dtype),
        C: T.Tensor((M, N), dtype),
    ):
        with T.Kernel(T.ceildiv(N, block_N), T.ceildiv(M, block_M), threads=threads) as (bx, by):
            A_shared = T.alloc_shared((block_M, block_K), dtype)
            B_shared = T.alloc_shared((block_K, block_N), dtype)
            X_shared = T.alloc_shared((block_M, block_K), dtype)  # the pipeline owns A_shared
            Z_shared = T.alloc_shared((block_K, block_N), dtype)
            C_local = T.alloc_fragment((block_M, block_N), accum_dtype)
            T.clear(C_local)
            for ko in T.Pipelined(T.ceildiv(K, block_K), num_stages=num_stages):
                T.copy(A[by * block_M, ko * block_K], A_shared)
                T.copy(B[ko * block_K, bx * block_N], B_shared)
                T.gemm(A_shared, B_shared, C_local)
            T.clear(Z_shared)
            for e in T.serial(extra):  # extra work that adds exactly 0
                T.copy(A[by * block_M, (e % T.ceildiv(K, block_K)) * block_K], X_shared)
                T.gemm(X_shared, Z_shared, C_local)
            T.copy(C_local, C[by * block_M, bx * block_N])

    return main


def elementwise_add(M: int, N: int, block_M: int, block_N: int, threads: int, dtype: str = "float16", *,
                    offset: int = 0):
    """Tiled ``C = A + B`` over ``(M, N)`` tensors; a non-zero ``offset`` writes that many rows
    past C (far out of bounds: an illegal address, for the tests)."""

    @T.prim_func
    def main(
        A: T.Tensor((M, N), dtype),
        B: T.Tensor((M, N), dtype),
        C: T.Tensor((M, N), dtype),
    ):
        with T.Kernel(T.ceildiv(N, block_N), T.ceildiv(M, block_M), threads=threads) as (bx, by):
            for i, j in T.Parallel(block_M, block_N):
                C[by * block_M + i + offset, bx * block_N + j] = (
                    A[by * block_M + i, bx * block_N + j] + B[by * block_M + i, bx * block_N + j]
                )

    return main


def gemm_nt(
    M: int,
    N: int,
    K: int,
    block_M: int,
    block_N: int,
    block_K: int,
    num_stages: int,
    threads: int,
    rasterization: bool,
    dtype: str = "bfloat16",
    accum_dtype: str = "float",
):
    """``C = A @ B.T`` with ``A: (M, K)``, ``B: (N, K)``, through a shared C tile, block
    rasterization on or off: the kernel of TileLang's advanced GEMM autotune example."""

    @T.prim_func
    def main(
        A: T.Tensor((M, K), dtype),
        B: T.Tensor((N, K), dtype),
        C: T.Tensor((M, N), dtype),
    ):
        with T.Kernel(T.ceildiv(N, block_N), T.ceildiv(M, block_M), threads=threads) as (bx, by):
            A_shared = T.alloc_shared((block_M, block_K), dtype)
            B_shared = T.alloc_shared((block_N, block_K), dtype)
            C_local = T.alloc_fragment((block_M, block_N), accum_dtype)
            C_shared = T.alloc_shared((block_M, block_N), dtype)
            T.use_swizzle(panel_size=10, enable=rasterization)
            T.clear(C_local)
            for k in T.Pipelined(T.ceildiv(K, block_K), num_stages=num_stages):
                T.copy(A[by * block_M, k * block_K], A_shared)
                T.copy(B[bx * block_N, k * block_K], B_shared)
                T.gemm(A_shared, B_shared, C_local, transpose_B=True)
            T.copy(C_local, C_shared)
            T.copy(C_shared, C[by * block_M, bx * block_N])

    return main
