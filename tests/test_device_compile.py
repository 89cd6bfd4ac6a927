"""CUDA device code through NVRTC in the compile workers, without a GPU: NVRTC compiles for any
arch on a CPU-only machine. Skips where cuda-python, libnvrtc or the CUDA headers are missing."""

import ctypes
import hashlib
import json
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("tilelang")
from pytest_tlautotune.engine import device_compile  # noqa: E402

pytestmark = pytest.mark.skipif(not device_compile.available(), reason="needs NVRTC (cuda-python, CUDA >= 12.8)")

TARGET = '{"kind": "cuda", "arch": "sm_90a"}'
CONFIGS = [dict(block_M=bm, block_N=bn, block_K=32, num_stages=2, threads=128) for bm in (64, 128) for bn in (64, 128)]


def compile_gemm(config: dict, out_dir: str) -> dict:
    """Worker side: lower and compile one GEMM config as a candidate is, and publish its artifacts."""
    import tvm_ffi
    from tvm.target import Target

    from examples.kernels_cuda import gemm
    from pytest_tlautotune.engine.compile_job import _compile
    from pytest_tlautotune.param import CompileArgs
    from pytest_tlautotune.store.artifacts import pack_imports

    with Target(json.loads(TARGET)):
        func = gemm(1024, 1024, 1024, **config)
    args = CompileArgs(out_idx=[-1], target=TARGET)
    out = _compile(func, args, out_dir)
    kernel = args.compile_program(func)  # again, for the packed bytes TVM itself would write
    pack = tvm_ffi.get_global_func("runtime.ModulePackImportsToTensor")
    packed = pack(kernel.adapter.get_exportable_executable().mod)
    out["packed_sha"] = hashlib.sha256(packed.numpy().tobytes()).hexdigest()
    out["packed_len"] = int(packed.shape[0])
    # TVM's own export (its host code compiled as C++ by g++), to compare the libraries' symbols.
    kernel.adapter.get_exportable_executable().export_library(f"{out_dir}.tvm.so", fpack_imports=pack_imports)
    return out


