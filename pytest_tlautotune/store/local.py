"""The local store: the cache root's entries, per-candidate records and kernels, index, locks.

Layout under the cache root (created 0700 on first write)::

    entries/<key>/            one tuned result (Store.save, AutotuneResult.save_to_disk)
    candidates/<ckey>.json    the record of one config: status, reason, samples
    kernels/<ckey>/           the compiled artifacts of one config
    index/<fast>.json         program + args + settings -> key, and the digests of the files
                              its builds read (a hit skips building PrimFuncs)
    locks/<key>.lock          one tuner per key across processes
    locks/device-<dev>.lock   one process times kernels on a device at a time
    quarantine/               entries that failed verification, moved aside

Read and write failures of records become warnings, never a crash. A filesystem that refuses
writes (full, read-only, not the user's to write: ``faults.py``) is said once, as a warning;
stored results are still served, and this run's kernels are kept in a temporary directory
(``scratch``, removed by :meth:`Store.close`) so every config is measured all the same.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import faults, safety
from .files import atomic_write, process_gone, read_json, remove_tree
from .manifest import MANIFEST_PATH, CorruptEntry, add_tilelang_note, same_note, tilelang_notes, verify_entry

logger = logging.getLogger("pytest_tlautotune")

STALE_STAGING_S = 3600.0
SUBDIRS = ("entries", "candidates", "kernels", "locks")
SCRATCH_PREFIX = "tlautotune-scratch-"


class Store:
    """The one owner of a cache root: paths, records, index, locks, quarantine, entries."""

    def __init__(self, root: str | os.PathLike, remote_record: Callable[[str], dict | None] | None = None,
                 make_result: Callable[..., Any] | None = None, warn: Callable[[Warning], None] | None = None):
        self.root = Path(root).expanduser()
        self._ready = False
        self._warn = warn
        # Why the cache's filesystem refuses writes (found at start or by the first write that
        # failed), and whether the user was told; this run's kernels then go to the scratch dir.
        self.refusal: OSError | None = None
        self._told = False
        self.scratch = Path(tempfile.gettempdir()) / f"{SCRATCH_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"
        self._kept: dict[str, Path] = {}  # ckey -> where a compile worker kept its kernel instead
        self._kept_entries: dict[str, Path] = {}  # key -> where save() kept a result the cache refused
        self.quarantined: dict[str, str] = {}  # entry name (its key) -> why it was moved aside, this run
        # A record missing here is asked of the shared store (remote.py): verdicts measured on
        # an identical machine are reused like local ones.
        self._remote_record = remote_record
        # What load() returns, made of an entry's fields: the seed's AutotuneResult (param.py, above us).
        self._make_result = make_result or dict

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

    # -- a filesystem that refuses writes ----------------------------------------------

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

    def entry(self, key: str) -> Path:
        """Where the result of ``key`` is: in the cache, or where this run kept it (see :meth:`save`)."""
        kept = self._kept_entries.get(key)
        return kept if kept is not None else self.ensure() / "entries" / key

    def kernel_dir(self, ckey: str) -> Path:
        """Where one config's compiled kernel is: in the cache, or where this run kept it
        when the cache refused it (:meth:`kept_at`; new ones go to :meth:`fallback_dir`)."""
        kept = self._kept.get(ckey)
        if kept is not None:
            return kept
        own = self.ensure() / "kernels" / ckey
        if self.refusal is not None and not os.path.isdir(own):
            return self.fallback_dir(ckey)
        return own

    def fallback_dir(self, ckey: str) -> Path:
        """Where a compile worker keeps a kernel that the cache refuses (in the scratch dir)."""
        return self.scratch / f"kernel-{ckey}"

    def kept_at(self, ckey: str, path: Path, exc: OSError) -> None:
        """A compile worker kept ``ckey``'s kernel at ``path``: the cache refused it with ``exc``."""
        self._kept[ckey] = Path(path)
        self.refused(exc)

    def lock(self, key: str, timeout: float = -1):
        """A file lock per key; symlinks are refused by filelock >= 3.20.1."""
        from filelock import FileLock

        return FileLock(self._lock_path(f"{key}.lock"), timeout=timeout)

    def device_lock_path(self, device: str) -> str:
        return self._lock_path(f"device-{device.replace(':', '-')}.lock")

    def _lock_path(self, name: str) -> str:
        """The lock file ``name`` in the cache; where the cache refuses to create or open it, one
        in this user's lock directory under the system's temporary directory."""
        path = self.ensure() / "locks" / name
        if self.refusal is None:
            try:
                os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600))
                return str(path)
            except OSError as exc:
                if not faults.is_refusal(exc):
                    return str(path)  # filelock says what is wrong (a symlink, ...)
                self.refused(exc, tell=False)
        own = Path(tempfile.gettempdir()) / f"tlautotune-locks-{os.getuid()}"
        with contextlib.suppress(FileExistsError):
            own.mkdir(mode=0o700)
        safety.check_dir(own, "lock directory")
        return str(own / name)

    # -- candidate records ---------------------------------------------------------

    def read_record(self, ckey: str) -> dict | None:
        path = self.ensure() / "candidates" / f"{ckey}.json"
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return self._remote_record(ckey) if self._remote_record else None
        except (OSError, ValueError) as exc:
            if not (self.refusal is not None and isinstance(exc, PermissionError)):  # the refusal says why
                logger.warning("ignoring unreadable candidate record %s: %s", path, exc)
            return None
        return record if isinstance(record, dict) and record.get("ckey") == ckey else None

    def write_record(self, record: dict) -> None:
        if not self.writable():
            return
        path = self.root / "candidates" / f"{record['ckey']}.json"
        try:
            atomic_write(path, json.dumps(record, default=str))
        except OSError as exc:
            if faults.is_refusal(exc):
                self.refused(exc)
            else:
                logger.warning("could not store candidate record %s: %s", path, exc)

    # -- fast index: program + args + settings -> entry key, while the files built from are unchanged

    def read_index(self, fast: str) -> str | None:
        """The entry key stored for ``fast``, if every file its builds read is as it was then."""
        try:
            root = self.ensure()
        except (OSError, safety.UnsafeCache):
            return None  # a miss: the tuning path reports the cache directory's problem to the test
        data = read_json(root / "index" / f"{fast}.json")
        if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
            return None
        key = data.get("key")
        if not (isinstance(key, str) and len(key) == 64 and key.isalnum()):
            return None
        from ..key import file_digests

        files = data["files"]
        return key if file_digests(files) == files else None

    def write_index(self, fast: str, key: str, files: dict[str, str]) -> None:
        """Store ``fast -> key`` with ``files`` ({path: digest}: what the builds read)."""
        # A lost index costs the next run its warm path only: a refusal is not told for it.
        self.ensure()
        if self.refusal is not None:
            return
        try:
            (self.root / "index").mkdir(mode=0o700, exist_ok=True)
            atomic_write(self.root / "index" / f"{fast}.json", json.dumps({"key": key, "files": files}))
        except OSError as exc:
            if faults.is_refusal(exc):
                self.refused(exc, tell=False)
            else:
                logger.warning("could not store cache index %s: %s", fast, exc)

    # -- entries -------------------------------------------------------------------

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
        filesystem refuses it (told once, see :meth:`refused`): then it is kept in the scratch
        directory for the rest of this run (:meth:`entry` finds it there). Other OSErrors are raised.
        ``tilelang``: the notes of TileLang's cache keys it answers (``manifest.add_tilelang_note``),
        kept with those of the entry it replaces (a re-tuning answers the same tunings)."""
        from .artifacts import save_entry

        old = tilelang_notes(read_json(entry / MANIFEST_PATH))
        tilelang = old + [n for n in tilelang or [] if not any(same_note(n, o) for o in old)]
        if self.writable():
            try:
                save_entry(result, entry, tilelang)
                return True
            except OSError as exc:
                if not faults.is_refusal(exc):
                    raise
                self.refused(exc)
        kept = self.scratch / "entries" / entry.name
        try:
            save_entry(result, kept)
        except OSError as exc:
            logger.warning("could not keep the tuned result %s in %s either: %s", entry.name, kept, exc)
        else:
            self._kept_entries[entry.name] = kept
        return False

    def note_tilelang(self, key: str, note: dict | None) -> None:
        """Add ``note`` (TileLang's cache key the entry of ``key`` answers, or why none) to the entry's
        manifest unless it says so already. Only where the cache takes writes and no tuner holds the
        key (a hit never waits for it); a failure costs the note, never the test."""
        from filelock import Timeout

        if note is None or self.refusal is not None or key in self._kept_entries:
            return
        entry = self.root / "entries" / key
        if any(same_note(n, note) for n in tilelang_notes(read_json(entry / MANIFEST_PATH))):
            return
        try:
            with self.lock(key, timeout=0):
                add_tilelang_note(entry, note)
        except (Timeout, CorruptEntry, OSError) as exc:
            logger.debug("could not note TileLang's key in %s: %s", entry, exc)

    def quarantine(self, path: Path, why: str) -> None:
        """Move a bad entry aside (kept for inspection), so it is re-tuned."""
        self.quarantined[path.name] = why
        target = self.ensure() / "quarantine" / f"{path.name}-{uuid.uuid4().hex[:8]}"
        if self.refusal is not None:
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
