"""Where one CUDA candidate's compile time goes, and whether a GPU-less worker can compile it.

    python benchmarks/compile_profile.py [--configs 3]

On the GPU machine. For a few configs of the 48-config GEMM space it times, in this
process: building the PrimFunc, ``tilelang.compile`` (split into the external compiler
processes it starts, e.g. nvcc, and the rest: lowering, codegen, loading), and writing the
cache artifacts. Then it compiles the same configs the way the plugin does — in compile
workers forked from the fork server that see no GPU, with the device's arch written into
the target — loads each kernel here and checks it against torch.matmul.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SUBPROCESSES: list[tuple[str, float]] = []


def _trace_subprocesses() -> None:
    """Record each external command's wall time (nvcc, g++, ...)."""
    original = subprocess.Popen.communicate

    def communicate(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            cmd = self.args if isinstance(self.args, str) else " ".join(map(str, self.args))
            SUBPROCESSES.append((cmd, time.perf_counter() - t0))

    subprocess.Popen.communicate = communicate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", type=int, default=3)
    args = parser.parse_args()
    _trace_subprocesses()

    import tilelang  # noqa: F401
    import torch

    from examples.kernels_cuda import GEMM_48_CONFIGS, gemm
    from pytest_tlautotune.devices import full_cuda_target
    from pytest_tlautotune.engine.compile_job import compile_candidate
    from pytest_tlautotune.engine.workers import Pools
    from pytest_tlautotune.param import CompileArgs
    from pytest_tlautotune.store.artifacts import load_kernel, write_kernel_artifacts

    target = full_cuda_target("cuda", 0)
    compile_args = CompileArgs(out_idx=[-1], target=target)
    configs = [GEMM_48_CONFIGS[i] for i in range(0, 48, max(1, 48 // args.configs))][: args.configs]
    report: dict = {"target": target, "device": torch.cuda.get_device_name(0), "in_process": []}
    work = Path(tempfile.mkdtemp(prefix="tlprof-"))
    from tvm.target import Target

    for i, config in enumerate(configs):
        t0 = time.perf_counter()
        with Target(json.loads(target)):
            func = gemm(4096, 4096, 4096, **config)
        t1 = time.perf_counter()
        n_before = len(SUBPROCESSES)
        kernel = compile_args.compile_program(func)
        t2 = time.perf_counter()
        out = work / f"inproc{i}"
        out.mkdir()
        write_kernel_artifacts(out, kernel, func)
        t3 = time.perf_counter()
        subs = SUBPROCESSES[n_before:]
        report["in_process"].append({
            "config": config, "build_s": round(t1 - t0, 3), "compile_s": round(t2 - t1, 3),
            "save_s": round(t3 - t2, 3),
            "external": [(cmd.split()[0].rsplit("/", 1)[-1], round(s, 3)) for cmd, s in subs],
        })
        if i == 0:
            report["first_commands"] = [cmd[:600] for cmd, _ in subs]
        print(json.dumps(report["in_process"][-1]), flush=True)

    # The plugin's way: GPU-less forked compile workers, kernels loaded and checked here.
    import pickle

    pools = Pools(4)
    t0 = time.perf_counter()
    pool = pools.compile_pool()
    futures = []
    for i, config in enumerate(configs):
        with Target(json.loads(target)):
            func = gemm(4096, 4096, 4096, **config)
        futures.append((config, func, pool.schedule(compile_candidate,
                                                    (pickle.dumps(func), compile_args, str(work / f"w{i}")))))
    A = torch.randn(4096, 4096, dtype=torch.float16, device="cuda")
    B = torch.randn(4096, 4096, dtype=torch.float16, device="cuda")
    ref = (A.float() @ B.float()).half()
    report["workers"] = []
    for i, (config, func, fut) in enumerate(futures):
        info = fut.result()
        kernel = load_kernel(work / f"w{i}", compile_args, func)
        C = kernel(A, B)
        torch.cuda.synchronize()
        ok = torch.allclose(C, ref, rtol=1e-2, atol=1e-2)
        report["workers"].append({"config": config, "ok": bool(ok), **{k: info[k] for k in ("compile_s", "save_s")},
                                  "since_pool_start_s": round(time.perf_counter() - t0, 2)})
        print(json.dumps(report["workers"][-1]), flush=True)
    pools.close()
    print("REPORT " + json.dumps(report))
    return 0 if all(w["ok"] for w in report["workers"]) else 1


if __name__ == "__main__":
    sys.exit(main())
