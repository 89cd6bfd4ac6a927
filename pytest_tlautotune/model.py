"""The value types that travel between the stages: a request, its candidates, an outcome,
a candidate's status, and the one error that tuning raises. Light: no TileLang, no torch.

The seed's ``CompileArgs``/``ProfileArgs``/``AutotuneResult`` live in ``param.py`` (the seed's
module, which imports TileLang).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias, TypedDict

import pytest

if TYPE_CHECKING:
    from tvm.target import Target

#: A target as users give it: a name (``"cuda"``, ``"c"``), TVM JSON, a dict, or a TVM ``Target``.
TargetLike: TypeAlias = "str | dict | Target"


class Status(enum.StrEnum):
    """A candidate's verdict (a ``str``: records and JSON hold the plain value)."""

    OK = "ok"
    MISMATCH = "mismatch"
    EARLY_STOP = "early_stop"
    TIMEOUT = "timeout"
    CRASH = "crash"
    COMPILE_ERROR = "compile_error"
    BUILD_ERROR = "build_error"
    ERROR = "error"


class RowStatus(enum.StrEnum):
    """How one ``autotune(...)`` call ended: its row in the summary, the JSON, the Markdown and the report."""

    TUNED = "tuned"  # a kernel was chosen (tuned now or loaded from the cache)
    FAILED = "failed"  # the call failed its test; the row says why


def row_id(nodeid: str, call: int) -> str:
    """The id of a test's ``call``-th autotune result (baselines, JSON, summaries key on it)."""
    return nodeid if call == 1 else f"{nodeid}[call {call}]"


class CandidateRecord(TypedDict, total=False):
    """One candidate's record: in ``candidates/<ckey>.json``, an entry's ``record.json`` and the JSON report."""

    ckey: str | None
    index: int
    config: dict
    status: str  # a Status value
    reason: str | None
    compared: list[str]  # what the check compared ("output 0", "input A (in place)"); empty: nothing
    failure: dict  # failures.describe()
    median_ms: float
    samples: list[float]
    loops: int
    compile_s: float
    save_s: float
    bench_s: float
    pid: int
    started_at: float
    t_compiled: float
    t_timed: float
    confirm_median_ms: float
    reused: bool


# Verdicts about the kernel itself, keyed on everything they depend on (its IR, the reference and
# the code it reaches, the inputs, the machine). Early stops and timeouts come from one noisy
# moment: a later search re-times them (their kernel is cached, so no compile).
REUSABLE_FAILURES = (Status.MISMATCH,)


def cut_list(items: Iterable[object], limit: int = 10, text: Callable[[object], str] = repr) -> str:
    """``items`` for a message, comma-separated: a long list shows its first ``limit`` and how
    many more (``'k0', 'k1', ... and 9,990 more``), so one bad argument never prints a page."""
    items = list(items)
    shown = ", ".join(text(i) for i in items[:limit])
    return shown if len(items) <= limit else f"{shown}, ... and {len(items) - limit:,} more"


def cut_text(text: str, limit: int = 200) -> str:
    """``text`` for a message: a long one keeps its start and says how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


class TLAutotuneError(Exception):
    """Base of the plugin's errors: a tuning, store, cache or program problem, said in one sentence."""


class TuneError(TLAutotuneError):
    """Tuning produced no usable kernel; the message says why, per config. ``records``: the
    candidates measured before it failed."""

    def __init__(self, message: str, records: list | None = None):
        super().__init__(message)
        self.records = list(records or [])


class TargetUnavailable(TLAutotuneError):
    """The test's target cannot run on this machine (a CUDA target without a GPU): ``plugin.py``
    skips the test with this message."""


class TLAutotuneWarning(pytest.PytestWarning):
    """Base of the plugin's warnings: something went wrong that does not fail the test.

    Only ``plugin.py`` issues them: the stages below hand theirs to the ``warn`` callback the
    plugin gives the run (``TuneSession.warn``) or return them.
    """


#: How the stages hand a warning to the plugin (``plugin.py`` issues it with ``warnings.warn``).
Warn = Callable[[Warning], None]


class TuneWarning(TLAutotuneWarning):
    """Something went wrong around tuning that does not fail the test (e.g. the cache write)."""


class QuarantineWarning(TLAutotuneWarning):
    """A stored result failed verification: it was moved to quarantine and tuned again."""


class StoreWarning(TLAutotuneWarning):
    """The shared result store failed or was refused; the run goes on with its local cache."""


class RootdirWarning(TLAutotuneWarning):
    """pytest chose another rootdir or ini file than the project's: it took an option's value for a test path."""


class GateWarning(TLAutotuneWarning):
    """A test the gate could not compare (other device or clock, too few samples)."""


@dataclass(frozen=True)
class TuneRequest:
    """Everything one fixture call asks for; built once (``engine.call._request``), completed by the
    builds into a new one (``candidates.completed``), never edited."""

    nodeid: str
    program_name: str
    program: Any  # programs.Program
    configs: list[dict]
    compile_args: Any  # param.CompileArgs, target resolved (out_idx completed by the builds of eager kernels)
    profile_args: Any  # param.ProfileArgs
    tuner: dict  # strategy, max_trials, max_tuning_s, seed, early_stop_factor, top_k, compile_timeout
    device: str  # "cpu" or "cuda:N": where the winner is confirmed (and the only device on a CPU)
    devices: tuple[str, ...] = ()  # where candidates are timed (every GPU of this process's share)
    # What only a build tells (``candidates.completed``): the request as the test asked has them None.
    mode: str | None = None  # "lazy" | "eager" | "plain"
    on_device: bool | None = None  # True: it builds only where the GPU is visible, so compile it there too
    reference: Any = None  # reference_config.ReferencePlan: the config the candidates are checked against, if any
    # The program's identity and its arguments (key.program_identity, key.args_identity): what keys
    # the warm path's fast index (key.fast_key) and a tuning that max_tuning_s stopped before every
    # config was built (key.budget_key).
    identity: dict | None = None
    #: A callable returning engine.tilelang_key.TileLangKey: the key TileLang's own tuner would cache this
    #: tuning under, or why none (computed once, and only where an entry is noted with it).
    tilelang: Any = None

    @property
    def device_kind(self) -> str:
        return "cpu" if self.device == "cpu" else "cuda"

    @property
    def timing_devices(self) -> tuple[str, ...]:
        """Where candidates are timed: ``devices``, else the one ``device``."""
        return self.devices or (self.device,)


@dataclass
class Outcome:
    """What the fixture reports: the result, how it was obtained, every record."""

    result: Any
    cache: str  # hit | miss | retune
    key: str
    tuning_s: float
    records: list[dict] = field(default_factory=list)
    #: Why the stored result found for this call was not served: its winner failed today's check.
    stale: str | None = None
    #: The call's request as the builds completed it (``candidates.completed``).
    request: Any = None


@dataclass
class Candidate:
    index: int
    config: dict
    ckey: str | None = None
    func_blob: bytes | None = None
    ir_sha: str | None = None
    error: dict | None = None  # failures.describe() of the build
    compile_args: Any = None  # the request's, with the config's own "pass_configs" merged in

    source: Any = None  # what the compile job builds from (see compile_job.compile_candidate)
    built: bool = True  # False until its config is built (a budgeted search builds as it goes)
