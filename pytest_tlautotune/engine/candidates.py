"""From a request to keyed candidates: build every config's PrimFunc (in the compile workers),
hash its IR into the candidate's key, and key the whole tuned entry."""

from __future__ import annotations

import pickle
from typing import TYPE_CHECKING

from .. import key
from ..model import Candidate, TuneError, TuneRequest

if TYPE_CHECKING:
    from ..param import CompileArgs
    from .workers import Pools


def build_candidates(req: TuneRequest, machine: dict, pools: Pools | None = None) -> list[Candidate]:
    """Build each config's PrimFunc and key it.

    The builds run in the compile workers (it is the user's code, with configs that may be
    invalid: a crash there is a record on that config). A failure that every config shares
    (the call, not a config) fails the test once, before anything compiles.
    """
    from .failures import BUILD, describe, reason, same_failure
    from .reads import recording

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
            reads: set[str] = set()
            try:
                with recording(req.program.spec.target) as reads:
                    built = req.program.spec.build(config)
            except Exception as exc:
                results.append({"error": describe(exc, BUILD, req.program.spec.target), "reads": sorted(reads)})
                continue
            results.append({**built.summary(), "func_blob": pickle.dumps(built.func), "reads": sorted(reads)})
    # What the warm path's index checks before it serves this space again without building it.
    req.reads = key.file_digests(path for r in results for path in r.get("reads", ()))
    failures = [r["error"] for r in results if "error" in r]
    if len(failures) == len(results) and same_failure(failures):
        raise TuneError(f"every config failed the same way, so the program or the call is at fault: "
                        f"{reason(failures[0])}\n{_indent(failures[0].get('message', ''))}")
    complete_request(req, results)
    _check_out_idx(req, results)
    profile = req.profile_args.canonical()
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
            cand.ckey = key.candidate_key(cand.ir_sha, cand.compile_args.canonical(), profile, machine)
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
        return


def _build_in_workers(req: TuneRequest, pools: Pools) -> list[dict] | None:
    """Every config's build result from the compile workers; None where the program cannot be
    shipped to them (then the test process builds, as a last resort)."""
    import os
    import sys

    from .failures import BUILD
    from .shipping import dumps

    try:
        blob = dumps(req.program.spec)
    except Exception:
        return None
    spec_id = key.spec_id(blob)
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
            from .pipeline import classify  # pebble: only where workers ran

            status, why = classify(exc, "build", req.tuner["compile_timeout"])
            out = {"error": {"stage": BUILD, "type": status, "message": why, "where": None, "tail": ""}}
        if "spec_error" in out:
            for other in futures:
                other.cancel()
            return None
        results.append(out)
    return results


def _build_entry(spec_id: str, blob: bytes, config: dict, env: dict, path: list[str]) -> dict:
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
