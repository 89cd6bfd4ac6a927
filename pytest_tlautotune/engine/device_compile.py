"""Device code through NVRTC with precompiled headers (compile workers, CUDA targets).

TileLang compiles a kernel's device code with a new nvcc process per kernel
(``tilelang_callback_cuda_compile``); that process parses the CUTLASS/CuTe headers again
each time, about 2.8 of the 3.2 CPU-seconds a 4096^3 GEMM candidate costs on an H200 host.
NVRTC (CUDA >= 12.8, through ``cuda-python``) keeps a precompiled header per process, so a
compile worker's later candidates skip that parse. Only the device compiler changes: the
host side (TileLang's ``tvm_ffi`` launcher) and every file of the kernel stay as they are,
so the kernel is launched exactly as TileLang launches it. The flags follow TileLang's nvcc call
(``-std=c++20 -lineinfo``, the same include directories, fast math and ptxas options from
the pass configs). Sources or targets NVRTC is not used for (several code targets, extra
nvcc flags) and any NVRTC failure go to nvcc.

One precompiled header serves every compile worker. NVRTC accepts a PCH only from the same
"dynamic instance" of the library (the address of its PCH heap), and TileLang's automatic ``-pch``
makes one per process: each worker's first candidate pays about 1.3 s to parse the headers and
writes a 250 MB file under ``/tmp/__nvrtc_auto_pch_<pid>_0`` (left behind when the worker is killed),
against 0.25 s for a later one. Here every compile worker loads NVRTC and places its PCH heap as
the first thing it does (``install``, ``load_library``): the workers are forked from one fork
server and do the same steps before it, so the heap lands at the same address in each. The first
worker to meet a header prefix writes the PCH once (``--create-pch``) into a directory named for
the fork server, and every other compile with that prefix uses it (``--use-pch``) — the same cubin
as without (``tests/test_device_compile.py``). A worker that meets a prefix whose PCH is still
being written waits for it (``_SharedPch``). The fork server itself never loads NVRTC: a compile
calls ``cuInit`` (NVRTC 13 does), and a process forked from one whose CUDA driver was initialised
cannot use the GPU, so the CUDA timing workers forked from the same server would fail to start.

A tuning's first compile job writes the PCHs of the header prefixes it will likely need for its
arch (``prime``; "used" where already written), so its first candidates use a PCH instead of one
of them writing it while the rest wait: the prefixes shipped for TileLang's GEMM and
flash-attention kernels (``SEEDS``, made by ``nvrtc_seeds``), or with ``--tl-nvrtc-book`` the
prefixes earlier runs remembered in the cache directory and the user's default one
(``nvrtc-headers/``, with the options and TileLang's version). A prefix plus an empty kernel makes
a PCH NVRTC takes for the real code.

Measured by ``benchmarks/compile_backends.py`` (``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

CALLBACK = "tilelang_callback_cuda_compile"
NVCC, NVRTC, AUTO = "nvcc", "nvrtc", "auto"

#: What compiled this process's last device code: "nvrtc", or "nvcc" (with why NVRTC was not used),
#: its time (``device_s``) and, for NVRTC, what became of the shared PCH (``pch``).
last: dict[str, Any] = {}

#: Directory names of the shared PCHs, ``<prefix><pid>``: the fork server's, whose compile workers
#: share them, else the process's own.
PCH_DIR_PREFIX = "tlautotune-pch-"
#: Shared PCHs kept per directory (about 250 MB each); the least recently written go first.
PCH_KEEP = 4
#: A compile waits for another worker writing the PCH it needs as long as that worker lives (its
#: compile timeout bounds it; a killed writer is replaced); past these seconds it stops waiting for
#: a claim whose writer it cannot name (a claim file left empty) and compiles without.
PCH_WAIT_S = 15.0
#: Header prefixes a cache directory remembers (the most recently written kept), and how many of
#: them, for the tuning's arch, a session writes the PCH of before its first compile needs it.
BOOK_DIR = "nvrtc-headers"  # in the plugin's cache directory, and in the user's default one
BOOK_KEEP = 8
PRIME_MAX = 2
#: Where this worker records the header prefixes it writes a PCH for (``install``: a directory, or
#: several joined by ``os.pathsep``, see ``book_dirs``); none: nowhere.
_BOOK: dict[str, str] = {}
#: The NVRTC instance of this process: ``dir`` holds the PCHs it shares (the fork server's
#: directory in its compile workers, else this process's own); ``unusable`` once NVRTC rejected one.
_INSTANCE: dict[str, Any] = {}


def book_dirs(book: str) -> list[Path]:
    """The directories of a book: ``book`` names one, or several joined by ``os.pathsep`` (a cache
    directory's and the user's, see ``TuneSession.pch_book``)."""
    return [Path(part) for part in book.split(os.pathsep) if part]


class _NotForNvrtc(Exception):
    """A target or flag NVRTC is not used for: nvcc compiles it, as TileLang does."""


def available() -> bool:
    """Whether NVRTC with precompiled headers can be used here (cuda-python, CUDA >= 12.8)."""
    try:
        from tilelang.contrib.nvrtc import get_nvrtc_version
        from tilelang.jit.adapter.nvrtc import is_nvrtc_available

        return bool(is_nvrtc_available) and tuple(get_nvrtc_version()) >= (12, 8)
    except Exception:  # noqa: BLE001 - no cuda-python, no libnvrtc, no CUDA: not available
        return False


def resolve(choice: str) -> str:
    """The device compiler a ``tl_device_compiler`` choice means on this machine."""
    return NVRTC if choice in (NVRTC, AUTO) and available() else NVCC


def load_library(shared_by: int | None = None) -> None:
    """Load NVRTC in this process now and place its PCH heap; ``shared_by``: the pid of the fork
    server whose compile workers share their PCHs (in its directory), else this process's own.

    NVRTC maps the heap at its first compile that writes a PCH, wherever ``mmap`` then puts it: a
    worker that mapped other memory first gets another address and cannot use the shared PCH (28
    of 48 candidates, measured on an H200). A trivial compile as a worker starts maps it at the
    same point in every worker. Its own PCH is removed at once: with ``-pch`` NVRTC would write
    ``__nvrtc_auto_pch_<pid>_0`` into the temp directory, kept until this process exits cleanly.
    """
    where = pch_dir(shared_by or os.getpid())
    heap = where / f".heap.{os.getpid()}.nvrtc"
    try:
        from cuda.bindings import nvrtc

        ok = nvrtc.nvrtcResult.NVRTC_SUCCESS
        result, program = nvrtc.nvrtcCreateProgram(b"__global__ void tlautotune_heap() {}", b"heap", 0, [], [])
        if result != ok:
            return
        try:
            where.mkdir(exist_ok=True)
            result = nvrtc.nvrtcCompileProgram(program, 1, [f"--create-pch={heap}".encode()])[0]
        finally:
            nvrtc.nvrtcDestroyProgram(program)
            heap.unlink(missing_ok=True)
    except Exception:  # noqa: BLE001 - no cuda-python or no libnvrtc (or no directory): workers use nvcc
        return
    if result != ok:
        with contextlib.suppress(OSError):
            where.rmdir()
        return
    _INSTANCE["dir"] = where
    if shared_by is None:
        atexit.register(_remove_own_dir, os.getpid(), where)


def _remove_own_dir(pid: int, where: Path) -> None:
    """At exit of a process whose PCH directory is its own (not of a child that inherited the hook):
    remove it. A fork server's goes with its pools (``Pools.close``), a killed one's with the next
    session's orphan sweep; this is for a process that compiled in place (a spawned worker, a test)."""
    if os.getpid() == pid:
        from ..store.files import remove_tree

        remove_tree(where, ignore_errors=True)


