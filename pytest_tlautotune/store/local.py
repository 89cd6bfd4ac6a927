"""The local store: the cache root's entries, per-candidate records and kernels, index, locks.

Layout under the cache root (created 0700 on first write)::

    entries/<key>/            one tuned result (Store.save, AutotuneResult.save_to_disk)
    candidates/<ckey>.json    the record of one config: status, reason, samples
    kernels/<ckey>/           the compiled artifacts of one config
    index/<fast>.json         program source + args + settings -> key (skips building PrimFuncs)
    locks/<key>.lock          one tuner per key across processes
    locks/device-<dev>.lock   one process times kernels on a device at a time
    quarantine/               entries that failed verification, moved aside

Read and write failures of records become warnings, never a crash.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import safety
from .files import atomic_write, read_json, remove_tree
from .manifest import CorruptEntry, verify_entry

logger = logging.getLogger("pytest_tlautotune")

STALE_STAGING_S = 3600.0


class Store:
    """The one owner of a cache root: paths, records, index, locks, quarantine, entries."""

    def __init__(self, root: str | os.PathLike, remote_record: Callable[[str], dict | None] | None = None,
                 make_result: Callable[..., Any] | None = None):
        self.root = Path(root).expanduser()
        self._ready = False
        self.quarantined: dict[str, str] = {}  # entry name (its key) -> why it was moved aside, this run
        # A record missing here is asked of the shared store (remote.py): verdicts measured on
        # an identical machine are reused like local ones.
        self._remote_record = remote_record
        # What load() returns, made of an entry's fields: the seed's AutotuneResult (param.py, above us).
        self._make_result = make_result or dict

    def ensure(self) -> Path:
        """Create the root on first use, check it is ours, clean stale staging."""
        if not self._ready:
            safety.ensure_root(self.root)
            for sub in ("entries", "candidates", "kernels", "locks"):
                with contextlib.suppress(FileExistsError):  # a file in its place: check_dir says so
                    (self.root / sub).mkdir(mode=0o700, exist_ok=True)
                # Kernels load from here after a manifest check only: the folders must be ours too.
                safety.check_dir(self.root / sub, "cache directory")
            self._clean_stale()
            self._ready = True
        return self.root

    def entry(self, key: str) -> Path:
        return self.ensure() / "entries" / key

    def kernel_dir(self, ckey: str) -> Path:
        return self.ensure() / "kernels" / ckey

    def lock(self, key: str, timeout: float = -1):
        """A file lock per key; symlinks are refused by filelock >= 3.20.1."""
        from filelock import FileLock

        return FileLock(str(self.ensure() / "locks" / f"{key}.lock"), timeout=timeout)

    def device_lock_path(self, device: str) -> str:
        return str(self.ensure() / "locks" / f"device-{device.replace(':', '-')}.lock")

    # -- candidate records ---------------------------------------------------------

    def read_record(self, ckey: str) -> dict | None:
        path = self.ensure() / "candidates" / f"{ckey}.json"
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return self._remote_record(ckey) if self._remote_record else None
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable candidate record %s: %s", path, exc)
            return None
        return record if isinstance(record, dict) and record.get("ckey") == ckey else None

    def write_record(self, record: dict) -> None:
        path = self.ensure() / "candidates" / f"{record['ckey']}.json"
        try:
            atomic_write(path, json.dumps(record, default=str))
        except OSError as exc:
            logger.warning("could not store candidate record %s: %s", path, exc)

    # -- fast index: program source + args + settings -> entry key -----------------

    def read_index(self, fast: str) -> str | None:
        try:
            root = self.ensure()
        except (OSError, safety.UnsafeCache):
            return None  # a miss: the tuning path reports the cache directory's problem to the test
        data = read_json(root / "index" / f"{fast}.json")
        key = data.get("key") if isinstance(data, dict) else None
        return key if isinstance(key, str) and len(key) == 64 and key.isalnum() else None

    def write_index(self, fast: str, key: str) -> None:
        try:
            (self.ensure() / "index").mkdir(mode=0o700, exist_ok=True)
            atomic_write(self.root / "index" / f"{fast}.json", json.dumps({"key": key}))
        except OSError as exc:
            logger.warning("could not store cache index %s: %s", fast, exc)

    # -- entries -------------------------------------------------------------------

    def load(self, entry: Path, compile_args: Any, quarantine: bool = True, func: Any = None) -> Any:
        """The result stored at ``entry`` with its kernel loaded; None when absent. An entry
        that fails its checks or does not load is quarantined (and so re-tuned), or with
        ``quarantine=False`` logged and left where it is. ``func``: see ``artifacts.read_entry``."""
        from .artifacts import read_entry

        if not entry.is_dir():
            return None
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

    def save(self, result: Any, entry: Path) -> None:
        """Publish ``result`` at ``entry`` (staged, manifest, one rename); raises OSError."""
        from .artifacts import save_entry

        save_entry(result, entry)

    def quarantine(self, path: Path, why: str) -> None:
        """Move a bad entry aside (kept for inspection), so it is re-tuned."""
        self.quarantined[path.name] = why
        target = self.ensure() / "quarantine" / f"{path.name}-{uuid.uuid4().hex[:8]}"
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

    def list_entries(self) -> list[Path]:
        entries = self.root / "entries"
        return sorted(p for p in entries.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if entries.is_dir() else []

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
