"""Settings: command-line/ini/env options and the validated ``autotune`` marker.

Imports only the standard library (and pytest), so ``pytest --help`` stays fast;
the field names of ``CompileArgs``/``ProfileArgs`` are listed here, and a test
checks they match ``param``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .model import cut_text
from .project import ini_value

if TYPE_CHECKING:
    from .model import TargetLike

COMPILE_FIELDS = ("out_idx", "execution_backend", "target", "target_host", "verbose", "pass_configs")
PROFILE_FIELDS = (
    "warmup", "rep", "timeout", "backend", "supply_type", "ref_prog", "supply_prog", "rtol", "atol",
    "max_mismatched_ratio", "skip_check", "manual_check_prog", "cache_input_tensors", "inplace",
)
# Plugin settings beside the seed's two dataclasses, with their defaults.
TUNER_DEFAULTS: dict[str, Any] = {
    "configs": None,
    "strategy": "auto",  # auto | exhaustive | random | guided (auto: by the space's size, see resolve_tuner)
    "max_trials": None,  # measure at most this many configs
    "max_tuning_s": None,  # stop scheduling new configs after this many seconds
    "seed": 0,  # for random and guided search
    # stop timing a candidate this many times slower than the best; 0 = off (see resolve_tuner: 2.0 on a GPU)
    "early_stop_factor": 3.0,
    "top_k": 3,  # re-measure the best k interleaved before choosing
    "compile_timeout": 300.0,  # seconds; a compile past this is killed
    "max_regression": None,  # per-test gate threshold in percent (overrides --tl-max-regression)
    # check each candidate against a reference config's outputs where nothing else checks them: True (the
    # first config that builds), a config, or False; None: on for TileLang's own tuner calls (--tl-intercept)
    "reference_config": None,
}
#: The work one call of the kernel does, for throughput in rows, reports and history: a number, or a
#: callable of the program's arguments (as the test passed them) returning one. Not part of any key.
REPORT_FIELDS = ("flops", "bytes")
SETTINGS = COMPILE_FIELDS + PROFILE_FIELDS + tuple(TUNER_DEFAULTS) + REPORT_FIELDS

EXECUTION_BACKENDS = ("auto", "tvm_ffi", "cython", "nvrtc", "torch")
TARGETS = ("auto", "cuda", "hip", "c")
PROFILE_BACKENDS = ("event", "cupti", "cudagraph")
STRATEGIES = ("auto", "exhaustive", "random", "guided")
#: ``strategy="auto"`` measures every config of a space up to this size, and runs the guided search
#: (its default budget: a sixth of the space, at least 64 configs that ran and 4 rounds of the compile
#: workers, ``search.default_budget``) on
#: larger ones: measured in benchmarks/plugin_runs.py gpu48 / gpu288 and
#: the replay benchmarks/guided_search.py (benchmarks/RESULTS.md).
AUTO_EXHAUSTIVE_MAX = 64


#: ``early_stop_factor`` where the marker sets none and candidates are timed on a GPU: kernel times
#: there hold within a few percent from the first samples, so a candidate twice as slow as the best
#: so far is not timed further (measured on an H200, 48-config GEMM: a third less GPU time than
#: at 3.0). CPU timings swing far more between processes, so 3.0 stays their default.
GPU_EARLY_STOP_FACTOR = 2.0


def resolve_tuner(tuner: dict, n_configs: int, given: frozenset | set = frozenset(), device_kind: str = "cpu") -> dict:
    """``tuner`` with its defaults made concrete (before keying: a small space keys exactly as an
    explicit ``exhaustive``): ``strategy="auto"`` for a space of ``n_configs``, and on a GPU
    (``device_kind="cuda"``) the early-stop factor the marker did not set."""
    if device_kind == "cuda" and "early_stop_factor" not in given:
        tuner = {**tuner, "early_stop_factor": GPU_EARLY_STOP_FACTOR}
    if tuner.get("strategy") != "auto":
        return tuner
    big = n_configs > AUTO_EXHAUSTIVE_MAX and not tuner.get("max_trials")
    return {**tuner, "strategy": "guided" if big else "exhaustive"}
SUPPLY_TYPES = ("Integer", "Uniform", "Normal", "Randn", "Zero", "One", "Auto")


class SettingsError(ValueError):
    """A marker argument is wrong; the message names the argument."""


@dataclass(frozen=True)
class TuneSettings:
    """The validated marker: arguments for CompileArgs, ProfileArgs and the tuner."""

    compile: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    tuner: dict[str, Any] = field(default_factory=lambda: dict(TUNER_DEFAULTS))
    given: frozenset = frozenset()  # which keys the marker set (the marker overrides TileLang's decorators)
    report: dict[str, Any] = field(default_factory=dict)  # flops, bytes

    def get(self, name: str, default: Any = None) -> Any:
        for group in (self.compile, self.profile, self.tuner, self.report):
            if name in group:
                return group[name]
        return default


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _expect(name: str, ok: bool, wanted: str, value: object) -> None:
    if not ok:
        raise SettingsError(f"argument {name!r} must be {wanted}, got {cut_text(repr(value))}")


def target_kind(target: TargetLike) -> str:
    """The kind of a target given as a name, a JSON string, a dict or a TVM ``Target``."""
    if isinstance(target, str):
        text = target.strip()
        if text.startswith("{"):
            try:
                return str(json.loads(text).get("kind", ""))
            except ValueError:
                return text
        return text.split()[0] if text else text
    if isinstance(target, dict):
        return str(target.get("kind", ""))
    return getattr(getattr(target, "kind", None), "name", str(target))


def _check_target(value: object) -> None:
    if isinstance(value, (str, dict)):
        kind = target_kind(value)
        _expect("target", kind in TARGETS, f"one of {', '.join(TARGETS)} (or a TVM target)", value)


def _check_inplace(value: object) -> None:
    """A list of parameter names or indices; whether they name inputs of the kernel is known once
    a config is built (``candidates.build_candidates``)."""
    ok = value is None or (isinstance(value, (list, tuple)) and all(isinstance(i, str) or _is_int(i) for i in value))
    _expect("inplace", ok, "a list of parameter names or indices", value)
    seen = set()
    for item in value or ():
        if item in seen:
            raise SettingsError(f"argument 'inplace' names {item!r} twice")
        seen.add(item)


def _check_out_idx(value: object) -> None:
    ok = value is None or _is_int(value) or (isinstance(value, (list, tuple)) and all(_is_int(i) for i in value))
    _expect("out_idx", ok, "None, an int or a list of ints", value)


_CHECKS: dict[str, Callable[[Any], None]] = {  # Any: each check narrows the marker's value itself
    "out_idx": _check_out_idx,
    "execution_backend": lambda v: _expect("execution_backend", v in EXECUTION_BACKENDS,
                                           f"one of {', '.join(EXECUTION_BACKENDS)}", v),
    "target": _check_target,
    "verbose": lambda v: _expect("verbose", isinstance(v, bool), "a bool", v),
    "pass_configs": lambda v: _expect("pass_configs", v is None or isinstance(v, dict), "a dict or None", v),
    "warmup": lambda v: _expect("warmup", _is_int(v) and v >= 0, "an int >= 0", v),
    "rep": lambda v: _expect("rep", _is_int(v) and v >= 1, "an int >= 1", v),
    "timeout": lambda v: _expect("timeout", _is_number(v) and v > 0, "a number of seconds > 0", v),
    "backend": lambda v: _expect("backend", v in PROFILE_BACKENDS, f"one of {', '.join(PROFILE_BACKENDS)}", v),
    "supply_type": lambda v: _expect("supply_type", getattr(v, "name", v) in SUPPLY_TYPES,
                                     f"a tilelang.TensorSupplyType ({', '.join(SUPPLY_TYPES)})", v),
    "ref_prog": lambda v: _expect("ref_prog", v is None or callable(v), "callable or None", v),
    "supply_prog": lambda v: _expect("supply_prog", v is None or callable(v), "callable or None", v),
    "manual_check_prog": lambda v: _expect("manual_check_prog", v is None or callable(v), "callable or None", v),
    "rtol": lambda v: _expect("rtol", _is_number(v) and v >= 0, "a number >= 0", v),
    "atol": lambda v: _expect("atol", _is_number(v) and v >= 0, "a number >= 0", v),
    "max_mismatched_ratio": lambda v: _expect("max_mismatched_ratio", _is_number(v) and 0 <= v <= 1,
                                              "a number between 0 and 1", v),
    "skip_check": lambda v: _expect("skip_check", isinstance(v, bool), "a bool", v),
    "cache_input_tensors": lambda v: _expect("cache_input_tensors", isinstance(v, bool), "a bool", v),
    "inplace": _check_inplace,
    "strategy": lambda v: _expect("strategy", v in STRATEGIES, f"one of {', '.join(STRATEGIES)}", v),
    "max_trials": lambda v: _expect("max_trials", v is None or (_is_int(v) and v >= 1), "None or an int >= 1", v),
    "max_tuning_s": lambda v: _expect("max_tuning_s", v is None or (_is_number(v) and v > 0), "None or seconds > 0", v),
    "seed": lambda v: _expect("seed", _is_int(v), "an int", v),
    "early_stop_factor": lambda v: _expect("early_stop_factor", _is_number(v) and (v == 0 or v > 1),
                                           "0 (off) or a factor > 1", v),
    "top_k": lambda v: _expect("top_k", _is_int(v) and v >= 1, "an int >= 1", v),
    "compile_timeout": lambda v: _expect("compile_timeout", _is_number(v) and v > 0, "seconds > 0", v),
    "max_regression": lambda v: _expect("max_regression", v is None or (_is_number(v) and v > 0),
                                        "None or a percentage > 0", v),
    "flops": lambda v: _expect("flops", v is None or callable(v) or (_is_number(v) and v > 0),
                               "a number > 0 or a callable of the program's arguments", v),
    "bytes": lambda v: _expect("bytes", v is None or callable(v) or (_is_number(v) and v > 0),
                               "a number > 0 or a callable of the program's arguments", v),
    "reference_config": lambda v: _check_reference(v),
}


def _check_reference(value: object) -> None:
    _expect("reference_config", value is None or isinstance(value, bool) or isinstance(value, dict),
            "True (the first config that builds), a config dict, or False", value)
    if isinstance(value, dict):
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError):
            raise SettingsError(f"argument 'reference_config' = {value!r} cannot be serialised to JSON") from None
        _expect("reference_config", all(isinstance(k, str) for k in value), "a config with str keys", value)


def validate_configs(configs: object) -> list[dict] | Callable[..., object] | None:
    """A non-empty list of dicts with str keys and JSON values, or a callable returning one.

    Each value must come back from the cache as it is (``store.typed``): a hit gives the test
    the config the miss gave it, tuples and enum members included.
    """
    from .store.typed import problem

    if configs is None or callable(configs):
        return configs
    if isinstance(configs, dict) or not isinstance(configs, (list, tuple)):
        raise SettingsError(f"argument 'configs' must be a list of dicts or a callable, got {type(configs).__name__}")
    if not configs:
        raise SettingsError("argument 'configs' is an empty config space; give at least one config")
    for i, config in enumerate(configs):
        if not isinstance(config, dict):
            raise SettingsError(f"argument 'configs'[{i}] must be a dict, got {type(config).__name__}")
        for k, v in config.items():
            if not isinstance(k, str):
                raise SettingsError(f"argument 'configs'[{i}] has a non-string key {cut_text(repr(k))}")
            try:
                json.dumps(v, allow_nan=False)
            except (TypeError, ValueError):
                raise SettingsError(
                    f"argument 'configs'[{i}][{cut_text(repr(k), 80)}] = {cut_text(repr(v))} cannot be serialised "
                    f"to JSON (use ints, floats, strings, bools, None or lists of them)"
                ) from None
            why = problem(v)
            if why:
                raise SettingsError(f"argument 'configs'[{i}][{k!r}] = {v!r} would not come back from the cache "
                                    f"as it is: {why}")
    return list(configs)


def parse_marker(args: tuple, kwargs: dict) -> TuneSettings:
    """Validate ``@pytest.mark.autotune(...)`` arguments into :class:`TuneSettings`."""
    if len(args) > 1:
        raise SettingsError("takes at most one positional argument (configs); pass settings by keyword")
    kwargs = dict(kwargs)
    if args:
        if "configs" in kwargs:
            raise SettingsError("argument 'configs' given both positionally and by keyword")
        kwargs["configs"] = args[0]
    unknown = [k for k in kwargs if k not in SETTINGS]
    if unknown:
        k = unknown[0]
        import difflib

        close = difflib.get_close_matches(k, SETTINGS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise SettingsError(f"unknown argument {cut_text(repr(k), 80)}{hint} (known: {', '.join(SETTINGS)})")
    for name, value in kwargs.items():
        if name == "configs":
            kwargs[name] = validate_configs(value)
        else:
            _CHECKS.get(name, lambda v: None)(value)
    tuner = dict(TUNER_DEFAULTS)
    tuner.update({k: v for k, v in kwargs.items() if k in TUNER_DEFAULTS})
    return TuneSettings(
        compile={k: v for k, v in kwargs.items() if k in COMPILE_FIELDS},
        profile={k: v for k, v in kwargs.items() if k in PROFILE_FIELDS},
        tuner=tuner,
        given=frozenset(kwargs),
        report={k: v for k, v in kwargs.items() if k in REPORT_FIELDS},
    )


def merge_marks(marks: list) -> TuneSettings:
    """Merge autotune marks closest-first (function over class over module)."""
    args: tuple = ()
    kwargs: dict = {}
    for mark in reversed(marks):
        args = mark.args or args
        kwargs.update(mark.kwargs)
    return parse_marker(args, kwargs)


# ----------------------------------------------------------------------------- options

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _workers_ok(n: int) -> bool:
    return n == -1 or n >= 1


def _not_a_dir(path: str) -> bool:
    return not os.path.isdir(path)


def _gpus_ok(value: str) -> bool:
    parts = [p.strip() for p in str(value).split(",")]
    return value in ("all", "one") or (bool(parts) and all(p.isdigit() for p in parts))


def _not_a_file(path: str) -> bool:
    return not os.path.exists(path) or os.path.isdir(path)


@dataclass(frozen=True)
class Option:
    """One command-line option with its ini twin and environment variable.

    ``check`` is applied at start-up to the converted value; ``accepted`` says what passes it.
    """

    name: str  # ini key, e.g. tl_cache_dir; the flag is --tl-cache-dir
    help: str
    kind: str = "str"  # str | bool | int | float
    default: str | bool | int | float | None = None
    env: str | None = None
    check: Callable[[Any], bool] | None = None
    accepted: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def names(self) -> str:
        """Every way to set it, for error messages."""
        return f"{self.flag} (ini {self.name}" + (f", env {self.env})" if self.env else ")")


def user_cache_dir() -> str:
    """The per-user cache directory (under $XDG_CACHE_HOME, else ~/.cache): the default where no
    option, ini value or $TL_AUTOTUNE_CACHE_DIR names one; NVRTC's book lives there too."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tlautotune")