def pch_dir(pid: int) -> Path:
    """Where the shared PCHs of process ``pid`` are written (a fork server's: its compile workers')."""
    return Path(tempfile.gettempdir()) / f"{PCH_DIR_PREFIX}{pid}"


def install(book: str | None = None, shared_by: int | None = None) -> None:
    """Compile device code with NVRTC in this process (a compile worker), nvcc as the fallback;
    ``book``: where the header prefixes this worker writes a PCH for are remembered (a directory,
    or several joined by ``os.pathsep``: ``book_dirs``; ``prime`` reads them in a later session);
    ``shared_by``: the fork server whose workers share their PCHs (``load_library``)."""
    if not _INSTANCE:
        load_library(shared_by)  # first: the PCH heap at the same address in every worker
    import tvm_ffi
    from tilelang.cuda.backend import tilelang_callback_cuda_compile as with_nvcc

    if book:
        _BOOK["dir"] = book

    def compile_device(code: str, target: Any, pass_config: Any = None) -> bytearray:
        t0 = time.perf_counter()
        last.clear()
        try:
            binary = _with_nvrtc(code, target, pass_config)
        except Exception as exc:  # noqa: BLE001 - NVRTC could not: nvcc, as TileLang would
            last.clear()
            last.update(compiler=NVCC, why=f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:200]}"
                        if str(exc).strip() else type(exc).__name__)
            binary = with_nvcc(code, target, pass_config)
        last.setdefault("compiler", NVRTC)
        last["device_s"] = round(time.perf_counter() - t0, 4)
        return binary

    tvm_ffi.register_global_func(CALLBACK, f=compile_device, override=True)


