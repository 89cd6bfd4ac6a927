"""Tune one program: build candidates, key them, reuse or search, confirm, store.

The pipeline keeps every compile worker busy, times each candidate as soon as it
is compiled (in the device's timing worker), stops clearly slow candidates
early, and before choosing re-times the top few interleaved on a quiet machine.
Every failure is a record on its config; only "nothing passed" fails the test.
"""

from __future__ import annotations

import concurrent.futures as cf
import pickle
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .key import FORMAT_VERSION, canonical_json, program_text, sha256_hex

OK = "ok"
REUSABLE_FAILURES = ("mismatch", "early_stop")


class TuneError(Exception):
    """Tuning produced no usable kernel; the message says why, per config."""


@dataclass
class TuneRequest:
    """Everything one fixture call asks for."""

    nodeid: str
    program_name: str
    factory: Callable[[dict], Any]
    configs: list[dict]
    compile_args: Any  # param.CompileArgs, target resolved
    profile_args: Any  # param.ProfileArgs
    tuner: dict  # strategy, max_trials, max_tuning_s, seed, early_stop_factor, top_k, compile_timeout
    device: str  # "cpu" or "cuda:N"

    @property
    def device_kind(self) -> str:
        return "cpu" if self.device == "cpu" else "cuda"


@dataclass
class Outcome:
    """What the fixture reports: the result, how it was obtained, every record."""

    result: Any
    cache: str  # hit | miss | retune
    key: str
    tuning_s: float
    records: list[dict] = field(default_factory=list)


@dataclass
class Candidate:
    index: int
    config: dict
    ckey: str | None = None
    func: Any = None
    error: str | None = None


def build_candidates(req: TuneRequest, machine: dict) -> list[Candidate]:
    """Generate each config's PrimFunc (in this process: it is the user's code) and key it."""
    common = {
        "format": FORMAT_VERSION,
        "compile": req.compile_args.canonical(),
        "profile": req.profile_args.canonical(),
        "machine": machine,
    }
    cands = []
    with _target_context(req):
        for i, config in enumerate(req.configs):
            cands.append(_build_one(req, i, config, common))
    return cands


def _target_context(req: TuneRequest):
    """GPU kernels need their target while the PrimFunc is built (layouts, arch checks)."""
    import contextlib

    if req.device_kind != "cuda":
        return contextlib.nullcontext()
    from tilelang.backend.target import determine_target

    return determine_target(req.compile_args.target, return_object=True)


def _build_one(req: TuneRequest, i: int, config: dict, common: dict) -> Candidate:
    cand = Candidate(i, config)
    try:
        cand.func = req.factory(config)
        cand.ckey = sha256_hex({**common, "program": program_text(cand.func)})
    except Exception as exc:  # one bad config is a record, not the session's problem
        cand.error = f"building the PrimFunc failed: {type(exc).__name__}: {exc}"
    return cand


def entry_key(req: TuneRequest, cands: list[Candidate], machine: dict) -> str:
    """The key of the tuned result: every candidate's IR, the space, settings and machine."""
    tuner = {k: req.tuner.get(k) for k in ("strategy", "max_trials", "max_tuning_s", "seed", "top_k")}
    return sha256_hex(
        {
            "format": FORMAT_VERSION,
            "candidates": [c.ckey or c.error for c in cands],
            "configs": req.configs,
            "compile": req.compile_args.canonical(),
            "profile": req.profile_args.canonical(),
            "tuner": tuner,
            "machine": machine,
        }
    )


