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

from .failures import REF_PROG, SUPPLY_PROG, definition, reason
from .key import FORMAT_VERSION, canonical_json, program_text, sha256_hex

OK = "ok"
# Verdicts about the kernel itself, keyed on everything they depend on (its IR, the reference and
# the code it reaches, the inputs, the machine). Early stops and timeouts come from one noisy
# moment: a later search re-times them (their kernel is cached, so no compile).
REUSABLE_FAILURES = ("mismatch",)


class TuneError(Exception):
    """Tuning produced no usable kernel; the message says why, per config."""


@dataclass
class TuneRequest:
    """Everything one fixture call asks for."""

    nodeid: str
    program_name: str
    program: Any  # programs.Program
    configs: list[dict]
    compile_args: Any  # param.CompileArgs, target resolved (out_idx completed by the builds of eager kernels)
    profile_args: Any  # param.ProfileArgs
    tuner: dict  # strategy, max_trials, max_tuning_s, seed, early_stop_factor, top_k, compile_timeout
    device: str  # "cpu" or "cuda:N"
    call: int = 1  # which fixture call of the test this is (1, 2, ...)
    mode: str | None = None  # "lazy" | "eager" | "plain", once a config was built
    built_here: str | None = None  # why the configs were built in the test process, if they were
    shipped: tuple | None = None  # (spec_id, spec blob, env, sys.path) for the workers' builds

    @property
    def device_kind(self) -> str:
        return "cpu" if self.device == "cpu" else "cuda"

    def factory(self, config: dict) -> Any:
        """Build ``config``'s PrimFunc in this process."""
        return self.program.factory(config)


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
    func_blob: bytes | None = None
    ir_sha: str | None = None
    error: dict | None = None  # failures.describe() of the build
    compile_args: Any = None  # the request's, with the config's own "pass_configs" merged in

    source: Any = None  # what the compile job builds from (see workers.compile_candidate)


def build_candidates(req: TuneRequest, machine: dict, pools: Any = None) -> list[Candidate]:
    """Build each config's PrimFunc and key it.

    The builds run in the compile workers (it is the user's code, with configs that may be
    invalid: a crash there is a record on that config). A failure that every config shares
    (the call, not a config) fails the test once, before anything compiles.
    """
    from .failures import BUILD, describe, reason, same_failure

    problem = req.program.check_call(req.configs)
    if problem:
        raise TuneError(f"{problem} (nothing was built or compiled)")
    results = _build_in_workers(req, pools) if pools is not None else None
    if results is not None and not _same_here(req, results):
        # The program builds differently in a worker (no GPU visible there: it asks the device at
        # build time, e.g. torch.cuda.get_device_capability): build every config here instead.
        req.built_here = "the program builds a different kernel where no GPU is visible, so it was built here"
        results = None
    if results is None:
        results = []
        for config in req.configs:
            try:
                built = req.program.spec.build(config)
            except Exception as exc:
                results.append({"error": describe(exc, BUILD, req.program.spec.target)})
                continue
            text = program_text(built.func)
            results.append({"ir_sha": sha256_hex(text), "func_blob": pickle.dumps(built.func), "mode": built.mode,
                            "out_idx": built.out_idx, "symbolic": built.symbolic,
                            "n_params": len(built.func.params)})
    failures = [r["error"] for r in results if "error" in r]
    if len(failures) == len(results) and same_failure(failures):
        raise TuneError(f"every config failed the same way, so the program or the call is at fault: "
                        f"{reason(failures[0])}\n{_indent(failures[0].get('message', ''))}")
    complete_request(req, results)
    _check_out_idx(req, results)
    common = {
        "format": FORMAT_VERSION,
        "profile": req.profile_args.canonical(),
        "machine": machine,
    }
    cands = []
    for i, (config, res) in enumerate(zip(req.configs, results)):
        cand = Candidate(i, config, compile_args=_candidate_compile_args(req, config))
        if "error" in res:
            cand.error = res["error"]
        else:
            cand.func_blob, cand.ir_sha = res.get("func_blob"), res["ir_sha"]
            if cand.func_blob is not None:
                cand.source = cand.func_blob
            else:
                spec_id, blob, env, path = req.shipped
                cand.source = (spec_id, blob, config, env, path, res["ir_sha"])
            cand.ckey = sha256_hex({**common, "compile": cand.compile_args.canonical(), "program": cand.ir_sha})
        cands.append(cand)
    return cands


def _same_here(req: TuneRequest, results: list[dict]) -> bool:
    """Whether this process builds the first successfully built config into the same IR."""
    first = next(((c, r) for c, r in zip(req.configs, results) if "error" not in r), None)
    if first is None:
        return True
    try:
        built = req.program.spec.build(first[0])
    except Exception:
        return True  # let the records say why; the result's own check runs later
    return sha256_hex(program_text(built.func)) == first[1]["ir_sha"]