def _with_nvrtc(code: str, target: Any, pass_config: Any) -> bytearray:
    from tilelang.contrib import nvcc
    from tilelang.transform import PassConfigKey

    arch, codes = nvcc.get_target_arch_and_code(target)
    if codes and len(codes) > 1:
        raise _NotForNvrtc("several code targets (a fatbin)")
    match = re.fullmatch(r"(\d+)(a?)", str(arch))
    # TileLang's NVRTC call writes sm_XXa for XX >= 90: use it only where that is the target.
    if not match or (int(match.group(1)) >= 90) != (match.group(2) == "a"):
        raise _NotForNvrtc(f"arch sm_{arch}")
    cfg = pass_config or {}
    if cfg.get(PassConfigKey.TL_DEVICE_COMPILE_FLAGS):
        raise _NotForNvrtc("extra nvcc flags")
    level = cfg.get(PassConfigKey.TL_PTXAS_REGISTER_USAGE_LEVEL, None)
    options = nvrtc_options(bool(cfg.get(PassConfigKey.TL_ENABLE_FAST_MATH, False)),
                            None if level is None else int(level))
    return compile_cubin(code, int(match.group(1)), options)


def nvrtc_options(fast_math: bool = False, register_usage_level: int | None = None) -> list[str]:
    """The options of TileLang's NVRTC call (``-std=c++20 -lineinfo``, its include directories, fast
    math and ptxas options from the pass configs), but the arch's: a PCH written ahead with them
    has the options of a candidate's compile."""
    from cuda.bindings import nvrtc

    template, cutlass, cuda_includes = _tilelang_paths()
    options = [
        "-std=c++20",
        "-lineinfo",
        f"-I{template}",
        f"-I{cutlass}",
        *(f"-I{path}" for path in cuda_includes),
        f"-D__CUDACC_VER_MAJOR__={nvrtc.nvrtcVersion()[1]}",
    ]
    if fast_math:
        options.append("--use_fast_math")
    if register_usage_level is not None:
        options.append(f"--ptxas-options=--register-usage-level={register_usage_level}")
    return options


def _tilelang_paths() -> tuple[str | None, str | None, list[str]]:
    """TileLang's template and CUTLASS include directories and the CUDA include directories its NVRTC
    call uses (every caller is a compile worker: TileLang is imported there already)."""
    from tilelang import env
    from tilelang.jit.adapter.nvrtc.include_paths import discover_cuda_include_paths

    return (env.TILELANG_TEMPLATE_PATH, env.CUTLASS_INCLUDE_DIR,
            discover_cuda_include_paths(env.CUDA_HOME or "/usr/local/cuda"))


def compile_cubin(code: str, arch: int, options: list[str]) -> bytearray:
    """``code`` compiled to a cubin for ``sm_<arch>`` (``a`` from 90), as TileLang's
    ``contrib.nvrtc.compile_cuda`` does but with the shared PCH in place of its per-process one."""
    code = nvrtc_source(code)
    options = ["-default-device", _arch_flag(arch), *options]
    if not _INSTANCE:
        load_library()  # a spawned worker: its own instance
    # Once NVRTC rejected the shared PCH in this process, no PCH (not NVRTC's per-process one:
    # 250 MB written per worker, left behind when it is killed).
    pch = _SharedPch(code, options) if _INSTANCE and not _INSTANCE.get("unusable") else None
    flags = pch.flags() if pch else []
    try:
        binary, log = _nvrtc(code, options + flags)
    except BaseException:
        if pch:
            pch.abandon()
        raise
    if pch:
        last["pch"] = pch.finish(log)
        if last["pch"] == "unusable":
            _INSTANCE["unusable"] = True
        elif last["pch"] == "created":
            _remember(header_prefix(code), options)
        elif last["pch"] == "used":
            _remember(header_prefix(code), options, new_only=True)  # a seed's PCH (or a book's)
    return binary


