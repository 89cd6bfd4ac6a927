"""One ``autotune(...)`` call, from the program a test passes to the result it gets back.

``tune`` is the fixture's body: the program resolved and the request built, then its outcome
(``Call``: the fast index's entry, else the PrimFuncs built and keyed, the local cache or the
shared store asked, else a tuning under the lock, saved and pushed), then the gate's re-timing
and the test's row. The run's resources (``session.TuneSession``: options, cache, store, pools,
machine facts) come in as ``run``.
"""

from __future__ import annotations

import copy
import functools
import json
import statistics
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from ..devices import cuda_arch, resolve_target
from ..model import TLAutotuneError, TuneWarning
from ..settings import COMPILE_FIELDS, PROFILE_FIELDS, TuneSettings, resolve_tuner
from ..stash import CACHE_HIT, CACHE_MISS, CACHE_RETUNE
from . import fleet

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import pytest

    from ..model import Candidate, CandidateRecord, Outcome, TuneRequest
    from ..param import AutotuneResult
    from ..session import TuneSession
    from ..store.local import Store
    from .builder import Builder


class CallFailed(TLAutotuneError):
    """This ``autotune(...)`` call fails its test; the message (the test id first) is the whole
    report: ``plugin.py`` turns it into ``pytest.fail(message, pytrace=False)``, after a row of
    the failure (``request`` and ``records`` where the call got that far)."""

    def __init__(self, message: str, request: TuneRequest | None = None, records: list | None = None):
        super().__init__(message)
        self.request = request
        self.records = list(records or [])


def tune(run: TuneSession, item: pytest.Item, settings: TuneSettings, program: object, args: tuple,
         kwargs: dict) -> AutotuneResult:
    """Return the tuned ``AutotuneResult`` for ``program(*args, **kwargs, **config)``.

    Raises ``CallFailed`` when the call fails the test, ``TargetUnavailable`` when this
    machine cannot run its target (the plugin fails or skips the test)."""
    from ..model import TuneError

    t0 = time.perf_counter()
    req = _request(run, item, settings, program, args, kwargs)
    machine = run.machine(req.device_kind)
    try:
        call = Call(run, req, machine, _fast_key(req, machine))
        outcome, error = call.outcome(), None
    except TuneError as exc:
        error, records = f"{item.nodeid}: {exc}", exc.records
    if error:
        raise CallFailed(error, request=req, records=records)
    req = outcome.request  # as the builds completed it
    if outcome.cache == CACHE_HIT:  # an entry stored before, or by another test: it answers this key too
        run.cache.entries.note_tilelang(outcome.key, req.nodeid, lambda: _tilelang_note(req, outcome.result))
    measured = _remeasure(run, req, outcome)  # a gate compares this run's numbers, never stored ones
    outcome.tuning_s = time.perf_counter() - t0  # what this run spent, a hit included
    from ..report.rows import record_outcome

    quarantined = run.cache.entries.quarantined.get(outcome.key) if outcome.key else None
    row = record_outcome(item, req, outcome, machine, quarantined, run.warn)
    row["measured"] = measured
    if run.fresh_numbers and outcome.key:  # a gate may time the winner again before it fails the test
        from ..stash import RETIME_KEY

        item.stash.setdefault(RETIME_KEY, {})[row["id"]] = _retimer(run, item, req, outcome)
    from .programs import user_kernel

    result = outcome.result
    return replace(result, kernel=user_kernel(req.program, req.mode, result.kernel, result.config or {}))


