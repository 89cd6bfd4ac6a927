"""The compile/time event loop of one tuning.

Keeps every compile worker busy (``compiles.py``), times each candidate as soon as it is
compiled (``timings.py``: in the timing worker of whichever of the request's devices is free,
one worker per GPU), and records every verdict (``record_book.py``: here and in the store),
compiling the reference config first where the candidates are checked against one
(``reference_track.py``). Every failure is a record on its config.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..model import Candidate, CandidateRecord, Status, TuneError, TuneRequest
from .compiles import Compiles
from .failures import reason
from .measure import JobFactory
from .record_book import RecordBook
from .reference_track import ReferenceTrack
from .timings import Timings

if TYPE_CHECKING:
    from ..store.local import Store
    from .search import Search
    from .workers import Pools


class Pipeline:
    """Measures the candidates a search proposes; ``book.records`` maps a config's index to its record."""

    def __init__(self, req: TuneRequest, cache: Store, pools: Pools, jobs: JobFactory, reuse_records: bool = True,
                 progress: Callable[[str], None] | None = None):
        self.req = req
        self.pools = pools
        self.notes: list[str] = []
        self.t0_wall = time.time()
        self.book = RecordBook(req, cache.records, reuse_records, progress)
        # req.reference: the reference_config.ReferencePlan the candidates are checked against
        self.reference = ReferenceTrack(req.reference, jobs, cache.kernels)
        self.compiles = Compiles(req, cache, pools, self.notes)
        self.timings = Timings(req, pools, jobs, self.book, self.reference)
        self.builds: Any = None  # candidates.LazyBuilds: builds the unbuilt configs the search asks for
        self._building: dict[cf.Future, Candidate] = {}  # builds of configs not built ahead (LazyBuilds)

    @property
    def ref_samples(self) -> list[float]:
        """ref_prog's samples, from the first timing that ran it."""
        return self.timings.ref_samples

    @property
    def timing_jobs(self) -> int:
        """Timing jobs handed out (one per measured candidate)."""
        return self.timings.count

    def run(self, cands: list[Candidate], search: Search, deadline: float | None,
            builds: Any = None) -> list[CandidateRecord]:
        """Measure what ``search`` proposes until it is done or ``deadline`` (perf_counter) passes
        (a first round is proposed even past it); the records in config order. ``builds``
        (``candidates.LazyBuilds``) builds the candidates that are not built yet."""
        self.t0_wall = time.time()
        self.builds = builds
        self._loop(cands, search, deadline)
        return self.book.in_order()

    def _in_flight(self) -> list[cf.Future]:
        return [*self._building, *self.compiles.running, *self.timings.running]

    def _loop(self, cands: list[Candidate], search: Search, deadline: float | None) -> None:
        self.compiles.open()
        depth = self.pools.n_workers + 1
        if self.reference.current is not None:
            self._start(self.reference.current)  # compiled first: checks wait for it
        proposed = False
        while True:
            if deadline is None or time.perf_counter() < deadline or not proposed:
                pending = {c.index for c in [*self._building.values(), *self.compiles.running.values(),
                                             *self.timings.running.values()]}
                pending |= {c.index for c, _ in self.timings.waiting}
                pending.discard(len(cands))  # the seed reference is not a config of the search's space
                room = depth - len(self.compiles.running) - len(self._building)
                for i in search.propose(self.book.results(), pending, room):
                    proposed = True
                    self._start(cands[i])
            if not self._in_flight():
                # Reused records finish instantly: go on while the search has configs left.
                if (deadline is not None and time.perf_counter() >= deadline) or not self._more(search):
                    return
                continue
            done, _ = cf.wait(self._in_flight(), return_when=cf.FIRST_COMPLETED)
            try:
                for fut in done:
                    if fut in self._building:
                        cand = self._building.pop(fut)
                        self.builds.finish(cand, fut)
                        self._start(cand)
                    elif fut in self.compiles.running:
                        self._compiled(*self.compiles.finish(fut, self.t0_wall))
                    else:
                        self._record(*self.timings.finish(fut, self.t0_wall))
                self.timings.dispatch()
            except TuneError:
                for fut in self._in_flight():
                    fut.cancel()
                raise

    def _more(self, search: Any) -> bool:
        return bool(search.propose(self.book.results(), set(), 1))

    def _start(self, cand: Candidate) -> None:
        if not cand.built:
            fut = self.builds.start(cand)
            if fut is not None:
                self._building[fut] = cand
                return
        if cand.error:
            self._record(cand, {"status": Status.BUILD_ERROR, "reason": reason(cand.error), "failure": cand.error},
                         store=False)
            return
        old = self.book.stored(cand, self.reference.vs(), self.compiles.kernel_ok)
        if old is not None:
            if old.get("status") == Status.OK and self.reference.is_current(cand):
                self.reference.found(cand)
            self._record(cand, {**old, "reused": True}, store=False)
            return
        if self.compiles.kernel_ok(cand):
            self._queue_timing(cand, {"compile_s": 0.0})
            return
        self.compiles.start(cand)

    def _compiled(self, cand: Candidate, fields: dict | None) -> None:
        if fields is None:
            return  # compiling again where the GPU is visible
        if "status" in fields:
            self._record(cand, fields)  # it did not compile
        else:
            self._queue_timing(cand, fields)

    def _queue_timing(self, cand: Candidate, extra: dict) -> None:
        if self.reference.is_current(cand):
            self.reference.found(cand)
        if not self.reference.is_seed(cand):  # the seed reference is compiled to be compared with, not timed
            self.timings.queue(cand, extra)
        self.timings.dispatch()

    def _record(self, cand: Candidate, fields: dict, store: bool = True) -> None:
        if self.reference.is_seed(cand) or self.reference.is_current(cand):
            if fields.get("status") != Status.OK:
                self._reference_failed(cand, fields.get("reason") or fields.get("status"))
            if self.reference.is_seed(cand):
                return  # the seed is no config of the space: no record
        self.book.add(cand, fields, store)

    def _reference_failed(self, cand: Candidate, why: str) -> None:
        """The reference could not be built or compiled: the next config in the plan's order is,
        started here unless it is on its way already."""
        nxt = self.reference.failed(cand, why, self.book.records, self.compiles.kernel_ok, self.timings.is_waiting)
        if nxt is not None and nxt.index not in {c.index for c in [*self.compiles.running.values(),
                                                                   *self._building.values()]}:
            self._start(nxt)