def nvrtc_source(code: str) -> str:
    """TileLang's device code as its NVRTC call compiles it (its NVRTC standard header first)."""
    code = "#include <tl_templates/cuda/nvrtc_std.h>\n" + code
    if "cudaGridDependencySynchronize" in code or "cudaTriggerProgrammaticLaunchCompletion" in code:
        code = '#include "cuda_device_runtime_api.h"\n' + code
    return code


PRIME_KERNEL = "\n__global__ void tlautotune_prime() {}\n"


def _remember(prefix: str, options: list[str], new_only: bool = False) -> None:
    """Record a header prefix (and the options it was compiled with) in this worker's book;
    ``new_only``: only in a directory that does not remember it yet (a compile that used a PCH)."""
    if not _BOOK.get("dir"):
        return
    from ..store.files import atomic_write

    entry = {"tilelang": _tilelang_version(), "prefix": prefix, "options": options}
    for book in book_dirs(_BOOK["dir"]):
        path = book / f"{_digest(prefix, options)}.json"
        if new_only and path.exists():
            continue
        try:
            book.mkdir(mode=0o700, parents=True, exist_ok=True)
            atomic_write(path, json.dumps(entry))
            for old in sorted(book.glob("*.json"), key=_mtime, reverse=True)[BOOK_KEEP:]:
                old.unlink(missing_ok=True)
        except OSError:
            pass  # a book that cannot be written costs the next session's head start, nothing else


def prime(book: str, arch: int | None = None) -> list[str]:
    """Write the shared PCH of the header prefixes ``book`` remembers for ``sm_<arch>`` (any arch
    where None: the session has not asked its GPU yet) -- the most recent ``PRIME_MAX`` of this
    TileLang version --, so the first compiles of a session use it instead of waiting for one of
    them to write it (a compile worker's first job). Where the book remembers nothing for this
    TileLang (a machine's first tuning), the shipped seeds' prefixes for that arch (for the GPUs
    ``nvidia-smi`` lists where None: ``seed_entries``). Says what became of each: "created",
    "used" (another worker had written it), "none" (not written)."""
    if not _INSTANCE:
        load_library()
    if not _INSTANCE or _INSTANCE.get("unusable"):
        return []
    from ..store.files import read_json

    flag, version = _arch_flag(arch) if arch else None, _tilelang_version()
    entries, remembers = [], False
    paths = {p.name: p for d in reversed(book_dirs(book)) for p in d.glob("*.json")}  # the first dir's copy
    for path in sorted(paths.values(), key=_mtime, reverse=True):
        entry = read_json(path)
        try:
            prefix, options = str(entry["prefix"]), [str(o) for o in entry["options"]]
        except (KeyError, TypeError):
            continue
        if entry.get("tilelang") != version:
            continue
        remembers = True
        if flag is None or flag in options:
            entries.append((prefix, options))
            with contextlib.suppress(OSError):
                os.utime(path)  # still in use: kept before prefixes no session needed lately
            if len(entries) == PRIME_MAX:
                break
    if not remembers:
        with contextlib.suppress(Exception):  # no seeds: the first compiles write their own
            entries = seed_entries([arch] if arch else visible_archs())[:PRIME_MAX]
    done = []
    for prefix, options in entries:
        code = prefix + PRIME_KERNEL  # the same header prefix: NVRTC takes its PCH for the real code
        pch = _SharedPch(code, options)
        flags = pch.flags()
        if pch.mode != "created":
            done.append(pch.mode)
            continue
        try:
            _nvrtc(code, options + flags)
        except Exception:  # noqa: BLE001 - the real compiles may still write it
            pch.release()
            done.append("none")
            continue
        done.append(pch.finish(""))
    return done


