"""Refuse cache directories and entries that someone else could have written.

A cache entry holds a shared library that gets loaded and a pickle; loading one
planted by another user runs their code. So before anything is read, the cache
root and the entry must be owned by us and writable by nobody else.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..model import TLAutotuneError


class UnsafeCache(TLAutotuneError):
    """The cache directory or an entry may have been written by someone else."""


def _check(path: Path, what: str) -> None:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeCache(f"{what} {path} is a symlink; point --tl-cache-dir at the real directory")
    if st.st_uid != os.getuid():
        raise UnsafeCache(
            f"{what} {path} is owned by uid {st.st_uid}, not by you (uid {os.getuid()}); "
            f"use a cache directory of your own (--tl-cache-dir) or chown it"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeCache(
            f"{what} {path} is writable by other users (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run `chmod go-w {path}` or use another --tl-cache-dir"
        )


def ensure_root(root: Path) -> Path:
    """Create the cache root (mode 0700) on first use and check that it is ours. Whether it can
    be written is ``faults.unwritable``'s question: a read-only cache still serves its results."""
    root = Path(root)
    if not root.exists():
        root.mkdir(parents=True, mode=0o700, exist_ok=True)
    check_dir(root, "cache directory")
    return root


def check_dir(path: Path, what: str = "cache directory") -> None:
    """Refuse a directory that is a symlink, someone else's, writable by others, or not a directory."""
    path = Path(path)
    _check(path, what)
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise UnsafeCache(f"{what} {path} is not a directory; remove it or use another --tl-cache-dir")


def check_entry(entry: Path) -> None:
    """Check an entry directory and its files before anything in it is loaded."""
    _check(entry, "cache entry")
    for child in entry.iterdir():
        _check(child, "cache file")