_OUT_FILE = dict(check=_not_a_dir, accepted="a file path (not a directory)")
GATE_METRICS = ("latency", "speedup")
GATE_AGAINST = ("baseline", "history")

OPTIONS = (
    Option("tl_cache_dir", "where tuned results live (default: $TL_AUTOTUNE_CACHE_DIR, else ~/.cache/tlautotune); "
           "a relative path in an ini file is relative to that file",
           env="TL_AUTOTUNE_CACHE_DIR"),
    Option("tl_retune", "ignore stored results: tune again and overwrite them (default: off)", "bool",
           False, "TL_AUTOTUNE_RETUNE"),
    Option("tl_no_tune", "use stored results only; a test without one fails (default: off)", "bool",
           False, "TL_AUTOTUNE_NO_TUNE"),
    Option("tl_workers", "compile worker processes; -1 = one per CPU core (default: CPU cores / xdist workers)",
           "int", None, "TL_AUTOTUNE_WORKERS", check=_workers_ok,
           accepted="a number of processes >= 1, or -1 for one per CPU core"),
    Option("tl_gpus", "GPUs one tuning times its candidates on: all (every GPU of this process; under xdist its "
           "share), one (the test's own GPU) or indices like 0,1 (default: all)", "str", "all", "TL_AUTOTUNE_GPUS",
           check=_gpus_ok, accepted="all, one, or comma-separated GPU indices such as 0,1"),
    Option("tl_device_compiler", "what compiles CUDA device code: nvcc (as TileLang), nvrtc (NVRTC with "
           "precompiled headers, needs cuda-python and CUDA >= 12.8; nvcc where it cannot) or auto (nvrtc where "
           "available) (default: auto)", "str", "auto", "TL_AUTOTUNE_DEVICE_COMPILER",
           check=lambda v: v in ("auto", "nvcc", "nvrtc"), accepted="auto, nvcc or nvrtc"),
    Option("tl_nvrtc_book", "remember the NVRTC header prefixes your kernels use (in the cache directory and the "
           "user's) and write their precompiled headers ahead in later runs; those of TileLang's GEMM and "
           "flash-attention kernels are shipped and written ahead either way (default: off)", "bool", False,
           "TL_AUTOTUNE_NVRTC_BOOK"),
    Option("tl_save_baseline", "write a latency baseline (JSON) of every autotuned test to FILE (default: none)",
           **_OUT_FILE),
    Option("tl_baseline", "compare latencies against the baseline FILE and fail regressions (default: none)",
           env="TL_AUTOTUNE_BASELINE", check=_not_a_dir, accepted="a baseline file written by --tl-save-baseline"),
    Option("tl_max_regression", "percent slowdown that fails a test against --tl-baseline (default: 10)", "float",
           10.0, check=lambda v: v > 0, accepted="a percentage > 0, e.g. 10"),
    Option("tl_alpha", "significance level of the regression test, Mann-Whitney U (default: 0.01)", "float", 0.01,
           check=lambda v: 0 < v < 0.5, accepted="a significance level between 0 and 0.5 (exclusive), e.g. 0.01"),
    Option("tl_strict_baseline", "fail tests whose baseline comes from another device (default: off)", "bool",
           False),
    Option("tl_gate_confirm", "times a test the gate would fail has its kernel timed again before it fails; it "
           "fails only when every timing regressed, 0 = fail on the first (default: 1)", "int", 1,
           "TL_AUTOTUNE_GATE_CONFIRM", check=lambda v: v >= 0, accepted="a number of re-timings >= 0"),
    Option("tl_gate_metric", "what the gate compares: latency or speedup over ref_prog (default: latency)",
           default="latency", check=lambda v: v.strip().lower() in GATE_METRICS,
           accepted="'latency' (compare milliseconds) or 'speedup' (latency relative to ref_prog timed in the "
                    "same run)"),
    Option("tl_json", "write every tuned result and gate decision as JSON to FILE (default: none)", **_OUT_FILE),
    Option("tl_markdown", "write the summary as a Markdown table to FILE, e.g. $GITHUB_STEP_SUMMARY (default: none)",
           **_OUT_FILE),
    Option("tl_report", "write a self-contained HTML report with plots into DIR (default: none)",
           check=_not_a_file, accepted="a directory (created if missing), not an existing file"),
    Option("tl_intercept", "serve every tuning TileLang's own tuner starts inside a test (@tilelang.autotune, "
           "AutoTuner.run) with the plugin's engine, as tests marked autotune that do not use the fixture are "
           "(default: off)", "bool", False, "TL_AUTOTUNE_INTERCEPT"),
    Option("tl_store", "share tuned results with identical machines through Redis: "
           "redis://[user:password@]host:port/db or rediss://... (default: $TL_AUTOTUNE_STORE, else none)",
           env="TL_AUTOTUNE_STORE"),
    Option("tl_store_readonly", "read the store but never write it, e.g. in pull requests (default: off)", "bool",
           False, "TL_AUTOTUNE_STORE_READONLY"),
    Option("tl_store_ttl", "days a pushed result stays in the store; 0 = forever (default: 30)", "float", 30.0,
           "TL_AUTOTUNE_STORE_TTL", check=lambda v: v >= 0, accepted="a number of days >= 0 (0 keeps results forever)"),
    Option("tl_history", "append every result row to a history: a file path or sqlite:///path (SQLite), or "
           "redis://... (default: $TL_AUTOTUNE_HISTORY, else none); a relative path in an ini file is relative to "
           "that file", env="TL_AUTOTUNE_HISTORY"),
    Option("tl_gate_against", "what the gate compares each test with: baseline (--tl-baseline) or history (its best "
           "run on this machine within --tl-history-window) (default: baseline)", default="baseline",
           env="TL_AUTOTUNE_GATE_AGAINST", check=lambda v: v in GATE_AGAINST, accepted="baseline or history"),
    Option("tl_history_window", "days of history the history gate and `history regressions` look back (default: 14)",
           "float", 14.0, "TL_AUTOTUNE_HISTORY_WINDOW", check=lambda v: v > 0, accepted="a number of days > 0"),
    Option("tl_store_timeout", "seconds a store call may take before the run goes on without it (default: 3)",
           "float", 3.0, "TL_AUTOTUNE_STORE_TIMEOUT", check=lambda v: v > 0, accepted="a number of seconds > 0"),
)
OPTIONS_BY_NAME = {o.name: o for o in OPTIONS}
_KIND_WORDS = {"int": "an integer", "float": "a number", "bool": f"one of {', '.join(_TRUE + _FALSE)}"}


