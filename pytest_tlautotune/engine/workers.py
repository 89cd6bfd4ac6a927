"""Worker processes: a compile pool and one timing worker per device (the jobs they run are
``compile_job.py``'s and ``bench.py``'s).

Both pools start once per session and are reused by every test. Workers fork from
multiprocessing's fork server of this process, which the plugin starts (``prestart``) with TileLang
preloaded (``set_forkserver_preload``) and CUDA never initialised there: a new worker, or the
replacement of one killed for a timeout, a crash or a CUDA fault, costs a fork, not a TileLang
import. A compile worker (and the CPU timing worker) hides every GPU as it starts; a CUDA timing
worker takes the test process's GPUs and creates its own context. Where a forked CUDA worker cannot
use its GPU, timing workers are spawned instead. Where the fork server was started before the plugin
could preload it (by the tests' own code), each worker imports TileLang itself and the tuning
record's notes say so. Only public names of multiprocessing are used (the documented context API,
and ``forkserver.ensure_running`` of that module's ``__all__``), so no Python version is singled
out. Pool tasks with a timeout are killed by pebble, not abandoned in a thread that keeps running
and disturbs later timings.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..store.files import process_gone, remove_tree
from .device_compile import NVCC

#: What the workers' fork server imports before it forks: CUDA kept uninitialised, then TileLang.
#: Nothing there may initialise the CUDA driver: a process forked from one that did cannot use the
#: GPU (a CUDA timing worker, forked from this server, creates its context). So NVRTC, whose
#: compiles call ``cuInit``, is loaded by each compile worker as it starts (``device_compile.install``),
#: not here. The GPUs stay visible: processes the tests start with the forkserver method (the
#: default from Python 3.14) fork from this server too, and keep them.
PRELOAD = ["pytest_tlautotune.engine.no_cuda_init", "tilelang", "pytest_tlautotune.engine.bench"]
#: ``TL_AUTOTUNE_WORKER_START=spawn`` spawns every worker (each imports TileLang itself, sees the GPUs).
START_ENV = "TL_AUTOTUNE_WORKER_START"
#: This process's fork server as the plugin knows it: ``started`` once the plugin asked for it (with
#: its preload), ``pid`` once a worker forked from it said which process that is (``_origin``).
_SERVER: dict[str, Any] = {}
#: In a worker: how it started (``_init_worker``), for ``_origin``.
_ORIGIN: dict[str, Any] = {}
#: What ``Pools.origin`` says of how a pool's workers started (its ``started``).
FORKED, FORKED_IMPORTING, SPAWNED = "forked", "forked, each importing TileLang", "spawned"
#: The tuning record's note where workers could not fork from a fork server with TileLang preloaded.
NOTE_NOT_PRELOADED = ("compile workers each imported TileLang (a slower start): this process's fork "
                      "server was started before the plugin could preload it")
NOTE_NO_FORKSERVER = "workers were spawned, each importing TileLang (a slower start): no fork server here"


def _forking() -> bool:
    """Whether workers fork from the fork server (else they are spawned)."""
    return os.environ.get(START_ENV) != "spawn" and "forkserver" in multiprocessing.get_all_start_methods()


def _start_server() -> None:
    """Ask for this process's fork server with the plugin's preload (a server already running stays
    as it is: see ``NOTE_NOT_PRELOADED``). It starts now, with this process's environment, and
    imports TileLang in the background."""
    from multiprocessing import forkserver  # ensure_running: in the module's __all__

    multiprocessing.get_context("forkserver").set_forkserver_preload(PRELOAD)
    forkserver.ensure_running()
    _SERVER["started"] = True


def _context(forked: bool = True):
    """Forked from the fork server (started here if need be), or spawned where ``forked`` is false
    or workers are not forked here (``_forking``)."""
    if not forked or not _forking():
        return multiprocessing.get_context("spawn")
    if not _SERVER.get("started"):
        _start_server()
    return multiprocessing.get_context("forkserver")


def server_running() -> bool:
    """Whether this process started its fork server (``prestart`` or a forked pool); it runs until
    this process exits."""
    return bool(_SERVER.get("started"))


def server_pid() -> int | None:
    """The fork server's pid, once a worker forked from it has said (``Pools.origin``)."""
    return _SERVER.get("pid")


def _origin() -> dict[str, Any]:
    """In a worker: how it started (``Pools.origin``)."""
    return dict(_ORIGIN)


def gpus_present() -> bool:
    """Whether this machine shows NVIDIA GPUs to this process, asked without importing torch or
    starting CUDA (device files and CUDA_VISIBLE_DEVICES)."""
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


def prestart() -> None:
    """Start the fork server now; it imports TileLang in the background (returns at once; a server
    already running is left as it is)."""
    if _forking() and not server_running():
        _start_server()


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


