"""Tune one program: search -> pipeline -> confirm -> result.

The pipeline (``pipeline.py``) measures what the search (``search.py``) proposes; the best
few are re-timed interleaved (``measure.py``) before choosing; the winner is built here and
its compiled kernel loaded. Only "nothing passed" fails the test.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..model import Candidate, Status, TuneError, TuneRequest, cut_text
from ..store import typed
from .key import canonical_json
from .measure import JobFactory, confirm_top, to_confirm
from .pipeline import Pipeline

if TYPE_CHECKING:
    from ..param import AutotuneResult
    from ..store.local import Store
    from .builder import Builder
    from .workers import Pools


class Tuner:
    """Runs the search for one request with the session's pools and store."""

    def __init__(
        self,
        req: TuneRequest,
        cache: Store,
        pools: Pools,
        reuse_records: bool = True,
        progress: Callable[[str], None] | None = None,
        machine: dict | None = None,
        builder: Builder | None = None,
    ):
        self.req = req
        self.cache = cache
        self.pools = pools
        self.machine = machine  # for the keys of the configs built as the search asks for them
        self.builder = builder  # where the configs built (and those not built yet will)
        self.jobs = JobFactory(req, cache)
        self.pipeline = Pipeline(req, cache, pools, self.jobs, reuse_records, progress)

    def run(self, cands: list[Candidate], key: str,
            deadline: float | None = None) -> tuple[AutotuneResult, list[dict]]:
        """Search, confirm the top-k, and return (AutotuneResult, records). ``deadline``
        (``time.perf_counter``): when to propose no more configs; by default ``max_tuning_s``
        from now."""
        from .candidates import LazyBuilds
        from .search import Search

        t0 = time.perf_counter()
        tuner = self.req.tuner
        search = Search(self.req.configs, tuner["strategy"], tuner["max_trials"], tuner["seed"],
                        workers=self.pools.n_workers)
        if deadline is None and tuner["max_tuning_s"]:
            deadline = t0 + tuner["max_tuning_s"]
        lazy = LazyBuilds(self.builder, self.req, self.machine) if any(not c.built for c in cands) else None
        try:
            return self._run(cands, key, search, deadline, lazy, t0)
        finally:
            self.jobs.close()  # the timing jobs' stage files

    def _run(self, cands: list[Candidate], key: str, search: Any, deadline: float | None, lazy: Any,
             t0: float) -> tuple[AutotuneResult, list[dict]]:
        tuner = self.req.tuner
        ahead = sum(c.built for c in cands)
        records = self.pipeline.run(cands, search, deadline, lazy)
        t_search = time.perf_counter()
        never_built = sum(not c.built for c in cands)
        # What left configs unbuilt: the deadline, else the search asked for no more (max_trials, early stop).
        stopped_by = ("max_tuning_s" if deadline is not None and time.perf_counter() >= deadline
                      else "the search")
        if never_built:
            self.pipeline.notes.append(
                f"{never_built} of {len(cands)} configs were never built: "
                + (f"max_tuning_s={tuner['max_tuning_s']:g} s ran out (the search built the configs it asked "
                   f"for until the deadline)" if stopped_by == "max_tuning_s"
                   else "the search asked for no more of them (max_trials, early stop)"))
        passed = sorted((r for r in records if r["status"] == Status.OK), key=lambda r: r["median_ms"])
        if not passed:
            raise TuneError(self._failure_message(records, never_built), records=records)
        top = to_confirm(passed, tuner["top_k"])
        winner, samples, ref_samples, info = confirm_top(
            self.pools, self.jobs, [cands[r["index"]].compile_args for r in top], top, self.pipeline.ref_samples)
        phases = self._phases(records, t_search - t0, time.perf_counter() - t_search)
        if self.req.reference is not None:
            self.pipeline.notes.extend(self.req.reference.notes)
        for device, why in self.pools.fallbacks.items():
            self.pipeline.notes.append(f"the timing worker of {device} was spawned: one forked from the fork "
                                       f"server could not use the GPU ({why})")
        note = self.pools.start_note()
        if note:
            self.pipeline.notes.append(note)
        # Where the builds were cut: how many configs were built before the search (``ahead``) and in
        # all, of how many (the entry's key is a budget key).
        builds = {"built": len(cands) - never_built, "ahead": ahead, "configs": len(cands),
                  "stopped_by": stopped_by} if lazy is not None else None
        result = self._result(cands[winner["index"]], winner, samples, ref_samples, info, records, key,
                              time.perf_counter() - t0, phases, self.pipeline.notes, builds)
        return result, records

    def _phases(self, records: list[dict], search_s: float, confirm_s: float) -> dict:
        """Where the time went: for the benchmarks and the HTML report."""
        return {
            "search_s": search_s,
            "confirm_s": confirm_s,
            "compile_cpu_s": sum(r.get("compile_s") or 0.0 for r in records if not r.get("reused")),
            "bench_s": sum(r.get("bench_s") or 0.0 for r in records if not r.get("reused")),
            "compiled": sum(1 for r in records if r.get("compile_s") and not r.get("reused")),
            "timed": self.pipeline.timing_jobs,
            "reused": sum(1 for r in records if r.get("reused")),
            "workers": self.pools.n_workers,
            # FORKED (from the fork server, TileLang preloaded), FORKED_IMPORTING or SPAWNED
            "compile_workers": self.pools.origin("compile", timeout=60).get("started"),
            **self._timeline(records, self.pipeline.t0_wall),
        }

    def _timeline(self, records: list[dict], t0_wall: float) -> dict:
        """Seconds from the start of the search: first compile started, last compile and last
        timing finished (where the cold path's time goes)."""
        fresh = [r for r in records if not r.get("reused")]
        starts = [r["started_at"] - t0_wall for r in fresh if r.get("started_at")]
        compiled = [r["t_compiled"] for r in fresh if r.get("t_compiled") is not None]
        timed = [r["t_timed"] for r in fresh if r.get("t_timed") is not None]
        out = {}
        if starts:
            out["first_compile_start_s"] = min(starts)
        if compiled:
            out["last_compile_end_s"] = max(compiled)
        if timed:
            out["last_timing_end_s"] = max(timed)
        for name, at in self.pools.ready_at.items():  # negative: ready before the search began
            out[f"ready_s_{name}"] = round(at - t0_wall, 3)
        for arch, done in self.pools.primed.items():  # the PCHs written ahead (seeds, or the book)
            out[f"pch_primed_sm_{arch}"] = done
        saves = [r["save_s"] for r in fresh if r.get("save_s") is not None]
        if saves:
            out["save_cpu_s"] = sum(saves)
        return out

    def _result(
        self,
        cand: Candidate,
        winner: dict,
        samples: list,
        ref_samples: list,
        info: dict,
        records: list[dict],
        key: str,
        tuning_s: float,
        phases: dict,
        notes: list[str],
        builds: dict | None = None,
    ) -> AutotuneResult:
        from ..param import AutotuneResult
        from ..store.artifacts import load_kernel

        built = self.req.program.spec.build(cand.config)  # here: the winner as this process builds it
        func = built.func
        if built.ir_sha != cand.ir_sha:
            raise TuneError(f"the winning config {cand.config} builds a different kernel in this process than "
                            f"in a fresh worker process: does the program read state the test changes at run "
                            f"time (a module global, sys.modules)? Build-time inputs must come from arguments, "
                            f"files or environment variables")
        kernel = load_kernel(self.cache.kernels.path(winner["ckey"]), cand.compile_args, func)
        record = {
            "key": key,
            "nodeid": self.req.nodeid,
            "program": self.req.program_name,
            "device": self.req.device,
            "device_info": info,
            "tuned_at": time.time(),
            "phases": phases,
            "notes": notes,
            "tuning_s": tuning_s,
            "candidates": records,
            "compile_args": cand.compile_args.canonical(),
            "winner_ir_sha": cand.ir_sha,
            "built_here": self.builder.built_here if self.builder is not None else None,
        }
        if self.req.reference is not None:
            # What every candidate's outputs were compared with (no ref_prog): the summary's "vs <config>".
            record["reference"] = self.req.reference.describe()
        if builds is not None:
            record["builds"] = builds
        return AutotuneResult(
            latency=statistics.median(samples),
            config=cand.config,  # the config the test gave; a hit reads it back alike (store/typed.py)
            ref_latency=statistics.median(ref_samples) if ref_samples else None,
            libcode=kernel.get_kernel_source(),
            func=func,
            kernel=kernel,
            samples=tuple(samples),
            ref_samples=tuple(ref_samples),
            record=typed.as_stored(record),  # what a hit reads back: plain data, tuples and enum members kept
        )

    #: Configs the "no candidate passed" message names one by one (every record: -v, --tl-json).
    FAILURES_SHOWN = 40

    def _failure_message(self, records: list[dict], never_built: int = 0) -> str:
        lines = [
            f"no candidate passed: {len(records)} of {len(self.req.configs)} configs measured for "
            f"{self.req.program_name}"
            + (f" ({never_built} never built: max_tuning_s={self.req.tuner['max_tuning_s']:g} s ran out)"
               if never_built else "")
        ]
        for r in records[:self.FAILURES_SHOWN]:
            lines.append(f"  {cut_text(canonical_json(r['config']))}: {r['status']}: {r.get('reason')}")
        if len(records) > self.FAILURES_SHOWN:
            lines.append(f"  ... and {len(records) - self.FAILURES_SHOWN:,} more configs (every one's reason: "
                         f"-v or --tl-json)")
        return "\n".join(lines)