def _convert(option: Option, value: object) -> str | bool | int | float | None:
    if value is None or value == "":
        return None
    try:
        if option.kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in _TRUE + _FALSE:
                raise ValueError(text)
            return text in _TRUE
        return {"int": int, "float": float}.get(option.kind, str)(value)
    except ValueError:
        wanted = option.accepted or _KIND_WORDS.get(option.kind, "a string")
        raise pytest.UsageError(f"{option.names}: {value!r} is not valid; give {wanted}") from None


def _raw_option(config: pytest.Config, option: Option) -> tuple[object, str]:
    """The option's unconverted value and where it came from: cli, ini, env or default."""
    value = config.getoption(option.name, default=None)
    if value not in (None, False):
        return value, "cli"
    ini = ini_value(config, option.name)[0]
    if ini not in (None, "", []):
        return ini, "ini"
    if option.env and os.environ.get(option.env):
        return os.environ[option.env], "env"
    return value, "default"


def _resolve_dir(config: pytest.Config, name: str, path: str, source: str) -> str:
    """A relative directory from an ini file is relative to that file (so every directory pytest
    runs from finds the same cache); from the command line, to where pytest was invoked."""
    path = os.path.expanduser(path)
    if os.path.isabs(path):
        return path
    if source == "ini":
        inipath = ini_value(config, name)[1]
        if inipath is not None:
            return os.path.join(os.path.dirname(inipath), path)
    if source == "cli":
        return os.path.join(str(config.invocation_params.dir), path)
    return os.path.abspath(path)


