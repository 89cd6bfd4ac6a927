"""From a request to keyed candidates: build every config's PrimFunc (in the compile workers),
hash its IR into the candidate's key, and key the whole tuned entry."""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING

from .. import key
from ..model import Candidate, TuneError, TuneRequest, TuneWarning, Warn

if TYPE_CHECKING:
    from ..param import CompileArgs
    from .workers import Pools


def build_candidates(req: TuneRequest, machine: dict, pools: Pools | None = None,
                     warn: Warn | None = None) -> list[Candidate]:
    """Build each config's PrimFunc and key it.

    The builds run in the compile workers (it is the user's code, with configs that may be
    invalid: a crash there is a record on that config). A failure that every config shares
    (the call, not a config) fails the test once, before anything compiles.
    """
    from .failures import same_failure
    from .reference_config import plan, seed_config

    problem = req.program.check_call(req.configs)
    if problem:
        raise TuneError(f"{problem} (nothing was built or compiled)")
    # The reference config of the check without a ref_prog, where it is not in the space: built beside it.
    seed = seed_config(req)
    configs = req.configs + ([seed] if seed is not None else [])
    results = _build_in_workers(req, pools, configs) if pools is not None else None
    if results is not None and _crashed_without_gpu(req, results, pools):
        # Every config crashed where no GPU is visible (a program that asks CUDA while it builds,
        # as TileLang's convolution example does): build, and later compile, where the GPU is.
        again = _build_in_workers(req, pools, configs, pools.device_compile_pool(req.device))
        if again is not None and not _crashed_without_gpu(req, again, pools):
            req.on_device = True
            results = again
    if results is not None and _machinery_failed(results[:len(req.configs)]):
        # No line of the user's code ran and every config failed alike in the workers: if the
        # program builds in this process, the fault is in how it reached them (the plugin's).
        here = _build_here(req, configs)
        if not _all_failed_alike(here[:len(req.configs)]):
            failure = next(r["error"] for r in results if "error" in r)
            req.built_here = f"the compile workers could not build it ({_plugin_fault(failure)}), so it was built here"
            if warn is not None:
                warn(TuneWarning(f"{req.nodeid}: {req.built_here}"))
            results = here
    if results is not None and req.built_here is None and not _same_here(req, results):
        # The program builds differently in a worker (no GPU visible there: it asks the device at
        # build time, e.g. torch.cuda.get_device_capability): build every config here instead.
        req.built_here = "the program builds a different kernel where no GPU is visible, so it was built here"
        results = None
    if results is None:
        results = _build_here(req, configs)
    # What the warm path's index checks before it serves this space again without building it.
    req.reads = key.file_digests(path for r in results for path in r.get("reads", ()))
    results, seed_result = results[:len(req.configs)], results[len(req.configs):]
    failures = [r["error"] for r in results if "error" in r]
    if len(failures) == len(results) and same_failure(failures):
        raise TuneError(_same_failure_message(failures[0]))
    complete_request(req, results)
    _check_out_idx(req, results)
    _check_inplace(req, results)
    profile = req.profile_args.canonical()
    cands = [_candidate(req, i, config, res, profile, machine)
             for i, (config, res) in enumerate(zip(req.configs, results))]
    extra = _candidate(req, len(cands), seed, seed_result[0], profile, machine) if seed is not None else None
    req.reference = plan(req, cands, extra)
    return cands


def _candidate(req: TuneRequest, index: int, config: dict, res: dict, profile: dict, machine: dict) -> Candidate:
    """One config's candidate from its build result: keyed by its IR, or carrying the build's failure."""
    cand = Candidate(index, config, compile_args=_candidate_compile_args(req, config))
    if "error" in res:
        cand.error = res["error"]
        return cand
    cand.func_blob, cand.ir_sha = res.get("func_blob"), res["ir_sha"]
    if cand.func_blob is not None:
        cand.source = cand.func_blob
    else:
        spec_id, blob, env, path = req.shipped
        cand.source = (spec_id, blob, config, env, path, res["ir_sha"])
    cand.ckey = key.candidate_key(cand.ir_sha, cand.compile_args.canonical(), profile, machine)
    return cand


def _build_here(req: TuneRequest, configs: list[dict]) -> list[dict]:
    """Every config built in this process (the last resort: a crash here ends the session)."""
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


def _same_failure_message(failure: dict) -> str:
    from .failures import reason

    if _not_the_users(failure):
        return (f"every config failed the same way before any line of the program ran: {_plugin_fault(failure)}. "
                f"If the program's arguments are wrong, fix them first\n{_indent(failure.get('message', ''))}")
    return (f"every config failed the same way, so the program or the call is at fault: "
            f"{reason(failure)}\n{_indent(failure.get('message', ''))}")


def _same_here(req: TuneRequest, results: list[dict]) -> bool:
    """Whether this process builds the first successfully built config into the same IR."""
    first = next(((c, r) for c, r in zip(req.configs, results) if "error" not in r), None)
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


def _check_inplace(req: TuneRequest, results: list[dict]) -> None:
    """``inplace`` must name inputs of the PrimFunc: said once, before anything compiles."""
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
        raise TuneError(f"inplace={list(inplace)!r}: {exc}; nothing was compiled") from None


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


def _indent(text: str) -> str:
    from .pipeline import indent

    return indent(text)
