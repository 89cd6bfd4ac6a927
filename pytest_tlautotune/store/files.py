"""Atomic file helpers: the only places that write, publish or remove cache files.

A reader never sees half a file or half a directory: files go through a temp file, fsync and
one rename; directories are staged beside their final name and published with one rename.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, data: bytes | str, *, mkdir: bool = False) -> None:
    """Write ``data`` (text as UTF-8) through a temp file + fsync + rename; ``mkdir`` creates the parent."""
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)


@contextlib.contextmanager
def staging_dir(path: Path, tag: str = "") -> Iterator[Path]:
    """A private directory beside ``path`` to fill before :func:`publish_dir`; removed afterwards."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = path.parent / f".staging-{tag or path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir(mode=0o700)
    try:
        yield staging
    finally:
        remove_tree(staging, ignore_errors=True)


def publish_dir(staging: Path, path: Path) -> None:
    """Make ``staging`` visible as ``path`` in one rename, replacing an older entry."""
    fd = os.open(staging, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if path.exists():
        # Move the old entry aside first: a reader in between sees a miss, never a mix.
        remove_tree(path, ignore_errors=True)
    try:
        os.rename(staging, path)
    except OSError:
        # Another process published the same key between our check and rename: theirs stands.
        if not path.is_dir():
            raise


def remove_tree(path: Path, ignore_errors: bool = False) -> bool:
    """Delete ``path``: a link is unlinked (its target untouched), a directory renamed aside then
    removed (so nobody sees it half-deleted). False when it was already gone."""
    path = Path(path)
    try:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
            return True
        trash = path.parent / f".trash-{path.name}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return False  # someone else removed it first
        except OSError:
            if not ignore_errors:
                raise
            trash = path  # cannot rename (e.g. read-only parent): remove in place
        # rmtree unlinks symlinks it meets instead of descending into them.
        shutil.rmtree(trash, ignore_errors=ignore_errors)
        return True
    except OSError:
        if not ignore_errors:
            raise
        return False


def read_json(path: str | os.PathLike) -> Any:
    """Parsed JSON at ``path``, or None when absent or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def process_gone(pid: int) -> bool:
    """Whether no process ``pid`` exists (one of another user's counts as there, a zombie as gone):
    whether a file or directory named for its writer's pid is an orphan."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        pass
    try:  # a zombie has finished (an orphan whose reaper has not reaped it yet)
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] == b"Z"
    except (OSError, IndexError):
        return False


def human_size(n: float) -> str:
    """A byte count as people read it: ``512 B``, ``1.5 KiB``, ... up to GiB."""
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
