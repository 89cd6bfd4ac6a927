"""Timing jobs, the top-k confirmation, and re-timing a stored winner for the gate.

Everything here runs in the device's timing worker (``bench.py``); the test process only
schedules jobs and reads their samples.
"""

from __future__ import annotations

import contextlib
import os
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..key import inputs_key, remeasure_key
from ..model import TuneRequest
from .failures import reason

if TYPE_CHECKING:
    from ..store.local import Store
    from .bench import BenchJob
    from .workers import Pools


class JobFactory:
    """The timing jobs of one request: the same inputs key, profile settings and device lock."""

    def __init__(self, req: TuneRequest, cache: Store):
        import cloudpickle

        self.req = req
        self.cache = cache
        self.profile_blob = cloudpickle.dumps(req.profile_args)
        self.input_key = inputs_key(req.nodeid, req.program_name, req.profile_args.canonical())
        self._stage_dir: str | None = None  # the jobs' stage files (bench._mark_stages)
        self._jobs = 0

    def job(self, ckey: str, compile_args: Any, stop_above_ms: float | None = None,
            device: str | None = None) -> BenchJob:
        """The timing job of one candidate on ``device`` (default: the request's own)."""
        from .bench import BenchJob

        device = device or self.req.device
        return BenchJob(
            key=self.input_key,
            kernel_dir=str(self.cache.kernel_dir(ckey)),
            compile_args=compile_args,
            profile_blob=self.profile_blob,
            device=device,
            lock_path=self.cache.device_lock_path(device),
            stop_above_ms=stop_above_ms,
            stage_path=self._stage_path(),
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


def measure_again(pools: Pools, cache: Store, req: TuneRequest, entry: Path, clock: str = "wall") -> dict:
    """Re-time a stored winner (and ref_prog) in this run: the gate never compares stored numbers.

    ``clock="cpu"`` times a CPU device by CPU time (see ``bench.time_fn``).
    """
    import cloudpickle

    from .bench import BenchJob, confirm

    job = BenchJob(
        key=remeasure_key(req.nodeid, req.program_name),
        kernel_dir=str(entry),
        compile_args=req.compile_args,
        profile_blob=cloudpickle.dumps(req.profile_args),
        device=req.device,
        lock_path=cache.device_lock_path(req.device),
    )
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
