"""The small JSON documents beside the entries: one record per config, one index file per warm key.

    candidates/<ckey>.json    the record of one config: status, reason, samples
    index/<fast>.json         program + args + settings -> entry key, and the digests of the
                              files its builds read (a hit skips building PrimFuncs)

Losing either costs time only (a config measured again, a warm hit that builds its PrimFuncs),
so read and write failures are warnings or misses, never a crash.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from . import faults, safety
from .cache_dir import CacheDir
from .files import atomic_write, read_json

logger = logging.getLogger("pytest_tlautotune")


class Records:
    """Each config's verdict by candidate key; a local miss asks ``remote`` (the shared store's
    ``get_record``, see ``backend.RecordSource``): verdicts measured on an identical machine are
    reused like local ones."""

    def __init__(self, cache_dir: CacheDir, remote: Callable[[str], dict | None] | None = None):
        self.cache_dir = cache_dir
        self._remote = remote

    def read(self, ckey: str) -> dict | None:
        path = self.cache_dir.ensure() / "candidates" / f"{ckey}.json"
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return self._remote(ckey) if self._remote else None
        except (OSError, ValueError) as exc:
            refused = self.cache_dir.refusal is not None and isinstance(exc, PermissionError)
            if not refused:  # the refusal says why
                logger.warning("ignoring unreadable candidate record %s: %s", path, exc)
            return None
        return record if isinstance(record, dict) and record.get("ckey") == ckey else None

    def write(self, record: dict) -> None:
        if not self.cache_dir.writable():
            return
        path = self.cache_dir.root / "candidates" / f"{record['ckey']}.json"
        try:
            atomic_write(path, json.dumps(record, default=str))
        except OSError as exc:
            if faults.is_refusal(exc):
                self.cache_dir.refused(exc)
            else:
                logger.warning("could not store candidate record %s: %s", path, exc)


class Index:
    """The warm path's index: program + args + settings -> entry key, while the files built from
    are unchanged."""

    def __init__(self, cache_dir: CacheDir):
        self.cache_dir = cache_dir

    def read(self, fast: str) -> str | None:
        """The entry key stored for ``fast``, if every file its builds read is as it was then."""
        try:
            root = self.cache_dir.ensure()
        except (OSError, safety.UnsafeCache):
            return None  # a miss: the tuning path reports the cache directory's problem to the test
        data = read_json(root / "index" / f"{fast}.json")
        if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
            return None
        key = data.get("key")
        if not (isinstance(key, str) and len(key) == 64 and key.isalnum()):
            return None
        from ..engine.key import file_digests

        files = data["files"]
        return key if file_digests(files) == files else None

    def write(self, fast: str, key: str, files: dict[str, str]) -> None:
        """Store ``fast -> key`` with ``files`` ({path: digest}: what the builds read)."""
        # A lost index costs the next run its warm path only: a refusal is not told for it.
        self.cache_dir.ensure()
        if self.cache_dir.refusal is not None:
            return
        root = self.cache_dir.root
        try:
            (root / "index").mkdir(mode=0o700, exist_ok=True)
            atomic_write(root / "index" / f"{fast}.json", json.dumps({"key": key, "files": files}))
        except OSError as exc:
            if faults.is_refusal(exc):
                self.cache_dir.refused(exc, tell=False)
            else:
                logger.warning("could not store cache index %s: %s", fast, exc)
