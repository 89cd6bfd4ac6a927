"""The run's state and what one ``autotune(...)`` call does.

``TuneSession`` lives in ``config.stash`` for the whole run: options, the cache,
the worker pools (started on the first tuning, closed at unconfigure) and the
machine fingerprints. ``TuneSession.tune`` is the fixture's body.
"""

from __future__ import annotations

import copy
import json
import os
import re
import statistics
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .model import CallFailed, TargetLike, TargetUnavailable, TuneWarning, Warn
from .settings import (
    COMPILE_FIELDS,
    PROFILE_FIELDS,
    TuneSettings,
    get_option,
    resolve_tuner,
    target_kind,
    wants_fresh_numbers,
)
from .stash import CACHE_HIT, CACHE_MISS, CACHE_RETUNE

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import pytest

    from .engine.programs import Program
    from .engine.workers import Pools
    from .model import Candidate, CandidateRecord, Outcome, TuneRequest
    from .param import AutotuneResult, CompileArgs
    from .store.local import Store


class TuneSession:
    """Options, cache, pools and per-test results of one pytest run (one per xdist worker)."""

    def __init__(self, config: pytest.Config, warn: Warn):
        self.config = config
        self.warn = warn  # the plugin issues the warnings of the session, its store and its rows
        self.cache_dir = get_option(config, "tl_cache_dir")
        self.retune = bool(get_option(config, "tl_retune"))
        self.no_tune = bool(get_option(config, "tl_no_tune"))
        self.n_workers = get_option(config, "tl_workers")
        self.intercept = bool(get_option(config, "tl_intercept"))  # TileLang's tuner calls in tests served here
        workerinput = getattr(config, "workerinput", {})
        # Under xdist the controller's start time, so workers agree on "tuned in this run".
        self.started = float(workerinput.get("tl_session_start", time.time()))
        self._cache = None
        self._pools = None
        self._machine: dict[str, dict] = {}
        self._device_compiler: str | None = None
        self.baseline: tuple[str, dict] | None = None  # (path, the baseline file), read by the plugin on first use
        self.prestarted = False
        self.primed_ahead = False  # the fork server writes the remembered PCHs as it starts
        from .store.remote import open_store

        # The fleet's shared store behind the local cache (or none); options checked at start-up.
        self.store = open_store(get_option(config, "tl_store"), warn, ttl_days=get_option(config, "tl_store_ttl"),
                                timeout=get_option(config, "tl_store_timeout"),
                                readonly=bool(get_option(config, "tl_store_readonly")))

    @property
    def cache(self) -> Store:
        if self._cache is None:
            from .store.local import Store

            self._cache = Store(self.cache_dir, remote_record=self.store.get_record, make_result=_make_result,
                                warn=self.warn)
        return self._cache

    @property
    def pools(self) -> Pools:
        if self._pools is None:
            from .engine.workers import Pools

            self._pools = Pools(self.n_workers, self.device_compiler, pch_book=self.pch_book)
            self._pools.primed_ahead = self.primed_ahead
        return self._pools

    @property
    def pch_book(self) -> str:
        """Where NVRTC header prefixes are remembered (see device_compile.prime), by absolute path
        (the workers do not share this process's working directory): beside the results, and in
        the user's default cache directory where the results live elsewhere (a CI job's own cache
        directory on a runner that stays), so a machine that tuned before writes the PCH ahead
        whatever cache directory a run uses; joined by ``os.pathsep``."""
        from .engine.device_compile import BOOK_DIR
        from .settings import user_cache_dir

        books = [os.path.abspath(os.path.join(d, BOOK_DIR)) for d in (self.cache_dir, user_cache_dir())]
        return os.pathsep.join(dict.fromkeys(books))

    def machine(self, kind: str) -> dict:
        if kind not in self._machine:
            from .key import machine_fingerprint

            self._machine[kind] = machine_fingerprint(kind)
            if kind == "cuda":  # the device compiler makes the kernel: part of every CUDA key
                self._machine[kind]["device_compiler"] = self.device_compiler
        return self._machine[kind]

    @property
    def device_compiler(self) -> str:
        """``nvcc`` or ``nvrtc``: what compiles CUDA device code (option ``tl_device_compiler``)."""
        if self._device_compiler is None:
            from .engine.device_compile import resolve

            self._device_compiler = resolve(get_option(self.config, "tl_device_compiler"))
        return self._device_compiler

    def prestart(self) -> None:
        """Autotuned tests are coming: start the workers' fork server now, so it imports TileLang
        while this process imports the tests, and the timing worker of the likely device, which
        checks every hit (under --tl-no-tune too). On a GPU machine this process's CUDA driver
        starts now too, in the background, and where the cache directory remembers NVRTC header
        prefixes the fork server writes their PCHs as it starts (``workers.prestart``): the first
        tuning's compiles then find them written instead of waiting for one of them.

        With a baseline in play every test re-times its kernel, so the compile workers start now too.
        """
        if self.prestarted:
            return
        self.prestarted = True
        from .engine.workers import gpus_present, init_cuda_driver, prestart

        gpus = gpus_present()
        if gpus:
            init_cuda_driver()
        gate = wants_fresh_numbers(self.config)
        # The option's choice, not resolved here (that imports TileLang): nvcc never needs a PCH.
        nvrtc_may = gpus and not self.no_tune and get_option(self.config, "tl_device_compiler") != "nvcc"
        self.primed_ahead = prestart(pch_book=self.pch_book if nvrtc_may else None, n_workers=self.n_workers)
        self.pools.warm_up(self._likely_devices(), compile=gate and not self.no_tune)

    def _likely_devices(self) -> list[str]:
        """The devices a ``target="auto"`` test would time on (this process's GPUs, else the CPU)."""
        import torch

        if torch.cuda.is_available():
            return [f"cuda:{i}" for i in _own_share(0, get_option(self.config, "tl_gpus"))]
        return ["cpu"]

    def close(self) -> None:
        if self._pools is not None:
            self._pools.close()
        if self._cache is not None:
            self._cache.close()

    # -- the fixture's body --------------------------------------------------------

    def tune(self, item: pytest.Item, settings: TuneSettings, program: object, args: tuple,
             kwargs: dict) -> AutotuneResult:
        """Return the tuned ``AutotuneResult`` for ``program(*args, **kwargs, **config)``.

        Raises ``CallFailed`` when the call fails the test, ``TargetUnavailable`` when this
        machine cannot run its target (the plugin fails or skips the test)."""
        from .engine import programs
        from .model import TuneError

        t0 = time.perf_counter()
        try:
            prog = programs.resolve(program, args, kwargs)
        except programs.ProgramError as exc:
            error = f"{item.nodeid}: autotune(program=...): {exc}"
        else:
            error = None
        if error:
            raise CallFailed(error)
        req = self._request(item, settings, prog, args, kwargs)
        if req.tuner["max_tuning_s"]:  # what keys a tuning whose builds the budget cut (key.budget_key)
            from .key import args_identity, program_identity

            req.identity = {"program": program_identity(program), "args": args_identity(args, kwargs)}
        from .engine.tilelang_key import of_call

        req.tilelang = of_call(program, args, kwargs)  # noted in the entry, for `cache export`
        try:
            outcome, error = self._tune(req, self._fast_key(req, program, args, kwargs)), None
        except TuneError as exc:
            error, records = f"{item.nodeid}: {exc}", exc.records
        if error:
            raise CallFailed(error, request=req, records=records)
        if outcome.cache == CACHE_HIT:  # an entry stored before, or by another test: it answers this key too
            self.cache.note_tilelang(outcome.key, _tilelang_note(req, outcome.result))
        measured = self._remeasure(req, outcome)  # a gate compares this run's numbers, never stored ones
        outcome.tuning_s = time.perf_counter() - t0  # what this run spent, a hit included
        from .report.rows import record_outcome

        quarantined = self.cache.quarantined.get(outcome.key) if outcome.key else None
        row = record_outcome(item, req, outcome, self.machine(req.device_kind), quarantined, self.warn)
        row["measured"] = measured
        from .engine.programs import user_kernel

        result = outcome.result
        return replace(result, kernel=user_kernel(req.program, req.mode, result.kernel, result.config or {}))

    def _request(self, item: pytest.Item, settings: TuneSettings, prog: Program, args: tuple,
                 kwargs: dict) -> TuneRequest:
        from .engine.programs import evaluate_configs
        from .model import TuneRequest
        from .param import CompileArgs, ProfileArgs
        from .settings import SettingsError, validate_configs

        configs = settings.tuner["configs"] if "configs" in settings.given else prog.configs
        try:
            configs, error = validate_configs(evaluate_configs(configs, args, kwargs)), None
        except SettingsError as exc:
            error = f"{item.nodeid}: @pytest.mark.autotune: {exc}"
        if error:
            raise CallFailed(error)
        if not configs:
            raise CallFailed(f"{item.nodeid}: @pytest.mark.autotune: no configs: pass configs=[...] to the marker "
                             f"(or use a @tilelang.autotune function that has them)")
        # Deep copies: the marker's lists and dicts are shared by every call of this test.
        compile_kwargs = copy.deepcopy({**prog.compile_defaults, **settings.compile})
        profile_kwargs = {**prog.profile_defaults, **settings.profile}
        compile_args = CompileArgs(**{k: v for k, v in compile_kwargs.items() if k in COMPILE_FIELDS})
        profile_args = ProfileArgs(**{k: v for k, v in profile_kwargs.items() if k in PROFILE_FIELDS})
        compile_args, devices = _resolve_target(item, compile_args, get_option(self.config, "tl_gpus"))
        prog.spec.device_target = compile_args.target
        return TuneRequest(nodeid=item.nodeid, program_name=prog.name, program=prog, configs=configs,
                           compile_args=compile_args, profile_args=profile_args,
                           tuner=resolve_tuner(dict(settings.tuner), len(configs), settings.given,
                                               "cpu" if devices[0] == "cpu" else "cuda"),
                           device=devices[0], devices=tuple(devices))

    def _fast_key(self, req: TuneRequest, program: Callable[..., object], args: tuple, kwargs: dict) -> str:
        """A key that needs no PrimFunc: the program (its bound values included), its arguments
        and the settings. It only finds the IR-based key stored before, while the files the
        builds read are unchanged (``Store.read_index``)."""
        from .key import args_identity, fast_key, program_identity

        return fast_key(program_identity(program), args_identity(args, kwargs), req.configs,
                        req.compile_args.canonical(), req.profile_args.canonical(), req.tuner,
                        self.machine(req.device_kind))

    def _tune(self, req: TuneRequest, fast: str | None = None) -> Outcome:

        t0 = time.perf_counter()
        machine = self.machine(req.device_kind)
        stale = None
        if fast and not self.retune:
            # Warm path: the stored key of this exact program, arguments and project source,
            # used only once the winner, built again, is the kernel stored (an edit outside the
            # project, an environment variable read at build time, a changed dependency) and
            # passes today's check.
            key = self.cache.read_index(fast)
            result, stale = self._fast_hit(req, self.cache.entry(key)) if key else (None, None)
            if result is not None and stale is None:
                return _hit(result, key)
        outcome = self._tune_ir(req, machine, t0, stale)
        if fast and req.reads is not None:
            self.cache.write_index(fast, outcome.key, req.reads)
        return outcome

    def _tune_ir(self, req: TuneRequest, machine: dict, t0: float, stale: str | None = None) -> Outcome:
        """The IR key's stored result (checked), or a tuning. ``stale``: why a stored result of
        this call failed today's check; then every config is measured again (no verdict reused).
        With ``max_tuning_s`` the deadline covers the builds too, and a tuning whose builds the
        budget cut is stored under a budget key (``candidates.budget_key``), looked up before any build."""
        from .engine.candidates import budget_key, build_candidates, entry_key
        from .engine.tuner import Tuner
        from .model import Outcome, TuneError

        if not self.no_tune:
            # Start the workers now: they import TileLang while this process builds the PrimFuncs.
            self.pools.warm_up(req.timing_devices, arch=_cuda_arch(req.compile_args.target))
        # max_tuning_s bounds the whole call: the builds, the search and its compiles.
        deadline = t0 + req.tuner["max_tuning_s"] if req.tuner["max_tuning_s"] else None
        budgeted = budget_key(req, machine) if deadline is not None else None
        if budgeted and not self.retune and stale is None:
            # A tuning this budget cut before every config was built: found without building them,
            # served while its winner still builds into the stored kernel and passes today's check.
            result, stale = self._fast_hit(req, self._entry(budgeted))
            if result is not None and stale is None:
                return _hit(result, budgeted)
        cands = build_candidates(req, machine, self.pools, self.warn, deadline=None if self.no_tune else deadline)
        built_s = time.perf_counter() - t0
        partial = not all(c.built for c in cands)
        key = budgeted if partial else entry_key(req, cands, machine)
        entry = self._entry(key)
        if not self.retune and stale is None:
            # A local miss asks the shared store (a no-op without --tl-store).
            if partial:  # looked up before the builds; what the store sends is checked as that was
                fetched = self.store.fetch(self, req, cands, key, entry)
                result, stale = self._fast_hit(req, entry) if fetched is not None else (None, None)
            else:
                result = self.cache.load(entry, req.compile_args) or self.store.fetch(self, req, cands, key, entry)
                stale = self._stale(req, entry, result) if result is not None else None
            if result is not None and stale is None:
                return _hit(result, key)
        retune = self.retune or stale is not None
        if self.no_tune:
            if stale:
                raise TuneError(f"{stale}; --tl-no-tune forbids tuning it again: run `pytest {req.nodeid}` without "
                                f"--tl-no-tune to tune it against today's reference")
            raise TuneError(f"no stored result for this test (key {key[:12]}) and --tl-no-tune forbids tuning; "
                            f"run `pytest {req.nodeid}` without --tl-no-tune on a machine like this one "
                            f"({machine.get('device')}) to tune it, and keep its cache dir ({self.cache_dir})")
        with self.cache.lock(key), self.store.tuning(self, req, cands, key, entry) as fetched:
            # Another process (or machine) may have tuned this key while we waited for the lock.
            if partial and not retune:  # a budget key's result: while its winner builds into the stored kernel
                result, why = self._fast_hit(req, entry)
            else:
                result = self.cache.load(entry, req.compile_args) or fetched
                if result is not None and retune and result.record.get("tuned_at", 0) < self.started:
                    result = None  # tuned again: only a result of this run (another process's) is served
                why = self._stale(req, entry, result) if result is not None else None
            if result is not None:
                if why is None:
                    return _hit(result, key)
                stale, retune = why, True
            # Verdicts measured against another reference are not reused when the stored winner failed today's.
            tuner = Tuner(req, self.cache, self.pools, reuse_records=not retune, progress=self._progress(req),
                          machine=machine)
            prepare_s = time.perf_counter() - t0  # fast key, PrimFuncs, IR key, lock
            try:
                result, records = tuner.run(cands, key, deadline)
            except TuneError as exc:
                if stale is None:
                    raise
                raise TuneError(f"{stale}; tuned again: {exc}") from None
            result.record.setdefault("phases", {}).update(prepare_s=prepare_s, prepare_built_s=built_s)
            try:
                # A full disk or read-only mount costs the cache, not the test (the store warns once).
                note = _tilelang_note(req, result)
                stored = self.cache.save(result, entry, tilelang=[note] if note else None)
            except OSError as exc:
                stored = False
                self.warn(TuneWarning(f"{req.nodeid}: could not store the tuned result in {entry}: {exc}"))
            if stored:
                self.store.push(key, entry)
                # The kernel as later runs will load it: a broken save shows now, not on the next hit.
                saved = self.cache.load(entry, req.compile_args, quarantine=False, func=result.func)
                result = replace(result, kernel=saved.kernel) if saved is not None else result
        return Outcome(result, CACHE_RETUNE if retune else CACHE_MISS, key, time.perf_counter() - t0, records,
                       stale=stale)

    def _entry(self, key: str) -> Path:
        from .model import TuneError
        from .store.safety import UnsafeCache

        try:
            return self.cache.entry(key)
        except (UnsafeCache, OSError) as exc:
            raise TuneError(f"cache directory refused: {exc}") from None

    def _stale(self, req: TuneRequest, entry: Path, result: AutotuneResult) -> str | None:
        """Why a stored result may not be served: its winner fails today's check (``_check``);
        None when it passes."""
        return self._check(req, entry, result.config, result.record)()

    def _check(self, req: TuneRequest, entry: Path, config: dict, record: dict) -> Callable[[], str | None]:
        """Start checking the winner stored at ``entry`` against today's reference (one kernel
        call and one reference call in the timing worker); returns what waits for the verdict:
        None when it passes, was measured in this run, or nothing checks the output, else why
        not. A reference whose behaviour comes from data (a file, a module's dict, an object's
        attribute) changes while every key stays the same."""
        from .engine.measure import check_stored, checks_output
        from .key import canonical_json

        if record.get("tuned_at", 0) >= self.started or not checks_output(req.profile_args):
            return lambda: None
        verdict = check_stored(self.pools, self.cache, req, entry, config, record)

        def why() -> str | None:
            failed = verdict()
            if failed is None:
                return None
            return f"the stored winner {canonical_json(config)} fails today's check: {failed}"

        return why

    def _fast_hit(self, req: TuneRequest, entry: Path) -> tuple[AutotuneResult | None, str | None]:
        """The result stored at ``entry`` when its winner still builds into the stored kernel, and
        whether it fails today's check: ``(result, None)`` to serve, ``(result, why)`` when stale,
        ``(None, None)`` when it cannot be used (the IR key decides).

        The build runs in the device's timing worker first (the user's code: a crash or a hang
        past ``compile_timeout`` is a failed build, kept as that config's record), then, as the
        cold path builds its winner, here; the check runs meanwhile. Also settles what only a
        build tells (an eager kernel's outputs)."""
        from .engine.candidates import build_winner, complete_request
        from .store.artifacts import read_config
        from .store.manifest import RECORD_PATH, CorruptEntry, verify_entry
        from .store.safety import UnsafeCache

        try:
            record = json.loads((entry / RECORD_PATH).read_text())
            config = read_config(entry)  # as the test gave it: the program builds what it built then
        except (OSError, ValueError, AttributeError):
            return None, None
        stored = record.get("winner_ir_sha")
        if not stored or "error" in (built := build_winner(req, config, self.pools)) or built["ir_sha"] != stored:
            return None, None  # the full path builds every config where a failure is a record
        complete_request(req, [built])
        try:
            verify_entry(entry)  # before the timing worker loads its kernel (load() quarantines a bad one)
        except (CorruptEntry, UnsafeCache, OSError):
            check = None
        else:
            check = self._check(req, entry, config, record)
        try:
            here = req.program.spec.build(config)
        except Exception:
            return None, None
        result = self.cache.load(entry, req.compile_args, func=here.func) if here.ir_sha == stored else None
        if result is None or check is None:
            return None, None
        return result, check()

    def tune_one(self, req: TuneRequest, cand: Candidate,
                 key: str) -> tuple[AutotuneResult, list[CandidateRecord]] | str:
        """Compile, check and time one candidate alone (the shared store's winner) here:
        ``(result, records)``, or why it failed."""
        from .engine.tuner import Tuner
        from .model import TuneError

        # Checked against no reference config: the other machine's check passed it already.
        one = replace(req, configs=[cand.config], reference=None,
                      tuner={**req.tuner, "strategy": "exhaustive", "max_trials": None, "max_tuning_s": None,
                             "top_k": 1})
        self.pools.warm_up(req.timing_devices)
        tuner = Tuner(one, self.cache, self.pools, progress=self._progress(req))
        try:
            return tuner.run([replace(cand, index=0)], key)
        except TuneError as exc:
            return str(exc)

    def _remeasure(self, req: TuneRequest, outcome: Outcome) -> str:
        """Re-time the winner and ref_prog in this run when the gate asks for numbers of this run
        (``gate.fresh_clock``); the engine times it. Replaces ``outcome.result``'s samples and
        medians. Returns where the numbers come from (``gate.measured_label``). A re-timing that
        fails fails the test with the reason: a baseline must not store old numbers marked failed
        (every later gate would skip the row) and a gate must not pass a kernel it could not time.
        """
        from .gate import fresh_clock, measured_label

        clock = fresh_clock(wants_fresh_numbers(self.config), req.device, outcome.cache)
        if clock is None:
            return measured_label(clock, outcome.cache)
        from .engine.measure import measure_again

        error = None
        try:
            out = measure_again(self.pools, self.cache, req, self.cache.entry(outcome.key), clock=clock)
        except Exception as exc:
            why = "--tl-baseline" if get_option(self.config, "tl_baseline") else "--tl-save-baseline"
            error = (f"{req.nodeid}: re-timing {req.program_name} ({outcome.cache}, key {outcome.key[:12]}) in this "
                     f"run for {why} failed: {type(exc).__name__}: {exc}")
        if error:
            raise CallFailed(error, request=req, records=outcome.records)
        samples, ref = list(out["samples"]), list(out["ref_samples"])
        outcome.result = replace(
            outcome.result,
            latency=statistics.median(samples),
            ref_latency=statistics.median(ref) if ref else None,
            samples=tuple(samples),
            ref_samples=tuple(ref),
            # calls per sample of these samples, and what launching one call cost the host (CUDA)
            record={**outcome.result.record, "loops": out.get("loops"), "host_ms": out.get("host_ms")},
        )
        return measured_label(clock, outcome.cache)

    def notice(self, req: TuneRequest, message: str) -> None:
        """A progress line worth printing anywhere (a wait on another machine)."""
        from .report.terminal import progress_line

        progress_line(self.config, req.nodeid, message, notice=True)

    def _progress(self, req: TuneRequest) -> Callable[[str], None]:
        from .report.terminal import progress_line

        return lambda msg: progress_line(self.config, req.nodeid, msg)


