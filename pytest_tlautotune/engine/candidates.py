"""From a request to keyed candidates: build every config's PrimFunc (in the compile workers),
hash its IR into the candidate's key, and key the whole tuned entry.

A budgeted tuning (``max_tuning_s``) builds ahead only while the whole space is expected to build
within a share of its budget; the configs it did not build are built as the search asks for them
(``LazyBuilds``), and the entry is keyed by what was asked (``key.budget_key``), not by every IR.
"""

from __future__ import annotations

import pickle
import time
from typing import TYPE_CHECKING

from .. import key
from ..model import Candidate, TuneError, TuneRequest, TuneWarning, Warn

if TYPE_CHECKING:
    from concurrent.futures import Future

    from ..param import CompileArgs
    from .workers import Pools

#: A budgeted tuning builds ahead (in the order the search proposes) while the whole space is
#: expected to build within this share of ``max_tuning_s``, judged from the build rate of each batch
#: after the first (the first also waits for the workers to start); past it, the search builds the
#: configs it asks for as it goes, and the deadline covers those builds too.
BUILD_AHEAD_SHARE = 0.25
#: Builds ahead go in batches of this many rounds of the compile workers (at least BUILD_BATCH_MIN).
BUILD_BATCH_ROUNDS = 4
BUILD_BATCH_MIN = 8


def build_candidates(req: TuneRequest, machine: dict, pools: Pools | None = None,
                     warn: Warn | None = None, deadline: float | None = None) -> list[Candidate]:
    """Build each config's PrimFunc and key it.

    The builds run in the compile workers (it is the user's code, with configs that may be
    invalid: a crash there is a record on that config). A failure that every config shares
    (the call, not a config) fails the test once, before anything compiles.

    With a ``deadline`` (``time.perf_counter``; a budgeted tuning) only the configs built ahead
    (``_build_ahead``) are keyed; the others are left ``built=False`` for ``LazyBuilds``. The
    reference config of the check without a ref_prog is always built ahead: the seed beside the
    space (its index follows the space's), or the config of the space the check starts from
    (``reference_config.reference_index``).
    """
    from .reference_config import plan, reference_index, seed_config

    problem = req.program.check_call(req.configs)
    if problem:
        raise TuneError(f"{problem} (nothing was built or compiled)")
    n = len(req.configs)
    seed = seed_config(req)
    if deadline is None:
        results = _build(req, pools, warn, list(range(n + (seed is not None))), seed, decide=True)
    else:
        results = _build_ahead(req, pools, warn, deadline, seed, reference_index(req))
    # What the warm path's index checks before it serves this space again without building it.
    req.reads = key.file_digests(path for r in results.values() for path in r.get("reads", ()))
    space = {i: r for i, r in results.items() if i < n}
    _check_built(req, space)
    built = [space[i] for i in sorted(space)]
    complete_request(req, built)
    _check_out_idx(req, built)
    _check_inplace(req, built)
    profile = req.profile_args.canonical()
    cands = [_candidate(req, i, config, space.get(i), profile, machine) for i, config in enumerate(req.configs)]
    extra = _candidate(req, n, seed, results[n], profile, machine) if seed is not None else None
    req.reference = plan(req, cands, extra)
    return cands


def _candidate(req: TuneRequest, index: int, config: dict, res: dict | None, profile: dict,
               machine: dict) -> Candidate:
    """One config's candidate from its build result: keyed by its IR, or carrying the build's
    failure; ``built=False`` where it is not built yet (``res`` None)."""
    cand = Candidate(index, config, compile_args=_candidate_compile_args(req, config))
    if res is None:
        cand.built = False
    else:
        _fill(req, cand, res, profile, machine)
    return cand


def _fill(req: TuneRequest, cand: Candidate, res: dict, profile: dict, machine: dict) -> None:
    """Key a built candidate (or record why its build failed)."""
    cand.built = True
    if "error" in res:
        cand.error = res["error"]
        return
    cand.func_blob, cand.ir_sha = res.get("func_blob"), res["ir_sha"]
    if cand.func_blob is not None:
        cand.source = cand.func_blob
    else:
        spec_id, blob, env, path = req.shipped
        cand.source = (spec_id, blob, cand.config, env, path, res["ir_sha"])
    cand.ckey = key.candidate_key(cand.ir_sha, cand.compile_args.canonical(), profile, machine)


