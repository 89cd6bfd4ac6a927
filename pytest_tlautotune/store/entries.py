"""The tuned results: ``entries/<key>/`` published whole, loaded after verification, bad ones
moved to ``quarantine/``.

An entry is written staged and published with one rename (``artifacts.save_entry``), and loaded
only after its manifest verifies (``manifest.verify_entry``). A result the cache's filesystem
refuses is kept in the scratch directory for the rest of the run (:meth:`Entries.path` finds it).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import faults, safety
from .cache_dir import CacheDir
from .files import read_json, remove_tree
from .locks import Locks
from .manifest import MANIFEST_PATH, CorruptEntry, add_tilelang_note, same_note, tilelang_notes, verify_entry

logger = logging.getLogger("pytest_tlautotune")


class Entries:
    """Every entry's life under one cache directory: where it is, load, save, note, quarantine."""

    def __init__(self, cache_dir: CacheDir, locks: Locks, make_result: Callable[..., Any] | None = None):
        self.cache_dir = cache_dir
        self.locks = locks
        self._kept: dict[str, Path] = {}  # key -> where save() kept a result the cache refused
        self.quarantined: dict[str, str] = {}  # entry name (its key) -> why it was moved aside, this run
        # What load() returns, made of an entry's fields: the seed's AutotuneResult (param.py, above us).
        self._make_result = make_result or dict

    def path(self, key: str) -> Path:
        """Where the result of ``key`` is: in the cache, or where this run kept it (see :meth:`save`)."""
        kept = self._kept.get(key)
        return kept if kept is not None else self.cache_dir.ensure() / "entries" / key

    def load(self, entry: Path, compile_args: Any, quarantine: bool = True, func: Any = None) -> Any:
        """The result stored at ``entry`` with its kernel loaded; None when absent. An entry
        that fails its checks or does not load is quarantined (and so re-tuned), or with
        ``quarantine=False`` logged and left where it is. ``func``: see ``artifacts.read_entry``."""
        from .artifacts import read_entry

        try:
            if not entry.is_dir():
                return None
        except OSError:
            return None  # a cache directory we may not read: a miss
        try:
            verify_entry(entry)
        except (CorruptEntry, safety.UnsafeCache, OSError) as exc:
            self._bad(entry, str(exc), quarantine)
            return None
        try:
            return self._make_result(**read_entry(entry, compile_args, func))  # verified just above: hash once
        except Exception as exc:
            self._bad(entry, f"{type(exc).__name__}: {exc}", quarantine)
            return None

    def _bad(self, entry: Path, why: str, quarantine: bool) -> None:
        if quarantine:
            self.quarantine(entry, why)
        else:
            logger.warning("ignoring cache entry %s: %s", entry, why)

    def save(self, result: Any, entry: Path, tilelang: list[dict] | None = None) -> bool:
        """Publish ``result`` at ``entry`` (staged, manifest, one rename). False when the cache's
        filesystem refuses it (told once, see ``CacheDir.refused``): then it is kept in the scratch
        directory for the rest of this run (:meth:`path` finds it there). Other OSErrors are raised.
        ``tilelang``: the notes of TileLang's cache keys it answers (``manifest.add_tilelang_note``),
        kept with those of the entry it replaces (a re-tuning answers the same tunings)."""
        from .artifacts import save_entry

        old = tilelang_notes(read_json(entry / MANIFEST_PATH))
        tilelang = old + [n for n in tilelang or [] if not any(same_note(n, o) for o in old)]
        if self.cache_dir.writable():
            try:
                save_entry(result, entry, tilelang)
                return True
            except OSError as exc:
                if not faults.is_refusal(exc):
                    raise
                self.cache_dir.refused(exc)
        kept = self.cache_dir.scratch / "entries" / entry.name
        try:
            save_entry(result, kept)
        except OSError as exc:
            logger.warning("could not keep the tuned result %s in %s either: %s", entry.name, kept, exc)
        else:
            self._kept[entry.name] = kept
        return False

    def note_tilelang(self, key: str, test: str, note: Callable[[], dict | None]) -> None:
        """Add ``note()`` (TileLang's cache key the entry of ``key`` answers, or why none) to the entry's
        manifest unless it holds one for ``test`` already (a hit computes no note then) or one that
        says the same. Only where the cache takes writes and no tuner holds the key (a hit never waits
        for it); a failure costs the note, never the test."""
        from filelock import Timeout

        if self.cache_dir.refusal is not None or key in self._kept:
            return
        entry = self.cache_dir.root / "entries" / key
        notes = tilelang_notes(read_json(entry / MANIFEST_PATH))
        if any(n.get("test") == test for n in notes):
            return
        note = note()
        if note is None or any(same_note(n, note) for n in notes):
            return
        try:
            with self.locks.entry(key, timeout=0):
                add_tilelang_note(entry, note)
        except (Timeout, CorruptEntry, OSError) as exc:
            logger.debug("could not note TileLang's key in %s: %s", entry, exc)

    def quarantine(self, path: Path, why: str) -> None:
        """Move a bad entry aside (kept for inspection), so it is re-tuned."""
        self.quarantined[path.name] = why
        target = self.cache_dir.ensure() / "quarantine" / f"{path.name}-{uuid.uuid4().hex[:8]}"
        if self.cache_dir.refusal is not None:
            logger.warning("not using bad cache entry %s (the cache cannot be written, so it stays): %s", path, why)
            return
        try:
            target.parent.mkdir(mode=0o700, exist_ok=True)
            os.rename(path, target)
        except OSError:
            remove_tree(path, ignore_errors=True)
            logger.warning("removed bad cache entry %s: %s", path, why)
            return
        # The reason goes beside a link, never through it into the directory it points to.
        why_path = target / "WHY" if target.is_dir() and not target.is_symlink() else Path(f"{target}.WHY")
        try:
            why_path.write_text(why)
        except OSError:
            pass
        logger.warning("moved bad cache entry %s to %s: %s", path, target, why)
