"""The fleet's shared store behind the local cache, reduced to get, put, lock and sign.

``SharedStore`` wraps a backend (``backend.SharedBackend``: ``remote.RedisStore``) with what
every question to it needs: a fault is one ``StoreWarning`` per session and a miss (a store that
cannot be reached is not asked again, so it costs one timeout at most); with
``TL_AUTOTUNE_STORE_SECRET`` only signed verdicts and signed entries are taken, and what is put is
signed; ``--tl-store-readonly`` puts nothing and takes no lock. ``NoStore`` answers the same
questions where no store is configured. What to do with the answers (compile the fleet's winner
here, merge its records, wait while another machine tunes) is the call's: ``engine.fleet``.

Imports only the standard library; redis-py is imported on first use.
"""

from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from ..model import StoreWarning, Warn
from .files import read_json
from .manifest import BEST_CONFIG_PATH, LATENCY_PATH, RECORD_PATH
from .remote import (
    LOCK_MS,
    SECRET_ENV,
    RedisStore,
    SignatureError,
    StoreError,
    StoreGarbage,
    check_url,
    pack,
    sign_record,
    unpack,
)

if TYPE_CHECKING:
    from .backend import SharedBackend

_T = TypeVar("_T")

#: What an entry sends as data: its fields in the store's document, and the files they are read from.
DOC_FILES = {"config": BEST_CONFIG_PATH, "latency": LATENCY_PATH, "record": RECORD_PATH}


class NoStore:
    """No store configured: every question is a miss, every put a no-op, no lock to take."""

    lockable = False

    def get_record(self, ckey: str) -> None:
        return None

    def get_entry(self, key: str) -> None:
        return None

    def has_entry(self, key: str) -> bool:
        return False

    def unpack_signed(self, key: str, entry: Path) -> None:
        return None

    def push(self, key: str, entry: Path) -> None:
        return None


class SharedStore:
    """One session's questions to the fleet's store: faults become a warning and a miss."""

    def __init__(self, store: SharedBackend, warn: Warn, readonly: bool = False, secret: str | None = None):
        self.store = store
        self.warn = warn
        self.readonly = readonly
        self.secret = secret or None
        self.down = False
        self._warned = False
        self._refused: set[str] = set()  # keys whose signed entry failed: never asked again

    def __str__(self) -> str:
        return str(self.store)

    @property
    def lockable(self) -> bool:
        """Whether this session takes the store's tuning lock (and so pushes what it tunes)."""
        return not (self.readonly or self.down)

    def _call(self, fn: Callable[..., _T], *args: object) -> _T | None:
        """``fn(*args)``; a fault warns (once per session) and is a miss."""
        if self.down:
            return None
        try:
            return fn(*args)
        except StoreGarbage as exc:
            self._fault(str(exc))
        except StoreError as exc:
            self.down = True
            self._fault(str(exc))
        return None

    def _fault(self, why: str) -> None:
        if self._warned:
            return
        self._warned = True
        more = "; not asked again in this run" if self.down else ""
        self.warn(StoreWarning(f"tlautotune store {self.store}: {why}; using the local cache only{more}"))

    # -- get ------------------------------------------------------------------------

    def get_record(self, ckey: str) -> dict | None:
        """Another machine's verdict on a candidate; with the secret only one it signed (a forged or
        unsigned verdict is ignored: the candidate is measured here)."""
        record = self._call(self.store.get_record, ckey)
        if not isinstance(record, dict):
            return None
        sig = record.pop("sig", None)
        if self.secret and (not isinstance(sig, str) or not hmac.compare_digest(sign_record(self.secret, record), sig)):
            return None
        return {k: v for k, v in record.items() if k != "reused"}

    def get_entry(self, key: str) -> dict | None:
        """The fleet's winner of ``key`` as data (``config``, ``latency``, ``record``), or None."""
        return None if key in self._refused else self._call(self.store.get_entry, key)

    def has_entry(self, key: str) -> bool:
        return bool(self._call(self.store.has_entry, key))

    def unpack_signed(self, key: str, entry: Path) -> bool | None:
        """With the secret: the signed entry of ``key`` written to ``entry``, verified first (True).
        False for a miss: an entry that does not verify (refused with a warning, never asked again)
        or one the local cache could not take. None where there is none to take (no secret, or no
        signed files stored): the entry's data is all there is."""
        if not self.secret:
            return None
        files = self._call(self.store.get_files, key)
        if files is None:
            return None
        try:
            unpack(self.secret, key, files, entry)
        except OSError:
            return False  # the local cache could not take it: a miss
        except SignatureError as exc:
            self._refused.add(key)
            self.warn(StoreWarning(f"tlautotune store {self.store}: refused the signed entry {key[:12]} ({exc}); "
                                   f"tuning here"))
            return False
        return True

    # -- lock -----------------------------------------------------------------------

    def lock(self, key: str) -> Lock | None:
        """The store's tuning lock of ``key``, renewed while held; None where another holds it."""
        token = self._call(self.store.lock, key)
        return Lock(self, key, token) if token else None

    # -- put ------------------------------------------------------------------------

    def push(self, key: str, entry: Path) -> None:
        """Send the entry just saved (data; and signed files with the secret) and its records."""
        if not self.lockable:
            return
        doc = {field: read_json(entry / name) for field, name in DOC_FILES.items()}
        if not isinstance(doc["record"], dict) or doc["config"] is None:
            return
        records = [{k: v for k, v in c.items() if k != "reused"} for c in doc["record"].get("candidates") or []
                   if isinstance(c, dict) and isinstance(c.get("ckey"), str)]
        if self.secret:
            records = [{**r, "sig": sign_record(self.secret, r)} for r in records]
        files = pack(self.secret, key, entry) if self.secret else None
        self._call(self.store.put_entry, key, doc, files, records)


class Lock(threading.Thread):
    """A held tuning lock, extended while the holder lives; ``release`` gives it back. A holder that
    dies stops renewing: its lock expires and a waiter takes it."""

    def __init__(self, shared: SharedStore, key: str, token: str):
        super().__init__(name=f"tlautotune-lock-{key[:8]}", daemon=True)
        self.shared, self.key, self.token = shared, key, token
        self._stop_event = threading.Event()
        self.start()

    def run(self) -> None:
        while not self._stop_event.wait(LOCK_MS / 3000):
            try:
                if not self.shared.store.renew(self.key, self.token):
                    return
            except StoreError:
                return

    def release(self) -> None:
        self._stop_event.set()
        self.join(timeout=1.0)
        self.shared._call(self.shared.store.unlock, self.key, self.token)


def open_store(url: str | None, warn: Warn, *, ttl_days: float = 30.0, timeout: float = 3.0,
               readonly: bool = False) -> SharedStore | NoStore:
    """The session's store from its (validated) options; no connection is made until first use."""
    if not url:
        return NoStore()
    store = RedisStore(check_url(url), timeout=timeout, ttl_days=ttl_days or None)
    return SharedStore(store, warn, readonly=readonly, secret=os.environ.get(SECRET_ENV))
