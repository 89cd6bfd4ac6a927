"""Turn what the user hands the fixture into ``config -> PrimFunc``.

Accepted: a plain function returning a PrimFunc, a ``@tilelang.jit`` function
(lazy style returning a PrimFunc, or eager style taking example tensors), and a
``@tilelang.autotune`` function (its inner function, configs and settings).
The marker's settings override those the decorators carry (``call._request``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard

from ..model import TargetLike, TLAutotuneError, cut_list, cut_text

if TYPE_CHECKING:
    import torch
    from tilelang.autotuner.tuner import AutoTuneImpl, AutoTuner
    from tilelang.jit import JITImpl
    from tilelang.jit.kernel import JITKernel
    from tvm.target import Target
    from tvm.tirx import PrimFunc

#: A config space as the marker or a decorator gives it: the configs, or a function returning them.
ConfigSpace = list[dict] | Callable[..., list[dict]]

_JIT_COMPILE_FIELDS = ("out_idx", "execution_backend", "target", "target_host", "pass_configs")
_AUTOTUNE_PROFILE_FIELDS = ("warmup", "rep", "timeout", "supply_type", "ref_prog", "supply_prog", "rtol", "atol",
                            "max_mismatched_ratio", "skip_check", "manual_check_prog", "cache_input_tensors")
_OUT_IDX_ATTR = "tilelang_out_idx"  # what T.empty() leaves on an eager PrimFunc (tilelang.jit.abi)
_TILELANG_LOGGERS = ("tilelang", "TileLang")


class ProgramError(TLAutotuneError):
    """The program cannot produce a PrimFunc for a config."""


@dataclass
class Built:
    """One config's PrimFunc and what building it told us (plain data, apart from ``func``)."""

    func: PrimFunc
    mode: str  # "lazy" | "eager" | "plain"
    out_idx: list[int] | None  # the outputs T.empty() declares (eager)
    symbolic: bool  # a buffer has a symbolic dimension

    @property
    def ir_sha(self) -> str:
        """sha256 of the PrimFunc's TVMScript text: what the kernel *is* (the candidate's identity)."""
        from .key import ir_sha

        return ir_sha(self.func)

    def summary(self) -> dict:
        """The build as plain data (it crosses processes; the PrimFunc itself does not)."""
        from .check import param_names

        return {"ir_sha": self.ir_sha, "mode": self.mode, "out_idx": self.out_idx, "symbolic": self.symbolic,
                "n_params": len(self.func.params), "params": param_names(self.func)}


@dataclass
class BuildSpec:
    """What builds one config's PrimFunc, in any process: ``target(*args, **kwargs, **config)``, the
    config's values over ``kwargs`` where both name one (as TileLang merges them).

    Picklable (see ``shipping.dumps``): compile workers build the candidates, so a config
    that crashes TVM (a segfault in ``T.ceildiv(N, None)``) is a record, not the end of the
    pytest run. Tensors are replaced by ``meta`` tensors of the same shape, strides and dtype:
    building reads only those.
    """

    target: JITImpl | Callable[..., PrimFunc]
    args: tuple
    kwargs: dict
    device_target: TargetLike | None = None  # the resolved target, for ``@jit(target="auto")`` and CUDA layouts
    target_kind: str | None = None  # its kind ("cuda", "hip": the PrimFunc is built under the target)

    def build(self, config: dict) -> Built:
        config = {k: v for k, v in config.items() if k != PASS_CONFIGS}
        with quiet_tilelang(), _target_context(self.device_target, self.target_kind):
            if _is_jit_impl(self.target):
                func, mode = _jit_tir(self.target, self.args, self.kwargs, config, self.device_target)
            else:
                func, mode = self.target(*self.args, **{**self.kwargs, **config}), "plain"
        if _is_jit_kernel(func):
            raise ProgramError(_KERNEL_RETURNED)
        if not _is_prim_func(func):
            raise ProgramError(f"program returned {type(func).__name__}, not a TileLang PrimFunc")
        out_idx = _out_idx_of(func) if mode == "eager" else None
        if out_idx is not None:
            # The outputs travel in CompileArgs.out_idx (compile, cache, check); TileLang refuses both at once.
            func = func.without_attr(_OUT_IDX_ATTR)
        return Built(func, mode, out_idx, _has_symbolic_shape(func))


