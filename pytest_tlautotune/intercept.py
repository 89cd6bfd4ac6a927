"""TileLang's own tuner, started inside a test, served by the plugin's engine.

With ``--tl-intercept`` (ini ``tl_intercept``, env ``TL_AUTOTUNE_INTERCEPT``), and in any test
marked ``autotune`` that does not use the fixture, every tuning TileLang starts while the test
body runs goes through the fixture's own path (``engine.call.tune``: key, cache, compile workers,
check, records, one row per tuning, named as fixture calls are): a ``@tilelang.autotune``
function called (``AutoTuneImpl.__call__``, ``.compile``) and ``AutoTuner.run()``. The caller
gets what TileLang returns there: the tuned ``JITKernel`` (lazy style), the kernel's outputs
(eager style), or TileLang's ``AutotuneResult``, with ``config``, ``latency`` and ``ref_latency``
set on the kernel as TileLang's tuner sets them.

What TileLang decides before tuning it still decides: the key that ``do_not_specialize`` leaves
out, the "tunable parameters already provided" short cut (the kernel compiled as called,
``config`` None, no tuning and no row), a callable config space called with that key's values,
and one tuning per key and function within the test. Seed values passed for the tunables
(``do_not_specialize``) are overridden by every config, and are the reference config the
candidates are checked against where no ``ref_prog`` is given (``engine/reference_config.py``).

The classes are patched around the test's call phase only (``plugin.pytest_runtest_call``) and
put back after it: collection, fixtures and plain scripts see TileLang as it is. The test's
random-number state is as the test left it: the tuning draws from generators of its own.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest
    from tilelang.autotuner.tuner import AutoTuneImpl, AutoTuner

    from .param import AutotuneResult
    from .settings import TuneSettings

#: ``tune(program, args, kwargs, settings)``: the fixture's call (``plugin.py`` fails or skips the test).
Tune = Callable[[object, tuple, dict, "TuneSettings"], "AutotuneResult"]

_PASS_CONFIGS = "pass_configs"  # TileLang's reserved config key: never a parameter of the kernel
_RUN_DEFAULTS = {"warmup": 25, "rep": 100}  # AutoTuner.run's own: a caller's other values are its settings


def wanted(item: pytest.Item, option: bool) -> bool:
    """Whether TileLang's tuner calls in ``item`` are served: ``--tl-intercept`` (``option``), or
    an ``autotune`` marker on a test that does not use the fixture."""
    if option:
        return True
    return item.get_closest_marker("autotune") is not None and "autotune" not in getattr(item, "fixturenames", ())


@contextlib.contextmanager
def intercepting(tune: Tune, settings: TuneSettings, marked: bool) -> Iterator[None]:
    """Serve TileLang's tuner calls with ``tune`` for the block, then put TileLang's methods back.

    Where TileLang is not imported yet and the test is not marked, nothing is patched (importing
    TileLang for a test that never uses it would cost seconds): a test module that tunes imports it.
    """
    if "tilelang" not in sys.modules and not marked:
        yield
        return
    from tilelang.autotuner.tuner import AutoTuneImpl, AutoTuner

    served = Served(tune, settings)
    saved_call, saved_run = AutoTuneImpl.__dict__["__call__"], AutoTuner.__dict__["run"]

    @functools.wraps(saved_call)
    def call(impl: AutoTuneImpl, *args: Any, **kwargs: Any) -> Any:
        return served.call(impl, args, kwargs)

    @functools.wraps(saved_run)
    def run(tuner: AutoTuner, *args: Any, **kwargs: Any) -> Any:
        return served.run(tuner, saved_run, args, kwargs)

    AutoTuneImpl.__call__, AutoTuner.run = call, run
    try:
        yield
    finally:
        AutoTuneImpl.__call__, AutoTuner.run = saved_call, saved_run


class Served:
    """The tunings of one test: each ``@autotune`` function and key tuned once (as TileLang's own
    per-function cache does), each through ``tune``."""

    def __init__(self, tune: Tune, settings: TuneSettings):
        self.tune = tune
        self.settings = settings
        self.done: dict[tuple, tuple[object, Any, dict | None]] = {}  # (function, key) -> (function, kernel, config)

    def call(self, impl: AutoTuneImpl, args: tuple, kwargs: dict) -> Any:
        """``AutoTuneImpl.__call__``: the tuned kernel (lazy style) or its outputs (eager style)."""
        kwargs = dict(kwargs)
        return_kernel = kwargs.pop("__return_kernel", False)
        jit = impl.jit_impl
        mode = jit.initialize_jit_mode(*args, **kwargs)
        key_args, key_kwargs = _key_parameters(impl, args, kwargs)
        done_key = (id(impl), _hashable((key_args, key_kwargs)))
        if done_key not in self.done:
            with _rng_kept():
                kernel, config = self._tune_function(impl, mode, args, kwargs, key_args, key_kwargs)
            self.done[done_key] = (impl, kernel, config)  # the function kept: its id stays its own
        _, kernel, config = self.done[done_key]
        if mode == "lazy" or return_kernel:
            return kernel
        exec_kwargs = {**kwargs, **{k: v for k, v in (config or {}).items() if k != _PASS_CONFIGS}}
        _, kernel_args = jit.func.parse_args(*args, **exec_kwargs)
        return kernel(*kernel_args.values())

    def _tune_function(self, impl: AutoTuneImpl, mode: str, args: tuple, kwargs: dict, key_args: tuple,
                       key_kwargs: dict) -> tuple[Any, dict | None]:
        configs = self.settings.tuner["configs"] if "configs" in self.settings.given else impl.configs
        if callable(configs) and "configs" not in self.settings.given:
            configs = configs(*key_args, **key_kwargs)  # as TileLang calls a config space
        if isinstance(configs, (list, tuple)) and configs and isinstance(configs[0], dict) \
                and _already_provided(impl.jit_impl, configs[0], key_args, key_kwargs):
            return _compiled_as_called(impl, mode, args, kwargs), None
        seeds = {k: kwargs[k] for k in (impl.do_not_specialize or ()) if k in kwargs}
        if isinstance(configs, (list, tuple)):
            seeds = {k: v for k, v in seeds.items() if any(isinstance(c, dict) and k in c for c in configs)}
        reference = seeds if seeds and _plain_data(seeds) else True  # a seed config is part of the key
        result = self.tune(impl, args, kwargs, self._settings(configs, reference))
        return _tuned_kernel(result), result.config

    def run(self, tuner: AutoTuner, original: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        """``AutoTuner.run``: TileLang's ``AutotuneResult``."""
        if any(vars(tuner).get(name) is not None for name in ("jit_compile", "jit_elaborate", "_kernel_parameters")):
            # Set up by code that hides the call's arguments in closures of its own: TileLang tunes it.
            return original(tuner, *args, **kwargs)
        bound = inspect.signature(original).bind(tuner, *args, **kwargs).arguments
        settings = self._settings(None, True)
        run_profile = {k: bound[k] for k in _RUN_DEFAULTS if k in bound and bound[k] != _RUN_DEFAULTS[k]}
        run_profile = {k: v for k, v in run_profile.items() if k not in settings.given}
        settings = replace(settings, profile={**settings.profile, **run_profile})
        with _rng_kept():
            result = self.tune(tuner, (), {}, settings)
        from tilelang.autotuner.param import AutotuneResult

        return AutotuneResult(latency=result.latency, config=result.config, ref_latency=result.ref_latency,
                              libcode=result.libcode, func=result.func, kernel=_tuned_kernel(result))

    def _settings(self, configs: object, reference: dict | bool) -> TuneSettings:
        """The test's marker settings, with the config space TileLang evaluated and the reference of
        the check without a ref_prog (the seed values) where the marker gives neither."""
        settings = self.settings
        tuner, given = dict(settings.tuner), set(settings.given)
        if configs is not None and "configs" not in given:
            tuner["configs"] = list(configs) if isinstance(configs, tuple) else configs
            given.add("configs")
        if "reference_config" not in given:
            tuner["reference_config"] = reference
        return replace(settings, tuner=tuner, given=frozenset(given))


