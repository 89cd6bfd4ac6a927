"""The cache directory itself: made and checked on first use, and whether its filesystem takes writes.

A filesystem that refuses writes (full, read-only, not the user's to write: ``faults.py``) is
said once, as a warning; stored results are still served, and this run's kernels and results
are kept in a temporary directory (:attr:`CacheDir.scratch`, removed by :meth:`CacheDir.close`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from . import faults, safety
from .files import process_gone, remove_tree

logger = logging.getLogger("pytest_tlautotune")

STALE_STAGING_S = 3600.0
SUBDIRS = ("entries", "candidates", "kernels", "locks")
SCRATCH_PREFIX = "tlautotune-scratch-"


class CacheDir:
    """The cache root: its folders, their ownership, stale staging, and write refusals."""

    def __init__(self, root: str | os.PathLike, warn: Callable[[Warning], None] | None = None):
        self.root = Path(root).expanduser()
        self._ready = False
        self._warn = warn
        # Why the cache's filesystem refuses writes (found at start or by the first write that
        # failed), and whether the user was told; this run's kernels then go to the scratch dir.
        self.refusal: OSError | None = None
        self._told = False
        self.scratch = Path(tempfile.gettempdir()) / f"{SCRATCH_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"

    def ensure(self) -> Path:
        """Create the root on first use, check it is ours, clean stale staging. A filesystem that
        refuses writes is noted (:attr:`refusal`), not raised: stored results can still be read."""
        if not self._ready:
            try:
                safety.ensure_root(self.root)
            except OSError as exc:
                if not faults.is_refusal(exc):
                    raise
                self.refused(exc, tell=False)
            else:
                problem = faults.unwritable(self.root)
                if problem is not None:
                    self.refused(problem, tell=False)
            for sub in SUBDIRS:
                path = self.root / sub
                if self.refusal is None:
                    try:
                        path.mkdir(mode=0o700)
                    except FileExistsError:
                        pass  # a file in its place: check_dir says so
                    except OSError as exc:
                        if not faults.is_refusal(exc):
                            raise
                        self.refused(exc, tell=False)
                # Kernels load from here after a manifest check only: the folders must be ours too.
                if os.path.lexists(path):
                    safety.check_dir(path, "cache directory")
            if self.refusal is None:
                self._clean_stale()
            self._ready = True
        return self.root

    def refused(self, exc: OSError, tell: bool = True) -> None:
        """The cache's filesystem refused a write (``faults.is_refusal``): nothing more is written
        to it this run. ``tell``: say so now, once per run, as a warning naming the filesystem and
        the fix (a refusal found at start is told when a write is first wanted)."""
        if self.refusal is None:
            self.refusal = exc
            self._clean_old_scratch()
        if tell and not self._told:
            self._told = True
            message = (f"{faults.describe(self.root, self.refusal)}. This run's results are kept in a "
                       f"temporary directory and not stored")
            logger.warning("%s", message)
            if self._warn is not None:
                from ..model import TuneWarning

                self._warn(TuneWarning(message))

    def writable(self) -> bool:
        """Whether writes go to the cache; when not, the refusal is told (once)."""
        self.ensure()
        if self.refusal is not None:
            self.refused(self.refusal)
        return self.refusal is None

    def close(self) -> None:
        """Remove the scratch directory of this run's kernels (a refused cache's stand-in)."""
        remove_tree(self.scratch, ignore_errors=True)

    def _clean_old_scratch(self) -> None:
        # Scratch directories of runs that died before removing theirs.
        for p in self.scratch.parent.glob(f"{SCRATCH_PREFIX}*"):
            pid = p.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and process_gone(int(pid)):
                with contextlib.suppress(OSError):
                    if p.lstat().st_uid == os.getuid():
                        remove_tree(p, ignore_errors=True)

    def _clean_stale(self) -> None:
        # Staging dirs of writers that died; old enough that nobody is still writing them.
        now = time.time()
        for sub in ("entries", "kernels"):
            for p in (self.root / sub).glob(".*"):
                try:
                    if now - p.stat().st_mtime > STALE_STAGING_S:
                        remove_tree(p, ignore_errors=True)
                except OSError:
                    pass
