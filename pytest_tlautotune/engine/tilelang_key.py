"""The key TileLang's own tuner would look a tuning up under in its cache, as production code
computes it: from the ``@tilelang.autotune`` decorator's or the ``AutoTuner``'s own settings, never
the marker's (a marker's ``ref_prog`` checks the plugin's candidates; production code has none).

TileLang 0.1.15 computes it in ``AutoTuner.run()``: the signature's defaults, the closure's plain
values, the call's arguments (``set_kernel_parameters``, as ``AutoTuneImpl.__call__`` normalises
them, ``do_not_specialize`` left out), a callable config space called with those, then
``AutoTuner.generate_cache_key``, which gives None (TileLang never caches) where a ``ref_prog``,
``supply_prog`` or ``manual_check_prog`` is set. Here the tuner is built as ``AutoTuneImpl.__call__``
builds it (``get_tunner``) and keyed with TileLang's own ``generate_cache_key``; only ``run()``'s
extraction of the parameters and the closure is repeated. Nothing is tuned or compiled.

:func:`note` says what the stored entry answers: the key, or why production code would not find
it there (TileLang gives no key; the marker changed what is compiled or the config space).
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .candidates import out_positions
from .key import canonical_json

if TYPE_CHECKING:
    from tilelang.autotuner.tuner import AutoTuneImpl, AutoTuner

    from ..model import TuneRequest

_CHECK_PROGS = ("ref_prog", "supply_prog", "manual_check_prog")
_CELL_TYPES = (int, float, str, bool, type(None))  # what run() accepts in a closure cell


@dataclass(frozen=True)
class TileLangKey:
    """TileLang's cache key of one tuning, or why there is none, and what production code would
    compile (to tell whether the plugin's kernel is the one it would load)."""

    function: str
    key: str | None = None
    why: str | None = None
    version: str | None = None
    configs: tuple[str, ...] = ()  # canonical JSON of each config TileLang would tune
    target_kind: str | None = None
    execution_backend: str | None = None
    out_idx: Any = None
    pass_configs: dict | None = None


def of_call(program: object, args: tuple, kwargs: dict) -> TileLangKey:
    """TileLang's key for ``program(*args, **kwargs)`` tuned by TileLang's own tuner; never raises."""
    from tilelang.autotuner.tuner import AutoTuneImpl, AutoTuner

    name = _name(program)
    try:
        if isinstance(program, AutoTuneImpl):
            return _of_autotune(program, args, kwargs, name)
        if isinstance(program, AutoTuner):
            return _of_tuner(program, name, "the AutoTuner")
    except Exception as exc:  # a key we cannot compute is a note, never the test's failure
        return TileLangKey(name, why=f"computing TileLang's key of {name} failed: {type(exc).__name__}: {exc}")
    return TileLangKey(name, why=f"{name} is not a @tilelang.autotune function or an AutoTuner: "
                                 f"TileLang's own tuner does not tune it in production code")


def _of_autotune(impl: AutoTuneImpl, args: tuple, kwargs: dict, name: str) -> TileLangKey:
    """As ``AutoTuneImpl.__call__`` keys the call, then as ``run()`` does."""
    from tilelang.autotuner import tuner as tl_tuner

    normalize = getattr(tl_tuner, "_normalize_value", None)
    if normalize is None:
        return TileLangKey(name, why="this TileLang has no tuner._normalize_value: its key cannot be computed here")
    kwargs = {k: v for k, v in kwargs.items() if k != "__return_kernel"}
    tuner = impl.get_tunner()
    if impl.do_not_specialize:
        bound = impl.jit_impl.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        kept = {k: v for k, v in bound.arguments.items() if k not in impl.do_not_specialize}
        parameters = ((), normalize(kept, sort_dict_items=True))
    else:
        parameters = (normalize(args, sort_dict_items=True), normalize(kwargs, sort_dict_items=True))
    tuner.set_kernel_parameters(parameters, impl.jit_impl.signature.parameters)
    return _of_tuner(tuner, name, "the @tilelang.autotune")


def _of_tuner(tuner: AutoTuner, name: str, what: str) -> TileLangKey:
    """As ``AutoTuner.run()`` computes its key (on a copy: the caller's tuner is left as it is)."""
    import tilelang
    from tilelang.autotuner.capture import get_autotune_inputs

    fn = tuner.fn
    parameters = inspect.signature(fn).parameters
    extra = {}
    for var, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        if var in parameters:
            continue
        try:
            value = cell.cell_contents
        except ValueError:
            return TileLangKey(name, why=f"{name}'s closure variable {var!r} is unset: TileLang's run() fails on it")
        if not isinstance(value, _CELL_TYPES):
            return TileLangKey(name, why=f"{name} closes over {var!r} ({type(value).__name__}), which TileLang's "
                                         f"run() refuses (only int, float, str, bool, None): it cannot cache it")
        extra[var] = value
    configs = tuner.configs
    if callable(configs):
        if tuner._kernel_parameters is None:
            return TileLangKey(name, why="the config space is a function and AutoTuner.run() has no call "
                                         "arguments to call it with")
        call_args, call_kwargs = tuner._kernel_parameters
        configs = configs(*call_args, **dict(call_kwargs))
    probe = copy.copy(tuner)
    probe.configs = configs
    try:
        key = probe.generate_cache_key(parameters, extra)
    except (TypeError, ValueError) as exc:
        return TileLangKey(name, why=f"TileLang cannot key this tuning ({exc}); its own run() fails alike")
    compile_args = tuner.compile_args
    known = dict(function=name, version=tilelang.__version__, configs=tuple(canonical_json(c) for c in configs),
                 target_kind=_kind(compile_args.target), execution_backend=str(compile_args.execution_backend),
                 out_idx=compile_args.out_idx, pass_configs=compile_args.pass_configs)
    if key is None:
        given = [p for p in _CHECK_PROGS if getattr(tuner.profile_args, p, None) is not None]
        if get_autotune_inputs() is not None and given == ["supply_prog"]:
            why = ("its inputs come from set_autotune_inputs (a supply_prog to TileLang): "
                   "TileLang never caches such a tuning")
        else:
            why = f"{what} sets {' and '.join(given) or 'a check program'}: TileLang never caches such a tuning"
        return TileLangKey(why=why, **known)
    return TileLangKey(key=key, **known)


def note(tl: TileLangKey | None, req: TuneRequest, config: dict | None, backend: str | None,
         n_params: int | None = None) -> dict | None:
    """What the entry tuned for ``req`` (winner ``config``, kernel on ``backend`` with ``n_params``
    parameters) answers of TileLang's cache: ``{"key": ..., "tilelang": version}``, or ``{"key": None,
    "why": ...}``; with the function and the test. None without a TileLang key computed for the call."""
    if tl is None:
        return None
    base = {"function": tl.function, "test": req.nodeid}
    try:
        why = tl.why if tl.key is None else _not_what_production_loads(tl, req, config, backend, n_params)
    except Exception as exc:  # a note, never the test's failure
        why = f"comparing the kernel with {tl.function}'s failed: {type(exc).__name__}: {exc}"
    if why is not None:
        return {**base, "key": None, "why": why}
    return {**base, "key": tl.key, "tilelang": tl.version}


def _not_what_production_loads(tl: TileLangKey, req: TuneRequest, config: dict | None,
                               backend: str | None, n_params: int | None = None) -> str | None:
    """Why the plugin's kernel is not the one production code's tuner would load under its key."""
    if config is not None and canonical_json(config) not in tl.configs:
        return (f"the winner {canonical_json(config)} is not in the config space of {tl.function}'s tuner "
                f"(the marker's configs replaced it)")
    ours, theirs = req.program.spec.target_kind, tl.target_kind
    if "auto" not in (ours, theirs) and ours != theirs:
        return f"the kernel was compiled for target {ours!r}; {tl.function} compiles for {theirs!r}"
    if backend and tl.execution_backend not in (None, "auto", backend):
        return f"the kernel runs on the {backend} backend; {tl.function}'s TileLang loads {tl.execution_backend}"
    if tl.out_idx is not None and _indices(tl.out_idx, n_params) != _indices(req.compile_args.out_idx, n_params):
        return f"the kernel was compiled with out_idx={req.compile_args.out_idx}; {tl.function} has {tl.out_idx}"
    if _passes(tl.pass_configs) != _passes(req.compile_args.pass_configs):
        return f"the kernel was compiled with other pass_configs than {tl.function}'s (the marker's)"
    return None


def _indices(out_idx: object, n_params: int | None = None) -> list | None:
    """The output indices, each counted from the front where the kernel's parameter count is known
    (``[-1]`` and ``[1]`` name the same output of a two-parameter kernel)."""
    if out_idx is None:
        return None
    if n_params:
        return out_positions(out_idx, n_params)
    return [int(i) for i in out_idx] if isinstance(out_idx, (list, tuple)) else [int(out_idx)]


def _passes(pass_configs: dict | None) -> str:
    return canonical_json({str(k): v for k, v in (pass_configs or {}).items()})


def _kind(target: object) -> str:
    from ..settings import target_kind

    return target_kind(target)


def _name(program: object) -> str:
    inner = getattr(program, "jit_impl", None) or program
    inner = getattr(inner, "fn", None) or getattr(inner, "func", None) or inner
    inner = getattr(inner, "orig_func", None) or inner
    return getattr(inner, "__qualname__", None) or type(program).__name__
