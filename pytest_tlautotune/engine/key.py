"""Stable identities: canonical JSON, callables, programs, the machine, and every key builder.

Nothing here depends on Python's salted ``hash()``: every key is a sha256 over a
canonical JSON form, so two processes (xdist workers, CI runs) agree on it. The key
builders at the end are pure functions over plain data; ``tests/test_keys.py`` pins their
digests, since a changed digest makes every existing cache miss.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import inspect
import json
import os
import platform
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tvm.tirx import PrimFunc

#: Bumped whenever the layout or meaning of stored entries changes.
FORMAT_VERSION = 2

# Environment variables that change what TileLang generates or how it runs.
_CACHE_RELEVANT_ENV = (
    "TILELANG_DEFAULT_TARGET",
    "TILELANG_EXECUTION_BACKEND",
    "TL_TEMPLATE_PATH",
    "TL_CUTLASS_PATH",
    "CUDA_HOME",
    "CC",
    "CXX",
    "CFLAGS",
)


def _default(obj: object) -> Any:
    if isinstance(obj, enum.Enum):
        return f"{type(obj).__name__}.{obj.name}"
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, tuple):
        return list(obj)
    if callable(obj):
        return callable_identity(obj)
    # Targets, dtypes and other TVM objects have a stable string form.
    return f"{type(obj).__module__}.{type(obj).__qualname__}:{obj}"


def canonical_json(obj: object) -> str:
    """The canonical JSON text of ``obj``: sorted keys, no whitespace."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_default)


def sha256_hex(obj: object) -> str:
    """sha256 hex digest of ``obj``'s canonical JSON (or of raw bytes / str)."""
    if isinstance(obj, bytes):
        data = obj
    elif isinstance(obj, str):
        data = obj.encode()
    else:
        data = canonical_json(obj).encode()
    return hashlib.sha256(data).hexdigest()


def callable_identity(fn: Callable[..., object] | None) -> dict | None:
    """A stable identity for a callable: qualified name plus source text.

    Editing a reference program changes its source and so its identity.
    Wrappers (functools.partial, decorators with ``__wrapped__``) are unwrapped,
    and the bound arguments of a partial take part.
    """
    if fn is None:
        return None
    if isinstance(fn, functools.partial):
        return {
            "partial": callable_identity(fn.func),
            "args": canonical_json(fn.args),
            "kwargs": canonical_json(fn.keywords),
        }
    custom = getattr(fn, "tl_identity", None)
    if callable(custom) and not isinstance(fn, type):
        return {"name": f"{type(fn).__module__}.{type(fn).__qualname__}", "identity": canonical_json(custom())}
    target = inspect.unwrap(fn) if hasattr(fn, "__wrapped__") else fn
    name = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', type(target).__qualname__)}"
    code = getattr(target, "__code__", None)
    if code is not None and code.co_name == "<lambda>":
        # The source of a lambda is every line it is on: for ``ref_prog=lambda ...`` in a marker,
        # the configs list too, and adding a config would invalidate every candidate's record.
        return {"name": name, "code_sha256": sha256_hex(_code_identity(code))}
    try:
        source = inspect.getsource(target)
    except (OSError, TypeError):
        code = getattr(target, "__code__", None)
        # No source (REPL, builtins): the bytecode still changes when the body does. Never
        # repr(): it holds a memory address that differs in every process.
        source = code.co_code.hex() if code is not None else type(target).__qualname__
    return {"name": name, "source_sha256": sha256_hex(source)}


def reach_identity(fn: Callable[..., object] | None, depth: int = 4) -> str | None:
    """A digest of the user code ``fn`` reaches: the source of each function of the user's that
    it calls (helpers in the test file or another module, recursively), the files of user modules
    it uses, and the simple constants it reads. A correctness verdict keyed on it is stale as soon
    as a helper of ``ref_prog`` is fixed. Library code (stdlib, site-packages) is left out: its
    version is in the machine fingerprint.
    """
    if fn is None:
        return None
    found: dict[str, str] = {}
    _reach(fn, found, set(), depth)
    return sha256_hex(found) if found else None


def reach_files(fn: Callable[..., object] | None, depth: int = 4) -> set[str]:
    """The user files whose code ``fn`` runs, as far as its names show: its own file and those
    of the user functions, classes and modules it reaches (as ``reach_identity`` walks them)."""
    files: set[str] = set()
    if fn is not None:
        _reach(fn, {}, set(), depth, files)
    return files