def _build(req: TuneRequest, pools: Pools | None, warn: Warn | None, indices: list[int], seed: dict | None,
           decide: bool) -> dict[int, dict]:
    """The build results of the configs at ``indices`` (``len(req.configs)``: the seed), in the
    workers where they can build there. The first builds (``decide``) settle where every later
    one builds (``req.on_device``, ``req.built_here``)."""
    n = len(req.configs)
    configs = [req.configs[i] if i < n else seed for i in indices]
    if decide:
        results = _build_first(req, pools, warn, configs, sum(i < n for i in indices))
    else:
        results = _build_where_settled(req, pools, configs)
    return dict(zip(indices, results, strict=True))


def _build_first(req: TuneRequest, pools: Pools | None, warn: Warn | None, configs: list[dict],
                 n_space: int) -> list[dict]:
    """The first builds: in the compile workers, unless they cannot build the program as this
    process does. ``configs``' first ``n_space`` are the space's (a seed follows them)."""
    results = _build_in_workers(req, pools, configs) if pools is not None else None
    if results is not None and _crashed_without_gpu(req, results, pools):
        # Every config crashed where no GPU is visible (a program that asks CUDA while it builds,
        # as TileLang's convolution example does): build, and later compile, where the GPU is.
        again = _build_in_workers(req, pools, configs, pools.device_compile_pool(req.device))
        if again is not None and not _crashed_without_gpu(req, again, pools):
            req.on_device = True
            results = again
    if results is not None and _machinery_failed(results[:n_space]):
        # No line of the user's code ran and every config failed alike in the workers: if the
        # program builds in this process, the fault is in how it reached them (the plugin's).
        here = _build_here(req, configs)
        if not _all_failed_alike(here[:n_space]):
            failure = next(r["error"] for r in results if "error" in r)
            req.built_here = f"the compile workers could not build it ({_plugin_fault(failure)}), so it was built here"
            if warn is not None:
                warn(TuneWarning(f"{req.nodeid}: {req.built_here}"))
            results = here
    if results is not None and req.built_here is None and not _same_here(req, configs, results):
        # The program builds differently in a worker (no GPU visible there: it asks the device at
        # build time, e.g. torch.cuda.get_device_capability): build every config here instead.
        req.built_here = "the program builds a different kernel where no GPU is visible, so it was built here"
        results = None
    if results is None:
        results = _build_here(req, configs)
    return results


def _build_where_settled(req: TuneRequest, pools: Pools | None, configs: list[dict]) -> list[dict]:
    """Builds after the first: where those settled (here, where the GPU is visible, or in the
    GPU-less compile workers)."""
    results = None
    if pools is not None and req.built_here is None:
        pool = pools.device_compile_pool(req.device) if req.on_device else None
        results = _build_in_workers(req, pools, configs, pool)
    return _build_here(req, configs) if results is None else results


