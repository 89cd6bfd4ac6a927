"""Where one call's configs build, and what building them told.

A build runs the user's program: in the compile workers (a crash or a hang there is a record on
that config), in the device's timing worker for a stored winner on a hit (it sees the GPUs, as
the test does), where the GPU is visible when the program asks CUDA while it builds, and in this
process only as a last resort. ``Builder`` settles where with the first builds, and keeps, for
the rest of the call, what the builds read and why a program was built here.
"""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING

from ..model import TuneRequest, TuneWarning, Warn
from . import key

if TYPE_CHECKING:
    from concurrent.futures import Future

    from .workers import Pools


class Builder:
    """Builds one request's configs where they can build, one call long."""

    def __init__(self, req: TuneRequest, pools: Pools | None, warn: Warn | None = None):
        self.req = req  # the request as the test asked (what a build needs of it never changes)
        self.pools = pools
        self.warn = warn
        #: (spec_id, spec blob, env, sys.path): what a worker builds the configs from, once pickled.
        self.shipped: tuple | None = None
        #: Why the configs were built in the test process, if they were.
        self.built_here: str | None = None
        #: True where the program builds only where the GPU is visible (settled by the first builds).
        self.on_device: bool | None = None
        #: {file: digest} of what the builds of the space read (``reads.py``): what the fast index
        #: checks; None until one was built (a stored winner built again on a hit does not count).
        self.reads: dict[str, str] | None = None
        #: Builds done already, by the config's canonical JSON: a stored winner whose build failed on a
        #: hit (a crash, a hang) is that config's record, not built a second time.
        self.done: dict[str, dict] = {}

    def first(self, configs: list[dict], n_space: int) -> list[dict]:
        """The first builds: in the compile workers, unless they cannot build the program as this
        process does; they settle where every later one builds. ``configs``' first ``n_space`` are
        the space's (a seed follows them)."""
        req, pools = self.req, self.pools
        results = self._in_workers(configs) if pools is not None else None
        if results is not None and self._crashed_without_gpu(results):
            # Every config crashed where no GPU is visible (a program that asks CUDA while it builds,
            # as TileLang's convolution example does): build, and later compile, where the GPU is.
            again = self._in_workers(configs, pools.device_compile_pool(req.device))
            if again is not None and not self._crashed_without_gpu(again):
                self.on_device = True
                results = again
        if results is not None and _machinery_failed(results[:n_space]):
            # No line of the user's code ran and every config failed alike in the workers: if the
            # program builds in this process, the fault is in how it reached them (the plugin's).
            here = self.here(configs)
            if not _all_failed_alike(here[:n_space]):
                failure = next(r["error"] for r in results if "error" in r)
                self.built_here = (f"the compile workers could not build it ({plugin_fault(failure)}), "
                                   f"so it was built here")
                if self.warn is not None:
                    self.warn(TuneWarning(f"{req.nodeid}: {self.built_here}"))
                return self._read(here)
        if results is not None and self.built_here is None and not self._same_here(configs, results):
            # The program builds differently in a worker (no GPU visible there: it asks the device at
            # build time, e.g. torch.cuda.get_device_capability): build every config here instead.
            self.built_here = "the program builds a different kernel where no GPU is visible, so it was built here"
            results = None
        return self._read(self.here(configs) if results is None else results)

    def settled(self, configs: list[dict]) -> list[dict]:
        """Builds after the first: where those settled (here, where the GPU is visible, or in the
        GPU-less compile workers)."""
        results = None
        if self.pools is not None and self.built_here is None:
            results = self._in_workers(configs, self._settled_pool())
        return self._read(self.here(configs) if results is None else results)

    def winner(self, config: dict) -> dict:
        """A stored winner built again on a hit, from the device's timing worker within
        ``compile_timeout``. Where the program cannot be shipped, it is built here (the cold path's
        last resort too). A failure is kept: tuning records it instead of building again."""
        from .failures import BUILD, describe

        shipped = self._ship()
        if shipped is not None:
            out = self._result(self._schedule(self.pools.bench_pool(self.req.device), config))
            if "error" in out:
                self.done[key.canonical_json(config)] = out
            if "spec_error" not in out:
                return out
            self._not_loaded(out)
        try:
            return self.req.program.spec.build(config).summary()
        except Exception as exc:
            return {"error": describe(exc, BUILD, self.req.program.spec.target)}

    def start(self, config: dict) -> Future | dict:
        """Start building one config where the builds settled: its future, or its result when it
        was built already (a failure of the hit's build) or here, now."""
        done = self.done.get(key.canonical_json(config))
        if done is not None:
            return self._read([done])[0]
        shipped = self._ship() if self.built_here is None else None
        if shipped is None:
            return self._read(self.here([config]))[0]
        return self._schedule(self._settled_pool(), config)

    def finish(self, config: dict, fut: Future) -> dict:
        """The result of a build ``start`` scheduled (where the workers cannot load the program any
        more, it is built here, as every later one)."""
        out = self._result(fut)
        if "spec_error" in out:
            self._not_loaded(out)
            out = self.here([config])[0]
        return self._read([out])[0]

    def here(self, configs: list[dict]) -> list[dict]:
        """``configs`` built in this process (the last resort: a crash here ends the session)."""
        from .failures import BUILD, describe
        from .reads import recording

        spec = self.req.program.spec
        results = []
        for config in configs:
            reads: set[str] = set()
            try:
                with recording(spec.target) as reads:
                    built = spec.build(config)
            except Exception as exc:
                results.append({"error": describe(exc, BUILD, spec.target), "reads": sorted(reads)})
                continue
            results.append({**built.summary(), "func_blob": pickle.dumps(built.func), "reads": sorted(reads)})
        return results

    def _read(self, results: list[dict]) -> list[dict]:
        """Count what ``results``' builds read (``reads``); returns them."""
        self.reads = {**(self.reads or {}), **key.file_digests(path for r in results for path in r.get("reads", ()))}
        return results

    def _in_workers(self, configs: list[dict], pool: object = None) -> list[dict] | None:
        """Every config's build result from the compile workers (``pool``, by default the GPU-less
        ones; those in ``done`` as they are); None where the program cannot be shipped to them."""
        shipped = self._ship()
        if shipped is None:
            return None
        pool = pool or self.pools.compile_pool()
        futures = [None if key.canonical_json(config) in self.done else self._schedule(pool, config)
                   for config in configs]
        results = []
        for config, fut in zip(configs, futures):
            out = self.done[key.canonical_json(config)] if fut is None else self._result(fut)
            if "spec_error" in out:
                for other in futures:
                    if other is not None:
                        other.cancel()
                self._not_loaded(out)
                return None
            results.append(out)
        return results

    def _settled_pool(self) -> object:
        """The compile workers where the builds settled: those where the GPU is visible, or the GPU-less ones."""
        return self.pools.device_compile_pool(self.req.device) if self.on_device else self.pools.compile_pool()

    def _schedule(self, pool: object, config: dict) -> Future:
        """One config's build in ``pool`` (the program shipped), within ``compile_timeout``."""
        return pool.schedule(_build_entry, (*self.shipped, config), timeout=self.req.tuner["compile_timeout"])

    def _ship(self) -> tuple | None:
        """``shipped``, pickled on first use; None where the program cannot be pickled
        (``built_here`` says why)."""
        import os
        import sys

        from .shipping import dumps

        if self.shipped is None:
            try:
                blob = dumps(self.req.program.spec)
            except Exception as exc:
                self.built_here = (f"the program could not be pickled for the compile workers "
                                   f"({type(exc).__name__}: {exc}), so it was built here")
                return None
            self.shipped = (key.spec_id(blob), blob, dict(os.environ), list(sys.path))
        return self.shipped

    def _not_loaded(self, out: dict) -> None:
        from .failures import reason

        self.built_here = (f"the program could not be loaded in the compile workers "
                           f"({reason(out['spec_error'])}), so it was built here")

    def _result(self, fut: object) -> dict:
        """A build job's result, or its worker's death or timeout as a build failure."""
        from .failures import BUILD, classify

        try:
            return fut.result()
        except Exception as exc:
            status, why = classify(exc, "build", self.req.tuner["compile_timeout"])
            return {"error": {"stage": BUILD, "type": status, "message": why, "where": None, "tail": ""}}

    def _crashed_without_gpu(self, results: list[dict]) -> bool:
        from ..model import Status

        return (self.req.device_kind == "cuda" and self.pools.hides_gpus and bool(results)
                and all(r.get("error", {}).get("type") == Status.CRASH for r in results))

    def _same_here(self, configs: list[dict], results: list[dict]) -> bool:
        """Whether this process builds the first successfully built config into the same IR."""
        first = next(((c, r) for c, r in zip(configs, results) if "error" not in r), None)
        if first is None:
            return True
        try:
            built = self.req.program.spec.build(first[0])
        except Exception:
            return True  # let the records say why; the result's own check runs later
        return built.ir_sha == first[1]["ir_sha"]