def _request(run: TuneSession, item: pytest.Item, settings: TuneSettings, program: object, args: tuple,
             kwargs: dict) -> TuneRequest:
    """The program resolved and everything this call asks for: the marker's settings over the
    decorators', the configs evaluated and checked, the target resolved to this machine."""
    from ..model import TuneRequest
    from ..param import CompileArgs, ProfileArgs
    from ..settings import SettingsError, target_kind, validate_configs
    from . import programs
    from .key import args_identity, program_identity
    from .tilelang_key import of_call

    try:
        prog, error = programs.resolve(program, args, kwargs), None
    except programs.ProgramError as exc:
        error = f"{item.nodeid}: autotune(program=...): {exc}"
    if error:
        raise CallFailed(error)
    configs = settings.tuner["configs"] if "configs" in settings.given else prog.configs
    configs = programs.evaluate_configs(configs, args, kwargs)
    # What the fast index (``_fast_key``) and a tuning whose builds the budget cut (key.budget_key) key by.
    identity = {"program": program_identity(program), "args": args_identity(args, kwargs)}
    # Noted in the entry, for `cache export`: computed when an entry is noted, once.
    tilelang = functools.cache(functools.partial(of_call, program, args, kwargs))
    # Deep copies: the marker's lists and dicts are shared by every call of this test.
    compile_kwargs = copy.deepcopy({**prog.compile_defaults, **settings.compile})
    profile_kwargs = {**prog.profile_defaults, **settings.profile}
    compile_args = CompileArgs(**{k: v for k, v in compile_kwargs.items() if k in COMPILE_FIELDS})
    profile_args = ProfileArgs(**{k: v for k, v in profile_kwargs.items() if k in PROFILE_FIELDS})
    try:
        configs, error = validate_configs(configs), None
    except SettingsError as exc:
        error = f"{item.nodeid}: @pytest.mark.autotune: {exc}"
    if error:
        raise CallFailed(error)
    if not configs:
        raise CallFailed(f"{item.nodeid}: @pytest.mark.autotune: no configs: pass configs=[...] to the marker "
                         f"(or use a @tilelang.autotune function that has them)")
    compile_args, devices = resolve_target(compile_args, run.gpus)
    tuner = resolve_tuner(dict(settings.tuner), len(configs), settings.given, "cpu" if devices[0] == "cpu" else "cuda")
    spec = replace(prog.spec, device_target=compile_args.target, target_kind=target_kind(compile_args.target))
    return TuneRequest(nodeid=item.nodeid, program_name=prog.name, program=replace(prog, spec=spec),
                       configs=configs, compile_args=compile_args, profile_args=profile_args, tuner=tuner,
                       device=devices[0], devices=tuple(devices), identity=identity,
                       tilelang=tilelang)


def _fast_key(req: TuneRequest, machine: dict) -> str:
    """A key that needs no PrimFunc: the program (its bound values included), its arguments
    (``req.identity``) and the settings. It only finds the IR-based key stored before, while the
    files the builds read are unchanged (``store.records.Index.read``)."""
    from .key import fast_key

    return fast_key(req.identity["program"], req.identity["args"], req.configs,
                    req.compile_args.canonical(), req.profile_args.canonical(), req.tuner, machine)