def _make_result(**fields: Any) -> AutotuneResult:
    """An ``AutotuneResult`` of a stored entry's fields (for ``Store.load``)."""
    from .param import AutotuneResult

    return AutotuneResult(**fields)


def _tilelang_note(req: TuneRequest, result: AutotuneResult) -> dict | None:
    """The entry's note of TileLang's cache key for this call (``engine.tilelang_key.note``)."""
    from .engine.tilelang_key import note

    return note(req.tilelang, req, result.config, getattr(result.kernel, "execution_backend", None))


def _hit(result: AutotuneResult, key: str) -> Outcome:
    """The outcome of a stored result; ``tune`` sets the time this run spent on it."""
    from .model import Outcome

    return Outcome(result, CACHE_HIT, key, 0.0, result.record.get("candidates", []))


def _resolve_target(item: pytest.Item, compile_args: CompileArgs, gpus: str = "all") -> tuple[CompileArgs, list[str]]:
    """``auto`` becomes cuda with a GPU, else c; a target this machine cannot run is a skip.
    Returns the resolved compile args and the devices to time on, the confirming one first
    (``gpus``: the ``tl_gpus`` option, see :func:`gpu_share`).

    A CUDA target is written out in full (with the device's ``arch``): compile workers run
    with CUDA hidden, and a bare ``"cuda"`` would make TVM guess ``sm_50`` there.
    """
    import torch

    target = compile_args.target
    kind = target_kind(target)
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "c"
        target = kind
    if kind in ("cuda", "hip"):
        if not torch.cuda.is_available():
            raise TargetUnavailable(f"target {kind!r} needs a GPU and torch sees none on this machine")
        share = _own_share(torch.cuda.current_device(), gpus)
        devices = [f"cuda:{i}" for i in share]
        if kind == "cuda" and torch.version.hip is None:
            target = _full_cuda_target(target, share[0])
    else:
        devices = ["cpu"]
    backend = compile_args.execution_backend
    if kind == "c" and backend == "auto":
        backend = "cython"  # the backend that runs CPU kernels from Python
    return replace(compile_args, target=target, execution_backend=backend), devices


