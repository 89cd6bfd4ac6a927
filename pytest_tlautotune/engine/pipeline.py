"""The compile/time event loop and its record book.

Keeps every compile worker busy, times each candidate as soon as it is compiled (in the
timing worker of whichever of the request's devices is free: one worker per GPU), stops
clearly slow candidates early, and records every verdict (here and in the store). Every
failure is a record on its config.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..model import REUSABLE_FAILURES, Candidate, CandidateRecord, Status, TuneError, TuneRequest
from .failures import REF_PROG, SUPPLY_PROG, classify, definition, reason
from .measure import JobFactory

if TYPE_CHECKING:
    from ..store.local import Store
    from .search import Search
    from .workers import Pools

class Pipeline:
    """Measures the candidates a search proposes; ``records`` maps a config's index to its record."""

    def __init__(self, req: TuneRequest, cache: Store, pools: Pools, jobs: JobFactory, reuse_records: bool = True,
                 progress: Callable[[str], None] | None = None):
        self.req = req
        self.cache = cache
        self.pools = pools
        self.jobs = jobs
        self.reuse_records = reuse_records
        self.progress = progress or (lambda msg: None)
        self.records: dict[int, CandidateRecord] = {}
        self.ref_samples: list[float] = []  # ref_prog's samples, from the first timing that ran it
        # Compile where the GPU is visible (None: not known yet; True where the builds needed it).
        self.on_device: bool | None = req.on_device
        self.device_retries_failed = 0
        self.notes: list[str] = []
        if req.on_device:
            self.notes.append("built and compiled where the GPU is visible: every config crashed while building "
                              "in the GPU-less compile workers")
        self.t0_wall = time.time()
        self._retry: dict[cf.Future, bool] = {}  # compile futures: a retry where the GPU is visible?
        self._extra: dict[Any, dict] = {}  # timing futures in flight: the candidate's fields, its device
        self._jobs: dict[Any, Any] = {}  # timing futures in flight: their bench.BenchJob
        self._crashed_in: Counter[str] = Counter()  # timing jobs that crashed in ref_prog / supply_prog
        self.devices: tuple[str, ...] = req.timing_devices
        self._waiting: list[tuple[Candidate, dict]] = []  # compiled, waiting for a free device
        self.timing_jobs = 0  # timing jobs handed out (one per measured candidate)
        self.plan = req.reference  # reference_config.ReferencePlan: the config the candidates are checked against
        self.builds: Any = None  # candidates.LazyBuilds: builds the unbuilt configs the search asks for
        self._compile_pool: Any = None
        self._building: dict[cf.Future, int] = {}  # builds of configs not built ahead (LazyBuilds)
        self._compiling: dict[cf.Future, int] = {}
        self._timing: dict[cf.Future, int] = {}

    def best_ms(self) -> float | None:
        return min((r["median_ms"] for r in self.records.values() if r["status"] == Status.OK), default=None)

    def run(self, cands: list[Candidate], search: Search, deadline: float | None,
            builds: Any = None) -> list[CandidateRecord]:
        """Measure what ``search`` proposes until it is done or ``deadline`` (perf_counter) passes
        (a first round is proposed even past it); the records in config order. ``builds``
        (``candidates.LazyBuilds``) builds the candidates that are not built yet."""
        self.t0_wall = time.time()
        self.builds = builds
        self._loop(cands, search, deadline)
        return [self.records[i] for i in sorted(self.records)]

    def _loop(self, cands: list[Candidate], search: Search, deadline: float | None) -> None:
        self._compile_pool = compile_pool = self.pools.compile_pool()
        building, compiling, timing = self._building, self._compiling, self._timing
        depth = self.pools.n_workers + 1
        extra = self.plan.extra if self.plan is not None else None
        every = cands + ([extra] if extra is not None else [])  # the seed reference's index follows the space's
        if self.plan is not None and self.plan.current is not None:
            self._start(self.plan.current, compile_pool, compiling, timing)  # compiled first: checks wait for it
        proposed = False
        while True:
            if deadline is None or time.perf_counter() < deadline or not proposed:
                pending = (set(building.values()) | set(compiling.values()) | set(timing.values())
                           | {c.index for c, _ in self._waiting})
                pending.discard(len(cands))  # the seed reference is not a config of the search's space
                for i in search.propose(self._results(), pending, depth - len(compiling) - len(building)):
                    proposed = True
                    self._start(cands[i], compile_pool, compiling, timing)
            if not compiling and not timing and not building:
                # Reused records finish instantly: go on while the search has configs left.
                if (deadline is not None and time.perf_counter() >= deadline) or not self._more(search):
                    return
                continue
            done, _ = cf.wait([*building, *compiling, *timing], return_when=cf.FIRST_COMPLETED)
            try:
                for fut in done:
                    if fut in building:
                        cand = every[building.pop(fut)]
                        self.builds.finish(cand, fut)
                        self._start(cand, compile_pool, compiling, timing)
                    elif fut in compiling:
                        self._compiled(every[compiling.pop(fut)], fut, timing, compiling)
                    else:
                        self._timed(every[timing.pop(fut)], fut)
                self._dispatch(timing)
            except TuneError:
                for fut in [*building, *compiling, *timing]:
                    fut.cancel()
                raise

    def _results(self) -> dict[int, float | None]:
        """What the search learns of each measured config: its median (an early-stopped one's from
        its first samples: it ran, slow), or None where it failed."""
        ran = (Status.OK, Status.EARLY_STOP)
        return {i: r.get("median_ms") if r["status"] in ran else None for i, r in self.records.items()}

    def _more(self, search: Any) -> bool:
        return bool(search.propose(self._results(), set(), 1))

    def _start(self, cand: Candidate, compile_pool: Any, compiling: dict, timing: dict) -> None:
        if not cand.built:
            fut = self.builds.start(cand)
            if fut is not None:
                self._building[fut] = cand.index
                return
        if cand.error:
            self._record(cand, {"status": Status.BUILD_ERROR, "reason": reason(cand.error), "failure": cand.error},
                         store=False)
            return
        if self.reuse_records:
            old = self.cache.read_record(cand.ckey)
            # Verdicts about the kernel itself stand; compile errors, crashes and timeouts may
            # come from the environment, so they are tried again. A pass needs its kernel. A
            # record without ``compared`` was made by a check that did not compare in-place
            # results: measured again; one checked against another reference config too.
            status = old.get("status") if old and "compared" in old and old.get("vs") == self._vs() else None
            if status in REUSABLE_FAILURES or (status == Status.OK and self._kernel_ok(cand)):
                if status == Status.OK and self.plan is not None and self.plan.is_current(cand):
                    self._reference_ready(cand)
                self._record(cand, {**old, "reused": True}, store=False)
                return
        if self._kernel_ok(cand):
            self._queue_timing(cand, timing, compile_s=0.0)
            return
        if self.on_device:
            compile_pool = self.pools.device_compile_pool(self.req.device)
        self._schedule_compile(cand, compile_pool, compiling)

    def _schedule_compile(self, cand: Candidate, pool: Any, compiling: dict, retry: bool = False) -> None:
        fut = pool.schedule(
            _compile_entry,
            (cand.source, cand.compile_args, str(self.cache.kernel_dir(cand.ckey)),
             str(self.cache.fallback_dir(cand.ckey))),
            timeout=self.req.tuner["compile_timeout"],
        )
        compiling[fut] = cand.index
        self._retry[fut] = retry

    def _kernel_ok(self, cand: Candidate) -> bool:
        from ..store.manifest import KERNEL_FILES, verify_manifest

        try:
            verify_manifest(self.cache.kernel_dir(cand.ckey), KERNEL_FILES)
            return True
        except Exception:
            return False

    def _compiled(self, cand: Candidate, fut: cf.Future, timing: dict, compiling: dict) -> None:
        retried = self._retry.pop(fut, False)
        try:
            info = fut.result()
        except Exception as exc:
            status, why = classify(exc, "compile", self.req.tuner["compile_timeout"])
            self._record(cand, {"status": status, "reason": why})
            return
        if "kept_at" in info:  # the cache's filesystem refused the kernel: it is kept for this run
            refusal = info["refused"]
            self.cache.kept_at(cand.ckey, info["kept_at"],
                               OSError(refusal["errno"], refusal["strerror"], refusal["filename"]))
        if retried:
            self._learn_from_retry("error" not in info)
        if "error" in info and self._retry_on_device(retried):
            # Compile workers see no GPU; some of TileLang's lowering asks the device (a kernel that
            # lowers where the GPU is visible and not here): try it where the GPU is visible.
            self._schedule_compile(cand, self.pools.device_compile_pool(self.req.device), compiling, retry=True)
            return
        if "error" in info:
            failure = info["error"]
            if not failure.get("where"):  # lowering names no line of the user's: the kernel's definition
                failure["where"] = definition(self.req.program.spec.target)
            self._record(cand, {"status": Status.COMPILE_ERROR, "reason": reason(failure), "failure": failure})
            return
        self._queue_timing(cand, timing, compile_s=info["compile_s"], pid=info["pid"],
                           save_s=info.get("save_s"), started_at=info.get("started_at"),
                           t_compiled=time.time() - self.t0_wall,
                           **({"device_compiler": info["device_compiler"]} if "device_compiler" in info else {}))

    #: Retries where the GPU is visible that must all fail before compile errors are taken as they are.
    DEVICE_RETRIES = 3

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

    #: Timing jobs handed to one device's worker at a time (one running, one queued behind it).
    DEVICE_DEPTH = 2

    def _queue_timing(self, cand: Candidate, timing: dict, **extra: Any) -> None:
        if self.plan is not None and self.plan.is_current(cand):
            self._reference_ready(cand)
        if self.plan is not None and cand is self.plan.extra:
            self._dispatch(timing)  # the seed reference is compiled to be compared with, not timed
            return
        self._waiting.append((cand, extra))
        self._dispatch(timing)

    # -- the reference config (a check without ref_prog, see reference_config.py) ----------------

    def _vs(self) -> str | None:
        """The reference a verdict must have been given against to be reused (None: no reference)."""
        return self.plan.expected if self.plan is not None else None

    def _reference_ready(self, cand: Candidate) -> None:
        self.plan.ready = cand
        self.jobs.set_reference(cand, self.cache.kernel_dir(cand.ckey))

    def _reference_failed(self, cand: Candidate, why: str) -> None:
        """The reference could not be built or compiled: the next config in the plan's order is."""
        nxt = self.plan.failed(cand, why)
        while nxt is not None:
            old = self.records.get(nxt.index)
            if old is not None and old["status"] == Status.OK and self._kernel_ok(nxt):
                self._reference_ready(nxt)
                return
            if old is not None:
                nxt = self.plan.failed(nxt, old["status"])
                continue
            if any(c is nxt for c, _ in self._waiting):
                self._reference_ready(nxt)
                return
            if nxt.index not in {*self._compiling.values(), *self._building.values()}:
                self._start(nxt, self._compile_pool, self._compiling, self._timing)
            return

    def _dispatch(self, timing: dict) -> None:
        """Hand waiting candidates to the least busy devices. A job goes to a device only when it
        has room, so a GPU whose worker is still starting never hoards the queue, and the early-stop
        bound is taken as late as possible (from the best time so far)."""
        from .bench import check_and_time

        if self.plan is not None and self.plan.waiting:
            return  # no check before the reference config's kernel is there
        while self._waiting:
            busy = Counter(extra["timed_on"] for extra in self._extra.values())
            device = min(self.devices, key=lambda d: (busy[d], self.devices.index(d)))
            if busy[device] >= self.DEVICE_DEPTH:
                return
            cand, extra = self._waiting.pop(0)
            factor = self.req.tuner["early_stop_factor"]
            best = self.best_ms()
            stop = factor * best if factor and best is not None else None
            job = self.jobs.job(cand.ckey, cand.compile_args, stop_above_ms=stop, device=device)
            fut = self.pools.bench_pool(device).schedule(check_and_time, (job,), timeout=self.req.profile_args.timeout)
            timing[fut] = cand.index
            self.timing_jobs += 1
            self._extra[fut] = {**extra, "timed_on": device}
            self._jobs[fut] = job

    def _timed(self, cand: Candidate, fut: Any) -> None:
        extra = {**self._extra.pop(fut, {}), "t_timed": time.time() - self.t0_wall}
        job = self._jobs.pop(fut, None)
        stage = self.jobs.stage_of(job) if job is not None else ""
        try:
            out = fut.result()
        except Exception as exc:
            status, why = classify(exc, "check/timing", self.req.profile_args.timeout)
            if stage in (REF_PROG, SUPPLY_PROG) and self._theirs(stage, status):
                raise TuneError(_user_program_lost(stage, status, why, self.req.profile_args.timeout)) from None
            self._record(cand, {"status": status, "reason": why, **extra})
            return
        failure = out.get("failure")
        if failure and failure.get("stage") in (REF_PROG, SUPPLY_PROG):
            # The reference's (or the inputs') fault, not this config's: stop, say it once.
            message = (failure.get("message") or "").strip()
            more = f"\n{indent(message)}" if "\n" in message else ""  # reason() holds its first line
            raise TuneError(f"{reason(failure)}{more}\n"
                            f"(the reference or the inputs failed, not a candidate; nothing else was measured)",
                            records=[self.records[i] for i in sorted(self.records)])
        if out.get("ref_samples") and not self.ref_samples:
            self.ref_samples = out["ref_samples"]
        out.pop("ref_samples", None)
        if self.plan is not None and self.plan.ready is not None:
            extra["vs"] = self.plan.ready.ckey  # the verdict holds against this reference only
        self._record(cand, {**out, **extra})

    def _theirs(self, stage: str, status: Status) -> bool:
        """Whether a timing job lost in ``stage`` (ref_prog or supply_prog) is that program's fault:
        a hang at once; a crash when it happens again (in a fresh worker: a kernel that corrupted
        its worker's memory can make the next job's reference crash once)."""
        if status == Status.TIMEOUT:
            return True
        if status != Status.CRASH:
            return False
        self._crashed_in[stage] += 1
        return self._crashed_in[stage] > 1

    def _record(self, cand: Candidate, fields: dict, store: bool = True) -> None:
        if self.plan is not None and (cand is self.plan.extra or self.plan.is_current(cand)):
            if fields.get("status") != Status.OK:
                self._reference_failed(cand, fields.get("reason") or fields.get("status"))
            if cand is self.plan.extra:
                return  # the seed is no config of the space: no record
        record = {"ckey": cand.ckey, "index": cand.index, "config": cand.config, "reason": None, **fields}
        record["index"], record["config"] = cand.index, cand.config
        self.records[cand.index] = record
        if store and cand.ckey:
            self.cache.write_record(record)
        n_ok = sum(r["status"] == Status.OK for r in self.records.values())
        best = self.best_ms()
        self.progress(
            f"{len(self.records)}/{len(self.req.configs)} measured, {n_ok} passed"
            + (f", best {best:.4g} ms" if best is not None else "")
        )


def _user_program_lost(stage: str, status: Status, why: str, timeout: float) -> str:
    """ref_prog or supply_prog hung or crashed its timing job: theirs, said once."""
    who = "the reference's" if stage == REF_PROG else "the inputs'"
    if status == Status.TIMEOUT:
        what = (f"{stage} did not return within {timeout:g} s (the timing job's timeout={timeout:g}): it hangs "
                f"or is slower than that")
    else:
        what = f"{stage} crashed its timing job ({why})"
    return f"{what}; {who} fault, not a candidate's: nothing else was measured"


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines()[:12])


def _compile_entry(source: Any, compile_args: Any, out_dir: str, fallback_dir: str | None = None) -> dict:
    from .compile_job import compile_candidate

    return compile_candidate(source, compile_args, out_dir, fallback_dir)
