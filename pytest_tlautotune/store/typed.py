"""JSON that gives back what went in: tuples stay tuples, enum members stay members.

An entry's JSON files stay plain JSON (TileLang's own loader reads ``best_config.json``). What
plain JSON loses is listed beside them (``types.json``): the path of each tuple and each enum
member, a member's class named by module and qualified name and found again among the modules
already imported (nothing is imported on a cache file's word). Standard library only: the
marker's configs are checked with :func:`problem` at collection.
"""

from __future__ import annotations

import enum
import json
import sys
from typing import Any

#: A position in a JSON value: dict keys and list indices from the top.
Path = list[str | int]

TUPLE = "tuple"
ENUM = "enum"  # ["enum", "module:qualname"]: the value at the path is a member of that class
KEY = "key"  # ["key", "module:qualname"]: the dict key at the path's end is a member of that class

PLAIN = "None, bool, int, float, str, list, tuple, a dict with str keys, or a member of an enum of those"


def class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def find_class(name: str) -> type[enum.Enum] | None:
    """The enum class named ``module:qualname`` in an imported module, else None."""
    module_name, _, qualname = name.partition(":")
    found: Any = sys.modules.get(module_name)
    if found is None or not qualname:
        return None
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found if isinstance(found, type) and issubclass(found, enum.Enum) else None


def types_of(value: object) -> list[list]:
    """Where ``value`` holds what plain JSON loses, as ``[path, kind]`` pairs (see :func:`restore`)."""
    out: list[list] = []
    _walk(value, [], out)
    return out


def _walk(value: object, path: Path, out: list[list]) -> None:
    if isinstance(value, enum.Enum):
        out.append([path, [ENUM, class_name(type(value))]])
        return
    if isinstance(value, tuple):
        out.append([path, TUPLE])
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _walk(item, [*path, i], out)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                continue  # JSON turns it into a string either way: stored and returned alike
            step = str.__str__(key)  # what JSON writes for it (a str enum's value, not its name)
            if isinstance(key, enum.Enum):
                out.append([[*path, step], [KEY, class_name(type(key))]])
            _walk(item, [*path, step], out)


def restore(value: object, types: list) -> object:
    """``value`` (as JSON read it) with the tuples and enum members of ``types`` put back.

    Deepest paths first, each value before its key; a path or a class that no longer fits is
    left as JSON read it.
    """
    def order(entry: list) -> tuple[int, bool]:
        path, kind = entry
        return -len(path), isinstance(kind, list) and kind[:1] == [KEY]

    well_formed = [t for t in types if isinstance(t, list) and len(t) == 2 and isinstance(t[0], list)]
    for path, kind in sorted(well_formed, key=order):
        try:
            if not path:
                value = _convert(value, kind)
                continue
            parent: Any = value
            for step in path[:-1]:
                parent = parent[step]
            last = path[-1]
            if isinstance(kind, list) and kind[:1] == [KEY]:
                _convert_key(parent, last, kind[1])
            else:
                parent[last] = _convert(parent[last], kind)
        except (KeyError, IndexError, TypeError):
            continue
    return value


def _convert(value: object, kind: object) -> object:
    if kind == TUPLE and isinstance(value, list):
        return tuple(value)
    if isinstance(kind, list) and kind[:1] == [ENUM] and len(kind) == 2:
        return _member(value, kind[1])
    return value


def _member(value: object, name: object) -> object:
    cls = find_class(name) if isinstance(name, str) else None
    if cls is None:
        return value
    try:
        return cls(value)
    except (ValueError, TypeError):
        return value


def _convert_key(parent: dict, key: str, name: object) -> None:
    member = _member(key, name)
    if member is key or not isinstance(parent, dict) or key not in parent:
        return
    items = list(parent.items())
    parent.clear()
    parent.update((member if k == key else k, v) for k, v in items)


def dumps(value: object) -> tuple[str, list[list]]:
    """``value`` as plain JSON text (what JSON cannot write becomes its ``str``), and its types."""
    return json.dumps(value, default=str), types_of(value)


def loads(text: str, types: list) -> object:
    return restore(json.loads(text), types)


def as_stored(value: object) -> object:
    """``value`` as a store and a load give it back: what a hit returns, for a miss to return too."""
    return loads(*dumps(value))


def problem(value: object) -> str | None:
    """Why ``value`` (a config value) would not come back from the cache equal and of the same
    types (``"[1]: key 3 is not a string"``: where in it, and why), or None when it would."""
    found = _problem(value, "")
    if found is None:
        return None
    where, why = found
    return f"{where}: {why}" if where else why


def _problem(value: object, where: str) -> tuple[str, str] | None:
    if value is None or type(value) in (bool, int, float, str):
        return None
    if isinstance(value, enum.Enum):
        why = _enum_problem(value)
        return (where, why) if why else None
    if type(value) in (list, tuple):
        return next((p for i, item in enumerate(value) if (p := _problem(item, f"{where}[{i}]"))), None)
    if type(value) is dict:
        for key, item in value.items():
            if isinstance(key, enum.Enum) and isinstance(key, str):
                why = _enum_problem(key)
                if why:
                    return where, why
            elif type(key) is not str:
                return where, f"key {key!r} is not a string"
            found = _problem(item, f"{where}[{key!r}]")
            if found:
                return found
        return None
    return where, f"{type(value).__qualname__} is not one of {PLAIN}"


def _enum_problem(member: enum.Enum) -> str | None:
    cls = type(member)
    if find_class(class_name(cls)) is not cls:
        return (f"{cls.__qualname__} cannot be found by name ({class_name(cls)}): define the enum at the top "
                f"level of a module")
    try:
        back = cls(json.loads(json.dumps(member)))
    except (TypeError, ValueError):
        return f"{member!r} is not stored as its value ({PLAIN})"
    return None if back is member else f"{member!r} does not come back from its value"