class Call:
    """One request's outcome: a stored result that still answers it, else a tuning.

    Where a stored result is looked for (the fast index, the budget key, the IR key, the shared
    store), what is served (what still builds into the stored kernel and passes today's check),
    and, under this machine's and the store's tuning lock, the tuning, saved and pushed. What a
    call does with the shared store's answers is ``fleet``'s: it compiles the fleet's winner here
    (``tune_one``) and says when it waits for another machine (``notice``)."""

    def __init__(self, run: TuneSession, req: TuneRequest, machine: dict, fast: str | None = None):
        from .builder import Builder

        self.run = run
        self.req = req  # as the test asked; each path below gets it completed by its builds
        self.builder = Builder(req, run.pools, run.warn)  # where this call's configs build
        self.machine = machine  # the fingerprint of this machine for the request's device kind
        self.fast = fast  # the fast index's key (``_fast_key``)
        self.retune = run.retune
        self.t0 = time.perf_counter()  # the phases a tuning records (prepare_s) count from here
        # max_tuning_s bounds the whole call: the builds, the search and its compiles.
        self.deadline = self.t0 + req.tuner["max_tuning_s"] if req.tuner["max_tuning_s"] else None

    @property
    def cache(self) -> Store:
        return self.run.cache

    def outcome(self) -> Outcome:
        """The stored result that answers the request, else a tuning; the fast index then points
        at the IR key it found (``store.records.Index.write``)."""
        stale = None
        if self.fast and not self.retune:
            # Warm path: the stored key of this exact program, arguments and project source,
            # used only once the winner, built again, is the kernel stored (an edit outside the
            # project, an environment variable read at build time, a changed dependency) and
            # passes today's check.
            key = self.cache.index.read(self.fast)
            if key:
                result, stale, req = _fast_hit(self.run, self.builder, self.cache.entries.path(key))
                if result is not None and stale is None:
                    return _hit(result, key, req)
        outcome = self._by_ir_key(stale)
        if self.fast and self.builder.reads is not None:
            self.cache.index.write(self.fast, outcome.key, self.builder.reads)
        return outcome

    def _by_ir_key(self, stale: str | None) -> Outcome:
        """The IR key's stored result (checked), or a tuning. ``stale``: why a stored result of
        this call failed today's check; then every config is measured again (no verdict reused).
        With ``max_tuning_s`` the deadline covers the builds too, and a tuning whose builds the
        budget cut is stored under a budget key (``candidates.budget_key``), looked up before any build."""
        from ..model import TuneError
        from .candidates import budget_key, build_candidates, entry_key

        run, req = self.run, self.req
        if not run.no_tune:
            # Start the workers now: they import TileLang while this process builds the PrimFuncs.
            run.pools.warm_up(req.timing_devices, arch=cuda_arch(req.compile_args.target))
        budgeted = budget_key(req, self.machine) if self.deadline is not None else None
        if budgeted and not self.retune and stale is None:
            # A tuning this budget cut before every config was built: found without building them,
            # served while its winner still builds into the stored kernel and passes today's check.
            result, stale, done = _fast_hit(run, self.builder, self._entry(budgeted))
            if result is not None and stale is None:
                return _hit(result, budgeted, done)
        cands, req = build_candidates(self.builder, self.machine, deadline=None if run.no_tune else self.deadline)
        built_s = time.perf_counter() - self.t0
        partial = not all(c.built for c in cands)
        key = budgeted if partial else entry_key(req, cands, self.machine)
        entry = self._entry(key)
        if not self.retune and stale is None:
            result, stale = self._stored(req, cands, key, entry, partial)
            if result is not None and stale is None:
                return _hit(result, key, req)
        if run.no_tune:
            if stale:
                raise TuneError(f"{stale}; --tl-no-tune forbids tuning it again: run `pytest {req.nodeid}` without "
                                f"--tl-no-tune to tune it against today's reference")
            raise TuneError(f"no stored result for this test (key {key[:12]}) and --tl-no-tune forbids tuning; "
                            f"run `pytest {req.nodeid}` without --tl-no-tune on a machine like this one "
                            f"({self.machine.get('device')}) to tune it, and keep its cache dir ({run.cache_dir})")
        return self._tune(req, cands, key, entry, partial, stale, built_s)

    def _stored(self, req: TuneRequest, cands: list[Candidate], key: str, entry: Path,
                partial: bool) -> tuple[AutotuneResult | None, str | None]:
        """The local cache's result for ``key``, else the shared store's (a no-op without
        --tl-store), and why it may not be served (None: it may). ``req``: as the builds completed it."""
        if partial:  # looked up before the builds; what the store sends is checked as that was
            fetched = fleet.fetch(self.run, self.tune_one, req, cands, key, entry)
            return _fast_hit(self.run, self.builder, entry)[:2] if fetched is not None else (None, None)
        result = (self.cache.entries.load(entry, req.compile_args)
                  or fleet.fetch(self.run, self.tune_one, req, cands, key, entry))
        return result, (_stale(self.run, req, entry, result) if result is not None else None)

    def _tune(self, req: TuneRequest, cands: list[Candidate], key: str, entry: Path, partial: bool,
              stale: str | None, built_s: float) -> Outcome:
        """Under this machine's and the shared store's lock on ``key``: what another process or
        machine stored meanwhile, else a tuning of ``cands``, saved and pushed."""
        from ..model import Outcome, TuneError
        from .tuner import Tuner

        retune = self.retune or stale is not None
        notice = functools.partial(self.notice, req)
        with self.cache.locks.entry(key), fleet.tuning(self.run, self.tune_one, notice, req, cands, key,
                                                       entry) as fetched:
            result, why = self._tuned_meanwhile(req, entry, fetched, partial, retune)
            if result is not None:
                if why is None:
                    return _hit(result, key, req)
                stale, retune = why, True
            # Verdicts measured against another reference are not reused when the stored winner failed today's.
            tuner = Tuner(req, self.cache, self.run.pools, reuse_records=not retune, progress=self._progress(),
                          machine=self.machine, builder=self.builder)
            prepare_s = time.perf_counter() - self.t0  # fast key, PrimFuncs, IR key, lock
            try:
                result, records = tuner.run(cands, key, self.deadline)
            except TuneError as exc:
                if stale is None:
                    raise
                raise TuneError(f"{stale}; tuned again: {exc}") from None
            result.record.setdefault("phases", {}).update(prepare_s=prepare_s, prepare_built_s=built_s)
            result = self._save(req, result, key, entry)
        return Outcome(result, CACHE_RETUNE if retune else CACHE_MISS, key, time.perf_counter() - self.t0, records,
                       stale=stale, request=req)

    def _tuned_meanwhile(self, req: TuneRequest, entry: Path, fetched: AutotuneResult | None, partial: bool,
                         retune: bool) -> tuple[AutotuneResult | None, str | None]:
        """What another process (or machine) stored for this key while this one waited for the
        lock (``fetched``: the shared store's), and why it may not be served (None: it may)."""
        if partial and not retune:  # a budget key's result: while its winner builds into the stored kernel
            return _fast_hit(self.run, self.builder, entry)[:2]
        result = self.cache.entries.load(entry, req.compile_args) or fetched
        if result is not None and retune and result.record.get("tuned_at", 0) < self.run.started:
            result = None  # tuned again: only a result of this run (another process's) is served
        return result, (_stale(self.run, req, entry, result) if result is not None else None)

    def _save(self, req: TuneRequest, result: AutotuneResult, key: str, entry: Path) -> AutotuneResult:
        """Store the tuned result at ``entry`` and push it to the shared store; returns it with the
        kernel as later runs will load it, so a broken save shows now, not on the next hit."""
        try:
            # A full disk or read-only mount costs the cache, not the test (the store warns once).
            note = _tilelang_note(req, result)
            stored = self.cache.entries.save(result, entry, tilelang=[note] if note else None)
        except OSError as exc:
            stored = False
            self.run.warn(TuneWarning(f"{req.nodeid}: could not store the tuned result in {entry}: {exc}"))
        if not stored:
            return result
        self.run.store.push(key, entry)
        saved = self.cache.entries.load(entry, req.compile_args, quarantine=False, func=result.func)
        return replace(result, kernel=saved.kernel) if saved is not None else result

    def _entry(self, key: str) -> Path:
        from ..model import TuneError
        from ..store.safety import UnsafeCache

        try:
            return self.cache.entries.path(key)
        except (UnsafeCache, OSError) as exc:
            raise TuneError(f"cache directory refused: {exc}") from None

    def tune_one(self, req: TuneRequest, cand: Candidate,
                 key: str) -> tuple[AutotuneResult, list[CandidateRecord]] | str:
        """Compile, check and time one candidate alone (the shared store's winner) here:
        ``(result, records)``, or why it failed."""
        from ..model import TuneError
        from .tuner import Tuner

        # Checked against no reference config: the other machine's check passed it already.
        one = replace(req, configs=[cand.config], reference=None,
                      tuner={**req.tuner, "strategy": "exhaustive", "max_trials": None, "max_tuning_s": None,
                             "top_k": 1})
        self.run.pools.warm_up(req.timing_devices)
        tuner = Tuner(one, self.cache, self.run.pools, progress=self._progress(), builder=self.builder)
        try:
            return tuner.run([replace(cand, index=0)], key)
        except TuneError as exc:
            return str(exc)

    def notice(self, req: TuneRequest, message: str) -> None:
        """A progress line worth printing anywhere (a wait on another machine)."""
        from ..report.terminal import progress_line

        progress_line(self.run.config, req.nodeid, message, notice=True)

    def _progress(self) -> Callable[[str], None]:
        from ..report.terminal import progress_line

        return lambda msg: progress_line(self.run.config, self.req.nodeid, msg)


