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
    (``_build_ahead``) are keyed; the others are left ``built=False`` for ``LazyBuilds``.
    """
    problem = req.program.check_call(req.configs)
    if problem:
        raise TuneError(f"{problem} (nothing was built or compiled)")
    if deadline is None:
        results = _build(req, pools, warn, list(range(len(req.configs))))
    else:
        results = _build_ahead(req, pools, warn, deadline)
    _check_built(req, results)
    built = [results[i] for i in sorted(results)]
    complete_request(req, built)
    _check_out_idx(req, built)
    profile = req.profile_args.canonical()
    cands = []
    for i, config in enumerate(req.configs):
        cand = Candidate(i, config, compile_args=_candidate_compile_args(req, config))
        if i in results:
            _fill(req, cand, results[i], profile, machine)
        else:
            cand.built = False
        cands.append(cand)
    return cands


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


def _build(req: TuneRequest, pools: Pools | None, warn: Warn | None, indices: list[int]) -> dict[int, dict]:
    """The build results of the configs at ``indices``, in the workers where they can build there.
    The first builds decide where the rest build (``req.built_here``)."""
    configs = [req.configs[i] for i in indices]
    first = req.shipped is None and req.built_here is None
    results = _build_in_workers(req, pools, configs) if pools is not None and req.built_here is None else None
    if results is not None and first:
        results = _where_to_build(req, configs, results, warn)
    if results is None:
        results = _build_here(req, configs)
    return dict(zip(indices, results, strict=True))


def _where_to_build(req: TuneRequest, configs: list[dict], results: list[dict], warn: Warn | None) -> list[dict] | None:
    """The workers' results, or those of building here where the workers cannot build the program
    as this process does (then ``req.built_here`` says why); None: build them here."""
    if _machinery_failed(results):
        # No line of the user's code ran and every config failed alike in the workers: if the
        # program builds in this process, the fault is in how it reached them (the plugin's).
        here = _build_here(req, configs)
        if not _all_failed_alike(here):
            failure = next(r["error"] for r in results if "error" in r)
            req.built_here = f"the compile workers could not build it ({_plugin_fault(failure)}), so it was built here"
            if warn is not None:
                warn(TuneWarning(f"{req.nodeid}: {req.built_here}"))
            return here
    if req.built_here is None and not _same_here(configs, req, results):
        # The program builds differently in a worker (no GPU visible there: it asks the device at
        # build time, e.g. torch.cuda.get_device_capability): build every config here instead.
        req.built_here = "the program builds a different kernel where no GPU is visible, so it was built here"
        return None
    return results


def _build_ahead(req: TuneRequest, pools: Pools | None, warn: Warn | None, deadline: float) -> dict[int, dict]:
    """Build configs in the order the search will propose them, batch by batch, until every config
    is built, the deadline passes (one batch is always built), or the space is expected to take
    more than ``BUILD_AHEAD_SHARE`` of ``max_tuning_s`` to build (once a config has built)."""
    from .search import Search

    tuner = req.tuner
    order = Search(req.configs, tuner["strategy"], tuner["max_trials"], tuner["seed"]).order
    workers = pools.n_workers if pools is not None else 1
    size = max(BUILD_BATCH_MIN, BUILD_BATCH_ROUNDS * workers)
    allowance = BUILD_AHEAD_SHARE * tuner["max_tuning_s"]
    results: dict[int, dict] = {}
    for start in range(0, len(order), size):
        if results and time.perf_counter() >= deadline:
            break
        t0 = time.perf_counter()
        batch = order[start:start + size]
        results.update(_build(req, pools, warn, batch))
        per_config = (time.perf_counter() - t0) / len(batch)
        if start and per_config * len(order) > allowance and any("error" not in r for r in results.values()):
            break
    return results


def _check_built(req: TuneRequest, results: dict[int, dict]) -> None:
    """Fail once where no config built: the call's fault when every config failed alike; when a
    budget stopped the builds first, that is said too."""
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
    in the compile workers (or here, where ``req.built_here`` says the program builds here)."""

    def __init__(self, req: TuneRequest, machine: dict, pools: Pools):
        self.req = req
        self.machine = machine
        self.pools = pools
        self.profile = req.profile_args.canonical()

    def start(self, cand: Candidate) -> Future | None:
        """Start building ``cand``: its future, or None when it was built here, now."""
        if self.req.built_here is None and self.req.shipped is not None:
            spec_id, blob, env, path = self.req.shipped
            return self.pools.compile_pool().schedule(_build_entry, (spec_id, blob, cand.config, env, path),
                                                      timeout=self.req.tuner["compile_timeout"])
        self._fill(cand, _build_here(self.req, [cand.config])[0])
        return None

    def finish(self, cand: Candidate, fut: Future) -> None:
        """Key ``cand`` from its finished build (a failure is a record on it, as ahead)."""
        try:
            out = fut.result()
        except Exception as exc:
            out = _pool_failure(exc, self.req)
        if "spec_error" in out:
            out = {"error": out["spec_error"]}
        self._fill(cand, out)

    def _fill(self, cand: Candidate, res: dict) -> None:
        out_idx = res.get("out_idx")
        if "error" not in res and res.get("mode") == "eager" and out_idx is not None \
                and list(out_idx) != list(self.req.compile_args.out_idx or []):
            raise TuneError(f"the configs change the outputs T.empty() declares ({cand.config} returns "
                            f"{list(out_idx)}, others {self.req.compile_args.out_idx}); every config must return "
                            f"the same tensors")
        _fill(self.req, cand, res, self.profile, self.machine)


