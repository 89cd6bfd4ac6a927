"""The run's resources, kept in ``config.stash`` from configure to unconfigure.

``TuneSession`` holds the options, the local cache and the shared store, the worker pools
(started at collection or on the first tuning, closed at unconfigure) and the machine
fingerprints. Each ``autotune(...)`` call reads them (``engine.call.tune``).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from .devices import own_share
from .model import Warn
from .settings import get_option, wants_fresh_numbers

if TYPE_CHECKING:
    import pytest

    from .engine.workers import Pools
    from .param import AutotuneResult
    from .store.local import Store


class TuneSession:
    """Options, cache, shared store, worker pools and machine facts of one pytest run (one per xdist worker)."""

    def __init__(self, config: pytest.Config, warn: Warn):
        self.config = config
        self.warn = warn  # the plugin issues the warnings of the calls, the store and the rows
        self.cache_dir = get_option(config, "tl_cache_dir")
        self.retune = bool(get_option(config, "tl_retune"))
        self.no_tune = bool(get_option(config, "tl_no_tune"))
        self.n_workers = get_option(config, "tl_workers")
        self.intercept = bool(get_option(config, "tl_intercept"))  # TileLang's tuner calls in tests served here
        self.gpus = get_option(config, "tl_gpus")  # the GPUs a tuning times on (devices.gpu_share)
        # The option (a gate, a baseline, a history) that wants numbers of this run: hits timed again.
        self.fresh_numbers = wants_fresh_numbers(config)
        workerinput = getattr(config, "workerinput", {})
        # Under xdist the controller's start time, so workers agree on "tuned in this run".
        self.started = float(workerinput.get("tl_session_start", time.time()))
        self._cache = None
        self._pools = None
        self._machine: dict[str, dict] = {}
        self._device_compiler: str | None = None
        self.baseline: tuple[str, dict] | None = None  # (path, the baseline file), read by the plugin on first use
        self.prestarted = False
        from .store.shared import open_store

        # The fleet's shared store behind the local cache (or none); options checked at start-up.
        self.store = open_store(get_option(config, "tl_store"), warn, ttl_days=get_option(config, "tl_store_ttl"),
                                timeout=get_option(config, "tl_store_timeout"),
                                readonly=bool(get_option(config, "tl_store_readonly")))

    @property
    def cache(self) -> Store:
        if self._cache is None:
            from .store.local import Store

            self._cache = Store(self.cache_dir, remote_record=self.store.get_record, make_result=_make_result,
                                warn=self.warn)
        return self._cache

    @property
    def pools(self) -> Pools:
        if self._pools is None:
            from .engine.workers import Pools

            self._pools = Pools(self.n_workers, self.device_compiler, pch_book=self.pch_book)
        return self._pools

    @property
    def pch_book(self) -> str:
        """Where NVRTC header prefixes are remembered (see device_compile.prime), by absolute path
        (the workers do not share this process's working directory): beside the results, and in
        the user's default cache directory where the results live elsewhere (a CI job's own cache
        directory on a runner that stays), so a machine that tuned before writes the PCH ahead
        whatever cache directory a run uses; joined by ``os.pathsep``. Empty without
        ``tl_nvrtc_book``: nothing is remembered, and only the shipped prefixes are written ahead."""
        if not get_option(self.config, "tl_nvrtc_book"):
            return ""
        from .engine.device_compile import BOOK_DIR
        from .settings import user_cache_dir

        books = [os.path.abspath(os.path.join(d, BOOK_DIR)) for d in (self.cache_dir, user_cache_dir())]
        return os.pathsep.join(dict.fromkeys(books))

    def machine(self, kind: str) -> dict:
        if kind not in self._machine:
            from .engine.key import machine_fingerprint

            self._machine[kind] = machine_fingerprint(kind)
            if kind == "cuda":  # the device compiler makes the kernel: part of every CUDA key
                self._machine[kind]["device_compiler"] = self.device_compiler
        return self._machine[kind]

    @property
    def device_compiler(self) -> str:
        """``nvcc`` or ``nvrtc``: what compiles CUDA device code (option ``tl_device_compiler``)."""
        if self._device_compiler is None:
            from .engine.device_compile import resolve

            self._device_compiler = resolve(get_option(self.config, "tl_device_compiler"))
        return self._device_compiler

    def prestart(self) -> None:
        """Autotuned tests are coming: start the workers' fork server now, so it imports TileLang
        while this process imports the tests, and the timing worker of the likely device, which
        checks every hit (under --tl-no-tune too). On a GPU machine this process's CUDA driver
        starts now too, in the background.

        With a baseline in play every test re-times its kernel, so the compile workers start now too.
        """
        if self.prestarted:
            return
        self.prestarted = True
        from .engine.workers import gpus_present, init_cuda_driver, prestart

        if gpus_present():
            init_cuda_driver()
        prestart()
        self.pools.warm_up(self._likely_devices(), compile=bool(self.fresh_numbers) and not self.no_tune)

    def _likely_devices(self) -> list[str]:
        """The devices a ``target="auto"`` test would time on (this process's GPUs, else the CPU)."""
        import torch

        if torch.cuda.is_available():
            return [f"cuda:{i}" for i in own_share(0, self.gpus)]
        return ["cpu"]

    def close(self) -> None:
        if self._pools is not None:
            self._pools.close()
        if self._cache is not None:
            self._cache.close()


def _make_result(**fields: Any) -> AutotuneResult:
    """An ``AutotuneResult`` of a stored entry's fields (for ``store.entries.Entries.load``)."""
    from .param import AutotuneResult

    return AutotuneResult(**fields)