#: The header prefixes of TileLang's GEMM and flash-attention examples lowered for each arch, for the
#: TileLang version that made them (``nvrtc_seeds``): what a machine's first tuning writes ahead.
SEEDS = Path(__file__).with_name("nvrtc_seeds.json")


def has_seeds() -> bool:
    """Whether the shipped seeds were made by the installed TileLang."""
    return bool(_seeds())


def _seeds() -> list[dict]:
    from ..store.files import read_json

    data = read_json(SEEDS)
    if not isinstance(data, dict) or data.get("tilelang") != _tilelang_version():
        return []
    return [s for s in data.get("seeds", []) if isinstance(s, dict)]


def seed_entries(archs: list[int]) -> list[tuple[str, list[str]]]:
    """The shipped seeds for ``sm_<arch>`` of each of ``archs`` as (header prefix, NVRTC options),
    the options a candidate's compile of that kernel uses (``nvrtc_options``), in the seeds' order."""
    entries, seeds = [], _seeds()
    for arch in archs:
        for seed in seeds:
            if arch in seed.get("archs", ()):
                options = ["-default-device", _arch_flag(arch), *nvrtc_options(bool(seed.get("fast_math")))]
                entries.append((str(seed["prefix"]), options))
    return entries


def visible_archs(shown: str | None = None) -> list[int]:
    """The archs (``sm_<arch>``) of the GPUs a process with ``CUDA_VISIBLE_DEVICES=shown`` sees
    (this process's where None; the fork server's is the test process's as it started the server;
    every GPU where it names none by index), distinct, in that order, asked of ``nvidia-smi``: the
    CUDA driver must not be initialised in the fork server's children (``cuInit`` there crashed on a
    2xH200 host). Empty where it cannot say."""
    import subprocess

    if shown is None:
        shown = os.environ.get("CUDA_VISIBLE_DEVICES")
    query = ["nvidia-smi", "--query-gpu=index,compute_cap", "--format=csv,noheader"]
    try:
        lines = subprocess.run(query, capture_output=True, text=True, timeout=30, check=True).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return []
    archs = {}
    for line in lines:
        index, _, cap = (part.strip() for part in line.partition(","))
        major, _, minor = cap.partition(".")
        if index.isdigit() and major.isdigit() and minor.isdigit():
            archs[index] = int(major) * 10 + int(minor)
    order = [d.strip() for d in (shown or "").split(",") if d.strip() in archs] or list(archs)
    return list(dict.fromkeys(archs[d] for d in order))


def _arch_flag(arch: int) -> str:
    """NVRTC's architecture option for ``sm_<arch>`` (``a`` from 90, as TileLang's NVRTC call)."""
    return f"--gpu-architecture=sm_{arch}{'a' if arch >= 90 else ''}"


def _digest(prefix: str, options: list[str]) -> str:
    return hashlib.sha256("\0".join([prefix, *options]).encode()).hexdigest()[:24]


