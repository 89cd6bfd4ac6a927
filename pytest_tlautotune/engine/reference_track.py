"""The reference config during one tuning (a check without ``ref_prog``, see ``reference_config.py``).

The plan says which config is the reference and in which order to fall back; this follows it
through the tuning: once the reference's kernel is compiled the timing jobs are checked against
it, and when it fails to build or compile the next config in the plan's order takes its place.
Without a plan every question here has the answer of "no reference".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..model import Candidate, CandidateRecord, Status

if TYPE_CHECKING:
    from ..store.kernels import Kernels
    from .measure import JobFactory
    from .reference_config import ReferencePlan


class ReferenceTrack:
    """Where the tuning stands with its reference config (``plan``: None without one)."""

    def __init__(self, plan: ReferencePlan | None, jobs: JobFactory, kernels: Kernels):
        self.plan = plan
        self.jobs = jobs
        self.kernels = kernels

    @property
    def current(self) -> Candidate | None:
        """The config that is to be the reference now (compiled first: checks wait for it)."""
        return self.plan.current if self.plan is not None else None

    @property
    def ready(self) -> Candidate | None:
        """The reference whose kernel the checks use, once there is one."""
        return self.plan.ready if self.plan is not None else None

    @property
    def waiting(self) -> bool:
        """Checks must wait: the reference is not compiled yet and may still be."""
        return self.plan is not None and self.plan.waiting

    def vs(self) -> str | None:
        """The reference a verdict must have been given against to be reused (None: no reference)."""
        return self.plan.expected if self.plan is not None else None

    def is_current(self, cand: Candidate) -> bool:
        return self.plan is not None and self.plan.is_current(cand)

    def is_seed(self, cand: Candidate) -> bool:
        """Whether ``cand`` is the seed reference, no config of the space: compiled, never timed, no record."""
        return self.plan is not None and cand is self.plan.extra

    def found(self, cand: Candidate) -> None:
        """``cand``'s kernel is compiled: the reference from now on."""
        self.plan.ready = cand
        self.jobs.set_reference(cand, self.kernels.path(cand.ckey))

    def failed(self, cand: Candidate, why: str, records: dict[int, CandidateRecord],
               kernel_ok: Callable[[Candidate], bool], queued: Callable[[Candidate], bool]) -> Candidate | None:
        """The reference ``cand`` could not be built or compiled: the next config in the plan's order
        is. Returns that config where it still has to be started (None where it is the reference
        already, or none is left). ``records``: the verdicts so far; ``kernel_ok``: whether a
        config's kernel is compiled; ``queued``: whether a config is compiled and waits for timing."""
        nxt = self.plan.failed(cand, why)
        while nxt is not None:
            old = records.get(nxt.index)
            if old is not None and old["status"] == Status.OK and kernel_ok(nxt):
                self.found(nxt)
                return None
            if old is not None:
                nxt = self.plan.failed(nxt, old["status"])
                continue
            if queued(nxt):
                self.found(nxt)
                return None
            return nxt
        return None