def _key_parameters(impl: AutoTuneImpl, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The call's arguments TileLang keys the tuning on: all of them, or with ``do_not_specialize``
    every argument by name (defaults applied) except those."""
    if not impl.do_not_specialize:
        return tuple(args), dict(kwargs)
    bound = impl.jit_impl.signature.bind(*args, **kwargs)
    bound.apply_defaults()
    return (), {k: v for k, v in bound.arguments.items() if k not in impl.do_not_specialize}


def _already_provided(jit: Any, top_config: dict, key_args: tuple, key_kwargs: dict) -> bool:
    """TileLang's "tunable parameters already provided" test: a key of the first config is among
    the keyed keyword arguments, or is a parameter given positionally."""
    params = list(jit.signature.parameters)
    tunable = [k for k in top_config if k != _PASS_CONFIGS]
    return any(k in top_config for k in key_kwargs) or any(
        k in params and params.index(k) < len(key_args) for k in tunable)


def _compiled_as_called(impl: AutoTuneImpl, mode: str, args: tuple, kwargs: dict) -> Any:
    """The kernel of the arguments as given, as TileLang's short cut compiles it (no tuning)."""
    if mode == "lazy":
        return impl.jit_impl(*args, **kwargs)
    return impl.jit_impl.compile(*args, **kwargs)


def _tuned_kernel(result: AutotuneResult) -> Any:
    """The ``JITKernel`` of a tuned result with the tuning's numbers on it (TileLang's
    ``update_tuner_result``); an eager kernel's call wrapper unwrapped."""
    from .engine.programs import EagerKernel

    kernel = result.kernel.kernel if isinstance(result.kernel, EagerKernel) else result.kernel
    kernel.update_tuner_result(latency=result.latency, config=result.config, ref_latency=result.ref_latency)
    return kernel


def _plain_data(value: object) -> bool:
    import json

    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _hashable(value: object) -> object:
    """``value`` as a hashable key: tensors by dtype, shape and strides (as TileLang keys them)."""
    if type(value).__name__ in ("Tensor", "Parameter") and hasattr(value, "stride"):
        return ("tensor", str(value.dtype), tuple(value.shape), tuple(value.stride()))
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _hashable(v)) for k, v in value.items()))
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


@contextlib.contextmanager
def _rng_kept() -> Iterator[None]:
    """Leave the global random-number generators (torch's, CUDA's where started, Python's, NumPy's
    where loaded) as they were: a test seeds them, and tuning is no draw of the test's."""
    import random

    import torch

    cpu, py = torch.random.get_rng_state(), random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    numpy = sys.modules.get("numpy")
    np_state = numpy.random.get_state() if numpy is not None else None
    try:
        yield
    finally:
        torch.random.set_rng_state(cpu)
        random.setstate(py)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        if np_state is not None:
            numpy.random.set_state(np_state)