def _build_ahead(req: TuneRequest, pools: Pools | None, warn: Warn | None, deadline: float, seed: dict | None,
                 ref: int | None) -> dict[int, dict]:
    """Build configs in the order the search will propose them, batch by batch, until every config
    is built, the deadline passes (one batch is always built), or the space is expected to take
    more than ``BUILD_AHEAD_SHARE`` of ``max_tuning_s`` to build (once a config has built). The
    first batch holds the reference config of the check without a ref_prog: the seed, or the
    config of the space at ``ref``."""
    from .search import Search

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
        results.update(_build(req, pools, warn, batch, seed, decide=not start))
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
    where the builds ahead settled (the compile workers, those where the GPU is visible, or here)."""

    def __init__(self, req: TuneRequest, machine: dict, pools: Pools):
        self.req = req
        self.machine = machine
        self.pools = pools
        self.profile = req.profile_args.canonical()

    def start(self, cand: Candidate) -> Future | None:
        """Start building ``cand``: its future, or None when it is built already (a failure of
        the hit's build, ``req.prebuilt``) or was built here, now."""
        req = self.req
        done = req.prebuilt.get(key.canonical_json(cand.config))
        if done is not None:
            self._fill(cand, done)
            return None
        shipped = _ship(req) if req.built_here is None else None
        if shipped is not None:
            pool = self.pools.device_compile_pool(req.device) if req.on_device else self.pools.compile_pool()
            return pool.schedule(_build_entry, (*shipped, cand.config), timeout=req.tuner["compile_timeout"])
        self._fill(cand, _build_here(req, [cand.config])[0])
        return None

    def finish(self, cand: Candidate, fut: Future) -> None:
        """Key ``cand`` from its finished build (a failure is a record on it, as ahead)."""
        out = _result(fut, self.req)
        if "spec_error" in out:  # the workers cannot load the program any more: built here from now on
            _not_loaded(self.req, out)
            out = _build_here(self.req, [cand.config])[0]
        self._fill(cand, out)

    def _fill(self, cand: Candidate, res: dict) -> None:
        """Check the build as the builds ahead were checked (the outputs it declares, ``inplace``),
        count what it read, and key it."""
        req = self.req
        out_idx, want, n = res.get("out_idx"), req.compile_args.out_idx, res.get("n_params")
        if "error" not in res and res.get("mode") == "eager" and out_idx is not None and n \
                and _positions(out_idx, n) != _positions(want, n):
            raise TuneError(f"the configs change the outputs T.empty() declares ({cand.config} returns "
                            f"{list(out_idx)}, others {want}); every config must return the same tensors")
        if "error" not in res:
            _check_inplace(req, [res], when=f"found when {key.canonical_json(cand.config)} was built")
        if res.get("reads"):
            req.reads = {**(req.reads or {}), **key.file_digests(res["reads"])}
        _fill(req, cand, res, self.profile, self.machine)


def _positions(out_idx: object, n: int) -> list[int]:
    """``out_idx`` as non-negative parameter positions of a PrimFunc of ``n`` parameters."""
    indices = [] if out_idx is None else [out_idx] if isinstance(out_idx, int) else list(out_idx)
    return [i % n for i in indices]


def _build_here(req: TuneRequest, configs: list[dict]) -> list[dict]:
    """``configs`` built in this process (the last resort: a crash here ends the session)."""
    from .failures import BUILD, describe
    from .reads import recording

    results = []
    for config in configs:
        reads: set[str] = set()
        try:
            with recording(req.program.spec.target) as reads:
                built = req.program.spec.build(config)
        except Exception as exc:
            results.append({"error": describe(exc, BUILD, req.program.spec.target), "reads": sorted(reads)})
            continue
        results.append({**built.summary(), "func_blob": pickle.dumps(built.func), "reads": sorted(reads)})
    return results


def _all_failed_alike(results: list[dict]) -> bool:
    from .failures import same_failure

    failures = [r["error"] for r in results if "error" in r]
    return len(failures) == len(results) and same_failure(failures)


def _machinery_failed(results: list[dict]) -> bool:
    """Every config raised the same exception in the workers with none of the user's lines on
    its traceback (crashes and timeouts excluded: rebuilding those here could end the session)."""
    return _all_failed_alike(results) and all(_not_the_users(r["error"]) for r in results)


def _crashed_without_gpu(req: TuneRequest, results: list[dict], pools: Pools) -> bool:
    from ..model import Status

    return (req.device_kind == "cuda" and pools.hides_gpus and bool(results)
            and all(r.get("error", {}).get("type") == Status.CRASH for r in results))


def _not_the_users(failure: dict) -> bool:
    """Raised with no line of the user's code on its traceback, and neither an argument error (a
    ``TypeError`` binding the call's arguments is the call's fault) nor the plugin's verdict on
    what the program returned (a ``ProgramError``: the program ran and returned something else
    than a PrimFunc)."""
    return failure.get("in_user_code") is False and failure.get("type") not in ("TypeError", "ProgramError")


def _plugin_fault(failure: dict) -> str:
    from .failures import reason, versions

    return (f"{reason(failure)}; this is a fault of pytest-tlautotune or of the packages it runs with "
            f"({versions()}): please report it to pytest-tlautotune's issue tracker with this message")


def _same_failure_message(failure: dict, stopped: str = "") -> str:
    """``stopped``: how many configs were built, where a budget stopped the builds."""
    from .failures import reason

    if _not_the_users(failure):
        return (f"every config failed the same way before any line of the program ran{stopped}: "
                f"{_plugin_fault(failure)}. If the program's arguments are wrong, fix them first\n"
                f"{_indent(failure.get('message', ''))}")
    return (f"every config failed the same way{stopped}, so the program or the call is at fault: "
            f"{reason(failure)}\n{_indent(failure.get('message', ''))}")


def _same_here(req: TuneRequest, configs: list[dict], results: list[dict]) -> bool:
    """Whether this process builds the first successfully built config into the same IR."""
    first = next(((c, r) for c, r in zip(configs, results) if "error" not in r), None)
    if first is None:
        return True
    try:
        built = req.program.spec.build(first[0])
    except Exception:
        return True  # let the records say why; the result's own check runs later
    return built.ir_sha == first[1]["ir_sha"]


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
        if indices:
            # One form for the keys: TileLang rewrites a @jit's out_idx in place when it compiles
            # ([-1] becomes [2]), so the same kernel must not key differently before and after.
            from dataclasses import replace

            counted = [i - n if i >= 0 else i for i in indices]
            req.compile_args = replace(req.compile_args, out_idx=counted[0] if isinstance(out_idx, int) else counted)
        return


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


def _build_in_workers(req: TuneRequest, pools: Pools, configs: list[dict], pool: object = None) -> list[dict] | None:
    """Every config's build result from the compile workers (``pool``, by default the GPU-less
    ones; those in ``req.prebuilt`` as they are); None where the program cannot be shipped to them
    (then the test process builds, as a last resort)."""
    shipped = _ship(req)
    if shipped is None:
        return None
    pool = pool or pools.compile_pool()
    futures = [None if key.canonical_json(config) in req.prebuilt else
               pool.schedule(_build_entry, (*shipped, config), timeout=req.tuner["compile_timeout"])
               for config in configs]
    results = []
    for config, fut in zip(configs, futures):
        out = req.prebuilt[key.canonical_json(config)] if fut is None else _result(fut, req)
        if "spec_error" in out:
            for other in futures:
                if other is not None:
                    other.cancel()
            _not_loaded(req, out)
            return None
        results.append(out)
    return results


def build_winner(req: TuneRequest, config: dict, pools: Pools) -> dict:
    """One config's build result (``build_candidate``'s form) from the device's timing worker, within
    ``compile_timeout``: a stored winner built again on a hit. The user's code runs there, as a
    cold run's builds run in the compile workers, and the timing worker sees what this process
    sees (the GPUs). Where the program cannot be shipped, it is built here (the cold path's last
    resort too). A failure is kept in ``req.prebuilt``: tuning records it instead of building again."""
    from .failures import BUILD, describe

    shipped = _ship(req)
    if shipped is not None:
        out = _result(pools.bench_pool(req.device).schedule(_build_entry, (*shipped, config),
                                                            timeout=req.tuner["compile_timeout"]), req)
        if "error" in out:
            req.prebuilt[key.canonical_json(config)] = out
        if "spec_error" not in out:
            return out
        _not_loaded(req, out)
    try:
        return req.program.spec.build(config).summary()
    except Exception as exc:
        return {"error": describe(exc, BUILD, req.program.spec.target)}


def _ship(req: TuneRequest) -> tuple | None:
    """``(spec_id, spec blob, env, sys.path)``: what a worker builds this request's configs from
    (kept in ``req.shipped``); None where the program cannot be pickled (``req.built_here`` says why)."""
    import os
    import sys

    from .shipping import dumps

    if req.shipped is None:
        try:
            blob = dumps(req.program.spec)
        except Exception as exc:
            req.built_here = (f"the program could not be pickled for the compile workers ({type(exc).__name__}: "
                              f"{exc}), so it was built here")
            return None
        req.shipped = (key.spec_id(blob), blob, dict(os.environ), list(sys.path))
    return req.shipped


def _not_loaded(req: TuneRequest, out: dict) -> None:
    from .failures import reason

    req.built_here = (f"the program could not be loaded in the compile workers "
                      f"({reason(out['spec_error'])}), so it was built here")


def _result(fut: object, req: TuneRequest) -> dict:
    """A build job's result, or its worker's death or timeout as a build failure."""
    from .failures import BUILD

    try:
        return fut.result()
    except Exception as exc:
        from .failures import classify

        status, why = classify(exc, "build", req.tuner["compile_timeout"])
        return {"error": {"stage": BUILD, "type": status, "message": why, "where": None, "tail": ""}}


def _build_entry(spec_id: str, blob: bytes, env: dict, path: list[str], config: dict) -> dict:
    from .compile_job import build_candidate

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