def _check_out_idx(req: TuneRequest, results: list[dict]) -> None:
    """``out_idx`` must name parameters of the PrimFunc: said once, before anything compiles."""
    out_idx = req.compile_args.out_idx
    indices = [] if out_idx is None else [out_idx] if isinstance(out_idx, int) else list(out_idx)
    for r in results:
        n = r.get("n_params")
        if n is None or "error" in r:
            continue
        bad = [i for i in indices if not -n <= i < n]
        if bad:
            raise TuneError(f"out_idx={out_idx} is out of range: {req.program_name}'s PrimFunc has {n} parameters "
                            f"(indices 0..{n - 1}, or -{n}..-1); nothing was compiled")
        return


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines()[:12])


def _build_in_workers(req: TuneRequest, pools: Any) -> list[dict] | None:
    """Every config's build result from the compile workers; None where the program cannot be
    shipped to them (then the test process builds, as a last resort)."""
    import os
    import sys

    from .failures import BUILD
    from .programs import dumps_spec

    try:
        blob = dumps_spec(req.program.spec)
    except Exception:
        return None
    spec_id = sha256_hex(blob)
    env, path = dict(os.environ), list(sys.path)
    req.shipped = (spec_id, blob, env, path)
    pool = pools.compile_pool()
    futures = [pool.schedule(_build_entry, (spec_id, blob, config, env, path), timeout=req.tuner["compile_timeout"])
               for config in req.configs]
    results = []
    for fut in futures:
        try:
            out = fut.result()
        except Exception as exc:
            status, why = _classify(exc, "build", req.tuner["compile_timeout"])
            out = {"error": {"stage": BUILD, "type": status, "message": why, "where": None, "tail": ""}}
        if "spec_error" in out:
            for other in futures:
                other.cancel()
            return None
        results.append(out)
    return results


def _build_entry(spec_id: str, blob: bytes, config: dict, env: dict, path: list[str]) -> dict:
    from .workers import build_candidate

    return build_candidate(spec_id, blob, config, env, path)


def complete_request(req: TuneRequest, results: list[dict]) -> None:
    """What only a build tells: an eager kernel's outputs (T.empty) and symbolic shapes."""
    from dataclasses import replace

    from .programs import ExampleInputs, tensor_args

    ok = [r for r in results if "error" not in r]
    if ok:
        req.mode = ok[0]["mode"]
    if not ok or ok[0]["mode"] != "eager":
        return
    outs = {tuple(r["out_idx"]) if r["out_idx"] is not None else None for r in ok}
    if len(outs) > 1:
        raise TuneError(f"the configs change the outputs T.empty() declares ({sorted(map(str, outs))}); "
                        f"every config must return the same tensors")
    out_idx = ok[0]["out_idx"]
    if out_idx is not None:
        req.compile_args = replace(req.compile_args, out_idx=list(out_idx))
    if req.profile_args.supply_prog is None and any(r["symbolic"] for r in ok):
        # TileLang cannot make random inputs of a symbolic shape: use the test's example tensors.
        examples = tensor_args(*req.program.example_args)
        if examples:
            req.profile_args = replace(req.profile_args, supply_prog=ExampleInputs(examples))


def _candidate_compile_args(req: TuneRequest, config: dict) -> Any:
    from dataclasses import replace

    from .programs import PASS_CONFIGS

    own = config.get(PASS_CONFIGS)
    if not own:
        return req.compile_args
    return replace(req.compile_args, pass_configs={**(req.compile_args.pass_configs or {}), **own})