def _full_cuda_target(target: TargetLike, index: int) -> TargetLike:
    """The CUDA target with the arch of GPU ``index`` filled in when missing (as TileLang's own
    normaliser does for ``"cuda"``), as TVM JSON; a target that names its arch is kept as given."""
    import torch
    from tilelang.contrib import nvcc
    from tvm.target import Target

    arch = f"sm_{nvcc.get_target_arch(torch.cuda.get_device_capability(index))}"
    if isinstance(target, str) and target.strip() == "cuda":
        return str(Target({"kind": "cuda", "arch": arch}))
    spec = dict(target) if isinstance(target, dict) else None
    if spec is None:
        tgt = target if isinstance(target, Target) else Target(target)
        if "arch" in tgt.attrs:
            return target
        spec = dict(tgt.export())
    if "arch" in spec:
        return target
    spec["arch"] = arch
    return str(Target(spec))


def _cuda_arch(target: object) -> int | None:
    """The ``sm_XX`` number of a resolved CUDA target, else None."""
    match = re.search(r"sm_(\d+)", str(target)) if "cuda" in str(target) else None
    return int(match.group(1)) if match else None


def _xdist_slot() -> tuple[int, int] | None:
    """(this worker's number, the number of workers) under xdist, else None."""
    worker = xdist_worker_id()
    if worker and worker.startswith("gw") and worker[2:].isdigit():
        return int(worker[2:]), max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1))
    return None


