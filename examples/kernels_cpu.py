"""TileLang CPU kernels (target ``"c"``): the one copy that the examples, the benchmarks and the
plugin's tests use (inner pytest runs get this file's text as their ``kernels`` module).

Each factory returns a ``PrimFunc``; compile it with
``tilelang.compile(func, out_idx=[-1], target="c", execution_backend="cython")``.
Local buffers are indexed with ``T.grid``/``T.serial`` loops (not ``T.Parallel``),
which is what the CPU lowering expects.

The keyword-only arguments make a kernel slower or wrong on purpose, for the tests and
benchmarks; left at their defaults they change nothing (the compiled code is the plain kernel's).
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


def gemm(M: int, N: int, K: int, bm: int = 16, bn: int = 16, bk: int = 16, dtype: str = "float32", *,
         extra: int = 0, repeat: int = 0, bug_when_bk: int | None = None, offset: int = 0, segv: bool = False):
    """Tiled ``C = A @ B`` with ``A: (M, K)``, ``B: (K, N)``, ``C: (M, N)``.

    Slower, same result: ``extra`` adds and subtracts ``extra`` rank-1 updates per tile (a
    calibrated slowdown: the gate's tests and ``benchmarks/gate_aa.py``); ``repeat`` does the
    whole accumulation ``repeat`` more times (``10**7`` hangs: a timeout). Wrong: ``bk ==
    bug_when_bk`` drops one k-step (a mismatching candidate); ``offset`` stores rows past C
    (TileLang's safe-memory pass drops such a constant 32-bit offset, so C is never written);
    ``segv`` stores 2**40 rows past C with 64-bit indices (a SIGSEGV on every run, with the
    safe-memory pass disabled).
    """
    _check_tiles(M=(M, bm), N=(N, bn), K=(K, bk))
    steps = K // bk - (1 if bk == bug_when_bk else 0)
    row = T.int64(1 << 40) if segv else offset

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
            for r in T.serial(repeat + 1):  # noqa: B007 - r names the IR's loop (same IR as before)
                for ko in T.serial(steps):
                    for i, j, k in T.grid(bm, bn, bk):
                        acc[i, j] += A[by * bm + i, ko * bk + k] * B[ko * bk + k, bx * bn + j]
            if extra:  # decided in Python: no loop at all in the plain kernel
                for e in T.serial(extra):
                    for i, j in T.grid(bm, bn):
                        acc[i, j] += A[by * bm + i, e % K] * B[e % K, bx * bn + j]
                    for i, j in T.grid(bm, bn):
                        acc[i, j] -= A[by * bm + i, e % K] * B[e % K, bx * bn + j]
            for i, j in T.grid(bm, bn):
                C[by * bm + i + row, bx * bn + j] = acc[i, j] / (repeat + 1)

    return main


def elementwise_add(M: int, N: int, bm: int = 16, bn: int = 16, dtype: str = "float32", *,
                    extra: int | None = None):
    """Tiled ``C = A + B`` over ``(M, N)`` tensors.

    ``extra`` (``benchmarks/gate_aa.py``): the tile goes through a local buffer, and B is added
    to and subtracted from one of its rows ``extra`` times (the same result up to rounding). Every
    int, 0 included, takes that path, so the benchmark's arms differ only in the extra work.
    """
    _check_tiles(M=(M, bm), N=(N, bn))
    if extra is not None:
        return _add_through_tile(M, N, bm, bn, dtype, extra)

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


def _add_through_tile(M: int, N: int, bm: int, bn: int, dtype: str, extra: int):
    @T.prim_func
    def main(
        A: T.Tensor((M, N), dtype),
        B: T.Tensor((M, N), dtype),
        C: T.Tensor((M, N), dtype),
    ):
        with T.Kernel(T.ceildiv(N, bn), T.ceildiv(M, bm)) as (bx, by):
            acc = T.alloc_local((bm, bn), dtype)
            for i, j in T.grid(bm, bn):
                acc[i, j] = A[by * bm + i, bx * bn + j] + B[by * bm + i, bx * bn + j]
            for e in T.serial(extra):
                for j in T.serial(bn):
                    acc[e % bm, j] += B[by * bm + e % bm, bx * bn + j]
                for j in T.serial(bn):
                    acc[e % bm, j] -= B[by * bm + e % bm, bx * bn + j]
            for i, j in T.grid(bm, bn):
                C[by * bm + i, bx * bn + j] = acc[i, j]

    return main


def relu(M: int, N: int, bm: int = 16, bn: int = 16, dtype: str = "float32"):
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
