"""Turn what the user hands the fixture into ``config -> PrimFunc``.

Accepted: a plain function returning a PrimFunc, a ``@tilelang.jit`` function
(lazy style returning a PrimFunc, or eager style taking example tensors), and a
``@tilelang.autotune`` function (its inner function, configs and settings).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_JIT_COMPILE_FIELDS = ("out_idx", "execution_backend", "target", "target_host", "pass_configs")
_AUTOTUNE_PROFILE_FIELDS = ("warmup", "rep", "timeout", "supply_type", "ref_prog", "supply_prog", "rtol", "atol",
                            "max_mismatched_ratio", "skip_check", "manual_check_prog", "cache_input_tensors")


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
        profile_defaults = {f: getattr(program, f) for f in _AUTOTUNE_PROFILE_FIELDS if hasattr(program, f)}
        program = program.jit_impl
    if isinstance(program, JITImpl):
        jit = program
        compile_defaults = {f: getattr(jit, f) for f in _JIT_COMPILE_FIELDS if getattr(jit, f, None) is not None}

        def factory(config: dict) -> Any:
            return jit.get_tir(*args, **kwargs, **config)

        return Program(_name(jit.func), factory, configs, compile_defaults, profile_defaults)
    if not callable(program):
        raise ProgramError(f"program must be callable (a function returning a PrimFunc), got {type(program).__name__}")

    def plain(config: dict) -> Any:
        func = program(*args, **kwargs, **config)
        if _is_jit_kernel(func):
            raise ProgramError("program returned a compiled kernel; return the PrimFunc (or pass the @tilelang.jit "
                               "function itself)")
        if type(func).__name__ != "PrimFunc":
            raise ProgramError(f"program returned {type(func).__name__}, not a TileLang PrimFunc")
        return func

    return Program(_name(program), plain, configs, {}, profile_defaults)


def _name(fn: Any) -> str:
    inner = getattr(fn, "func", fn)
    return getattr(inner, "__qualname__", None) or getattr(fn, "__qualname__", None) or type(fn).__name__


def _is_jit_kernel(obj: Any) -> bool:
    return type(obj).__name__ == "JITKernel"


def evaluate_configs(configs: Any, args: tuple, kwargs: dict) -> Any:
    """A callable config space is called with the program's arguments when it takes them."""
    if not callable(configs):
        return configs
    try:
        params = inspect.signature(configs).parameters
    except (TypeError, ValueError):
        params = {}
    return configs(*args, **kwargs) if params else configs()
