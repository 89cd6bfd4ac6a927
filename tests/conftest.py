"""Shared pieces for the plugin's tests: a real TileLang CPU kernel module for inner runs."""

import json
import xml.etree.ElementTree as ET

import pytest

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


@pytest.fixture
def tl(pytester, tmp_path):
    """A pytester with the kernel module written and a fresh cache dir; returns a runner."""
    pytester.makepyfile(kernels=KERNELS)
    cache = tmp_path / "tlcache"

    class Runner:
        cache_dir = cache
        junit = tmp_path / "junit.xml"

        def run(self, *args, subprocess=False):
            argv = [f"--tl-cache-dir={cache}", "-p", "no:cacheprovider", f"--junitxml={self.junit}", *args]
            if subprocess:
                return pytester.runpytest_subprocess(*argv)
            return pytester.runpytest(*argv)

        def properties(self):
            """{test name: [(property, value), ...]} from the last junit XML."""
            root = ET.parse(self.junit).getroot()
            out = {}
            for case in root.iter("testcase"):
                out.setdefault(case.get("name"), []).extend(
                    (p.get("name"), p.get("value")) for p in case.iter("property"))
            return out

        def prop(self, test, name):
            return [v for k, v in self.properties()[test] if k == name]

    return Runner()


def load_json(path):
    with open(path) as f:
        return json.load(f)