def _fast_hit(run: TuneSession, builder: Builder,
              entry: Path) -> tuple[AutotuneResult | None, str | None, TuneRequest]:
    """The result stored at ``entry`` when its winner still builds into the stored kernel, and
    whether it fails today's check: ``(result, None, req)`` to serve, ``(result, why, req)`` when
    stale, ``(None, None, req)`` when it cannot be used (the IR key decides); ``req``: the request
    as the winner's build completed it.

    The build runs in the device's timing worker first (``Builder.winner``: the user's code; a
    crash or a hang past ``compile_timeout`` is a failed build, kept as that config's record),
    then, as the cold path builds its winner, here; the check runs meanwhile."""
    from ..store.artifacts import read_config
    from ..store.manifest import RECORD_PATH, CorruptEntry, verify_entry
    from ..store.safety import UnsafeCache
    from .candidates import completed

    req = builder.req
    try:
        record = json.loads((entry / RECORD_PATH).read_text())
        config = read_config(entry)  # as the test gave it: the program builds what it built then
    except (OSError, ValueError, AttributeError):
        return None, None, req
    stored = record.get("winner_ir_sha")
    if not stored or "error" in (built := builder.winner(config)) or built["ir_sha"] != stored:
        return None, None, req  # the full path builds every config where a failure is a record
    req = completed(req, [built])
    try:
        verify_entry(entry)  # before the timing worker loads its kernel (load() quarantines a bad one)
    except (CorruptEntry, UnsafeCache, OSError):
        check = None
    else:
        check = _check(run, req, entry, config, record)
    try:
        here = req.program.spec.build(config)
    except Exception:
        return None, None, req
    result = run.cache.entries.load(entry, req.compile_args, func=here.func) if here.ir_sha == stored else None
    if result is None or check is None:
        return None, None, req
    return result, check(), req


