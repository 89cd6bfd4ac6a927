"""The compile side of a tuning: candidates compiled in the compile workers, and where the GPU is
visible when TileLang's lowering of the kernel asks the device.

Compile workers see no GPU. A compile that fails there is tried again where the GPU is visible
(CUDA only); once one succeeds there every compile goes there, and after
:attr:`Compiles.DEVICE_RETRIES` failed retries compile errors are taken as they are.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from typing import TYPE_CHECKING, Any

from ..model import Candidate, Status, TuneRequest
from .failures import classify, definition, reason

if TYPE_CHECKING:
    from ..store.local import Store
    from .workers import Pools


class Compiles:
    """Compiles in flight (``running``: future -> candidate) and where the next one goes."""

    #: Retries where the GPU is visible that must all fail before compile errors are taken as they are.
    DEVICE_RETRIES = 3

    def __init__(self, req: TuneRequest, cache: Store, pools: Pools, notes: list[str]):
        self.req = req
        self.cache = cache
        self.pools = pools
        self.notes = notes  # the tuning's notes: says where the builds and compiles went
        # Compile where the GPU is visible (None: not known yet; True where the builds needed it).
        self.on_device: bool | None = req.on_device
        self.device_retries_failed = 0
        if req.on_device:
            notes.append("built and compiled where the GPU is visible: every config crashed while building "
                         "in the GPU-less compile workers")
        self.running: dict[cf.Future, Candidate] = {}
        self._retry: dict[cf.Future, bool] = {}  # compile futures: a retry where the GPU is visible?
        self._pool: Any = None

    def open(self) -> None:
        """Take the compile pool (its workers start now, if they have not)."""
        self._pool = self.pools.compile_pool()

    def kernel_ok(self, cand: Candidate) -> bool:
        """Whether ``cand``'s compiled kernel is in the store, whole."""
        from ..store.manifest import KERNEL_FILES, verify_manifest

        try:
            verify_manifest(self.cache.kernels.path(cand.ckey), KERNEL_FILES)
            return True
        except Exception:
            return False

    def start(self, cand: Candidate) -> None:
        pool = self.pools.device_compile_pool(self.req.device) if self.on_device else self._pool
        self._schedule(cand, pool)

    def _schedule(self, cand: Candidate, pool: Any, retry: bool = False) -> None:
        fut = pool.schedule(
            _compile_entry,
            (cand.source, cand.compile_args, str(self.cache.kernels.path(cand.ckey)),
             str(self.cache.kernels.fallback(cand.ckey))),
            timeout=self.req.tuner["compile_timeout"],
        )
        self.running[fut] = cand
        self._retry[fut] = retry

    def finish(self, fut: cf.Future, t0_wall: float) -> tuple[Candidate, dict | None]:
        """The candidate of a finished compile and what came of it: a failure's record fields
        (they hold a ``status``), or what its timing's record takes from the compile
        (``compile_s``, ``pid``, ...; ``t_compiled`` counted from ``t0_wall``); None while it
        compiles again where the GPU is visible."""
        cand = self.running.pop(fut)
        retried = self._retry.pop(fut, False)
        try:
            info = fut.result()
        except Exception as exc:
            status, why = classify(exc, "compile", self.req.tuner["compile_timeout"])
            return cand, {"status": status, "reason": why}
        if "kept_at" in info:  # the cache's filesystem refused the kernel: it is kept for this run
            refusal = info["refused"]
            self.cache.kernels.kept_at(cand.ckey, info["kept_at"],
                                       OSError(refusal["errno"], refusal["strerror"], refusal["filename"]))
        if retried:
            self._learn_from_retry("error" not in info)
        if "error" in info and self._retry_on_device(retried):
            # Compile workers see no GPU; some of TileLang's lowering asks the device (a kernel that
            # lowers where the GPU is visible and not here): try it where the GPU is visible.
            self._schedule(cand, self.pools.device_compile_pool(self.req.device), retry=True)
            return cand, None
        if "error" in info:
            failure = info["error"]
            if not failure.get("where"):  # lowering names no line of the user's: the kernel's definition
                failure["where"] = definition(self.req.program.spec.target)
            return cand, {"status": Status.COMPILE_ERROR, "reason": reason(failure), "failure": failure}
        return cand, {"compile_s": info["compile_s"], "pid": info["pid"], "save_s": info.get("save_s"),
                      "started_at": info.get("started_at"), "t_compiled": time.time() - t0_wall,
                      **({"device_compiler": info["device_compiler"]} if "device_compiler" in info else {})}

    def _retry_on_device(self, retried: bool) -> bool:
        if retried or self.on_device is False or self.req.device_kind != "cuda" or not self.pools.hides_gpus:
            return False
        return bool(self.on_device) or self.device_retries_failed < self.DEVICE_RETRIES

    def _learn_from_retry(self, compiled: bool) -> None:
        if compiled and not self.on_device:
            self.on_device = True
            self.notes.append("compiled where the GPU is visible: TileLang's lowering of this kernel asks the "
                              "device, and failed in the GPU-less compile workers")
        elif not compiled:
            self.device_retries_failed += 1
            if self.device_retries_failed >= self.DEVICE_RETRIES and self.on_device is None:
                self.on_device = False


def _compile_entry(source: Any, compile_args: Any, out_dir: str, fallback_dir: str | None = None) -> dict:
    from .compile_job import compile_candidate

    return compile_candidate(source, compile_args, out_dir, fallback_dir)