def get_option(config: pytest.Config, name: str) -> Any:
    """Resolve an option: command line > ini file > environment variable > default."""
    option = OPTIONS_BY_NAME[name]
    value, source = _raw_option(config, option)
    converted = _convert(option, value)
    if converted is None:
        return user_cache_dir() if name == "tl_cache_dir" else option.default
    if name == "tl_cache_dir" or (name == "tl_history" and "://" not in str(converted)):
        return _resolve_dir(config, name, converted, source)
    return converted


def validate_options(config: pytest.Config) -> None:
    """Check every option at start-up; a bad one is a ``UsageError`` naming it and what is accepted."""
    for option in OPTIONS:
        value = get_option(config, option.name)
        if option.check is not None and value is not None and not option.check(value):
            raise pytest.UsageError(f"{option.names}: {value!r} is not accepted; give {option.accepted}")
    if get_option(config, "tl_retune") and get_option(config, "tl_no_tune"):
        raise pytest.UsageError("--tl-retune and --tl-no-tune contradict each other; pass one of them")
    if get_option(config, "tl_gate_against") == "history" and not get_option(config, "tl_history"):
        raise pytest.UsageError("--tl-gate-against=history needs a history: give --tl-history URL "
                                "(ini tl_history, env TL_AUTOTUNE_HISTORY)")
    url = get_option(config, "tl_store")
    if url:
        from .store.remote import StoreUrlError, check_url

        try:
            check_url(url)
        except StoreUrlError as exc:
            raise pytest.UsageError(str(exc)) from None