def _build_here(req: TuneRequest, configs: list[dict]) -> list[dict]:
    """``configs`` built in this process (the last resort: a crash here ends the session)."""
    from .failures import BUILD, describe

    results = []
    for config in configs:
        try:
            built = req.program.spec.build(config)
        except Exception as exc:
            results.append({"error": describe(exc, BUILD, req.program.spec.target)})
            continue
        results.append({**built.summary(), "func_blob": pickle.dumps(built.func)})
    return results


def _all_failed_alike(results: list[dict]) -> bool:
    from .failures import same_failure

    failures = [r["error"] for r in results if "error" in r]
    return len(failures) == len(results) and same_failure(failures)


def _machinery_failed(results: list[dict]) -> bool:
    """Every config raised the same exception in the workers with none of the user's lines on
    its traceback (crashes and timeouts excluded: rebuilding those here could end the session)."""
    return _all_failed_alike(results) and all(_not_the_users(r["error"]) for r in results)


def _not_the_users(failure: dict) -> bool:
    """Raised with no line of the user's code on its traceback, and not an argument error (a
    ``TypeError`` binding the call's arguments is the call's fault)."""
    return failure.get("in_user_code") is False and failure.get("type") != "TypeError"


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


def _same_here(configs: list[dict], req: TuneRequest, results: list[dict]) -> bool:
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
        return


def _build_in_workers(req: TuneRequest, pools: Pools, configs: list[dict]) -> list[dict] | None:
    """The build results of ``configs`` from the compile workers; None where the program cannot be
    shipped to them (then the test process builds, as a last resort)."""
    if req.shipped is None and not _ship(req):
        return None
    spec_id, blob, env, path = req.shipped
    pool = pools.compile_pool()
    futures = [pool.schedule(_build_entry, (spec_id, blob, config, env, path), timeout=req.tuner["compile_timeout"])
               for config in configs]
    results = []
    for fut in futures:
        try:
            out = fut.result()
        except Exception as exc:
            out = _pool_failure(exc, req)
        if "spec_error" in out:
            for other in futures:
                other.cancel()
            from .failures import reason

            req.built_here = (f"the program could not be loaded in the compile workers "
                              f"({reason(out['spec_error'])}), so it was built here")
            return None
        results.append(out)
    return results


def _ship(req: TuneRequest) -> bool:
    """Pickle the program for the compile workers (``req.shipped``); False, with
    ``req.built_here`` saying why, where it cannot be."""
    import os
    import sys

    from .shipping import dumps

    try:
        blob = dumps(req.program.spec)
    except Exception as exc:
        req.built_here = (f"the program could not be pickled for the compile workers ({type(exc).__name__}: "
                          f"{exc}), so it was built here")
        return False
    req.shipped = (key.spec_id(blob), blob, dict(os.environ), list(sys.path))
    return True


def _pool_failure(exc: BaseException, req: TuneRequest) -> dict:
    """A build the pool lost (a crash, a timeout) as a failure record."""
    from .failures import BUILD
    from .pipeline import classify  # pebble: only where workers ran

    status, why = classify(exc, "build", req.tuner["compile_timeout"])
    return {"error": {"stage": BUILD, "type": status, "message": why, "where": None, "tail": ""}}


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


def budget_key(req: TuneRequest, machine: dict) -> str:
    """The key of a budgeted tuning whose builds were cut (``key.budget_key``): taken before any
    build, so a warm run can look it up without building."""
    return key.budget_key(req.identity, req.configs, req.compile_args.canonical(), req.profile_args.canonical(),
                          req.tuner, machine)


def _indent(text: str) -> str:
    from .pipeline import indent

    return indent(text)