#: TileLang's one reserved config key: per-config pass_configs, merged over the compile args'.
PASS_CONFIGS = "pass_configs"


@dataclass
class Program:
    """A resolved program: how to build a config, and the defaults its decorators carry."""

    name: str
    spec: BuildSpec
    configs: ConfigSpace | None = None
    compile_defaults: dict = field(default_factory=dict)
    profile_defaults: dict = field(default_factory=dict)
    signature: inspect.Signature | None = None
    jit: JITImpl | None = None  # the @tilelang.jit function, if any (its eager call form, for result.kernel)
    example_args: tuple = ((), {})  # the args and kwargs as the test passed them (real tensors)

    def check_call(self, configs: list[dict]) -> str | None:
        """Why no config can be built (the call itself does not bind), before anything runs."""
        if self.signature is None or (self.jit is not None and not _lazy_style(self.jit)):
            return None  # an eager kernel is also called by its T.const names alone (f.compile(M=...))
        params = self.signature.parameters
        takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        unknown = sorted({k for c in configs for k in c if k != PASS_CONFIGS and k not in params})
        if unknown and not takes_kwargs:
            return (f"config key(s) {cut_list(unknown)} are not parameters of {self.name}"
                    f"{_signature_text(self.signature)}")
        errors = set()
        for config in configs:
            try:
                self.signature.bind(*self.spec.args, **_with_config(self.spec.kwargs, config))
            except TypeError as exc:
                errors.add(str(exc))
        if errors and len(errors) == 1 and len(configs) > 0 and _all_fail_bind(self, configs):
            return f"{self.name}{_signature_text(self.signature)} cannot be called with these arguments: {errors.pop()}"
        return None


def _all_fail_bind(prog: Program, configs: list[dict]) -> bool:
    for config in configs:
        try:
            prog.signature.bind(*prog.spec.args, **_with_config(prog.spec.kwargs, config))
            return False
        except TypeError:
            continue
    return True


def _with_config(kwargs: dict, config: dict) -> dict:
    """The call's keyword arguments with one config's values over them (TileLang's merge: a config
    overrides the seed values a caller passes for the tunables, e.g. with ``do_not_specialize``)."""
    return {**kwargs, **{k: v for k, v in config.items() if k != PASS_CONFIGS}}


def _signature_text(sig: inspect.Signature) -> str:
    try:
        return cut_text(str(sig), 300)
    except Exception:
        return "(...)"


def resolve(program: object, args: tuple, kwargs: dict) -> Program:
    """Resolve ``program`` called with fixed ``args``/``kwargs`` plus one config.

    Nothing of the user's kernel code runs here: each config is built where a crash is a
    record (see :class:`BuildSpec`).
    """
    from tilelang.autotuner.tuner import AutoTuneImpl, AutoTuner

    configs, compile_defaults, profile_defaults = None, {}, {}
    if isinstance(program, AutoTuner):  # API mode: AutoTuner.from_kernel(fn, configs).set_...()
        configs = program.configs
        compile_defaults = _tuner_compile_args(program)
        profile_defaults = _tuner_profile_args(program)
        program = program.fn
    if isinstance(program, AutoTuneImpl):
        configs = program.configs if configs is None else configs
        profile_defaults = {**_autotune_settings(program), **profile_defaults}
        program = program.jit_impl
    captured = _captured_inputs()
    if captured is not None:  # `with tilelang.autotuner.set_autotune_inputs(...)` around the call
        profile_defaults = {**profile_defaults, "supply_prog": ExampleInputs(captured)}
    if _is_jit_impl(program):
        jit_defaults = {f: getattr(program, f) for f in _JIT_COMPILE_FIELDS if getattr(program, f, None) is not None}
        if program.mode == "eager":
            jit_defaults.pop("out_idx", None)  # TileLang forbids it there: T.empty() declares the outputs
        return Program(_name(program.func), BuildSpec(program, *_for_build(args, kwargs)), configs,
                       {**jit_defaults, **compile_defaults}, profile_defaults, _signature(program), program,
                       (args, kwargs))
    if _is_jit_kernel(program):
        raise ProgramError("got a compiled kernel (JITKernel); pass the function that builds the PrimFunc "
                           "(or the @tilelang.jit function itself) and its arguments, so each config builds its own")
    if _is_prim_func(program):
        raise ProgramError("got a PrimFunc; pass the function that returns it and its arguments, "
                           "so each config builds its own")
    if not callable(program):
        raise ProgramError(f"program must be callable (a function returning a PrimFunc, or a @tilelang.jit or "
                           f"@tilelang.autotune function), got {type(program).__name__}: {program!r:.80}")
    return Program(_name(program), BuildSpec(program, *_for_build(args, kwargs)), configs, compile_defaults,
                   profile_defaults, _signature(program), None, (args, kwargs))