def _reach(fn: object, found: dict[str, str], seen: set[int], depth: int, files: set[str] | None = None) -> None:
    if isinstance(fn, functools.partial):
        _reach(fn.func, found, seen, depth, files)
        return
    fn = getattr(fn, "__func__", fn)  # a bound method: its function
    fn = inspect.unwrap(fn) if hasattr(fn, "__wrapped__") else fn
    code = getattr(fn, "__code__", None)
    if code is None or id(fn) in seen or depth < 0:
        call = getattr(type(fn), "__call__", None)  # noqa: B004 - the class's own __call__, if it has code
        if code is None and call is not None and hasattr(call, "__code__") and id(fn) not in seen:
            seen.add(id(fn))
            _reach_class(type(fn), found, files)
        return
    seen.add(id(fn))
    if files is not None and is_user_path(code.co_filename):
        files.add(code.co_filename)
    globs = getattr(fn, "__globals__", {})
    values = [globs.get(name, None) for name in _names(code)]
    values += [cell.cell_contents for cell in (getattr(fn, "__closure__", None) or ()) if _cell_set(cell)]
    for value in values:
        if value is None:
            continue
        if isinstance(value, types.ModuleType):
            path = getattr(value, "__file__", None)
            if path and is_user_path(path):
                found[f"module:{path}"] = _file_sha(path)
                if files is not None:
                    files.add(path)
        elif inspect.isfunction(value) and is_user_path(getattr(value.__code__, "co_filename", "")):
            qual = f"{value.__module__}.{value.__qualname__}"
            if qual not in found:
                found[qual] = sha256_hex(_code_identity(value.__code__))
                _reach(value, found, seen, depth - 1, files)
        elif inspect.isclass(value):
            _reach_class(value, found, files)
        elif isinstance(value, (bool, int, float, str, bytes)) or (
                isinstance(value, tuple) and all(isinstance(v, (bool, int, float, str)) for v in value)):
            owner = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', '')}"
            found[f"const:{owner}:{_const_name(globs, value)}"] = repr(value)


def _reach_class(cls: type, found: dict[str, str], files: set[str] | None = None) -> None:
    try:
        path = inspect.getsourcefile(cls)
    except TypeError:
        return
    if path and is_user_path(path):
        if files is not None:
            files.add(path)
        try:
            found[f"class:{cls.__module__}.{cls.__qualname__}"] = sha256_hex(inspect.getsource(cls))
        except (OSError, TypeError):
            found[f"class:{cls.__module__}.{cls.__qualname__}"] = _file_sha(path)


def _const_name(globs: dict[str, object], value: object) -> str:
    for name, v in globs.items():
        if v is value:
            return name
    return "?"


