"""Turn what the user hands the fixture into ``config -> PrimFunc``.

Accepted: a plain function returning a PrimFunc, a ``@tilelang.jit`` function
(lazy style returning a PrimFunc, or eager style taking example tensors), and a
``@tilelang.autotune`` function (its inner function, configs and settings).
The marker's settings override those the decorators carry (``session._request``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

_JIT_COMPILE_FIELDS = ("out_idx", "execution_backend", "target", "target_host", "pass_configs")
_AUTOTUNE_PROFILE_FIELDS = ("warmup", "rep", "timeout", "supply_type", "ref_prog", "supply_prog", "rtol", "atol",
                            "max_mismatched_ratio", "skip_check", "manual_check_prog", "cache_input_tensors")
_OUT_IDX_ATTR = "tilelang_out_idx"  # what T.empty() leaves on an eager PrimFunc (tilelang.jit.abi)
_TILELANG_LOGGERS = ("tilelang", "TileLang")


class ProgramError(Exception):
    """The program cannot produce a PrimFunc for a config."""


@dataclass
class Program:
    """A resolved program: a factory and the defaults its decorators carry."""

    name: str
    factory: Callable[[dict], Any]
    configs: Any = None
    compile_defaults: dict = field(default_factory=dict)
    profile_defaults: dict = field(default_factory=dict)


def resolve(program: Any, args: tuple, kwargs: dict) -> Program:
    """Resolve ``program`` called with fixed ``args``/``kwargs`` plus one config."""
    from tilelang.autotuner.tuner import AutoTuneImpl
    from tilelang.jit import JITImpl

    configs, profile_defaults = None, {}
    if isinstance(program, AutoTuneImpl):
        configs = program.configs
        profile_defaults = _autotune_settings(program)
        program = program.jit_impl
    if isinstance(program, JITImpl):
        return _resolve_jit(program, args, kwargs, configs, profile_defaults)
    if _is_jit_kernel(program):
        raise ProgramError("got a compiled kernel (JITKernel); pass the function that builds the PrimFunc "
                           "(or the @tilelang.jit function itself) and its arguments, so each config builds its own")
    if _is_prim_func(program):
        raise ProgramError("got a PrimFunc; pass the function that returns it and its arguments, "
                           "so each config builds its own")
    if not callable(program):
        raise ProgramError(f"program must be callable (a function returning a PrimFunc, or a @tilelang.jit or "
                           f"@tilelang.autotune function), got {type(program).__name__}: {program!r:.80}")
    return Program(_name(program), _plain_factory(program, args, kwargs), configs, {}, profile_defaults)


def _plain_factory(program: Callable, args: tuple, kwargs: dict) -> Callable[[dict], Any]:
    returns_kernels: list[dict] = []

    def plain(config: dict) -> Any:
        if returns_kernels:  # compiling every config in this process only to reject it would be slow
            raise ProgramError(_KERNEL_RETURNED.format(config=returns_kernels[0]))
        with quiet_tilelang():
            func = program(*args, **kwargs, **config)
        if _is_jit_kernel(func):
            returns_kernels.append(config)
            raise ProgramError(_KERNEL_RETURNED.format(config=config))
        if not _is_prim_func(func):
            raise ProgramError(f"program returned {type(func).__name__}, not a TileLang PrimFunc")
        return func

    return plain


_KERNEL_RETURNED = ("program returns a compiled kernel (JITKernel), not a PrimFunc (seen with config {config}); "
                    "return the @T.prim_func, or pass the @tilelang.jit function itself")


def _resolve_jit(jit: Any, args: tuple, kwargs: dict, configs: Any, profile_defaults: dict) -> Program:
    """A ``@tilelang.jit`` function: its compile settings, and for eager style the outputs T.empty declares."""
    name = _name(jit.func)
    compile_defaults = {f: getattr(jit, f) for f in _JIT_COMPILE_FIELDS if getattr(jit, f, None) is not None}
    probe = _probe(jit, args, kwargs, configs) if jit.mode != "lazy" else None
    out_idx: list[int] | None = None
    if jit.mode == "eager":
        compile_defaults.pop("out_idx", None)  # TileLang forbids it there: T.empty() declares the outputs
        out_idx = _out_idx_of(probe)
        if out_idx is not None:
            compile_defaults["out_idx"] = out_idx
        if "supply_prog" not in profile_defaults and _has_symbolic_shape(probe):
            # TileLang cannot make random inputs of a symbolic shape: use the test's example tensors.
            profile_defaults = {**profile_defaults, "supply_prog": ExampleInputs(_tensor_args(jit, args, kwargs))}

    def factory(config: dict) -> Any:
        with quiet_tilelang():
            func = jit.get_tir(*args, **kwargs, **config)
        if jit.mode != "eager":
            return func
        if probe is None:
            raise ProgramError(f"{name} is an eager-style @tilelang.jit function and could not be built before "
                               f"tuning to find the outputs T.empty() declares: give its tunable parameters "
                               f"defaults (or pass them to autotune(...))")
        if _out_idx_of(func) != out_idx:
            raise ProgramError(f"this config changes the outputs T.empty() declares ({_out_idx_of(func)} instead "
                               f"of {out_idx}); every config must return the same tensors")
        # The outputs travel in CompileArgs.out_idx (compile, cache, check); TileLang refuses both at once.
        return func.without_attr(_OUT_IDX_ATTR) if out_idx is not None else func

    return Program(name, factory, configs, compile_defaults, profile_defaults)


def _probe(jit: Any, args: tuple, kwargs: dict, configs: Any) -> Any:
    """Build one PrimFunc before tuning (this settles TileLang's lazy/eager mode); None if it cannot be built.

    Tried with the parameters' defaults, then with the decorator's first config. A call that does not
    bind is never made: TileLang would take the failed bind for eager style and keep that mode.
    """
    for extra in ({}, *_first_config(configs, args, kwargs)):
        try:
            jit.signature.bind(*args, **kwargs, **extra)
        except TypeError:
            continue
        try:
            with quiet_tilelang():
                return jit.get_tir(*args, **kwargs, **extra)
        except Exception as exc:
            if jit.mode == "eager":
                raise ProgramError(f"{_name(jit.func)} (eager-style @tilelang.jit) failed to build with "
                                   f"{extra or 'its default parameters'}: {type(exc).__name__}: {exc}") from None
            return None  # lazy: each config's failure becomes that candidate's record
    return None


def _first_config(configs: Any, args: tuple, kwargs: dict) -> list[dict]:
    try:
        configs = evaluate_configs(configs, args, kwargs)
    except Exception:
        return []
    return [configs[0]] if isinstance(configs, (list, tuple)) and configs and isinstance(configs[0], dict) else []


def _out_idx_of(func: Any) -> list[int] | None:
    attrs = getattr(func, "attrs", None)
    if not attrs or _OUT_IDX_ATTR not in attrs:
        return None
    return [int(i) for i in attrs[_OUT_IDX_ATTR]]


def _has_symbolic_shape(func: Any) -> bool:
    buffers = getattr(func, "buffer_map", None) or {}
    return any(type(dim).__name__ != "IntImm" for buf in buffers.values() for dim in buf.shape)


def _tensor_args(jit: Any, args: tuple, kwargs: dict) -> list:
    bound = jit.signature.bind(*args, **kwargs)
    return [v for v in bound.arguments.values() if hasattr(v, "shape") and hasattr(v, "clone")]


class ExampleInputs:
    """``supply_prog`` of an eager kernel with symbolic shapes: copies of the example tensors."""

    def __init__(self, tensors: list):
        self.tensors = tensors

    def __call__(self, params: Any) -> list:
        return [t.clone() for t in self.tensors]

    def __repr__(self) -> str:  # the cache key's identity of this supply_prog
        return f"ExampleInputs({[(tuple(t.shape), str(t.dtype)) for t in self.tensors]})"


def _autotune_settings(impl: Any) -> dict:
    """The settings written in ``@tilelang.autotune(...)``: those that differ from its defaults.

    TileLang's defaults (warmup=25, rep=100, timeout=100, cache_input_tensors=False) are its
    tuner's choices, not the user's; where the user left them, the plugin's defaults apply.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(impl) if f.default is not dataclasses.MISSING}
    out = {}
    for name in _AUTOTUNE_PROFILE_FIELDS:
        value = getattr(impl, name, None)
        if name in defaults and value is not defaults[name] and value != defaults[name]:
            out[name] = value
    return out


@contextlib.contextmanager
def quiet_tilelang(level: int = logging.WARNING) -> Iterator[None]:
    """Raise TileLang's loggers to ``level`` for the block, then put their levels back.

    Building a PrimFunc is quiet, but a program that compiles (e.g. returns ``tilelang.compile(...)``)
    logs two INFO lines per config; the user's logging configuration is left as it was.
    """
    loggers = [logging.getLogger(name) for name in _TILELANG_LOGGERS]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        if lg.getEffectiveLevel() < level:
            lg.setLevel(level)
    try:
        yield
    finally:
        for lg, old in zip(loggers, saved):
            lg.setLevel(old)


def _name(fn: Any) -> str:
    inner = getattr(fn, "orig_func", None) or getattr(fn, "func", None) or fn
    return getattr(inner, "__qualname__", None) or getattr(fn, "__qualname__", None) or type(fn).__name__


def _is_jit_kernel(obj: Any) -> bool:
    return type(obj).__name__ == "JITKernel"


def _is_prim_func(obj: Any) -> bool:
    return type(obj).__name__ == "PrimFunc"


def evaluate_configs(configs: Any, args: tuple, kwargs: dict) -> Any:
    """A callable config space is called with the program's arguments when it takes them."""
    if not callable(configs):
        return configs
    try:
        params = inspect.signature(configs).parameters
    except (TypeError, ValueError):
        params = {}
    return configs(*args, **kwargs) if params else configs()