_KERNEL_RETURNED = ("program returns a compiled kernel (JITKernel), not a PrimFunc; "
                    "return the @T.prim_func, or pass the @tilelang.jit function itself")


def _jit_tir(jit: JITImpl, args: tuple, kwargs: dict, config: dict,
             device_target: TargetLike | None) -> tuple[PrimFunc, str]:
    """``jit.get_tir`` with the resolved target in place of ``"auto"`` (a compile worker sees no GPU)."""
    saved = jit.target
    if device_target is not None and (saved is None or str(saved).strip() == "auto"):
        jit.target = device_target
    try:
        func = jit.get_tir(*args, **{**kwargs, **config})
    finally:
        jit.target = saved
    return func, jit.mode


def _target_context(device_target: TargetLike | None, kind: str | None) -> AbstractContextManager:
    """GPU kernels need their target while the PrimFunc is built (layouts, arch checks)."""
    import contextlib

    if device_target is None or kind not in ("cuda", "hip"):
        return contextlib.nullcontext()
    from tilelang.backend.target import determine_target

    return determine_target(device_target, return_object=True)


def _signature(program: object) -> inspect.Signature | None:
    fn = getattr(program, "signature", None)
    if isinstance(fn, inspect.Signature):
        return fn
    try:
        return inspect.signature(program)
    except (TypeError, ValueError):
        return None


