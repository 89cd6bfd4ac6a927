"""TileLang CPU kernel sources that inner pytest runs import as `kernels`."""

KERNELS = '''
import tilelang.cpu.language as T


def gemm(M, N, K, bm=16, bn=16, bk=16, dtype="float32", bug_when_bk=None, extra=0):
    """C = A @ B on target "c"; bk == bug_when_bk drops one k-step (a wrong candidate)."""
    steps = K // bk - (1 if bk == bug_when_bk else 0)

    @T.prim_func
    def main(A: T.Tensor((M, K), dtype), B: T.Tensor((K, N), dtype), C: T.Tensor((M, N), dtype)):
        with T.Kernel(T.ceildiv(N, bn), T.ceildiv(M, bm)) as (bx, by):
            acc = T.alloc_local((bm, bn), dtype)
            for i, j in T.grid(bm, bn):
                acc[i, j] = 0
            for r in T.serial(extra + 1):
                for ko in T.serial(steps):
                    for i, j, k in T.grid(bm, bn, bk):
                        acc[i, j] += A[by * bm + i, ko * bk + k] * B[ko * bk + k, bx * bn + j]
            for i, j in T.grid(bm, bn):
                C[by * bm + i, bx * bn + j] = acc[i, j] / (extra + 1)
    return main


def add(M, N, bm=16, bn=16, dtype="float32"):
    @T.prim_func
    def main(A: T.Tensor((M, N), dtype), B: T.Tensor((M, N), dtype), C: T.Tensor((M, N), dtype)):
        with T.Kernel(T.ceildiv(N, bn), T.ceildiv(M, bm)) as (bx, by):
            for i, j in T.grid(bm, bn):
                C[by * bm + i, bx * bn + j] = A[by * bm + i, bx * bn + j] + B[by * bm + i, bx * bn + j]
    return main
'''


KERNELS_BAD = """
import tilelang.cpu.language as T

def gemm(M, N, K, bm=16, bn=16, bk=16, offset=0, segv=False, extra=0, dtype="float32"):
    \"\"\"The GEMM with ways to fail: ``bm`` not dividing M raises, ``extra`` repeats the work
    (a hang), ``offset`` stores rows past C (TileLang's safe-memory pass drops such a constant
    32-bit offset, so C is never written), ``segv`` stores 2**40 rows past C with 64-bit indices
    (a SIGSEGV on every run, with the safe-memory pass disabled).\"\"\"
    if M % bm:
        raise ValueError(f"bm={bm} does not divide M={M}")
    row = T.int64(1 << 40) if segv else offset

    @T.prim_func
    def main(A: T.Tensor((M, K), dtype), B: T.Tensor((K, N), dtype), C: T.Tensor((M, N), dtype)):
        with T.Kernel(T.ceildiv(N, bn), T.ceildiv(M, bm)) as (bx, by):
            acc = T.alloc_local((bm, bn), dtype)
            for i, j in T.grid(bm, bn):
                acc[i, j] = 0
            for r in T.serial(extra + 1):
                for ko in T.serial(K // bk):
                    for i, j, k in T.grid(bm, bn, bk):
                        acc[i, j] += A[by * bm + i, ko * bk + k] * B[ko * bk + k, bx * bn + j]
            for i, j in T.grid(bm, bn):
                C[by * bm + i + row, bx * bn + j] = acc[i, j] / (extra + 1)
    return main
"""
