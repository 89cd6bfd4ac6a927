"""What a build reads: the user's files whose code it imports or runs, and the files it opens.

The warm path's index (``store.records.Index``) keeps these files' digests beside the key it
leads to, and a later lookup re-hashes exactly them: an edit to any of them (a module the
kernel imports lazily, a helper outside the rootdir, a data file read at build time) sends the
lookup back to building every config; an edit elsewhere (a comment in the test file) does not.

Three sources, for one build (a config's PrimFunc, or unpickling the program in a worker):

* every ``import`` statement and ``importlib.import_module`` call that runs, a module already
  imported included (a ``builtins.__import__`` hook: a lazy import inside the kernel runs
  each time);
* every file opened for reading (``builtins.open``, which ``pathlib`` uses too);
* the files of the user code the program reaches by name (``key.reach_files``): a module
  imported before the build started is found through the names the kernel uses.

Library files (the standard library, site-packages, this plugin) are left out: their versions
are in the machine fingerprint.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import importlib.util
import io
import os
import sys
from collections.abc import Iterator
from typing import Any

_WRITE_MODES = frozenset("wax+")
_VOLATILE = ("/proc/", "/sys/", "/dev/")  # what the system says now, not the user's files


@contextlib.contextmanager
def recording(program: object = None) -> Iterator[set[str]]:
    """Collect, into the yielded set, the user files the block imports and opens (real paths),
    plus those ``program`` reaches by name (filled in when the block ends)."""
    from .key import reach_files

    files: set[str] = set()
    imported: set[tuple[str, tuple, str, int]] = set()  # (name, fromlist, package, level)
    opened: set[str] = set()
    written: set[str] = set()  # files the build writes are its output, not its input
    real_import, real_open, real_import_module = builtins.__import__, builtins.open, importlib.import_module

    def hooked_import(name: str, globals: dict | None = None, locals: Any = None, fromlist: Any = (),
                      level: int = 0) -> Any:
        module = real_import(name, globals, locals, fromlist, level)
        package = (globals or {}).get("__package__") or "" if level else ""
        imported.add((name, tuple(fromlist) if fromlist else (), package, level))
        return module

    def hooked_import_module(name: str, package: str | None = None) -> Any:
        module = real_import_module(name, package)
        imported.add((module.__name__, (), "", 0))
        return module

    def hooked_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, (str, bytes, os.PathLike)):
            path = os.path.abspath(os.fsdecode(file))
            (written if _WRITE_MODES.intersection(str(mode)) else opened).add(path)
        return real_open(file, mode, *args, **kwargs)

    builtins.__import__, builtins.open, io.open = hooked_import, hooked_open, hooked_open
    importlib.import_module = hooked_import_module
    try:
        yield files
    finally:
        builtins.__import__, builtins.open, io.open = real_import, real_open, real_open
        importlib.import_module = real_import_module
        paths = {_module_file(m) for m in _modules(imported)} | (opened - written)
        if program is not None:
            paths |= reach_files(python_function(program))
        files.update(real for real in map(_user_file, paths) if real)


_USER_FILES: dict[str, str | None] = {}  # path -> its real path when it is a user file, else None


def _user_file(path: str | None) -> str | None:
    """The real path of ``path`` when it is a file of the user's (see ``key.is_user_path``)."""
    if not path:
        return None
    if path not in _USER_FILES:
        from .key import is_user_path

        real = os.path.realpath(path)
        user = is_user_path(path) and not real.startswith(_VOLATILE) and os.path.isfile(real)
        _USER_FILES[path] = real if user else None
    return _USER_FILES[path]


def python_function(program: object) -> object:
    """The Python function behind a TileLang decorator (``@jit``: its original function)."""
    func = getattr(program, "func", None)
    return getattr(func, "orig_func", None) or program


def _modules(imported: set[tuple[str, tuple, str, int]]) -> Iterator[object]:
    for name, fromlist, package, level in imported:
        if level:
            try:
                name = importlib.util.resolve_name("." * level + name, package)
            except (ImportError, ValueError):
                continue
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # `import a.b.c` runs a, a.b and a.b.c
            yield sys.modules.get(".".join(parts[:i]))
        for item in fromlist:
            if item != "*":
                yield sys.modules.get(f"{name}.{item}")


def _module_file(module: object) -> str | None:
    path = getattr(module, "__file__", None)
    return path if isinstance(path, str) else None