class Tuner:
    """Runs the search for one request with the session's pools and cache."""

    def __init__(
        self,
        req: TuneRequest,
        cache: Any,
        pools: Any,
        reuse_records: bool = True,
        progress: Callable[[str], None] | None = None,
    ):
        import cloudpickle

        self.req = req
        self.cache = cache
        self.pools = pools
        self.reuse_records = reuse_records
        self.progress = progress or (lambda msg: None)
        self.profile_blob = cloudpickle.dumps(req.profile_args)
        self.records: dict[int, dict] = {}
        self.ref_samples: list[float] = []
        self.lock_path = cache.device_lock_path(req.device)

    # -- the search ----------------------------------------------------------------

    def run(self, cands: list[Candidate], key: str) -> tuple[Any, list[dict]]:
        """Search, confirm the top-k, and return (AutotuneResult, records)."""
        from .search import Search

        t0 = time.perf_counter()
        self.t0_wall = time.time()
        tuner = self.req.tuner
        search = Search(self.req.configs, tuner["strategy"], tuner["max_trials"], tuner["seed"])
        deadline = t0 + tuner["max_tuning_s"] if tuner["max_tuning_s"] else None
        self._pipeline(cands, search, deadline)
        t_search = time.perf_counter()
        records = [self.records[i] for i in sorted(self.records)]
        passed = sorted((r for r in records if r["status"] == OK), key=lambda r: r["median_ms"])
        if not passed:
            raise TuneError(self._failure_message(records))
        winner, samples, ref_samples, info = self._confirm(cands, to_confirm(passed, tuner["top_k"]))
        # Where the time went: for the benchmarks and the HTML report.
        self.phases = {
            "search_s": t_search - t0,
            "confirm_s": time.perf_counter() - t_search,
            "compile_cpu_s": sum(r.get("compile_s") or 0.0 for r in records if not r.get("reused")),
            "bench_s": sum(r.get("bench_s") or 0.0 for r in records if not r.get("reused")),
            "compiled": sum(1 for r in records if r.get("compile_s") and not r.get("reused")),
            "reused": sum(1 for r in records if r.get("reused")),
            "workers": self.pools.n_workers,
            **self._timeline(records),
        }
        result = self._result(
            cands[winner["index"]], winner, samples, ref_samples, info, records, key, time.perf_counter() - t0
        )
        return result, records

    def _timeline(self, records: list[dict]) -> dict:
        """Seconds from the start of the search: first compile started, last compile and last
        timing finished (where the cold path's time goes)."""
        fresh = [r for r in records if not r.get("reused")]
        starts = [r["started_at"] - self.t0_wall for r in fresh if r.get("started_at")]
        compiled = [r["t_compiled"] for r in fresh if r.get("t_compiled") is not None]
        timed = [r["t_timed"] for r in fresh if r.get("t_timed") is not None]
        out = {}
        if starts:
            out["first_compile_start_s"] = min(starts)
        if compiled:
            out["last_compile_end_s"] = max(compiled)
        if timed:
            out["last_timing_end_s"] = max(timed)
        saves = [r["save_s"] for r in fresh if r.get("save_s") is not None]
        if saves:
            out["save_cpu_s"] = sum(saves)
        return out

    def _pipeline(self, cands: list[Candidate], search: Any, deadline: float | None) -> None:
        compile_pool = self.pools.compile_pool()
        bench_pool = self.pools.bench_pool(self.req.device)
        compiling: dict[cf.Future, int] = {}
        timing: dict[cf.Future, int] = {}
        depth = self.pools.n_workers + 1
        while True:
            if deadline is None or time.perf_counter() < deadline:
                results = {i: r.get("median_ms") if r["status"] == OK else None for i, r in self.records.items()}
                pending = set(compiling.values()) | set(timing.values())
                for i in search.propose(results, pending, depth - len(compiling)):
                    self._start(cands[i], compile_pool, bench_pool, compiling, timing)
            if not compiling and not timing:
                # Reused records finish instantly: go on while the search has configs left.
                if (deadline is not None and time.perf_counter() >= deadline) or not self._more(search):
                    return
                continue
            done, _ = cf.wait(list(compiling) + list(timing), return_when=cf.FIRST_COMPLETED)
            for fut in done:
                if fut in compiling:
                    self._compiled(cands[compiling.pop(fut)], fut, bench_pool, timing)
                else:
                    self._timed(cands[timing.pop(fut)], fut)

    def _more(self, search: Any) -> bool:
        results = {i: None for i in self.records}
        return bool(search.propose(results, set(), 1))

    def _start(self, cand: Candidate, compile_pool: Any, bench_pool: Any, compiling: dict, timing: dict) -> None:
        if cand.error:
            self._record(cand, {"status": "build_error", "reason": cand.error}, store=False)
            return
        if self.reuse_records:
            old = self.cache.read_record(cand.ckey)
            # Verdicts about the kernel itself stand; compile errors, crashes and timeouts may
            # come from the environment, so they are tried again. A pass needs its kernel.
            if old and (old.get("status") in REUSABLE_FAILURES or (old.get("status") == OK and self._kernel_ok(cand))):
                self._record(cand, {**old, "reused": True}, store=False)
                return
        if self._kernel_ok(cand):
            self._submit_bench(cand, bench_pool, timing, compile_s=0.0)
            return
        fut = compile_pool.schedule(
            _compile_entry,
            (pickle.dumps(cand.func), self.req.compile_args, str(self.cache.kernel_dir(cand.ckey))),
            timeout=self.req.tuner["compile_timeout"],
        )
        compiling[fut] = cand.index

    def _kernel_ok(self, cand: Candidate) -> bool:
        from .param import KERNEL_FILES, verify_manifest

        try:
            verify_manifest(self.cache.kernel_dir(cand.ckey), KERNEL_FILES)
            return True
        except Exception:
            return False

    def _compiled(self, cand: Candidate, fut: cf.Future, bench_pool: Any, timing: dict) -> None:
        try:
            info = fut.result()
        except Exception as exc:
            status, reason = _classify(exc, "compile", self.req.tuner["compile_timeout"])
            self._record(cand, {"status": status, "reason": reason})
            return
        self._submit_bench(cand, bench_pool, timing, compile_s=info["compile_s"], pid=info["pid"],
                           save_s=info.get("save_s"), started_at=info.get("started_at"),
                           t_compiled=time.time() - self.t0_wall)

    def _submit_bench(self, cand: Candidate, bench_pool: Any, timing: dict, **extra: Any) -> None:
        from .bench import BenchJob, check_and_time

        factor = self.req.tuner["early_stop_factor"]
        best = min((r["median_ms"] for r in self.records.values() if r["status"] == OK), default=None)
        job = BenchJob(
            key=self._input_key(),
            kernel_dir=str(self.cache.kernel_dir(cand.ckey)),
            compile_args=self.req.compile_args,
            profile_blob=self.profile_blob,
            device=self.req.device,
            lock_path=self.lock_path,
            stop_above_ms=factor * best if factor and best is not None else None,
        )
        fut = bench_pool.schedule(check_and_time, (job,), timeout=self.req.profile_args.timeout)
        fut.extra = extra
        timing[fut] = cand.index

    def _input_key(self) -> str:
        return sha256_hex(
            {"node": self.req.nodeid, "program": self.req.program_name, "profile": self.req.profile_args.canonical()}
        )

    def _timed(self, cand: Candidate, fut: Any) -> None:
        extra = {**getattr(fut, "extra", {}), "t_timed": time.time() - self.t0_wall}
        try:
            out = fut.result()
        except Exception as exc:
            status, reason = _classify(exc, "check/timing", self.req.profile_args.timeout)
            self._record(cand, {"status": status, "reason": reason, **extra})
            return
        if out.get("ref_samples") and not self.ref_samples:
            self.ref_samples = out["ref_samples"]
        out.pop("ref_samples", None)
        self._record(cand, {**out, **extra})

    def _record(self, cand: Candidate, fields: dict, store: bool = True) -> None:
        record = {"ckey": cand.ckey, "index": cand.index, "config": cand.config, "reason": None, **fields}
        record["index"], record["config"] = cand.index, cand.config
        self.records[cand.index] = record
        if store and cand.ckey:
            self.cache.write_record(record)
        n_ok = sum(r["status"] == OK for r in self.records.values())
        best = min((r["median_ms"] for r in self.records.values() if r["status"] == OK), default=None)
        self.progress(
            f"{len(self.records)}/{len(self.req.configs)} measured, {n_ok} passed"
            + (f", best {best:.4g} ms" if best is not None else "")
        )

    # -- confirmation and result ---------------------------------------------------

    def _confirm(self, cands: list[Candidate], top: list[dict]) -> tuple[dict, list, list, dict]:
        from .bench import BenchJob, confirm

        jobs = [
            BenchJob(
                key=self._input_key(),
                kernel_dir=str(self.cache.kernel_dir(r["ckey"])),
                compile_args=self.req.compile_args,
                profile_blob=self.profile_blob,
                device=self.req.device,
                lock_path=self.lock_path,
            )
            for r in top
        ]
        timeout = self.req.profile_args.timeout * (len(jobs) + 1)
        try:
            out = self.pools.bench_pool(self.req.device).schedule(confirm, (jobs,), timeout=timeout).result()
        except Exception as exc:
            # Keep the streaming measurements when the confirmation itself fails.
            best = top[0]
            return best, best.get("samples", []), self.ref_samples, {"confirm_error": str(exc)}
        medians = {r["ckey"]: statistics.median(out["samples"][job.kernel_dir]) for r, job in zip(top, jobs)}
        for r in top:
            r["confirm_median_ms"] = medians[r["ckey"]]
        winner = min(top, key=lambda r: medians[r["ckey"]])
        job = jobs[top.index(winner)]
        ref = out["samples"].get("ref") or self.ref_samples
        return winner, out["samples"][job.kernel_dir], ref, out.get("device_info", {})

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
    ) -> Any:
        from .param import AutotuneResult, load_kernel

        kernel = load_kernel(self.cache.kernel_dir(winner["ckey"]), self.req.compile_args, cand.func)
        record = {
            "key": key,
            "nodeid": self.req.nodeid,
            "program": self.req.program_name,
            "device": self.req.device,
            "device_info": info,
            "tuned_at": time.time(),
            "phases": getattr(self, "phases", {}),
            "tuning_s": tuning_s,
            "candidates": records,
            "compile_args": self.req.compile_args.canonical(),
        }
        return AutotuneResult(
            latency=statistics.median(samples),
            config=cand.config,
            ref_latency=statistics.median(ref_samples) if ref_samples else None,
            libcode=kernel.get_kernel_source(),
            func=cand.func,
            kernel=kernel,
            samples=tuple(samples),
            ref_samples=tuple(ref_samples),
            record=record,
        )

    def _failure_message(self, records: list[dict]) -> str:
        lines = [
            f"no candidate passed: {len(records)} of {len(self.req.configs)} configs measured for "
            f"{self.req.program_name}"
        ]
        for r in records:
            lines.append(f"  {canonical_json(r['config'])}: {r['status']}: {r.get('reason')}")
        return "\n".join(lines)


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