@dataclass(frozen=True)
class GateOptions:
    """The gate's options (validated at start-up): what it compares, its significance level,
    its threshold in percent, whether a test it cannot compare fails, and how many times a
    regression is timed again before it fails the test."""

    metric: str
    alpha: float
    threshold_pct: float
    strict: bool
    confirm: int


def gate_options(config: pytest.Config) -> GateOptions:
    return GateOptions(metric=str(get_option(config, "tl_gate_metric")).strip().lower(),
                       alpha=get_option(config, "tl_alpha"), threshold_pct=get_option(config, "tl_max_regression"),
                       strict=bool(get_option(config, "tl_strict_baseline")),
                       confirm=get_option(config, "tl_gate_confirm"))


def wants_fresh_numbers(config: pytest.Config) -> str | None:
    """The option whose gate, baseline to save or history to append to needs numbers timed in this
    run (``--tl-baseline``, ``--tl-save-baseline``, ``--tl-history``), or None."""
    for name in ("tl_baseline", "tl_save_baseline", "tl_history"):
        if get_option(config, name):
            return "--" + name.replace("_", "-")
    return None


def gate_source(config: pytest.Config) -> str | None:
    """What the gate compares with: the baseline file's path, ``history`` or None (no gate)."""
    if get_option(config, "tl_gate_against") == "history":
        return "history"
    return get_option(config, "tl_baseline")


def add_options(parser: pytest.Parser) -> None:
    """Register every option in one group, each with an ini twin."""
    group = parser.getgroup("tlautotune", "TileLang autotuning (pytest-tlautotune)")
    for option in OPTIONS:
        if option.kind == "bool":
            group.addoption(option.flag, action="store_true", dest=option.name, default=None, help=option.help)
        else:
            group.addoption(option.flag, dest=option.name, default=None, metavar=option.name[3:].upper(),
                            help=option.help)
        parser.addini(option.name, option.help, type="string", default="")


# ----------------------------------------------------------------------------- outside pytest


def ini_option(start: Path, name: str) -> tuple[Path, str] | None:
    """``(ini file, value)`` of option ``name`` in the ini file pytest would pick from ``start``
    (``project.find_ini``); None when that file does not set it or there is none."""
    from .project import find_ini

    found = find_ini(start)
    if found is None:
        return None
    path, section = found
    value = section.get(name)
    return (path, str(value)) if value not in (None, "") else None
