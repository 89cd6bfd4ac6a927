"""TileLang CPU kernels (target ``"c"``) used by the examples and benchmarks.

Each factory returns a ``PrimFunc``; compile it with
``tilelang.compile(func, out_idx=[-1], target="c", execution_backend="cython")``.
Local buffers are indexed with ``T.grid``/``T.serial`` loops (not ``T.Parallel``),
which is what the CPU lowering expects.
"""

import tilelang.cpu.language as T

__all__ = ["elementwise_add", "gemm", "relu"]


def _check_tiles(**dims_and_tiles: tuple[int, int]) -> None:
    """Raise ``ValueError`` unless every dimension is a positive multiple of its tile."""
    for name, (dim, tile) in dims_and_tiles.items():
        if tile <= 0 or dim % tile != 0:
            raise ValueError(
                f"{name}={dim} must be a multiple of its tile size {tile} (no bounds checks are generated)"
            )


def gemm(M: int, N: int, K: int, bm: int, bn: int, bk: int, dtype: str = "float32"):
    """Tiled ``C = A @ B`` with ``A: (M, K)``, ``B: (K, N)``, ``C: (M, N)``."""
    _check_tiles(M=(M, bm), N=(N, bn), K=(K, bk))

    @T.prim_func
    def main(
        A: T.Tensor((M, K), dtype),
        B: T.Tensor((K, N), dtype),
        C: T.Tensor((M, N), dtype),
    ):
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


def elementwise_add(M: int, N: int, bm: int, bn: int, dtype: str = "float32"):
    """Tiled ``C = A + B`` over ``(M, N)`` tensors."""
    _check_tiles(M=(M, bm), N=(N, bn))

    @T.prim_func
    def main(
        A: T.Tensor((M, N), dtype),
        B: T.Tensor((M, N), dtype),
        C: T.Tensor((M, N), dtype),
    ):
        with T.Kernel(T.ceildiv(N, bn), T.ceildiv(M, bm)) as (bx, by):
            for i, j in T.grid(bm, bn):
                C[by * bm + i, bx * bn + j] = A[by * bm + i, bx * bn + j] + B[by * bm + i, bx * bn + j]

    return main


def relu(M: int, N: int, bm: int, bn: int, dtype: str = "float32"):
    """Tiled ``B = max(A, 0)`` over ``(M, N)`` tensors."""
    _check_tiles(M=(M, bm), N=(N, bn))

    @T.prim_func
    def main(
        A: T.Tensor((M, N), dtype),
        B: T.Tensor((M, N), dtype),
    ):
        with T.Kernel(T.ceildiv(N, bn), T.ceildiv(M, bm)) as (bx, by):
            for i, j in T.grid(bm, bn):
                B[by * bm + i, bx * bn + j] = T.max(A[by * bm + i, bx * bn + j], T.cast(0, dtype))

    return main