def entry_key(req: TuneRequest, cands: list[Candidate], machine: dict) -> str:
    """The key of the tuned result: every candidate's IR, the space, settings and machine."""
    tuner = {k: req.tuner.get(k) for k in ("strategy", "max_trials", "max_tuning_s", "seed", "top_k")}
    return sha256_hex(
        {
            "format": FORMAT_VERSION,
            "candidates": [c.ckey or canonical_json(c.error) for c in cands],
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
        self.on_device: bool | None = None  # compile where the GPU is visible (None: not known yet)
        self.device_retries_failed = 0
        self.notes: list[str] = []
        self.phases: dict = {}

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
            try:
                for fut in done:
                    if fut in compiling:
                        self._compiled(cands[compiling.pop(fut)], fut, bench_pool, timing, compiling)
                    else:
                        self._timed(cands[timing.pop(fut)], fut)
            except TuneError:
                for fut in [*compiling, *timing]:
                    fut.cancel()
                raise

    def _more(self, search: Any) -> bool:
        results = {i: None for i in self.records}
        return bool(search.propose(results, set(), 1))

    def _start(self, cand: Candidate, compile_pool: Any, bench_pool: Any, compiling: dict, timing: dict) -> None:
        if cand.error:
            self._record(cand, {"status": "build_error", "reason": reason(cand.error), "failure": cand.error},
                         store=False)
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
        if self.on_device:
            compile_pool = self.pools.device_compile_pool(self.req.device)
        self._schedule_compile(cand, compile_pool, compiling)

    def _schedule_compile(self, cand: Candidate, pool: Any, compiling: dict, retry: bool = False) -> None:
        fut = pool.schedule(
            _compile_entry,
            (cand.source, cand.compile_args, str(self.cache.kernel_dir(cand.ckey))),
            timeout=self.req.tuner["compile_timeout"],
        )
        fut.retry = retry
        compiling[fut] = cand.index

    def _kernel_ok(self, cand: Candidate) -> bool:
        from .param import KERNEL_FILES, verify_manifest

        try:
            verify_manifest(self.cache.kernel_dir(cand.ckey), KERNEL_FILES)
            return True
        except Exception:
            return False

    def _compiled(self, cand: Candidate, fut: cf.Future, bench_pool: Any, timing: dict, compiling: dict) -> None:
        retried = getattr(fut, "retry", False)
        try:
            info = fut.result()
        except Exception as exc:
            status, why = _classify(exc, "compile", self.req.tuner["compile_timeout"])
            self._record(cand, {"status": status, "reason": why})
            return
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
            self._record(cand, {"status": "compile_error", "reason": reason(failure), "failure": failure})
            return
        self._submit_bench(cand, bench_pool, timing, compile_s=info["compile_s"], pid=info["pid"],
                           save_s=info.get("save_s"), started_at=info.get("started_at"),
                           t_compiled=time.time() - self.t0_wall)

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

    def _submit_bench(self, cand: Candidate, bench_pool: Any, timing: dict, **extra: Any) -> None:
        from .bench import BenchJob, check_and_time

        factor = self.req.tuner["early_stop_factor"]
        best = min((r["median_ms"] for r in self.records.values() if r["status"] == OK), default=None)
        job = BenchJob(
            key=self._input_key(),
            kernel_dir=str(self.cache.kernel_dir(cand.ckey)),
            compile_args=cand.compile_args,
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
            status, why = _classify(exc, "check/timing", self.req.profile_args.timeout)
            self._record(cand, {"status": status, "reason": why, **extra})
            return
        failure = out.get("failure")
        if failure and failure.get("stage") in (REF_PROG, SUPPLY_PROG):
            # The reference's (or the inputs') fault, not this config's: stop, say it once.
            raise TuneError(f"{reason(failure)}\n{_indent(failure.get('message', ''))}\n"
                            f"(the reference or the inputs failed, not a candidate; nothing else was measured)")
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
                compile_args=cands[r["index"]].compile_args,
                profile_blob=self.profile_blob,
                device=self.req.device,
                lock_path=self.lock_path,
            )
            for r in top
        ]
        timeout = self.req.profile_args.timeout * (len(jobs) + 1)
        try:
            out = self.pools.bench_pool(self.req.device).schedule(confirm, (jobs,), timeout=timeout).result()
            if "failure" in out:
                raise RuntimeError(reason(out["failure"]))
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

        func = self.req.program.spec.build(cand.config).func  # here: the winner as this process builds it
        if sha256_hex(program_text(func)) != cand.ir_sha:
            raise TuneError(f"the winning config {cand.config} builds a different kernel in this process than "
                            f"in a fresh worker process: does the program read state the test changes at run "
                            f"time (a module global, sys.modules)? Build-time inputs must come from arguments, "
                            f"files or environment variables")
        kernel = load_kernel(self.cache.kernel_dir(winner["ckey"]), cand.compile_args, func)
        record = {
            "key": key,
            "nodeid": self.req.nodeid,
            "program": self.req.program_name,
            "device": self.req.device,
            "device_info": info,
            "tuned_at": time.time(),
            "phases": self.phases,
            "notes": self.notes,
            "tuning_s": tuning_s,
            "candidates": records,
            "compile_args": cand.compile_args.canonical(),
            "winner_ir_sha": cand.ir_sha,
            "built_here": self.req.built_here,
        }
        return AutotuneResult(
            latency=statistics.median(samples),
            config=cand.config,
            ref_latency=statistics.median(ref_samples) if ref_samples else None,
            libcode=kernel.get_kernel_source(),
            func=func,
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


def _compile_entry(source: Any, compile_args: Any, out_dir: str) -> dict:
    from .workers import compile_candidate

    return compile_candidate(source, compile_args, out_dir)


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
    if "failure" in out:
        raise RuntimeError(reason(out["failure"]))
    return {
        "samples": out["samples"][str(entry)],
        "loops": out.get("loops", {}).get(str(entry)),
        "ref_samples": out["samples"].get("ref", []),
        "device_info": out.get("device_info", {}),
    }
