"""From a request to keyed candidates: build every config's PrimFunc (in the compile workers),
hash its IR into the candidate's key, and key the whole tuned entry.

A budgeted tuning (``max_tuning_s``) builds ahead only while the whole space is expected to build
within a share of its budget; the configs it did not build are built as the search asks for them
(``LazyBuilds``), and the entry is keyed by what was asked (``key.budget_key``), not by every IR.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

from ..model import Candidate, TuneError, TuneRequest
from . import key

if TYPE_CHECKING:
    from concurrent.futures import Future

    from ..param import CompileArgs
    from .builder import Builder

#: A budgeted tuning builds ahead (in the order the search proposes) while the whole space is
#: expected to build within this share of ``max_tuning_s``, judged from the build rate of each batch
#: after the first (the first also waits for the workers to start); past it, the search builds the
#: configs it asks for as it goes, and the deadline covers those builds too.
BUILD_AHEAD_SHARE = 0.25
#: Builds ahead go in batches of this many rounds of the compile workers (at least BUILD_BATCH_MIN).
BUILD_BATCH_ROUNDS = 4
BUILD_BATCH_MIN = 8


def build_candidates(builder: Builder, machine: dict,
                     deadline: float | None = None) -> tuple[list[Candidate], TuneRequest]:
    """Build each config's PrimFunc and key it: the candidates, and the request as the builds
    completed it (``completed``: an eager kernel's outputs, the reference config's plan).

    The builds run in the compile workers (``builder.Builder``: it is the user's code, with configs
    that may be invalid: a crash there is a record on that config). A failure that every config
    shares (the call, not a config) fails the test once, before anything compiles.

    With a ``deadline`` (``time.perf_counter``; a budgeted tuning) only the configs built ahead
    (``_build_ahead``) are keyed; the others are left ``built=False`` for ``LazyBuilds``. The
    reference config of the check without a ref_prog is always built ahead: the seed beside the
    space (its index follows the space's), or the config of the space the check starts from
    (``reference_config.reference_index``).
    """
    from .reference_config import plan, reference_index, seed_config

    req = builder.req
    problem = req.program.check_call(req.configs)
    if problem:
        raise TuneError(f"{problem} (nothing was built or compiled)")
    n = len(req.configs)
    seed = seed_config(req)
    if deadline is None:
        results = _build(builder, list(range(n + (seed is not None))), seed, decide=True)
    else:
        results = _build_ahead(builder, deadline, seed, reference_index(req))
    space = {i: r for i, r in results.items() if i < n}
    _check_built(req, space)
    built = [space[i] for i in sorted(space)]
    req = _normalized_out_idx(completed(req, built, on_device=builder.on_device), built)
    _check_inplace(req, built)
    profile = req.profile_args.canonical()
    cands = [_candidate(req, builder, i, config, space.get(i), profile, machine)
             for i, config in enumerate(req.configs)]
    extra = _candidate(req, builder, n, seed, results[n], profile, machine) if seed is not None else None
    return cands, replace(req, reference=plan(req, cands, extra))


def _candidate(req: TuneRequest, builder: Builder, index: int, config: dict, res: dict | None, profile: dict,
               machine: dict) -> Candidate:
    """One config's candidate from its build result: keyed by its IR, or carrying the build's
    failure; ``built=False`` where it is not built yet (``res`` None)."""
    cand = Candidate(index, config, compile_args=_candidate_compile_args(req, config))
    if res is None:
        cand.built = False
    else:
        _fill(builder, cand, res, profile, machine)
    return cand


def _fill(builder: Builder, cand: Candidate, res: dict, profile: dict, machine: dict) -> None:
    """Key a built candidate (or record why its build failed)."""
    cand.built = True
    if "error" in res:
        cand.error = res["error"]
        return
    cand.func_blob, cand.ir_sha = res.get("func_blob"), res["ir_sha"]
    if cand.func_blob is not None:
        cand.source = cand.func_blob
    else:
        spec_id, blob, env, path = builder.shipped
        cand.source = (spec_id, blob, cand.config, env, path, res["ir_sha"])
    cand.ckey = key.candidate_key(cand.ir_sha, cand.compile_args.canonical(), profile, machine)


def _build(builder: Builder, indices: list[int], seed: dict | None, decide: bool) -> dict[int, dict]:
    """The build results of the configs at ``indices`` (``len(req.configs)``: the seed). The first
    builds (``decide``) settle where every later one builds (``Builder.first``)."""
    req = builder.req
    n = len(req.configs)
    configs = [req.configs[i] if i < n else seed for i in indices]
    results = builder.first(configs, sum(i < n for i in indices)) if decide else builder.settled(configs)
    return dict(zip(indices, results, strict=True))


def _build_ahead(builder: Builder, deadline: float, seed: dict | None, ref: int | None) -> dict[int, dict]:
    """Build configs in the order the search will propose them, batch by batch, until every config
    is built, the deadline passes (one batch is always built), or the space is expected to take
    more than ``BUILD_AHEAD_SHARE`` of ``max_tuning_s`` to build (once a config has built). The
    first batch holds the reference config of the check without a ref_prog: the seed, or the
    config of the space at ``ref``."""
    from .search import Search

    req, pools = builder.req, builder.pools
    tuner = req.tuner
    order = Search(req.configs, tuner["strategy"], tuner["max_trials"], tuner["seed"]).order
    if ref is not None:
        order = [ref] + [i for i in order if i != ref]
    workers = pools.n_workers if pools is not None else 1
    size = max(BUILD_BATCH_MIN, BUILD_BATCH_ROUNDS * workers)
    allowance = BUILD_AHEAD_SHARE * tuner["max_tuning_s"]
    results: dict[int, dict] = {}
    for start in range(0, len(order), size):
        if results and time.perf_counter() >= deadline:
            break
        t0 = time.perf_counter()
        batch = order[start:start + size]
        if not start and seed is not None:
            batch.append(len(req.configs))  # the seed follows the space's configs
        results.update(_build(builder, batch, seed, decide=not start))
        per_config = (time.perf_counter() - t0) / len(batch)
        built_one = any("error" not in r for i, r in results.items() if i < len(req.configs))
        if start and per_config * len(order) > allowance and built_one:
            break
    return results


def _check_built(req: TuneRequest, results: dict[int, dict]) -> None:
    """Fail once where no config of the space built: the call's fault when every config failed
    alike; when a budget stopped the builds first, that is said too."""
    from .failures import reason, same_failure

    failures = [r["error"] for r in results.values() if "error" in r]
    if len(failures) < len(results):
        return
    n = len(req.configs)
    stopped = "" if len(results) == n else (f" ({len(results)} of {n} configs built before max_tuning_s="
                                            f"{req.tuner['max_tuning_s']:g} s ran out)")
    if same_failure(failures):
        raise TuneError(_same_failure_message(failures[0], stopped))
    if stopped:
        shown = list(results.items())[:10]
        lines = [f"every config built failed to build{stopped}:"]
        lines += [f"  {key.canonical_json(req.configs[i])}: {reason(r['error'])}" for i, r in shown]
        if len(results) > len(shown):
            lines.append(f"  ... and {len(results) - len(shown)} more")
        raise TuneError("\n".join(lines))


class LazyBuilds:
    """Builds, as the search asks for them, the configs a budgeted tuning did not build ahead:
    where the builds ahead settled (``Builder``), checked as those were, and keyed."""

    def __init__(self, builder: Builder, req: TuneRequest, machine: dict):
        self.builder = builder
        self.req = req  # as the builds ahead completed it
        self.machine = machine
        self.profile = req.profile_args.canonical()

    def start(self, cand: Candidate) -> Future | None:
        """Start building ``cand``: its future, or None when it is keyed already (built before,
        or here, now)."""
        out = self.builder.start(cand.config)
        if isinstance(out, dict):
            self._fill(cand, out)
            return None
        return out

    def finish(self, cand: Candidate, fut: Future) -> None:
        """Key ``cand`` from its finished build (a failure is a record on it, as ahead)."""
        self._fill(cand, self.builder.finish(cand.config, fut))

    def _fill(self, cand: Candidate, res: dict) -> None:
        """Check the build as the builds ahead were checked (the outputs it declares, ``inplace``),
        and key it."""
        req = self.req
        out_idx, want, n = res.get("out_idx"), req.compile_args.out_idx, res.get("n_params")
        if "error" not in res and res.get("mode") == "eager" and out_idx is not None and n \
                and out_positions(out_idx, n) != out_positions(want, n):
            raise TuneError(f"the configs change the outputs T.empty() declares ({cand.config} returns "
                            f"{list(out_idx)}, others {want}); every config must return the same tensors")
        if "error" not in res:
            _check_inplace(req, [res], when=f"found when {key.canonical_json(cand.config)} was built")
        _fill(self.builder, cand, res, self.profile, self.machine)


def out_positions(out_idx: object, n: int) -> list[int]:
    """``out_idx`` as non-negative parameter positions of a PrimFunc of ``n`` parameters."""
    indices = [] if out_idx is None else [out_idx] if isinstance(out_idx, int) else list(out_idx)
    return [i % n for i in indices]


def _same_failure_message(failure: dict, stopped: str = "") -> str:
    """``stopped``: how many configs were built, where a budget stopped the builds."""
    from .builder import not_the_users, plugin_fault
    from .failures import reason

    if not_the_users(failure):
        return (f"every config failed the same way before any line of the program ran{stopped}: "
                f"{plugin_fault(failure)}. If the program's arguments are wrong, fix them first\n"
                f"{_indent(failure.get('message', ''))}")
    return (f"every config failed the same way{stopped}, so the program or the call is at fault: "
            f"{reason(failure)}\n{_indent(failure.get('message', ''))}")


def _normalized_out_idx(req: TuneRequest, results: list[dict]) -> TuneRequest:
    """``req`` with ``out_idx`` in one form for the keys: negative indices, as TileLang rewrites a
    @jit's out_idx in place when it compiles ([-1] becomes [2]), so the same kernel must not key
    differently before and after. It must name parameters of the PrimFunc: said once, before
    anything compiles."""
    from dataclasses import replace

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
        if not indices:
            return req
        counted = [i - n if i >= 0 else i for i in indices]
        return replace(req, compile_args=replace(req.compile_args,
                                                 out_idx=counted[0] if isinstance(out_idx, int) else counted))
    return req


def _check_inplace(req: TuneRequest, results: list[dict], when: str = "nothing was compiled") -> None:
    """``inplace`` must name inputs of the PrimFunc: said once, before anything compiles (``when``
    says otherwise for a config built as the search asked for it)."""
    from .check import inplace_indices

    inplace = req.profile_args.inplace
    built = next((r for r in results if "error" not in r and "params" in r), None)
    if inplace is None or built is None:
        return
    out_idx = req.compile_args.out_idx
    n = len(built["params"])
    outputs = [] if out_idx is None else [out_idx % n] if isinstance(out_idx, int) else [i % n for i in out_idx]
    try:
        inplace_indices(inplace, built["params"], outputs, req.program_name)
    except ValueError as exc:
        raise TuneError(f"inplace={list(inplace)!r}: {exc}; {when}") from None


def completed(req: TuneRequest, results: list[dict], on_device: bool | None = None) -> TuneRequest:
    """``req`` with what only a build tells: the program's style (``mode``), an eager kernel's
    outputs (T.empty) and symbolic shapes, and where it builds (``on_device``)."""
    from dataclasses import replace

    from .programs import ExampleInputs, tensor_args

    ok = [r for r in results if "error" not in r]
    facts: dict = {"on_device": on_device}
    if ok:
        facts["mode"] = ok[0]["mode"]
    if ok and ok[0]["mode"] == "eager":
        outs = {tuple(r["out_idx"]) if r["out_idx"] is not None else None for r in ok}
        if len(outs) > 1:
            raise TuneError(f"the configs change the outputs T.empty() declares ({sorted(map(str, outs))}); "
                            f"every config must return the same tensors")
        if ok[0]["out_idx"] is not None:
            facts["compile_args"] = replace(req.compile_args, out_idx=list(ok[0]["out_idx"]))
        if req.profile_args.supply_prog is None and any(r["symbolic"] for r in ok):
            # TileLang cannot make random inputs of a symbolic shape: use the test's example tensors.
            examples = tensor_args(*req.program.example_args)
            if examples:
                facts["profile_args"] = replace(req.profile_args, supply_prog=ExampleInputs(examples))
    return replace(req, **facts)


def _candidate_compile_args(req: TuneRequest, config: dict) -> CompileArgs:
    from dataclasses import replace

    from .programs import PASS_CONFIGS

    own = config.get(PASS_CONFIGS)
    if not own:
        return req.compile_args
    return replace(req.compile_args, pass_configs={**(req.compile_args.pass_configs or {}), **own})


def entry_key(req: TuneRequest, cands: list[Candidate], machine: dict) -> str:
    """The key of the tuned result (``key.entry_key`` over this request's data)."""
    return key.entry_key([(c.ckey, c.error) for c in cands], req.configs, req.compile_args.canonical(),
                         req.profile_args.canonical(), req.tuner, machine)


def budget_key(req: TuneRequest, machine: dict) -> str:
    """The key of a budgeted tuning whose builds were cut (``key.budget_key``): taken before any
    build, so a warm run can look it up without building."""
    return key.budget_key(req.identity, req.configs, req.compile_args.canonical(), req.profile_args.canonical(),
                          req.tuner, machine)


def _indent(text: str) -> str:
    from .timings import indent

    return indent(text)
