"""Ship a program to a compile worker, the same whichever pickler version is installed.

What lives in a module goes by reference (``module:attribute.path``, looked up on the other
side): a ``@tilelang.jit`` or ``@tilelang.autotune`` function that is a module global, or is
reachable from one (``vecadd.jit_impl``, an attribute of a class or of an instance that is a
module global). Everything else (closures, factories, lambdas, bound methods of objects made in
a test) goes by value through cloudpickle, a TileLang function without the kernels it compiled
in this process, and with one change: a code object travels as
:mod:`marshal` writes it, so it keeps its file name and line numbers, together with the lines of
that file as this process's :mod:`linecache` has them. The worker registers those lines, so
TileLang and TVMScript, which read a kernel's source (``inspect.getsourcelines``) to tell lazy
from eager style and to parse ``@T.prim_func``, find it there, and a failure names the user's
``file:line``. cloudpickle itself rewrites a by-value function's file name (``<dynamic-code>``
from 3.1.3 on), which made every such build fail with "could not get source code".
"""

from __future__ import annotations

import functools
import io
import linecache
import marshal
import sys
import types
from typing import Any

#: How deep the by-reference lookup searches below a module's globals (``module.a.b``).
_REF_DEPTH = 2


def dumps(obj: object) -> bytes:
    """Pickle ``obj`` for a worker of this interpreter (see the module's docstring)."""
    buf = io.BytesIO()
    _pickler()(buf).dump(obj)
    return buf.getvalue()


@functools.cache
def _pickler() -> type:
    """The pickler class, made once on first use (cloudpickle is imported only when a test tunes)."""
    import cloudpickle

    class ShippingPickler(cloudpickle.Pickler):
        def __init__(self, file: io.BytesIO):
            super().__init__(file)
            self._sources: dict[str, tuple[str, ...] | None] = {}

        def reducer_override(self, obj: object) -> Any:
            if isinstance(obj, types.CodeType):
                return _load_code, (marshal.dumps(obj), self._sources_of(obj))
            if _is_tilelang_function(obj):
                ref = module_ref(obj)
                if ref is not None:
                    return _lookup, ref
                return _without_caches, (type(obj), _state_without_caches(obj))
            return super().reducer_override(obj)

        def _sources_of(self, code: types.CodeType) -> dict[str, tuple[str, ...]]:
            """{file: its lines} for ``code`` and the code objects nested in it (one tuple per
            file and pickle: the pickler's memo writes it once)."""
            out = {}
            for name in _filenames(code):
                if name not in self._sources:
                    lines = linecache.getlines(name)
                    self._sources[name] = tuple(lines) if lines else None
                if self._sources[name] is not None:
                    out[name] = self._sources[name]
            return out

    return ShippingPickler


#: What a TileLang function object holds that is this process's alone: compiled kernels (ctypes
#: handles, which do not pickle) and a lock. ``__post_init__`` makes them anew on the other side.
_PROCESS_STATE = ("_kernel_cache", "_call_form_cache", "_tuner_cache", "_pass_configs_lock")


def _state_without_caches(obj: object) -> dict:
    """A ``@tilelang.jit``/``@tilelang.autotune`` function by value: its fields, not the kernels it
    compiled here (an operator object that compiled its kernel before tuning still ships)."""
    return {k: v for k, v in vars(obj).items() if k not in _PROCESS_STATE}


def _without_caches(cls: type, state: dict) -> object:
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    obj.__post_init__()  # fresh caches (and lock), as the decorator made them
    return obj


def _filenames(code: types.CodeType) -> set[str]:
    names, stack = set(), [code]
    while stack:
        c = stack.pop()
        names.add(c.co_filename)
        stack.extend(const for const in c.co_consts if isinstance(const, types.CodeType))
    return {n for n in names if n and not n.startswith("<")}


def _load_code(data: bytes, sources: dict[str, tuple[str, ...]]) -> types.CodeType:
    """The worker side of a shipped code object: the code, its files' lines in ``linecache``."""
    for name, lines in sources.items():
        # An entry without a modification time is kept by linecache.checkcache: these are the
        # lines the code was compiled from, whatever the file on this side holds now.
        linecache.cache[name] = (sum(map(len, lines)), None, list(lines), name)
    return marshal.loads(data)


def _is_tilelang_function(obj: object) -> bool:
    return type(obj).__name__ in ("JITImpl", "AutoTuneImpl") and type(obj).__module__.startswith("tilelang")


def module_ref(obj: object) -> tuple[str, str | None, tuple[str, ...]] | None:
    """(module name, its file, attribute path) under which ``obj`` is reachable from the module
    that defines its function, if it is: a global, or an attribute of a global (its ``__dict__``,
    or a class's) down to ``_REF_DEPTH`` levels."""
    module = _defining_module(obj)
    if module is None:
        return None
    path = _find(vars(module), obj, _REF_DEPTH, set())
    return None if path is None else (module.__name__, getattr(module, "__file__", None), path)


def _defining_module(obj: object) -> types.ModuleType | None:
    fn = obj
    for attr in ("jit_impl", "func", "orig_func"):
        fn = getattr(fn, attr, None) or fn
    name = (getattr(fn, "__globals__", None) or {}).get("__name__") or getattr(fn, "__module__", None)
    return sys.modules.get(name) if name else None


def _find(namespace: dict, obj: object, depth: int, seen: set[int]) -> tuple[str, ...] | None:
    for attr, value in list(namespace.items()):
        if value is obj:
            return (attr,)
    if depth <= 1:
        return None
    for attr, value in list(namespace.items()):
        if id(value) in seen or isinstance(value, types.ModuleType) or attr.startswith("__"):
            continue
        seen.add(id(value))
        inner = getattr(value, "__dict__", None)
        if not isinstance(inner, (dict, types.MappingProxyType)):
            continue
        found = _find(dict(inner), obj, depth - 1, seen)
        if found is not None:
            return (attr, *found)
    return None


def _lookup(module_name: str, file: str | None, path: tuple[str, ...]) -> object:
    """The worker side of a by-reference object: import its module (from its file where the
    module name does not import, as pytest's rootdir-relative test modules), follow ``path``."""
    import importlib
    import importlib.util

    module = sys.modules.get(module_name)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            if not file:
                raise
            spec = importlib.util.spec_from_file_location(module_name, file)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            spec.loader.exec_module(module)
    value: object = module
    for attr in path:
        value = getattr(value, attr)
    return value