def _stale(run: TuneSession, req: TuneRequest, entry: Path, result: AutotuneResult) -> str | None:
    """Why a stored result may not be served: its winner fails today's check (``_check``);
    None when it passes."""
    return _check(run, req, entry, result.config, result.record)()


def _check(run: TuneSession, req: TuneRequest, entry: Path, config: dict,
           record: dict) -> Callable[[], str | None]:
    """Start checking the winner stored at ``entry`` against today's reference (one kernel
    call and one reference call in the timing worker); returns what waits for the verdict:
    None when it passes, was measured in this run, or nothing checks the output, else why
    not. A reference whose behaviour comes from data (a file, a module's dict, an object's
    attribute) changes while every key stays the same."""
    from .key import canonical_json
    from .measure import check_stored, checks_output

    if record.get("tuned_at", 0) >= run.started or not checks_output(req.profile_args):
        return lambda: None
    verdict = check_stored(run.pools, run.cache, req, entry, config, record)

    def why() -> str | None:
        failed = verdict()
        if failed is None:
            return None
        return f"the stored winner {canonical_json(config)} fails today's check: {failed}"

    return why


def _remeasure(run: TuneSession, req: TuneRequest, outcome: Outcome) -> str:
    """Re-time the winner and ref_prog in this run when the gate asks for numbers of this run
    (``gate.fresh_clock``); the engine times it. Replaces ``outcome.result``'s samples and
    medians. Returns where the numbers come from (``gate.measured_label``). A re-timing that
    fails fails the test with the reason: a baseline must not store old numbers marked failed
    (every later gate would skip the row) and a gate must not pass a kernel it could not time.
    """
    from ..gate import fresh_clock, measured_label

    clock = fresh_clock(run.fresh_numbers, req.device, outcome.cache)
    if clock is None:
        return measured_label(clock, outcome.cache)
    error = None
    try:
        numbers = _time_again(run, req, outcome.key, clock)
    except Exception as exc:
        error = (f"{req.nodeid}: re-timing {req.program_name} ({outcome.cache}, key {outcome.key[:12]}) in this "
                 f"run for {run.fresh_numbers} failed: {type(exc).__name__}: {exc}")
    if error:
        raise CallFailed(error, request=req, records=outcome.records)
    outcome.result = replace(
        outcome.result,
        latency=numbers["latency_ms"],
        ref_latency=numbers["ref_latency_ms"],
        samples=tuple(numbers["samples"]),
        ref_samples=tuple(numbers["ref_samples"]),
        # calls per sample of these samples, and what launching one call cost the host (CUDA)
        record={**outcome.result.record, "loops": numbers["loops"], "host_ms": numbers["host_ms"]},
    )
    return measured_label(clock, outcome.cache)


