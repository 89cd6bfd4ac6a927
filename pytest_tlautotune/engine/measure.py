"""Timing jobs, the top-k confirmation, checking a stored winner on a hit, and re-timing one for
the gate.

Everything here runs in the device's timing worker (``bench.py``); the test process only
schedules jobs and reads their samples.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..model import Status, TuneRequest
from .failures import reason
from .key import canonical_json, inputs_key, remeasure_key

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..store.local import Store
    from .bench import BenchJob
    from .workers import Pools


class JobFactory:
    """The timing jobs of one request: the same inputs key, profile settings and device lock."""

    def __init__(self, req: TuneRequest, cache: Store):
        self.req = req
        self.cache = cache
        self.profile_blob = profile_blob(req.profile_args)
        self.input_key = inputs_key(req.nodeid, req.program_name, req.profile_args.canonical())
        self.sys_path = tuple(sys.path)  # where the timing worker imports the user's modules from
        self._stage_dir: str | None = None  # the jobs' stage files (bench._mark_stages)
        self._jobs = 0

    def set_reference(self, cand: Any, kernel_dir: Path) -> None:
        """Check the jobs made from now on against ``cand``'s compiled kernel (``reference_config.py``)."""
        import dataclasses

        from .reference_config import ReferenceKernel

        ref = ReferenceKernel(str(kernel_dir), cand.compile_args, cand.config)
        profile = dataclasses.replace(self.req.profile_args, ref_prog=ref)
        self.profile_blob = profile_blob(profile)
        self.input_key = inputs_key(self.req.nodeid, self.req.program_name, profile.canonical())

    def job(self, ckey: str, compile_args: Any, stop_above_ms: float | None = None,
            device: str | None = None) -> BenchJob:
        """The timing job of one candidate on ``device`` (default: the request's own)."""
        from .bench import BenchJob

        device = device or self.req.device
        return BenchJob(
            key=self.input_key,
            kernel_dir=str(self.cache.kernels.path(ckey)),
            compile_args=compile_args,
            profile_blob=self.profile_blob,
            device=device,
            lock_path=self.cache.locks.device_path(device),
            stop_above_ms=stop_above_ms,
            stage_path=self._stage_path(),
            sys_path=self.sys_path,
        )

    def _stage_path(self) -> str:
        import tempfile

        if self._stage_dir is None:
            self._stage_dir = tempfile.mkdtemp(prefix="tlautotune-stage-")
        self._jobs += 1
        return os.path.join(self._stage_dir, str(self._jobs))

    def stage_of(self, job: BenchJob) -> str:
        """Whose code ``job`` was running when it ended (``failures.REF_PROG``, ``SUPPLY_PROG``,
        ``RUN``; empty: none of the user's programs); read once, then its file is removed."""
        if not job.stage_path:
            return ""
        try:
            with open(job.stage_path) as f:
                return f.read()
        except OSError:
            return ""
        finally:
            with contextlib.suppress(OSError):
                os.unlink(job.stage_path)

    def close(self) -> None:
        """Remove the jobs' stage files."""
        from ..store.files import remove_tree

        if self._stage_dir is not None:
            remove_tree(Path(self._stage_dir), ignore_errors=True)
            self._stage_dir = None


def profile_blob(profile: Any) -> bytes:
    """The profile settings pickled for the timing workers (``shipping.dumps``: the user's
    ``ref_prog``/``supply_prog`` closures, over an operator object that holds compiled kernels too)."""
    from ..model import TuneError
    from .shipping import dumps

    try:
        return dumps(profile)
    except Exception as exc:
        raise TuneError(f"the check and timing settings (ref_prog, supply_prog, manual_check_prog) cannot be "
                        f"pickled for the timing workers: {type(exc).__name__}: {exc}") from None


def confirm_top(pools: Pools, jobs: JobFactory, compile_args: list, top: list[dict],
                ref_samples: list) -> tuple[dict, list, list, dict]:
    """Re-time the ``top`` records interleaved (with ref_prog) and pick the winner:
    (winner's record, its samples, ref_prog's samples, device info). ``compile_args`` are
    the top records' own; ``ref_samples`` the streaming ones, kept if the confirmation fails."""
    from .bench import confirm

    req = jobs.req
    batch = [jobs.job(r["ckey"], args) for r, args in zip(top, compile_args)]
    timeout = req.profile_args.timeout * (len(batch) + 1)
    try:
        out = pools.bench_pool(req.device).schedule(confirm, (batch,), timeout=timeout).result()
        if "failure" in out:
            raise RuntimeError(reason(out["failure"]))
    except Exception as exc:
        # Keep the streaming measurements when the confirmation itself fails.
        best = top[0]
        return best, best.get("samples", []), ref_samples, {"confirm_error": str(exc)}
    medians = {r["ckey"]: statistics.median(out["samples"][job.kernel_dir]) for r, job in zip(top, batch)}
    for r in top:
        r["confirm_median_ms"] = medians[r["ckey"]]
    winner = min(top, key=lambda r: medians[r["ckey"]])
    job = batch[top.index(winner)]
    ref = out["samples"].get("ref") or ref_samples
    return winner, out["samples"][job.kernel_dir], ref, out.get("device_info", {})