def _compile_entry(func_blob: bytes, compile_args: Any, out_dir: str) -> dict:
    from .workers import compile_candidate

    return compile_candidate(func_blob, compile_args, out_dir)


def _classify(exc: BaseException, stage: str, limit: float) -> tuple[str, str]:
    """Turn a pool exception into (status, reason)."""
    name = type(exc).__name__
    if isinstance(exc, cf.TimeoutError) or name == "TimeoutError":
        return "timeout", f"{stage} exceeded {limit:g} s and was killed"
    if name == "ProcessExpired":
        code = getattr(exc, "exitcode", None)
        sig = ""
        if code is not None and code < 0:
            import signal

            try:
                sig = f" ({signal.Signals(-code).name})"
            except ValueError:
                pass
        if code == 70:  # bench.CUDA_FAULT_EXIT
            return "crash", f"{stage}: CUDA fault (e.g. illegal memory access); the timing worker was restarted"
        return "crash", f"{stage} worker died with exit code {code}{sig}"
    status = "compile_error" if stage == "compile" else "error"
    return status, f"{stage} failed: {name}: {exc}"


def measure_again(pools: Any, cache: Any, req: TuneRequest, entry: Path, clock: str = "wall") -> dict:
    """Re-time a stored winner (and ref_prog) in this run: the gate never compares stored numbers.

    ``clock="cpu"`` times a CPU device by CPU time (see ``bench.time_fn``).
    """
    import cloudpickle

    from .bench import BenchJob, confirm

    job = BenchJob(
        key=sha256_hex({"node": req.nodeid, "program": req.program_name, "remeasure": True}),
        kernel_dir=str(entry),
        compile_args=req.compile_args,
        profile_blob=cloudpickle.dumps(req.profile_args),
        device=req.device,
        lock_path=cache.device_lock_path(req.device),
    )
    out = pools.bench_pool(req.device).schedule(confirm, ([job], 5, True, clock),
                                                timeout=req.profile_args.timeout * 2).result()
    return {
        "samples": out["samples"][str(entry)],
        "loops": out.get("loops", {}).get(str(entry)),
        "ref_samples": out["samples"].get("ref", []),
        "device_info": out.get("device_info", {}),
    }