def _all_failed_alike(results: list[dict]) -> bool:
    from .failures import same_failure

    failures = [r["error"] for r in results if "error" in r]
    return len(failures) == len(results) and same_failure(failures)


def _machinery_failed(results: list[dict]) -> bool:
    """Every config raised the same exception in the workers with none of the user's lines on
    its traceback (crashes and timeouts excluded: rebuilding those here could end the session)."""
    return _all_failed_alike(results) and all(not_the_users(r["error"]) for r in results)


def not_the_users(failure: dict) -> bool:
    """Raised with no line of the user's code on its traceback, and neither an argument error (a
    ``TypeError`` binding the call's arguments is the call's fault) nor the plugin's verdict on
    what the program returned (a ``ProgramError``: the program ran and returned something else
    than a PrimFunc)."""
    return failure.get("in_user_code") is False and failure.get("type") not in ("TypeError", "ProgramError")


def plugin_fault(failure: dict) -> str:
    from .failures import reason, versions

    return (f"{reason(failure)}; this is a fault of pytest-tlautotune or of the packages it runs with "
            f"({versions()}): please report it to pytest-tlautotune's issue tracker with this message")


def _build_entry(spec_id: str, blob: bytes, env: dict, path: list[str], config: dict) -> dict:
    from .compile_job import build_candidate

    return build_candidate(spec_id, blob, config, env, path)