def to_confirm(passed: list[dict], top_k: int) -> list[dict]:
    """The candidates to re-time before choosing: the ``top_k`` best medians, plus (up to
    ``top_k`` more) any whose fastest sample beat the best median.

    A candidate timed while compiles ran on a sibling core can measure twice as slow for
    most of its samples: its fastest sample gives it away, and a quiet re-time decides.
    ``passed`` is sorted by median.
    """
    top = passed[:top_k]
    if not passed:
        return top
    best = passed[0]["median_ms"]
    suspects = [r for r in passed[top_k:] if r.get("samples") and min(r["samples"]) < best]
    return top + suspects[:top_k]


def checks_output(profile: Any) -> bool:
    """Whether anything compares a kernel's output (a ``ref_prog`` or ``manual_check_prog``, no ``skip_check``)."""
    return (profile.ref_prog is not None or profile.manual_check_prog is not None) and not profile.skip_check


def check_stored(pools: Pools, cache: Store, req: TuneRequest, entry: Path, config: Any,
                 record: dict) -> Callable[[], str | None]:
    """Start checking the winner stored at ``entry`` (``config``, ``record``: its entry's) against
    today's reference in the device's timing worker (one kernel call, one ``ref_prog`` call,
    within ``timeout``; see ``bench.check_once``); returns what waits for the verdict: None when
    it passes, else why not. A crash or a hang there (the kernel's, the reference's,
    supply_prog's) is a reason, never the end of this process.
    """
    from .bench import check_once

    # The winner's candidate directory names the inputs it was checked on when it was tuned.
    same = canonical_json(config)
    winner = next((c.get("ckey") for c in record.get("candidates") or []
                   if c.get("status") == Status.OK and c.get("ckey") and canonical_json(c.get("config")) == same), None)
    checked_as = str(cache.kernels.path(winner)) if winner else str(entry)
    job = _stored_job(req, entry)
    timeout = req.profile_args.timeout
    future = pools.bench_pool(req.device).schedule(check_once, (job, checked_as), timeout=timeout)

    def verdict() -> str | None:
        try:
            out = future.result()
        except Exception as exc:  # noqa: BLE001 - the worker died or was killed: the check failed
            from .failures import classify

            return classify(exc, "check", timeout)[1]
        return None if out["status"] == Status.OK else out["reason"]

    return verdict


def measure_again(pools: Pools, cache: Store, req: TuneRequest, entry: Path, clock: str = "wall") -> dict:
    """Re-time a stored winner (and ref_prog) in this run: the gate never compares stored numbers.

    ``clock="cpu"`` times a CPU device by CPU time (see ``bench.time_fn``).
    """
    from .bench import confirm

    job = _stored_job(req, entry, lock_path=cache.locks.device_path(req.device))
    out = pools.bench_pool(req.device).schedule(confirm, ([job], 5, True, clock),
                                                timeout=req.profile_args.timeout * 2).result()
    if "failure" in out:
        raise RuntimeError(reason(out["failure"]))
    return {
        "samples": out["samples"][str(entry)],
        "loops": out.get("loops", {}).get(str(entry)),
        "host_ms": out.get("host_ms", {}).get(str(entry)),  # launch time per call (CUDA events)
        "ref_samples": out["samples"].get("ref", []),
        "device_info": out.get("device_info", {}),
    }


def _stored_job(req: TuneRequest, entry: Path, lock_path: str | None = None) -> BenchJob:
    """The timing job of the stored winner at ``entry``: its check, or its re-timing under the
    device's timing lock (``lock_path``)."""
    from .bench import BenchJob

    return BenchJob(key=remeasure_key(req.nodeid, req.program_name), kernel_dir=str(entry),
                    compile_args=req.compile_args, profile_blob=profile_blob(req.profile_args),
                    device=req.device, lock_path=lock_path, sys_path=tuple(sys.path))