def _for_build(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Arguments as the build needs them: tensors as ``meta`` tensors (shape, strides, dtype)."""

    def one(value: Any) -> Any:
        if _is_tensor(value):
            import torch

            return torch.empty_strided(tuple(value.shape), tuple(value.stride()), dtype=value.dtype, device="meta")
        if isinstance(value, (list, tuple)) and any(_is_tensor(v) for v in value):
            return type(value)(one(v) for v in value)
        return value

    return tuple(one(a) for a in args), {k: one(v) for k, v in kwargs.items()}


def _is_tensor(value: object) -> TypeGuard[torch.Tensor]:
    return type(value).__name__ in ("Tensor", "Parameter") and hasattr(value, "stride")


def _captured_inputs() -> list | None:
    try:
        from tilelang.autotuner.capture import get_autotune_inputs
    except ImportError:
        return None
    return get_autotune_inputs()


def _tuner_compile_args(tuner: AutoTuner) -> dict:
    """``AutoTuner.set_compile_args(...)``'s settings, when it was called."""
    args = vars(tuner).get("compile_args")
    if args is None:
        return {}
    out = {f: getattr(args, f) for f in _JIT_COMPILE_FIELDS if getattr(args, f, None) is not None}
    if "target" in out and not isinstance(out["target"], (str, dict)):
        out["target"] = _target_text(out["target"])
    if "target_host" in out and not isinstance(out["target_host"], (str, dict)):
        out["target_host"] = _target_text(out["target_host"])
    return out


def _target_text(target: Target) -> str:
    kind = getattr(getattr(target, "kind", None), "name", None)
    if kind == "c":
        return "c"
    return str(target)


def _tuner_profile_args(tuner: AutoTuner) -> dict:
    """``AutoTuner.set_profile_args(...)``'s settings that differ from its defaults."""
    args = vars(tuner).get("profile_args")
    if args is None:
        return {}
    defaults = {name: p.default for name, p in inspect.signature(type(tuner).set_profile_args).parameters.items()
                if p.default is not inspect.Parameter.empty}
    out = {}
    for name in _AUTOTUNE_PROFILE_FIELDS + ("backend",):
        value = getattr(args, name, None)
        if name in defaults and value is not defaults[name] and value != defaults[name]:
            out[name] = value
    return out


def _out_idx_of(func: PrimFunc) -> list[int] | None:
    attrs = getattr(func, "attrs", None)
    if not attrs or _OUT_IDX_ATTR not in attrs:
        return None
    return [int(i) for i in attrs[_OUT_IDX_ATTR]]


def _has_symbolic_shape(func: PrimFunc) -> bool:
    buffers = getattr(func, "buffer_map", None) or {}
    return any(type(dim).__name__ != "IntImm" for buf in buffers.values() for dim in buf.shape)


def tensor_args(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """The example tensors the test passed (the inputs of an eager kernel with symbolic shapes)."""
    values = list(args) + list(kwargs.values())
    return [v for v in values if _is_tensor(v)]


class ExampleInputs:
    """``supply_prog`` from example inputs (eager symbolic shapes, ``set_autotune_inputs``): copies."""

    def __init__(self, tensors: list[torch.Tensor]):
        # The values only: a kernel takes no part in autograd, and a tensor that is not a graph
        # leaf (the output of a forward pass, as a backward kernel's inputs are) neither pickles
        # to the timing worker nor copies.
        self.tensors = [t.detach() if _is_tensor(t) else t for t in tensors]

    def __call__(self, params: object) -> list[torch.Tensor]:
        return [t.clone() if _is_tensor(t) else t for t in self.tensors]

    def tl_identity(self) -> list:  # the cache key's identity of this supply_prog
        return [[list(t.shape), str(t.dtype)] if _is_tensor(t) else repr(t) for t in self.tensors]

    def __repr__(self) -> str:
        return f"ExampleInputs({self.tl_identity()})"


class EagerKernel:
    """``result.kernel`` of an eager-style kernel: called like the function (``f(A, B)``), returns
    what it returns (one tensor, or a tuple for several ``T.empty`` outputs)."""

    def __init__(self, jit: JITImpl, kernel: JITKernel, config: dict):
        self.jit, self.kernel = jit, kernel
        self.config = {k: v for k, v in config.items() if k != PASS_CONFIGS}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        merged = {**kwargs, **self.config}
        if self.jit.mode == "auto":
            self.jit.mode = "eager"
        try:
            self.jit.initialize_jit_mode(*args, **merged)
            _, kernel_args = self.jit.func.parse_args(*args, **merged)
        except TypeError:  # called as the compiled kernel is (its tensors only), not as the function
            out = self.kernel(*args, **kwargs)
        else:
            out = self.kernel(*kernel_args.values())
        return tuple(out) if isinstance(out, list) else out

    def __getattr__(self, name: str) -> Any:  # get_kernel_source, params, ... of the JITKernel
        return getattr(self.kernel, name)


def user_kernel(prog: Program, mode: str | None, kernel: JITKernel, config: dict) -> JITKernel | EagerKernel:
    """The tuned kernel, callable the way the user's style calls it."""
    if mode == "eager" and prog.jit is not None:
        return EagerKernel(prog.jit, kernel, config)
    return kernel


def _autotune_settings(impl: AutoTuneImpl) -> dict:
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


def _name(fn: object) -> str:
    inner = getattr(fn, "orig_func", None) or getattr(fn, "func", None) or fn
    return getattr(inner, "__qualname__", None) or getattr(fn, "__qualname__", None) or type(fn).__name__


def _is_jit_kernel(obj: object) -> TypeGuard[JITKernel]:
    return type(obj).__name__ == "JITKernel"


def _is_prim_func(obj: object) -> TypeGuard[PrimFunc]:
    return type(obj).__name__ == "PrimFunc"


def _lazy_style(jit: JITImpl) -> bool:
    """Whether a @tilelang.jit function returns a PrimFunc (read from its source, nothing runs)."""
    if jit.mode in ("lazy", "eager"):
        return jit.mode == "lazy"
    try:
        from tilelang.language.eager.ast import has_internal_prim_func

        return bool(has_internal_prim_func(getattr(jit.func, "orig_func", jit.func)))
    except Exception:
        return False


def _is_jit_impl(obj: object) -> TypeGuard[JITImpl]:
    return type(obj).__name__ == "JITImpl" and hasattr(obj, "get_tir")


def evaluate_configs(configs: ConfigSpace | None, args: tuple, kwargs: dict) -> object:
    """A callable config space is called with the program's arguments when it takes them."""
    if not callable(configs):
        return configs
    try:
        params = inspect.signature(configs).parameters
    except (TypeError, ValueError):
        params = {}
    return configs(*args, **kwargs) if params else configs()
