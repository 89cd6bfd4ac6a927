"""Worker processes: a compile pool and one timing worker per device (the jobs they run are
``compile_job.py``'s and ``bench.py``'s).

Both pools start once per session and are reused by every test. Workers fork from fork servers
of our own that imported TileLang once: compile workers (and CPU timing workers) from one that
hides every GPU, CUDA timing workers from one that sees them and never initialises CUDA (each
worker creates its own context on its GPU). A new worker, or the replacement of one killed for a
timeout, a crash or a CUDA fault, costs a fork, not a TileLang import. Where a forked CUDA worker
cannot use its GPU, timing workers are spawned instead. Pool tasks with a timeout are killed by
pebble, not abandoned in a thread that keeps running and disturbs later timings.
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Sequence
from multiprocessing import context as mp_context
from multiprocessing import forkserver, popen_forkserver, reduction, spawn, util
from pathlib import Path
from typing import Any

from ..store.files import process_gone, remove_tree
from .device_compile import BOOK_ENV, NVCC, book_has_entries, has_seeds

_FORKSERVERS: dict[str, Any] = {}  # "cpu" (GPUs hidden) and "cuda" (GPUs visible): see _forkserver
#: What the compile workers' fork server imports before it forks: CUDA kept uninitialised and the
#: GPUs hidden (NVRTC compile workers initialise the driver themselves), then NVRTC (its PCH heap
#: shared by every worker; the remembered PCHs written meanwhile, see ``prestart``), then TileLang.
PRELOAD = ["pytest_tlautotune.engine.no_cuda_init", "pytest_tlautotune.engine.hide_gpus",
           "pytest_tlautotune.engine.nvrtc_preload", "tilelang", "pytest_tlautotune.engine.bench"]
#: What the CUDA timing workers' fork server imports: the same without hiding the GPUs; it never
#: initialises CUDA either, so each forked worker creates its own context.
PRELOAD_CUDA = ["pytest_tlautotune.engine.no_cuda_init", "tilelang", "pytest_tlautotune.engine.bench"]


def _forkserver(kind: str = "cpu"):
    """The fork server that compile workers and CPU timing workers (``kind="cpu"``), or CUDA
    timing workers (``kind="cuda"``), are forked from.

    The ``cpu`` one imports ``hide_gpus`` first, then TileLang: no GPU is visible in it or in its
    children. Neither ever initialises CUDA (``no_cuda_init``), so their forks stay usable, also
    for NVRTC, which initialises the driver in each compile worker, and for a timing worker,
    which creates its context on its GPU. Workers start in milliseconds instead of each
    importing TileLang (and torch).
    They are fork servers of our own, not multiprocessing's per-process one: processes the
    tests start with the forkserver method (the default from Python 3.14) keep their GPUs.
    """
    if kind not in _FORKSERVERS:
        server = forkserver.ForkServer()
        server.set_forkserver_preload(PRELOAD if kind == "cpu" else PRELOAD_CUDA)
        ctx = _ForkServerContext()
        ctx.Process = _ForkServerProcess if kind == "cpu" else _CudaForkServerProcess
        ctx.server = server
        _FORKSERVERS[kind] = ctx
    return _FORKSERVERS[kind]


#: Python versions whose private ``popen_forkserver.Popen._launch`` _ForkServerPopen copies was
#: checked against; on any other the workers are spawned (slower start, same results).
FORK_SERVER_CHECKED = ((3, 11), (3, 12), (3, 13))


def _use_own_fork_server() -> bool:
    return sys.version_info[:2] in FORK_SERVER_CHECKED and os.environ.get("TL_AUTOTUNE_WORKER_START") != "spawn"


class _ForkServerPopen(popen_forkserver.Popen):
    def __init__(self, process_obj: Any, server: Any):
        self._server = server
        super().__init__(process_obj)

    def _launch(self, process_obj: Any) -> None:
        # popen_forkserver.Popen._launch (the same in Python 3.11 to 3.13), with our server in
        # place of the module-wide one.
        prep_data = spawn.get_preparation_data(process_obj._name)
        buf = io.BytesIO()
        mp_context.set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            mp_context.set_spawning_popen(None)
        self.sentinel, w = self._server.connect_to_new_process(self._fds)
        _parent_w = os.dup(w)
        self.finalizer = util.Finalize(self, util.close_fds, (_parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class _ForkServerProcess(mp_context.ForkServerProcess):
    _kind = "cpu"

    @classmethod
    def _Popen(cls, process_obj: Any) -> _ForkServerPopen:
        return _ForkServerPopen(process_obj, _forkserver(cls._kind).server)


class _CudaForkServerProcess(_ForkServerProcess):
    _kind = "cuda"


class _ForkServerContext(mp_context.ForkServerContext):
    """``forkserver`` processes from our server (see ``_forkserver``)."""


def _context(device: str = "cpu", forked: bool = True):
    """Forked from our fork servers (see ``_forkserver``), or spawned where ``forked`` is false.

    ``TL_AUTOTUNE_WORKER_START=spawn`` spawns every worker (each imports TileLang itself).
    """
    if not forked or not _use_own_fork_server():
        return multiprocessing.get_context("spawn")
    return _forkserver("cpu" if device == "cpu" else "cuda")


def server_running(kind: str = "cpu") -> bool:
    """Whether this process started its ``kind`` fork server (``_forkserver``)."""
    return kind in _FORKSERVERS and _FORKSERVERS[kind].server._forkserver_pid is not None


def server_pid(kind: str = "cpu") -> int | None:
    return _FORKSERVERS[kind].server._forkserver_pid if server_running(kind) else None


def stop_server(kind: str = "cpu") -> None:
    """Stop this process's ``kind`` fork server (close its pools first) and remove its PCH directory:
    the next pool starts a new server, which imports TileLang again. For a process that needs a
    server of its own making (one started at collection may have written the book's PCHs)."""
    if server_running(kind):
        remove_pch_dir(kind)  # while its pid is known; its pools are closed, nothing writes there now
        _FORKSERVERS[kind].server._stop()


def gpus_present() -> bool:
    """Whether this machine shows NVIDIA GPUs to this process, asked without importing torch or
    starting CUDA (device files and CUDA_VISIBLE_DEVICES): whether a CUDA fork server may be used."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return any(Path("/dev").glob("nvidia[0-9]*"))


def init_cuda_driver() -> None:
    """Initialise the CUDA driver in this process in the background (``cuInit``, through ctypes:
    no import), while the test modules are collected, so the first test on the GPU does not pay it.
    Creates no context: the tests still choose their device."""
    import ctypes

    def run() -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libcuda.so.1").cuInit(0)

    threading.Thread(target=run, name="tlautotune-cuinit", daemon=True).start()


def prestart(cuda: bool = False, pch_book: str | None = None, n_workers: int | None = None) -> bool:
    """Start the fork server now (and the CUDA one with ``cuda``); they import TileLang in the
    background (returns at once; a server already running is left as it is).

    With ``pch_book`` (NVRTC may compile: a GPU machine) and ``n_workers`` compile workers to
    come (``Pools``' meaning), at least ``PRIME_MIN_WORKERS``, the server writes the PCHs of the
    header prefixes the book remembers while it imports TileLang (``nvrtc_preload``), so the
    first candidates find them written. Returns whether it was asked to."""
    if not _use_own_fork_server():
        return False
    server = _forkserver("cpu").server
    prime = (pch_book is not None and not server_running() and worker_count(n_workers) >= PRIME_MIN_WORKERS
             and (book_has_entries(pch_book) or has_seeds()))
    if not prime:
        server.ensure_running()
    else:
        os.environ[BOOK_ENV] = pch_book  # read by the server as it starts, not left to this process
        try:
            server.ensure_running()
        finally:
            del os.environ[BOOK_ENV]
    if cuda:
        _forkserver("cuda").server.ensure_running()
    return prime


def _watch_parent(pid: int) -> None:
    """Exit when the pytest process is gone: a SIGKILLed run must not leave workers behind."""
    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:
                pass

    threading.Thread(target=watch, name="tlautotune-parent-watch", daemon=True).start()


#: ``_init_worker``'s ``gpus`` for a worker that keeps its fork server's CUDA_VISIBLE_DEVICES.
NO_GPUS = "-"
#: Seconds a CUDA timing worker may take to create its context (``cuda_ready``).
CUDA_READY_S = 120.0


def _cuda_ready_entry(device: str) -> int:
    from .bench import cuda_ready

    return cuda_ready(device)


#: Compile workers a pool needs before one of them writes remembered PCHs ahead of the candidates.
#: Writing it ahead costs a compile of its own (about 0.3 CPU-s) and one worker while the others
#: build; it pays where the first wave's other workers would otherwise sit waiting for one of them
#: to write it (measured on a 16-core H200 host: 15 workers for 1.5-1.7 s). On a 2-core VM, where
#: the CPU is the limit, 8 candidates of the 4096^3 GEMM ended 0.1-0.2 s later with it (2 and 4
#: workers, ``benchmarks/nvrtc_book.py``), hence the threshold.
PRIME_MIN_WORKERS = 8
#: Niceness of compile workers: a timing worker, and the test process that hands out the work, get
#: a core before them (a timing worker starting its CUDA context, a CPU kernel being timed).
COMPILE_NICE = 5


def _outcome(fut: Any) -> list[str]:
    """What a prime job did, or why it failed (a head start lost, nothing else)."""
    try:
        return fut.result()
    except Exception as exc:  # noqa: BLE001
        return [f"{type(exc).__name__}: {exc}"]


def _prime_entry(book: str, arch: int) -> list[str]:
    from .device_compile import prime

    return prime(book, arch)


def _init_worker(sys_path: list[str], log_level: int, parent_pid: int | None = None,
                 device_compiler: str = "nvcc", gpus: str | None = NO_GPUS, nice: int = 0,
                 pch_book: str | None = None) -> None:
    if nice:
        os.nice(nice)
    if gpus != NO_GPUS:  # a CUDA worker: the test process's GPUs, set before CUDA starts here
        if gpus is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = gpus
    if parent_pid:
        _watch_parent(parent_pid)
    # The user's ref_prog may be pickled by reference to a test module: import it like the parent.
    sys.path[:] = sys_path
    import tilelang  # noqa: F401  - at start, so warm-up overlaps the import with the parent's work

    # Our cache keeps every compiled kernel; TileLang's own would add a second copy (an
    # extra g++ link and disk write per candidate).
    from tilelang.env import env

    env.disable_cache()
    if device_compiler == "nvrtc":
        from .device_compile import install

        install(pch_book)
    _remove_orphan_tempdirs()
    for name in ("tilelang", "TileLang"):
        logging.getLogger(name).setLevel(log_level)
    # "Found kernel in memory cache" when a worker meets an IR twice: harmless, noisy.
    logging.getLogger("tilelang.cache.kernel_cache").setLevel(logging.ERROR)


def all_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers() -> int:
    """One compile worker per core, shared among xdist workers on this machine."""
    cores = all_cores()
    xdist = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    return max(1, cores // max(1, xdist))


def worker_count(n_workers: int | None) -> int:
    """The compile workers ``n_workers`` asks for: None for the default, -1 for one per core (as
    joblib), else that many."""
    return all_cores() if n_workers == -1 else (n_workers or default_workers())


class Pools:
    """The session's compile pool and timing workers, started on first use."""

    def __init__(self, n_workers: int | None = None, device_compiler: str = "nvcc", pch_book: str | None = None):
        """``n_workers``: None for the default, -1 for one per core (as joblib), else that many;
        ``device_compiler``: what compiles CUDA device code in the workers (``device_compile.py``);
        ``pch_book``: where NVRTC compile workers remember the header prefixes they wrote a PCH for,
        and a later session's workers find them (``device_compile.prime``)."""
        self.device_compiler = device_compiler
        self.pch_book = pch_book
        #: What ``device_compile.prime`` did for this session's first tuning of an arch.
        self.primed: dict[int, list[str]] = {}
        #: Whether the fork server wrote the book's PCHs as it started (``prestart``), for the
        #: record: a tuning's own prime job still runs (the server wrote the most recent prefixes
        #: of any arch; this one's may be another, or an xdist sibling may have added it since).
        self.primed_ahead = False
        self.n_workers = worker_count(n_workers)
        self._compile = None
        self._device_compile = None
        self._bench: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._starting: dict[str, threading.Lock] = {}  # per device: held while its worker starts
        self._warmed: set[str] = set()  # the pools warm_up has started
        #: Devices whose forked timing worker could not use the GPU: why (their workers are spawned).
        self.fallbacks: dict[str, str] = {}
        #: When each pool warm_up started could first run a job ("compile" or a device), epoch seconds.
        self.ready_at: dict[str, float] = {}

    def _pool(self, n: int, device: str = "cpu", forked: bool = True, nice: int = 0):
        import pebble

        # A CUDA worker takes the test process's CUDA_VISIBLE_DEVICES as it is now, not as it was
        # when its fork server started.
        gpus = NO_GPUS if device == "cpu" else os.environ.get("CUDA_VISIBLE_DEVICES")
        return pebble.ProcessPool(
            max_workers=n, context=_context(device, forked), initializer=_init_worker,
            initargs=(list(sys.path), logging.WARNING, os.getpid(), self.device_compiler, gpus, nice,
                      self.pch_book),
        )

    def compile_pool(self):
        """The pool that compiles candidates (started lazily), NVRTC ones too: NVRTC initialises the
        CUDA driver in each worker, which works in a child of the fork server because the server
        never initialised it (``no_cuda_init``; a child of one that did crashes in ``cuInit``)."""
        if self._compile is None:
            self._compile = self._pool(self.n_workers, nice=COMPILE_NICE)
        return self._compile

    @property
    def hides_gpus(self) -> bool:
        """Whether compile workers run without the GPUs (forked from the GPU-less fork server)."""
        return _use_own_fork_server()

    def device_compile_pool(self, device: str):
        """Compile workers that see the GPUs (spawned; each imports TileLang): for kernels whose
        lowering asks the device. Started on first use."""
        if self._device_compile is None:
            self._device_compile = self._pool(self.n_workers, device, nice=COMPILE_NICE)
        return self._device_compile

    def bench_pool(self, device: str):
        """The single timing worker of ``device`` (one at a time per device), started on first use.

        A CUDA worker's first job creates its context (``cuda_ready``). One forked from the fork
        server must pass it before it gets a candidate: where it cannot use its GPU, the device's
        worker is spawned instead (slower start, same timings) and ``fallbacks`` says why.
        Starting one device's worker holds up no other device.
        """
        with self._lock:
            starting = self._starting.setdefault(device, threading.Lock())
        with starting:
            if device not in self._bench:
                self._bench[device] = self._timing_worker(device)
            return self._bench[device]

    def _timing_worker(self, device: str) -> Any:
        if device == "cpu":
            return self._pool(1, device)
        forked = _use_own_fork_server() and not self.fallbacks
        pool = self._pool(1, device, forked)
        # pebble starts the worker in its first schedule: this waits for the fork server
        probe = pool.schedule(_cuda_ready_entry, (device,), timeout=CUDA_READY_S)
        try:
            probe.result()
        except Exception as exc:  # noqa: BLE001 - any failure to use the GPU from a fork
            if not forked:
                return pool  # a spawned worker has nothing to fall back to: the first candidate says what is wrong
            self.fallbacks[device] = f"{type(exc).__name__}: {exc}"
            pool.stop()
            pool.join(timeout=10)
            pool = self._pool(1, device, forked=False)
            pool.schedule(_cuda_ready_entry, (device,), timeout=CUDA_READY_S)  # not waited for
            return pool
        self.ready_at.setdefault(device, time.time())
        return pool

    def warm_up(self, devices: Sequence[str], compile: bool = True, arch: int | None = None) -> None:
        """Start the workers now, in the background (the timing worker of each of ``devices``):
        forking waits for the fork server to finish importing TileLang, and meanwhile this
        process builds the PrimFuncs. With ``arch`` (a CUDA tuning for ``sm_<arch>``) a compile
        worker first writes the PCHs the book remembers for it (once per arch and session)."""
        if compile:
            pool = self.compile_pool()  # here, not in two threads at once
            if (arch and self.device_compiler != NVCC and self.pch_book and arch not in self.primed
                    and self.n_workers >= PRIME_MIN_WORKERS):
                # Scheduled here, ahead of the builds: the first schedule waits for the workers to
                # start, as the builds' would next.
                self.primed[arch] = []
                job = pool.schedule(_prime_entry, (self.pch_book, arch))
                job.add_done_callback(lambda fut: self._primed(arch, fut))
        starts = [("compile", self._start_compile)] if compile else []
        starts += [(d, self.bench_pool if d != "cpu" else self._start_cpu_bench) for d in devices]
        for name, start in starts:  # started once; later calls have nothing to start
            if name not in self._warmed:
                self._warmed.add(name)
                threading.Thread(target=start, args=(name,), name="tlautotune-warm-up", daemon=True).start()

    def _primed(self, arch: int, fut: Any) -> None:
        self.primed[arch] = _outcome(fut)
        self.ready_at[f"pch_sm_{arch}"] = time.time()

    def _start_compile(self, name: str) -> None:
        self._first_job(name, self.compile_pool())

    def _start_cpu_bench(self, name: str) -> None:
        self._first_job(name, self.bench_pool(name))

    def _first_job(self, name: str, pool: Any) -> None:
        try:
            pool.schedule(os.getpid).result()  # the first schedule starts a pebble pool's workers
        except Exception:  # noqa: BLE001 - the pool's first real job reports what is wrong
            return
        self.ready_at[name] = time.time()

    def close(self) -> None:
        for pool in [self._compile, self._device_compile, *self._bench.values()]:
            if pool is not None:
                pool.stop()
                pool.join(timeout=10)
        self._compile = self._device_compile = None
        self._bench.clear()
        self._warmed.clear()
        remove_pch_dir()


def remove_pch_dir(kind: str = "cpu") -> None:
    """Remove the shared NVRTC PCHs (a few hundred MB each) of this process's ``kind`` fork server, if
    it started one (when its pools close or it stops; the server removes it as it exits, see
    ``device_compile.load_library``)."""
    if server_running(kind):
        from .device_compile import pch_dir

        remove_tree(pch_dir(server_pid(kind)), ignore_errors=True)


def _remove_orphan_tempdirs() -> None:
    """Remove the private temp directories of compile workers that were killed mid-job, and the
    shared NVRTC PCHs of fork servers that are gone."""
    import tempfile

    from .compile_job import TEMP_PREFIX
    from .device_compile import PCH_DIR_PREFIX

    tmp = Path(tempfile.gettempdir())
    for prefix in (TEMP_PREFIX, PCH_DIR_PREFIX):
        for path in tmp.glob(f"{prefix}*"):
            _remove_if_orphan(path, prefix)


def _remove_if_orphan(path: Path, prefix: str) -> None:
    pid = path.name[len(prefix):].split("-")[0]
    if pid.isdigit() and process_gone(int(pid)):
        remove_tree(path, ignore_errors=True)
