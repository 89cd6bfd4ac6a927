"""The timing side of a tuning: compiled candidates handed to the devices' timing workers (one
worker per GPU), and their verdicts read back.

A job goes to a device only when it has room, so a GPU whose worker is still starting never
hoards the queue, and the early-stop bound is taken as late as possible (from the best time so
far). A timing job lost in the user's own ``ref_prog`` or ``supply_prog`` ends the tuning, said once.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from ..model import Candidate, Status, TuneError, TuneRequest
from .failures import REF_PROG, SUPPLY_PROG, classify, reason

if TYPE_CHECKING:
    from .measure import JobFactory
    from .record_book import RecordBook
    from .reference_track import ReferenceTrack
    from .workers import Pools


class Timings:
    """Timing jobs waiting for a device and in flight (``running``: future -> candidate)."""

    #: Timing jobs handed to one device's worker at a time (one running, one queued behind it).
    DEVICE_DEPTH = 2

    def __init__(self, req: TuneRequest, pools: Pools, jobs: JobFactory, book: RecordBook,
                 reference: ReferenceTrack):
        self.req = req
        self.pools = pools
        self.jobs = jobs
        self.book = book
        self.reference = reference
        self.devices: tuple[str, ...] = req.timing_devices
        self.waiting: list[tuple[Candidate, dict]] = []  # compiled, waiting for a free device
        self.running: dict[cf.Future, Candidate] = {}
        self.count = 0  # timing jobs handed out (one per measured candidate)
        self.ref_samples: list[float] = []  # ref_prog's samples, from the first timing that ran it
        self._extra: dict[Any, dict] = {}  # timing futures in flight: the candidate's fields, its device
        self._jobs: dict[Any, Any] = {}  # timing futures in flight: their bench.BenchJob
        self._crashed_in: Counter[str] = Counter()  # timing jobs that crashed in ref_prog / supply_prog

    def queue(self, cand: Candidate, extra: dict) -> None:
        """``cand`` is compiled: time it when a device has room (``extra``: its record's fields so far)."""
        self.waiting.append((cand, extra))

    def is_waiting(self, cand: Candidate) -> bool:
        return any(c is cand for c, _ in self.waiting)

    def dispatch(self) -> None:
        """Hand waiting candidates to the least busy devices that have room."""
        from .bench import check_and_time

        if self.reference.waiting:
            return  # no check before the reference config's kernel is there
        while self.waiting:
            busy = Counter(extra["timed_on"] for extra in self._extra.values())
            device = min(self.devices, key=lambda d: (busy[d], self.devices.index(d)))
            if busy[device] >= self.DEVICE_DEPTH:
                return
            cand, extra = self.waiting.pop(0)
            factor = self.req.tuner["early_stop_factor"]
            best = self.book.best_ms()
            stop = factor * best if factor and best is not None else None
            job = self.jobs.job(cand.ckey, cand.compile_args, stop_above_ms=stop, device=device)
            fut = self.pools.bench_pool(device).schedule(check_and_time, (job,), timeout=self.req.profile_args.timeout)
            self.running[fut] = cand
            self.count += 1
            self._extra[fut] = {**extra, "timed_on": device}
            self._jobs[fut] = job

    def finish(self, fut: cf.Future, t0_wall: float) -> tuple[Candidate, dict]:
        """The candidate of a finished timing job and its record's fields (``t_timed`` counted from
        ``t0_wall``). Raises TuneError where the reference or the inputs failed, not the candidate."""
        cand = self.running.pop(fut)
        extra = {**self._extra.pop(fut, {}), "t_timed": time.time() - t0_wall}
        job = self._jobs.pop(fut, None)
        stage = self.jobs.stage_of(job) if job is not None else ""
        try:
            out = fut.result()
        except Exception as exc:
            status, why = classify(exc, "check/timing", self.req.profile_args.timeout)
            if stage in (REF_PROG, SUPPLY_PROG) and self._theirs(stage, status):
                raise TuneError(_user_program_lost(stage, status, why, self.req.profile_args.timeout)) from None
            return cand, {"status": status, "reason": why, **extra}
        failure = out.get("failure")
        if failure and failure.get("stage") in (REF_PROG, SUPPLY_PROG):
            # The reference's (or the inputs') fault, not this config's: stop, say it once.
            message = (failure.get("message") or "").strip()
            more = f"\n{indent(message)}" if "\n" in message else ""  # reason() holds its first line
            raise TuneError(f"{reason(failure)}{more}\n"
                            f"(the reference or the inputs failed, not a candidate; nothing else was measured)",
                            records=self.book.in_order())
        if out.get("ref_samples") and not self.ref_samples:
            self.ref_samples = out["ref_samples"]
        out.pop("ref_samples", None)
        if self.reference.ready is not None:
            extra["vs"] = self.reference.ready.ckey  # the verdict holds against this reference only
        return cand, {**out, **extra}

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