@functools.cache
def _tilelang_version() -> str:
    """TileLang's version, read without importing it (the fork server primes before its import),
    once per process: ``importlib.metadata`` scans the installed distributions, and a compile that
    used a PCH asks for it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tilelang")
    except PackageNotFoundError:
        return ""


def _nvrtc(code: str, options: list[str]) -> tuple[bytearray, str]:
    """The cubin NVRTC makes of ``code`` and its log; the log in the error when it fails."""
    from cuda.bindings import nvrtc

    ok = nvrtc.nvrtcResult.NVRTC_SUCCESS
    result, program = nvrtc.nvrtcCreateProgram(code.encode(), b"tvm_kernels", 0, [], [])
    if result != ok:
        raise RuntimeError(f"nvrtcCreateProgram: {result}")
    try:
        result = nvrtc.nvrtcCompileProgram(program, len(options), [o.encode() for o in options])[0]
        _, size = nvrtc.nvrtcGetProgramLogSize(program)
        log = bytes(size)
        nvrtc.nvrtcGetProgramLog(program, log)
        log_text = log.rstrip(b"\0").decode(errors="replace")
        if result != ok:
            raise RuntimeError(f"NVRTC: {result.name}\n{log_text.strip()}\nOptions: {' '.join(options)}")
        _, size = nvrtc.nvrtcGetCUBINSize(program)
        cubin = bytes(size)
        nvrtc.nvrtcGetCUBIN(program, cubin)
        return bytearray(cubin), log_text
    finally:
        nvrtc.nvrtcDestroyProgram(program)


class _SharedPch:
    """The PCH of one header prefix and option set, shared by the workers of one NVRTC instance.

    ``flags()`` says how to compile: use the PCH if it is there, else write it if no other worker
    is writing it, else wait for the worker that is, while it runs (its parse takes 1.3 s alone, 2-3 s beside 15
    other compiles on an H200 host: waiting leaves it the CPU and then compiles in 0.4 s, where a
    compile without a PCH takes 1.5-2.4 s). ``finish(log)`` publishes a new PCH with one rename
    and says which of "used", "created", "none" or "unusable" (NVRTC rejected it) happened.
    """

    def __init__(self, code: str, options: list[str]):
        digest = _digest(header_prefix(code), options)
        self.dir = Path(_INSTANCE["dir"])
        self.path = self.dir / f"{digest}.pch"
        self.claim = self.dir / f"{digest}.writing"
        self.failed = self.dir / f"{digest}.failed"
        self.partial = self.dir / f".{digest}.{os.getpid()}.pch"
        self.mode = "none"

    def flags(self) -> list[str]:
        t0 = time.monotonic()
        while not self.failed.exists():
            if self.path.exists():
                self.mode = "used"
                waited = time.monotonic() - t0
                if waited > 0.01:
                    last["pch_wait_s"] = round(waited, 3)
                return [f"--use-pch={self.path}", "-pch-verbose=true"]
            if self._claim():
                self.mode = "created"
                return [f"--create-pch={self.partial}"]
            if not self.claim.exists() and not self.path.exists():
                return []  # the directory is unusable
            if time.monotonic() - t0 > PCH_WAIT_S and not _writer_alive(self.claim):
                last["pch_wait_s"] = round(time.monotonic() - t0, 3)  # gave up: the record says so
                break
            time.sleep(0.02)
        return []

    def _claim(self) -> bool:
        """Whether this worker now writes the PCH (no other is writing it)."""
        try:
            self.dir.mkdir(exist_ok=True)
            if _writer_gone(self.claim):
                self.claim.unlink(missing_ok=True)  # its writer was killed (a compile timeout)
            fd = os.open(self.claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except OSError:
            return False
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True

    def finish(self, log: str) -> str:
        if self.mode == "used" and "using precompiled header" not in log:
            return "unusable"
        if self.mode == "created":
            try:
                self._publish()
            except OSError:
                self.abandon()
                return "none"
        return self.mode

    def _publish(self) -> None:
        os.replace(self.partial, self.path)
        self.claim.unlink(missing_ok=True)
        kept = sorted(self.dir.glob("*.pch"), key=_mtime, reverse=True)
        for old in kept[PCH_KEEP:]:
            old.unlink(missing_ok=True)  # a worker reading it keeps its open copy

    def release(self) -> None:
        """Give up writing the PCH without a verdict: the next compile that needs it may write it."""
        if self.mode == "created":
            self.partial.unlink(missing_ok=True)
            self.claim.unlink(missing_ok=True)

    def abandon(self) -> None:
        """Give up writing the PCH and say so: no worker waits for it or tries again."""
        if self.mode == "created":
            self.partial.unlink(missing_ok=True)
            try:
                self.failed.touch()
            except OSError:
                pass
            self.claim.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _writer(claim: Path) -> int:
    """The pid written in a PCH claim, 0 where there is none (yet)."""
    try:
        return int(claim.read_text() or 0)
    except (OSError, ValueError):
        return 0


def _writer_gone(claim: Path) -> bool:
    """Whether the worker that claimed writing a PCH has exited without finishing it."""
    from ..store.files import process_gone

    pid = _writer(claim)
    return pid > 0 and pid != os.getpid() and process_gone(pid)


def _writer_alive(claim: Path) -> bool:
    """Whether a PCH claim names a worker that is still running."""
    from ..store.files import process_gone

    pid = _writer(claim)
    return pid > 0 and not process_gone(pid)


def header_prefix(code: str) -> str:
    """The preprocessor lines at the top of ``code``: the part a PCH covers (NVRTC's header stop
    point is within it), so two codes with the same prefix can share one PCH."""
    lines = []
    for line in code.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "//")):
            break
        lines.append(line)
    return "\n".join(lines)