def _symbols(library: Path) -> list[str]:
    """The dynamic symbols a library defines (``nm -D``), addresses left out."""
    if not shutil.which("nm"):
        pytest.skip("needs nm (binutils)")
    lines = subprocess.run(["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    return sorted(line.split(maxsplit=1)[1] for line in lines if line.strip())


HERE = Path(__file__).resolve().parent


def in_own_process(name: str, *args):
    """``name(*args)``, a function of this module, in a new Python process: its workers fork from a
    fork server of its own. These tests count the PCHs their compiles write, and this process's
    server (the plugin's, started at collection on a GPU machine) may have written the book's or the
    seeds' already. Skips where the function does."""
    code = ("import pickle, sys\n"
            f"sys.path[:0] = [{str(HERE)!r}, {str(HERE.parent)!r}]\n"
            "from _pytest.outcomes import Skipped\n"
            "import test_device_compile as module\n"
            "try:\n"
            f"    out = ('done', module.{name}(*pickle.loads(bytes.fromhex(sys.argv[1]))))\n"
            "except Skipped as exc:\n"
            "    out = ('skip', exc.msg)\n"
            "print(pickle.dumps(out).hex())\n")
    proc = subprocess.run([sys.executable, "-c", code, pickle.dumps(args).hex()], capture_output=True, text=True,
                          timeout=900, cwd=HERE.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    how, out = pickle.loads(bytes.fromhex(proc.stdout.strip().splitlines()[-1]))
    if how == "skip":
        pytest.skip(out)
    return out


@pytest.fixture
def headers_ok():
    """NVRTC can find the CUDA headers where TileLang looks for them (``CUDA_HOME``)."""
    from tilelang.env import CUDA_HOME
    from tilelang.jit.adapter.nvrtc.include_paths import discover_cuda_include_paths

    dirs = discover_cuda_include_paths(CUDA_HOME or "/usr/local/cuda")
    if not any((Path(d) / "cuda_fp16.h").exists() for d in dirs):
        pytest.skip(f"no CUDA headers under CUDA_HOME={CUDA_HOME}")


def compile_in_two_workers(out: Path) -> tuple[list[dict], list[str], bool]:
    """Two NVRTC compile workers compile the four configs (``in_own_process``): their results, what
    the fork server's PCH directory then holds, and whether it is left once the pools close."""
    from pytest_tlautotune.engine import workers

    pools = workers.Pools(2, "nvrtc")
    try:
        futs = [pools.compile_pool().schedule(compile_gemm, (c, str(out / str(i)))) for i, c in enumerate(CONFIGS)]
        results = [f.result(timeout=600) for f in futs]
        server_dir = device_compile.pch_dir(pools.origin()["server"])
        written = [p.suffix for p in server_dir.iterdir()]
    finally:
        pools.close()
    return results, written, server_dir.exists()


def test_compile_workers_share_one_precompiled_header(headers_ok):
    from pytest_tlautotune.store.artifacts import PACKED_SYMBOL

    out = Path(tempfile.mkdtemp(prefix="tl-nvrtc-test-"))
    results, written, left = in_own_process("compile_in_two_workers", out)
    assert not left  # the session's PCHs go with its pools
    if any(r.get("device_compiler", {}).get("compiler") != "nvrtc" for r in results):
        pytest.skip(f"NVRTC could not compile here: {results[0].get('device_compiler')}")
    assert written == [".pch"]  # one PCH, nothing half-written
    pch = [r["device_compiler"]["pch"] for r in results]
    assert sorted(pch) == ["created", "used", "used", "used"], [r["device_compiler"] for r in results]
    creator = results[pch.index("created")]["pid"]
    # The other worker used the PCH the first one wrote (the NVRTC heap placed by the fork server).
    assert any(r["pid"] != creator for r in results if r["device_compiler"]["pch"] == "used"), results
    try:
        for i, r in enumerate(results):
            # The kernel library holds exactly the bytes TVM's own export writes (an assembled .incbin).
            lib = ctypes.CDLL(str(out / str(i) / "executable.so"))
            packed = bytes((ctypes.c_ubyte * r["packed_len"]).in_dll(lib, PACKED_SYMBOL))
            assert hashlib.sha256(packed).hexdigest() == r["packed_sha"]
            # Its host code compiled as C: the same exported symbols as TVM's g++ build of it.
            assert _symbols(out / str(i) / "executable.so") == _symbols(out / f"{i}.tvm.so") != []
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_precompiled_header_gives_the_same_cubin(headers_ok, monkeypatch, tmp_path):
    """A kernel compiled with the shared PCH is byte for byte the kernel compiled without one."""
    import tilelang
    import tvm_ffi
    from tvm.target import Target

    from examples.kernels_cuda import gemm

    codes = []
    monkeypatch.setattr(device_compile, "_INSTANCE", {})
    device_compile.load_library()  # this process's own NVRTC instance, its PCHs in tmp_path
    device_compile._INSTANCE["dir"] = tmp_path

    def capture(code, target, pass_config=None):
        codes.append(code)
        raise RuntimeError("captured")

    tvm_ffi.register_global_func(device_compile.CALLBACK, f=capture, override=True)
    try:
        with Target(json.loads(TARGET)):
            func = gemm(1024, 1024, 1024, **CONFIGS[0])
        with pytest.raises(Exception, match="captured"):
            tilelang.compile(func, out_idx=[-1], target=TARGET)
    finally:
        from tilelang.cuda.backend import tilelang_callback_cuda_compile

        tvm_ffi.register_global_func(device_compile.CALLBACK, f=tilelang_callback_cuda_compile, override=True)
    target = Target(json.loads(TARGET))

    def compile_once() -> tuple[bytearray, str | None]:
        device_compile.last.clear()
        return device_compile._with_nvrtc(codes[0], target, None), device_compile.last.get("pch")

    created, used = compile_once(), compile_once()
    monkeypatch.setitem(device_compile._INSTANCE, "unusable", True)  # as after NVRTC rejected the PCH: none
    plain = compile_once()
    assert [created[1], used[1], plain[1]] == ["created", "used", None]
    assert created[0] == used[0] == plain[0]
    assert [p.suffix for p in tmp_path.iterdir()] == [".pch"]


def remember_one_prefix(book: str, tmp_path: Path) -> None:
    """A session with one compile worker compiles a GEMM, writing its PCH and remembering the
    header prefix in ``book`` (skips where NVRTC cannot compile; run ``in_own_process``)."""
    from pytest_tlautotune.engine import workers

    pools = workers.Pools(1, "nvrtc", pch_book=book)
    try:
        first = pools.compile_pool().schedule(compile_gemm, (CONFIGS[0], str(tmp_path / "a"))).result(timeout=600)
    finally:
        pools.close()
    if first.get("device_compiler", {}).get("compiler") != "nvrtc":
        pytest.skip(f"NVRTC could not compile here: {first.get('device_compiler')}")
    assert first["device_compiler"]["pch"] == "created"


def wait_primed(pools, arch: int, seconds: float = 60.0, empty_ok: bool = False) -> None:
    """Wait until the session's prime job for ``sm_<arch>`` has said what it did (``Pools.primed``;
    ``empty_ok``: it may have had nothing to write, ``ready_at`` says when it ended)."""
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pools.primed.get(arch) or (empty_ok and f"pch_sm_{arch}" in pools.ready_at):
            return
        time.sleep(0.05)


def primed_session(book: str, config: dict, out: Path, archs: tuple[int, ...] = (90,)) -> tuple[dict, dict]:
    """A session with enough compile workers that one writes the PCHs ahead (``warm_up`` for each
    of ``archs``) compiles one GEMM config once the prime jobs are done (in a run the candidates
    start beside them and wait for a PCH being written; the order is the benchmarks' to time, the
    PCH's use is the test's): what each arch's prime job did, and the compile (run ``in_own_process``)."""
    from pytest_tlautotune.engine import workers

    pools = workers.Pools(workers.PRIME_MIN_WORKERS, "nvrtc", pch_book=book)
    try:
        for arch in archs:
            pools.warm_up([], arch=arch)
        for arch in archs:
            wait_primed(pools, arch, empty_ok=True)
        compiled = pools.compile_pool().schedule(compile_gemm, (config, str(out))).result(timeout=600)
    finally:
        pools.close()
    return dict(pools.primed), compiled


def test_a_later_session_writes_the_remembered_pch_before_its_first_compile(headers_ok, tmp_path):
    """A session's compile workers remember, in the cache directory, the header prefix they wrote a
    PCH for; the next session's first compile job writes that PCH (for the tuning's arch) ahead of
    the candidates, so its first candidate uses it instead of writing it."""

    book = tmp_path / "book"
    in_own_process("remember_one_prefix", str(book), tmp_path)
    [entry] = [json.loads(p.read_text()) for p in book.glob("*.json")]
    assert "--gpu-architecture=sm_90a" in entry["options"] and "#include" in entry["prefix"]

    # The next session (its PCH directory is new); nothing remembered for sm_80: nothing written.
    primed, second = in_own_process("primed_session", str(book), CONFIGS[1], tmp_path / "b", (80, 90))
    assert primed == {80: [], 90: ["created"]}
    assert second["device_compiler"]["pch"] == "used", second["device_compiler"]



def test_a_machines_first_tuning_writes_the_shipped_seeds_pch_ahead(headers_ok, tmp_path):
    """With nothing in the book (a machine's first tuning), the session's prime job writes the PCHs
    of the shipped seeds for the tuning's arch (TileLang's GEMM and flash-attention prefixes): a GEMM
    candidate's first compile uses one instead of writing its own, and the book then remembers the
    prefix it used."""

    if not device_compile.has_seeds():
        pytest.skip("no seeds for the installed TileLang")
    seeds = json.loads(device_compile.SEEDS.read_text())["seeds"]
    book = tmp_path / "book"
    primed, first = in_own_process("primed_session", str(book), CONFIGS[0], tmp_path / "a")
    if first.get("device_compiler", {}).get("compiler") != "nvrtc":
        pytest.skip(f"NVRTC could not compile here: {first.get('device_compiler')}")
    assert primed[90] == ["created"] * len([s for s in seeds if 90 in s["archs"]])
    assert first["device_compiler"]["pch"] == "used", first["device_compiler"]
    [entry] = [json.loads(p.read_text()) for p in book.glob("*.json")]
    [gemm_seed] = [s for s in seeds if s["kernel"] == "gemm" and 90 in s["archs"]]
    assert entry["prefix"] == gemm_seed["prefix"] and "--gpu-architecture=sm_90a" in entry["options"]


def test_without_a_book_the_shipped_seeds_pch_is_still_written_ahead_and_nothing_remembered(headers_ok, tmp_path):
    """The default (no --tl-nvrtc-book: the session's book is ``""``): the prime job still writes the
    shipped seeds' PCHs, a GEMM candidate's first compile uses one, and no header prefix is written
    anywhere."""
    if not device_compile.has_seeds():
        pytest.skip("no seeds for the installed TileLang")
    primed, first = in_own_process("primed_session", "", CONFIGS[2], tmp_path / "a")
    if first.get("device_compiler", {}).get("compiler") != "nvrtc":
        pytest.skip(f"NVRTC could not compile here: {first.get('device_compiler')}")
    assert primed[90] and set(primed[90]) <= {"created", "used"}, primed
    assert first["device_compiler"]["pch"] == "used", first["device_compiler"]
    remembered = [f for f in tmp_path.rglob("*.json") if tmp_path / "a" not in f.parents]  # "a": the kernel's files
    assert not remembered, remembered


def test_a_machine_that_tuned_before_writes_the_pch_ahead_whatever_the_cache_dir(headers_ok, tmp_path):
    """Header prefixes go into every directory of the book (the run's cache directory's and the
    user's): a later run with a new cache directory of its own (the next CI job) finds them in the
    user's and writes the PCH ahead, so its first candidate uses it."""
    import os


    user, job1, job2 = tmp_path / "user", tmp_path / "job1", tmp_path / "job2"
    in_own_process("remember_one_prefix", f"{job1}{os.pathsep}{user}", tmp_path)
    assert [p.name for p in job1.glob("*.json")] == [p.name for p in user.glob("*.json")] != []

    primed, second = in_own_process("primed_session", f"{job2}{os.pathsep}{user}", CONFIGS[1], tmp_path / "b")
    assert primed[90] == ["created"]
    assert second["device_compiler"]["pch"] == "used", second["device_compiler"]


def run_alone(code: str, tmp_path: Path) -> tuple[str, Path]:
    """Run ``code`` in a new Python process (from the repository root) whose temp directory is a new
    one under ``tmp_path``: its last line of output, and that directory."""
    import os

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parent.parent, env={**os.environ, "TMPDIR": str(tmp)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1], tmp


def test_a_process_that_loads_nvrtc_in_place_leaves_nothing_in_tmp(headers_ok, tmp_path):
    """The heap-placing compile's PCH is removed at once (not NVRTC's ``__nvrtc_auto_pch_*`` left in
    the temp directory), and the process's own PCH directory goes when it exits."""
    code = ("import os\n"
            "from pytest_tlautotune.engine import device_compile\n"
            "device_compile.load_library()\n"
            "print(sorted(p.name for p in device_compile.pch_dir(os.getpid()).iterdir()))\n")
    last, tmp = run_alone(code, tmp_path)
    assert last == "[]"
    assert list(tmp.iterdir()) == []


def nvrtc_in_a_timing_worker() -> dict:
    """What a timing worker forked from the fork server finds of NVRTC: the fork server's own
    state (run ``in_own_process``, with a compile pool that loads NVRTC running beside it)."""
    from pytest_tlautotune.engine import workers

    pools = workers.Pools(2, "nvrtc")
    try:
        compiled = pools.compile_pool().schedule(_nvrtc_state).result(timeout=600)
        timing = pools.bench_pool("cpu").schedule(_nvrtc_state).result(timeout=600)
    finally:
        pools.close()
    return {"compile": compiled, "timing": timing}


def _nvrtc_state() -> dict:
    return {"instance": bool(device_compile._INSTANCE)}


def test_the_fork_server_never_loads_nvrtc(tmp_path):
    """NVRTC's compiles call ``cuInit``, and a process forked from one whose CUDA driver was
    initialised cannot use the GPU: a CUDA timing worker forked from such a fork server fell back to
    a spawned one (a warm hit of the 48-config GEMM took 6.4-8.9 s instead of 0.1 s on an H100).
    Compile workers load NVRTC themselves; the fork server, and so a timing worker forked from it,
    never has it."""
    out = in_own_process("nvrtc_in_a_timing_worker")
    assert out["compile"]["instance"], out
    assert not out["timing"]["instance"], out  # (TileLang's import maps libnvrtc there; nothing compiled)
