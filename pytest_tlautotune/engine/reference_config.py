"""A check without a reference program: every candidate's outputs against a reference config's.

TileLang's tuner checks nothing when no ``ref_prog`` or ``manual_check_prog`` is given, so a fast
wrong config wins unseen. With ``reference_config`` on, one config's compiled kernel plays
``ref_prog``: the seed config a caller passed (the values ``do_not_specialize`` lets every config
override), or else the first config that builds and compiles. Each candidate runs on the same
inputs and is compared with the marker's ``rtol``/``atol``/``max_mismatched_ratio``.

``ReferencePlan`` is the test process's side (which config, in which order to fall back, whether
it is compiled yet); ``ReferenceKernel`` runs in the timing workers as the ``ref_prog`` of the
candidates' jobs (``measure.JobFactory.set_reference``), loaded from its artifact directory and
never timed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..model import Candidate, TuneRequest


def wanted(req: TuneRequest) -> bool:
    """Whether this request checks its candidates against a reference config: the setting is on
    and nothing else checks them (a ``ref_prog``/``manual_check_prog`` does, ``skip_check`` asks
    for no check)."""
    profile = req.profile_args
    on = req.tuner.get("reference_config") not in (None, False)
    return on and profile.ref_prog is None and profile.manual_check_prog is None and not profile.skip_check


def seed_config(req: TuneRequest) -> dict | None:
    """The reference config to build beside the space: a ``reference_config`` dict that is not one
    of the configs (None where the reference is a config of the space, or there is none)."""
    value = req.tuner.get("reference_config")
    if not wanted(req) or not isinstance(value, dict) or value in req.configs:
        return None
    return dict(value)


def reference_index(req: TuneRequest) -> int | None:
    """The config of the space the plan starts from (a budgeted tuning builds it ahead, as it does
    the seed): the one a ``reference_config`` dict names, the first where it is ``True``; None
    without the check or where the reference is the seed beside the space."""
    value = req.tuner.get("reference_config")
    if not wanted(req) or not req.configs:
        return None
    if isinstance(value, dict):
        return req.configs.index(value) if value in req.configs else None
    return 0


#: What ``ReferencePlan.expected`` says while the plan's first reference is not built yet.
NOT_BUILT = "(the reference config is not built yet)"


@dataclass
class ReferencePlan:
    """Which kernel the candidates are compared with: ``order`` lists the configs to try in turn
    (the seed, else the space in order), each as it built; the first that compiles is ``ready``.
    ``extra`` is the seed's candidate where it is not a config of the space (built and compiled,
    never timed, never a record)."""

    order: list[Candidate]
    extra: Candidate | None = None
    pos: int = 0
    ready: Candidate | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def current(self) -> Candidate | None:
        return self.order[self.pos] if self.pos < len(self.order) else None

    @property
    def waiting(self) -> bool:
        """Candidates must wait: the reference is not compiled yet and may still be."""
        return self.ready is None and self.current is not None

    @property
    def expected(self) -> str | None:
        """The candidate key of the reference the plan starts from (what reused verdicts must name);
        ``NOT_BUILT`` while a budgeted tuning has not built it (no verdict names it yet)."""
        if not self.order:
            return None
        return self.order[0].ckey or NOT_BUILT

    def is_current(self, cand: Candidate) -> bool:
        return self.waiting and self.current is cand

    def failed(self, cand: Candidate, why: str) -> Candidate | None:
        """The current reference failed to build or compile: the next one to try, if any."""
        self.notes.append(f"reference config {_text(cand.config)} failed ({why}); the next config that builds "
                          f"is the reference")
        self.pos += 1
        return self.current

    def describe(self) -> dict | None:
        """What the result's record says of the reference (None without one)."""
        if self.ready is None:
            return None
        return {"config": self.ready.config, "ckey": self.ready.ckey, "seed": self.ready is self.extra}


def plan(req: TuneRequest, cands: list[Candidate], extra: Candidate | None) -> ReferencePlan | None:
    """The reference plan of a request with the check on: the seed (``extra``, or the config of the
    space equal to it) first, then every config that built, in the space's order (with those a
    budgeted tuning did not build ahead, built when the plan gets to them)."""
    if not wanted(req):
        return None
    built = [c for c in cands if not c.error]
    value = req.tuner.get("reference_config")
    first = []
    if extra is not None and not extra.error:
        first = [extra]
    elif isinstance(value, dict):
        first = [c for c in built if c.config == value][:1]
    order = first + [c for c in built if c not in first]
    return ReferencePlan(order, extra)


class ReferenceKernel:
    """The reference config's compiled kernel as the ``ref_prog`` of a timing job: called with the
    inputs, returns its outputs (a list, as the candidates' are compared). Picklable: it carries the
    artifact directory and loads the kernel on its first call in a worker. Not timed (``tl_untimed``):
    a reference config's latency is not the ``ref_latency`` of a reference program."""

    tl_untimed = True

    def __init__(self, kernel_dir: str, compile_args: Any, config: dict):
        self.kernel_dir = kernel_dir
        self.compile_args = compile_args
        self.config = config
        self._kernel = None

    def __call__(self, *inputs: Any) -> Any:
        if self._kernel is None:
            from ..store.artifacts import load_kernel

            self._kernel = load_kernel(Path(self.kernel_dir), self.compile_args)
        return self._kernel(*inputs)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_kernel": None}

    def tl_identity(self) -> dict:  # the key's identity of this ref_prog (see key.callable_identity)
        return {"reference_config": self.config, "kernel": Path(self.kernel_dir).name}

    def __repr__(self) -> str:
        return f"reference config {_text(self.config)}"


def _text(config: dict) -> str:
    from .key import canonical_json

    return canonical_json(config)