def _retimer(run: TuneSession, item: pytest.Item, req: TuneRequest, outcome: Outcome) -> Callable[[], dict]:
    """What the gate calls to time this call's winner again in this run before a regression fails
    the test (``--tl-gate-confirm``): the stored entry, timed by the clock of the row's numbers
    (CUDA events on a GPU, CPU time on a CPU device). Returns the row's new numbers; raises
    RuntimeError when the timing fails."""
    from ..gate import fresh_clock

    clock = fresh_clock(run.fresh_numbers, req.device, outcome.cache) or "wall"

    def again() -> dict:
        from ..report.rows import throughput

        numbers = _time_again(run, req, outcome.key, clock)
        latency, ref_latency = numbers["latency_ms"], numbers["ref_latency_ms"]
        return {**numbers, "speedup": ref_latency / latency if ref_latency and latency else None,
                **throughput(item, req, latency)}

    return again


def _time_again(run: TuneSession, req: TuneRequest, key: str, clock: str) -> dict:
    """The stored winner at ``key`` and ref_prog timed in this run by ``clock`` (``measure_again``):
    samples, their medians, calls per sample and the host's launch time. Raises when the timing fails."""
    from .measure import measure_again

    out = measure_again(run.pools, run.cache, req, run.cache.entries.path(key), clock=clock)
    samples, ref = list(out["samples"]), list(out["ref_samples"])
    return {"latency_ms": statistics.median(samples), "ref_latency_ms": statistics.median(ref) if ref else None,
            "samples": samples, "ref_samples": ref, "loops": out.get("loops"), "host_ms": out.get("host_ms")}


def _tilelang_note(req: TuneRequest, result: AutotuneResult) -> dict | None:
    """The entry's note of TileLang's cache key for this call (``engine.tilelang_key.note``)."""
    from .tilelang_key import note

    tl = req.tilelang() if req.tilelang is not None else None
    params = getattr(result.kernel, "params", None)
    return note(tl, req, result.config, getattr(result.kernel, "execution_backend", None),
                len(params) if params else None)


def _hit(result: AutotuneResult, key: str, req: TuneRequest) -> Outcome:
    """The outcome of a stored result; ``tune`` sets the time this run spent on it."""
    from ..model import Outcome

    return Outcome(result, CACHE_HIT, key, 0.0, result.record.get("candidates", []), request=req)