def _own_gpu(count: int, current: int) -> int:
    """The GPU this process confirms winners on: under xdist worker gwN's is GPU N mod count, so
    workers spread over the cards (the per-device timing lock keeps two of them off one card at
    once); in a ``torch.distributed`` job (``LOCAL_RANK`` set) the rank's own card; else the
    current device."""
    slot = _xdist_slot()
    if count > 1 and slot:
        return slot[0] % count
    local_rank = os.environ.get("LOCAL_RANK", "")
    if count > 1 and local_rank.isdigit():
        return int(local_rank) % count
    return current


def _own_share(current: int, gpus: str | None) -> list[int]:
    """This process's GPUs (:func:`gpu_share` of the visible ones), its own first."""
    import torch

    count = torch.cuda.device_count()
    return gpu_share(count, _own_gpu(count, current), gpus)


def gpu_share(count: int, own: int, gpus: str | None = "all") -> list[int]:
    """The GPUs one tuning of this process times its candidates on, ``own`` first.

    ``gpus`` (option ``tl_gpus``): ``all`` -- every GPU this process may use: all of them, or
    under xdist with at least as many GPUs as workers, worker N's share (N, N + workers, ...),
    else just its own; ``one`` -- only ``own``; or a comma list of indices. Ranks of one
    ``torch.distributed`` job take all of them: the tuning lock lets one rank tune while the
    others wait for its result.
    """
    if gpus == "one" or count <= 1:
        return [own]
    if gpus not in ("all", "", None):
        picked = [i for i in (int(x) for x in str(gpus).split(",") if x.strip()) if i < count] or [own]
        return sorted(dict.fromkeys(picked), key=lambda i: i != own)
    slot = _xdist_slot()
    if slot and slot[1] > 1:
        worker, workers = slot
        share = [g for g in range(count) if g % workers == worker % workers] if count >= workers else [own]
    else:
        share = list(range(count))
    return sorted(share, key=lambda i: i != own)


def xdist_worker_id() -> str | None:
    """``gw0``... inside an xdist worker, else None."""
    return os.environ.get("PYTEST_XDIST_WORKER")