#: ``_init_worker``'s ``gpus`` for a worker that keeps the CUDA_VISIBLE_DEVICES it started with.
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
    # Before anything is imported here: whether the fork server had imported TileLang for us.
    forked = parent_pid is not None and os.getppid() != parent_pid
    _ORIGIN.update(server=os.getppid() if forked else None,
                   started=(FORKED if all(m in sys.modules for m in PRELOAD) else FORKED_IMPORTING)
                   if forked else SPAWNED)
    if nice:
        os.nice(nice)
    if gpus != NO_GPUS:  # the GPUs this worker sees (none: ""), set before CUDA starts here
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

        install(pch_book, shared_by=_ORIGIN["server"])
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
        and a later session's workers find them (``device_compile.prime``); ``""``: nowhere, the
        shipped seeds' PCHs are written ahead alone; None: none is written ahead."""
        self.device_compiler = device_compiler
        self.pch_book = pch_book
        #: What ``device_compile.prime`` did for this session's first tuning of an arch.
        self.primed: dict[int, list[str]] = {}
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
        self._origins: dict[str, concurrent.futures.Future] = {}  # per pool: what ``origin`` says

    def _pool(self, n: int, device: str = "cpu", forked: bool = True, nice: int = 0, compiles: bool = True):
        """``compiles``: its workers compile device code (with ``device_compiler``); a timing worker
        does not, and loads no NVRTC."""
        import pebble

        forked = forked and _forking()
        if device == "cpu":  # forked: no GPU; spawned: the test process's (what START_ENV promises)
            gpus = "" if forked else NO_GPUS
        else:  # the test process's CUDA_VISIBLE_DEVICES as it is now, not as when the server started
            gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
        return pebble.ProcessPool(
            max_workers=n, context=_context(forked), initializer=_init_worker,
            initargs=(list(sys.path), logging.WARNING, os.getpid(), self.device_compiler if compiles else NVCC,
                      gpus, nice, self.pch_book),
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
        """Whether compile workers run without the GPUs (forked ones hide them as they start)."""
        return _forking()

    def device_compile_pool(self, device: str):
        """Compile workers that see the test process's GPUs: for kernels whose lowering asks the
        device. Started on first use."""
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
            return self._pool(1, device, compiles=False)
        forked = _forking() and not self.fallbacks
        pool = self._pool(1, device, forked, compiles=False)
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
            pool = self._pool(1, device, forked=False, compiles=False)
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
            if (arch and self.device_compiler != NVCC and self.pch_book is not None and arch not in self.primed
                    and self.n_workers >= PRIME_MIN_WORKERS):
                # Scheduled here, ahead of the builds: the first schedule waits for the workers to
                # start, as the builds' would next.
                self.primed[arch] = []
                job = pool.schedule(_prime_entry, (self.pch_book, arch))
                job.add_done_callback(lambda fut: self._primed(arch, fut))
        starts = [("compile", self.origin)] if compile else []
        starts += [(d, self.bench_pool if d != "cpu" else self.origin) for d in devices]
        for name, start in starts:  # started once; later calls have nothing to start
            if name not in self._warmed:
                self._warmed.add(name)
                threading.Thread(target=start, args=(name,), name="tlautotune-warm-up", daemon=True).start()

    def _primed(self, arch: int, fut: Any) -> None:
        self.primed[arch] = _outcome(fut)
        self.ready_at[f"pch_sm_{arch}"] = time.time()

    def origin(self, name: str = "compile", timeout: float | None = None) -> dict[str, Any]:
        """How the workers of pool ``name`` ("compile" or a device) started, as one of them says:
        ``started`` (``FORKED``: from the fork server, TileLang preloaded; ``FORKED_IMPORTING``: from
        one the plugin did not preload; ``SPAWNED``) and ``server`` (the fork server's pid, where
        forked). Asked once per pool, as its first job (``warm_up`` asks in the background; the
        first schedule starts a pebble pool's workers); waits ``timeout`` seconds at most for the
        answer, ``{}`` without one."""
        with self._lock:
            fut = self._origins.get(name)
            ask = fut is None
            if ask:
                fut = self._origins[name] = concurrent.futures.Future()
        if ask:
            try:
                pool = self.compile_pool() if name == "compile" else self.bench_pool(name)
                origin = pool.schedule(_origin).result()
            except Exception as exc:  # noqa: BLE001 - the pool's first real job reports what is wrong
                fut.set_exception(exc)
            else:
                self.ready_at[name] = time.time()
                if origin.get("server"):
                    _SERVER["pid"] = origin["server"]
                fut.set_result(origin)
        try:
            return fut.result(timeout)
        except Exception:  # noqa: BLE001 - no answer (in time)
            return {}

    def start_note(self) -> str | None:
        """The tuning record's note where the compile workers did not fork from the fork server with
        TileLang preloaded, for a reason other than ``TL_AUTOTUNE_WORKER_START=spawn``."""
        started = self.origin("compile", timeout=60).get("started")
        if started == FORKED_IMPORTING:
            return NOTE_NOT_PRELOADED
        if started == SPAWNED and os.environ.get(START_ENV) != "spawn":
            return NOTE_NO_FORKSERVER
        return None

    def close(self) -> None:
        for pool in [self._compile, self._device_compile, *self._bench.values()]:
            if pool is not None:
                pool.stop()
                pool.join(timeout=10)
        self._compile = self._device_compile = None
        self._bench.clear()
        self._warmed.clear()
        self._origins.clear()
        remove_pch_dir()


def remove_pch_dir() -> None:
    """Remove the shared NVRTC PCHs (a few hundred MB each) of this process's fork server, once a
    worker has named it (as its pools close: a later pool's workers write them again; the server
    removes it as it exits, see ``device_compile.load_library``)."""
    if server_pid() is not None:
        from .device_compile import pch_dir

        remove_tree(pch_dir(server_pid()), ignore_errors=True)


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