def _cell_set(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 - an empty cell raises
    except ValueError:
        return False
    return True


def _names(code: types.CodeType) -> list[str]:
    names = list(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_code"):
            names += _names(const)
    return names


@functools.cache
def _library_prefixes() -> tuple[str, ...]:
    import sysconfig

    paths = sysconfig.get_paths()
    return tuple(os.path.realpath(paths[k]) + os.sep for k in ("stdlib", "platstdlib", "purelib", "platlib")
                 if paths.get(k))


@functools.lru_cache(maxsize=4096)
def is_user_path(path: str) -> bool:
    """Whether ``path`` is the user's code (not the standard library, site-packages or this plugin)."""
    if not path or path.startswith("<"):
        return False
    real = os.path.realpath(path)
    own = os.path.dirname(os.path.realpath(__file__)) + os.sep
    return not real.startswith(_library_prefixes()) and not real.startswith(own) and "site-packages" not in real


def _file_sha(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return "missing"


def _code_identity(code: types.CodeType) -> dict:
    """A code object as data: its bytecode, constants (nested code included) and names."""

    def const(value: object) -> object:
        if hasattr(value, "co_code"):
            return _code_identity(value)
        if isinstance(value, (tuple, list)):
            return [const(v) for v in value]
        if isinstance(value, frozenset):  # iteration order follows the per-process hash seed
            return sorted(canonical_json(const(v)) for v in value)
        if value is None or isinstance(value, (bool, int, str)):
            return value
        return repr(value)  # floats, complex, bytes, Ellipsis: reprs without addresses

    return {"code": code.co_code.hex(), "consts": [const(c) for c in code.co_consts],
            "names": list(code.co_names), "varnames": list(code.co_varnames)}


def hash_int(data: dict) -> int:
    """The stable integer hash used by the frozen parameter dataclasses."""
    return int(sha256_hex(data)[:16], 16)


@functools.cache
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_fingerprint(device_kind: str) -> dict:
    """What the timings depend on: the device, its drivers and the software stack.

    ``device_kind`` is ``"cpu"`` or ``"cuda"``. torch and tilelang are imported
    here (never at plugin import) because this runs only when a test tunes.
    """
    import tilelang
    import torch

    from .. import __version__

    info: dict[str, Any] = {
        "device_kind": device_kind,
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "tilelang": str(tilelang.__version__),
        "plugin": __version__,
        "format": FORMAT_VERSION,
        "env": {k: os.environ[k] for k in _CACHE_RELEVANT_ENV if k in os.environ},
    }
    if device_kind == "cuda":
        idx = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        info.update(
            device=props.name,
            capability=f"{props.major}.{props.minor}",
            cuda=str(torch.version.cuda),
            driver=_cuda_driver_version(),
        )
    else:
        info.update(device=_cpu_model(), machine=platform.machine(), cores=os.cpu_count())
    return info


def _cuda_driver_version() -> str | None:
    try:
        import ctypes

        lib = ctypes.CDLL("libcuda.so.1")
        version = ctypes.c_int()
        lib.cuDriverGetVersion(ctypes.byref(version))
        return str(version.value)
    except OSError:
        return None


def program_identity(program: Callable[..., object]) -> dict | None:
    """A stable identity of what the user passed to the fixture (TileLang decorators unwrapped),
    with the plain values it carries besides its code (``bound_state``): a kernel made by a
    factory for one shape is not the same program as the factory's kernel for another."""
    inner = getattr(program, "jit_impl", None) or getattr(program, "fn", None) or program  # AutoTuner.fn
    source = getattr(inner, "func_source", None)
    if isinstance(source, str):
        fn = getattr(inner, "func", None)
        identity = {"jit": getattr(fn, "__qualname__", type(inner).__name__), "source_sha256": sha256_hex(source)}
        bound = bound_state(getattr(fn, "orig_func", None) or fn)
    else:
        identity = callable_identity(program)
        bound = bound_state(program)
    if identity is not None and bound:
        identity["bound"] = bound
    return identity


def bound_state(fn: object) -> dict | None:
    """The plain values a callable carries besides its code: its closure's cells and its defaults
    (a kernel a factory made for one shape, a lambda over a shape), a bound method's instance
    attributes. Values that are not plain data appear as their type's name (never a repr with
    an address, which differs in every process)."""
    while isinstance(fn, functools.partial):  # its arguments are in callable_identity
        fn = fn.func
    out: dict[str, Any] = {}
    owner = getattr(fn, "__self__", None)
    if owner is not None and not isinstance(owner, types.ModuleType) and hasattr(fn, "__func__"):
        attrs = getattr(owner, "__dict__", None)
        if isinstance(attrs, dict):
            out["self"] = {str(k): _plain(v) for k, v in sorted(attrs.items(), key=lambda kv: str(kv[0]))}
        fn = fn.__func__
    fn = inspect.unwrap(fn) if hasattr(fn, "__wrapped__") else fn
    code = getattr(fn, "__code__", None)
    if code is not None:
        cells = [c.cell_contents if _cell_set(c) else None for c in getattr(fn, "__closure__", None) or ()]
        out["closure"] = {name: _plain(v) for name, v in zip(code.co_freevars, cells)}
        out["defaults"] = _plain(getattr(fn, "__defaults__", None))
        out["kwdefaults"] = _plain(getattr(fn, "__kwdefaults__", None))
    return {k: v for k, v in out.items() if v} or None


def _plain(value: object, depth: int = 3) -> Any:
    """``value`` as plain data where it is (numbers, strings, their lists and dicts, a tensor's
    shape and dtype, a dtype), else its type's name."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if depth > 0 and isinstance(value, (list, tuple)):
        return [_plain(v, depth - 1) for v in value]
    if depth > 0 and isinstance(value, dict):
        return {str(k): _plain(v, depth - 1) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return {"tensor": [int(d) for d in value.shape], "dtype": str(value.dtype)}
    if type(value).__name__ == "dtype":  # torch.float16, numpy dtypes
        return str(value)
    name = getattr(value, "__qualname__", None) if callable(value) else None
    return f"<{type(value).__qualname__}{' ' + name if isinstance(name, str) else ''}>"


def file_digests(paths: Iterable[str]) -> dict[str, str]:
    """{path: sha256 of its bytes (``missing`` when it cannot be read)} for ``paths``."""
    return {path: _file_sha(path) for path in sorted(set(paths))}


def args_identity(args: tuple, kwargs: dict) -> dict[str, list | dict]:
    """Fixed arguments as data; tensors (eager-style kernels) by shape and dtype, not values."""

    def one(value: Any) -> Any:
        if hasattr(value, "shape") and hasattr(value, "dtype"):
            return {"tensor": [int(d) for d in value.shape], "dtype": str(value.dtype)}
        if isinstance(value, (list, tuple)):
            return [one(v) for v in value]
        return value

    return {"args": [one(a) for a in args], "kwargs": {k: one(v) for k, v in sorted(kwargs.items())}}


def program_text(func: PrimFunc) -> str:
    """The TVMScript text of a PrimFunc: what the kernel *is*, helpers included."""
    script = getattr(func, "script", None)
    return script() if callable(script) else str(func)


def ir_sha(func: PrimFunc) -> str:
    """sha256 of a PrimFunc's TVMScript text: what the kernel *is* (a candidate's identity)."""
    return sha256_hex(program_text(func))


# ----------------------------------------------------------------------------- key builders

#: The tuner settings that change what a search finds: part of the entry key and the fast key.
TUNER_KEY_FIELDS = ("strategy", "max_trials", "max_tuning_s", "seed", "top_k")


def _tuner_part(tuner: Mapping[str, object]) -> dict[str, object]:
    part = {k: tuner.get(k) for k in TUNER_KEY_FIELDS}
    reference = tuner.get("reference_config")
    if reference not in (None, False):  # the check against a reference config decides which candidates pass
        part["reference_config"] = reference
    return part


def candidate_key(ir: str, compile: dict, profile: dict, machine: dict) -> str:
    """One candidate's key (its compiled kernel and its verdict): the IR hash, how it is compiled,
    how it is checked and timed, and the machine."""
    return sha256_hex({"format": FORMAT_VERSION, "profile": profile, "machine": machine, "compile": compile,
                       "program": ir})


def entry_key(candidates: Sequence[tuple[str | None, dict | None]], configs: list[dict], compile: dict,
              profile: dict, tuner: Mapping[str, object], machine: dict) -> str:
    """The key of a tuned result: every candidate's key (or, for one that failed to build, its
    failure), the config space, the settings and the machine. ``candidates``: (ckey, error) pairs."""
    return sha256_hex({
        "format": FORMAT_VERSION,
        "candidates": [ckey or canonical_json(error) for ckey, error in candidates],
        "configs": configs,
        "compile": compile,
        "profile": profile,
        "tuner": _tuner_part(tuner),
        "machine": machine,
    })


def budget_key(identity: dict, configs: list[dict], compile: dict, profile: dict, tuner: Mapping[str, object],
               machine: dict) -> str:
    """The key of a tuned result whose search did not build every config (``max_tuning_s`` ran out
    first): with no IR hash of every candidate, the program's identity and its arguments
    (``identity``: ``program_identity`` and ``args_identity``) stand for them. It names what was
    asked, not what the kernels are: a result stored under it is served only while its winner
    still builds to the stored IR."""
    return sha256_hex({
        "format": FORMAT_VERSION,
        "budgeted": identity,
        "configs": configs,
        "compile": compile,
        "profile": profile,
        "tuner": _tuner_part(tuner),
        "machine": machine,
    })


def fast_key(program: dict | None, args: dict, configs: list[dict], compile: dict, profile: dict,
             tuner: Mapping[str, object], machine: dict) -> str:
    """A key that needs no PrimFunc: the program's identity (``program_identity``, its bound
    values included), its arguments (``args_identity``), the settings and the machine: one per
    call signature. It only finds the entry key stored before (the warm path), which the index
    serves while the files the builds read are unchanged (``store.records.Index``)."""
    return sha256_hex({
        "format": FORMAT_VERSION,
        "index": 2,  # the index entry holds the digests of the files the builds read
        "program": program,
        "args": args,
        "configs": configs,
        "compile": compile,
        "profile": profile,
        "tuner": _tuner_part(tuner),
        "machine": machine,
    })


def spec_id(blob: bytes) -> str:
    """The id of a pickled build spec: compile workers keep one unpickled spec per id."""
    return sha256_hex(blob)


def inputs_key(nodeid: str, program: str, profile: dict) -> str:
    """The key a timing worker keeps one test's input tensors under (``cache_input_tensors``)."""
    return sha256_hex({"node": nodeid, "program": program, "profile": profile})


def remeasure_key(nodeid: str, program: str) -> str:
    """The inputs key of re-timing a stored winner for the gate."""
    return sha256_hex({"node": nodeid, "program": program, "remeasure": True})
