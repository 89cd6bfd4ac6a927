"""Where the project is: its pytest ini file and the stable id of each test.

pytest picks its rootdir and ini file from the command line's path arguments before it loads
plugins from entry points (the ini file may name plugins), so it does not know this plugin's
options yet: in ``--tl-baseline /elsewhere/base.json`` (a value as its own word) the value is
one more path, the rootdir becomes the common parent of the project and ``/elsewhere``, and
the project's ini file is not read (pytest-dev/pytest#8846). ``--tl-baseline=/elsewhere/...``
is one word and left alone.

So this plugin keys results by an id of its own, :func:`stable_id`: the test's file relative to
the directory of the ini file found from that file upward (as pytest finds it for that file
alone), which is pytest's node id wherever pytest chose that rootdir itself. Its own ini
settings come from the ini file pytest would have read (:func:`ini_value`), and
:func:`misplaced_root` says when pytest's rootdir was moved, so the run can say so.

Standard library and pytest only (``tomllib`` and ``iniconfig`` are imported on use).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

#: pytest's config files, in the order it tries them in one directory.
CONFIG_FILES = ("pytest.toml", ".pytest.toml", "pytest.ini", ".pytest.ini", "pyproject.toml", "tox.ini", "setup.cfg")


def ini_section(path: Path) -> dict | None:
    """The pytest settings of one candidate config file, or None when it has none (pytest's rules)."""
    import tomllib

    import iniconfig

    try:
        if path.suffix == ".toml":
            data = tomllib.loads(path.read_text())
            if path.name != "pyproject.toml":
                return data.get("pytest", {})
            tool = data.get("tool", {}).get("pytest")
            return (tool.get("ini_options", tool) or {}) if isinstance(tool, dict) else None
        ini = iniconfig.IniConfig(str(path))
    except (OSError, ValueError, iniconfig.ParseError):
        return None
    name = "tool:pytest" if path.name == "setup.cfg" else "pytest"
    if name in ini:
        return dict(ini[name].items())
    return {} if path.name in ("pytest.ini", ".pytest.ini") else None  # these count even when empty


def find_ini(start: Path) -> tuple[Path, dict] | None:
    """``(config file, its pytest settings)``: the first file holding pytest settings from the
    directory ``start`` upward, as pytest looks for one; None when there is none."""
    for directory in (start, *start.parents):
        for filename in CONFIG_FILES:
            path = directory / filename
            if path.is_file():
                section = ini_section(path)
                if section is not None:
                    return path, section
    return None


def _project_dir(start: Path) -> Path | None:
    """The directory pytest would take for its rootdir given only ``start``: the ini file's,
    else the nearest ``pyproject.toml``'s, else the nearest ``setup.py``'s; None without any."""
    found = find_ini(start)
    if found is not None:
        return found[0].parent
    for marker in ("pyproject.toml", "setup.py"):
        for directory in (start, *start.parents):
            if (directory / marker).is_file():
                return directory
    return None


# ----------------------------------------------------------------------------- the run's setup


@dataclass(frozen=True)
class Setup:
    """The rootdir and ini file pytest would use for this run's test paths alone."""

    rootdir: Path
    inipath: Path | None
    ini: dict  # the ini file's pytest settings
    displaced_by: tuple[str, ...]  # this plugin's options whose value pytest took for a path


_SETUP_KEY = pytest.StashKey[Setup]()


def _taken_for_paths(config: pytest.Config) -> tuple[str, ...]:
    """``--flag VALUE`` pairs of this plugin's options (in the arguments or $PYTEST_ADDOPTS) whose
    value names an existing file or directory: pytest counted it among the test paths."""
    words = shlex.split(os.environ.get("PYTEST_ADDOPTS", "")) + [str(a) for a in config.invocation_params.args]
    here = config.invocation_params.dir
    return tuple(f"{flag} {value}" for flag, value in zip(words, words[1:], strict=False)
                 if _took(config, flag, value) and not value.startswith("-") and (here / value).exists())


def _took(config: pytest.Config, flag: str, value: str) -> bool:
    """Whether ``flag`` is one of this plugin's options and took ``value`` (a flag without a value,
    ``--tl-retune``, holds True, never the next word)."""
    return flag.startswith("--tl-") and getattr(config.option, flag[2:].replace("-", "_"), None) == value


def _arg_dirs(config: pytest.Config) -> list[Path]:
    """The directories of this run's test paths (``file_or_dir`` once every option is known)."""
    here = config.invocation_params.dir
    out = []
    for arg in getattr(config.option, "file_or_dir", None) or []:
        path = Path(os.path.abspath(here / str(arg).split("::")[0]))
        if path.exists():
            out.append(path if path.is_dir() else path.parent)
    return out


def _common(paths: list[Path], default: Path) -> Path:
    try:
        return Path(os.path.commonpath([str(p) for p in paths])) if paths else default
    except ValueError:  # different drives
        return default


def setup(config: pytest.Config) -> Setup:
    """What pytest would have chosen without this plugin's option values among its paths (computed once)."""
    cached = config.stash.get(_SETUP_KEY, None)
    if cached is not None:
        return cached
    displaced = _taken_for_paths(config)
    told = getattr(config.option, "rootdir", None) or getattr(config.option, "inifilename", None)
    result = None
    if displaced and not told:
        here = config.invocation_params.dir
        ancestor = _common(_arg_dirs(config), here)
        found = find_ini(ancestor)
        if found is not None:
            result = Setup(found[0].parent, found[0], found[1], displaced)
        else:
            root = _project_dir(ancestor) or _common([here, ancestor], here)
            result = Setup(root, None, {}, displaced)
        if (result.rootdir, result.inipath) == (config.rootpath, config.inipath):
            result = None  # pytest chose the same without the values
    if result is None:
        result = Setup(config.rootpath, config.inipath, {}, ())
    config.stash[_SETUP_KEY] = result
    return result


def misplaced_root(config: pytest.Config) -> str | None:
    """A sentence when pytest's rootdir or ini file differ from those it would choose without
    this plugin's option values (see the module's docstring); else None."""
    s = setup(config)
    if not s.displaced_by:
        return None
    given = ", ".join(f"`{d}`" for d in s.displaced_by)
    fixed = ", ".join(f"`{d.replace(' ', '=', 1)}`" for d in s.displaced_by)
    chosen = f"ini file {config.inipath}" if config.inipath else "no ini file"
    wanted = f"{s.inipath}" if s.inipath else "no ini file"
    own = f"read its tl_* settings from {s.inipath} and " if s.inipath else ""
    return (f"pytest chose the rootdir {config.rootpath} ({chosen}) instead of {s.rootdir} ({wanted}): it took "
            f"the value of {given} for a test path, as it picks its rootdir before it knows plugin options"
            + (", so pytest's own settings in that ini file were not read" if s.inipath else "")
            + f". tlautotune {own}keys tests relative to their ini file's directory. Write {fixed} (one word) "
            f"to keep pytest's rootdir.")


def ini_value(config: pytest.Config, name: str) -> tuple[object, Path | None]:
    """``(value, the ini file it comes from)`` of this plugin's ini setting ``name``: from the
    ini file pytest read, or from the one it would have read when an option value moved it."""
    s = setup(config)
    if s.displaced_by:
        value = s.ini.get(name)
        return ("" if value is None else value), s.inipath
    return config.getini(name), config.inipath


# ----------------------------------------------------------------------------- test ids


_ROOTS_KEY = pytest.StashKey[dict]()


def _root_for(config: pytest.Config, directory: Path) -> Path:
    roots = config.stash.setdefault(_ROOTS_KEY, {})
    if directory not in roots:
        roots[directory] = _project_dir(directory) or setup(config).rootdir
    return roots[directory]


def stable_id(item: pytest.Item) -> str:
    """A test's id in rows, baselines and the JSON: its node id with the file's path relative
    to the directory of the ini file found from the file upward (pytest's node id whenever
    pytest chose that rootdir itself), whatever rootdir this run has."""
    nodeid = item.nodeid
    path = getattr(item, "path", None)
    if path is None or "::" not in nodeid:
        return nodeid
    root = _root_for(item.config, Path(path).parent)
    if root == item.config.rootpath:
        return nodeid
    try:
        rel = Path(os.path.relpath(path, root))
    except ValueError:
        return nodeid
    if rel.parts and rel.parts[0] == "..":
        return nodeid
    return f"{rel.as_posix()}::{nodeid.split('::', 1)[1]}"
