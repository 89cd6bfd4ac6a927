"""A result store shared by a fleet of identical machines (Redis), behind the local cache.

The local cache directory answers first; a local miss asks the store, and a result
tuned here is pushed to it. Keys in Redis (``<key>`` is the entry key, which holds
the machine fingerprint, so only identical machines ever share a result)::

    tlautotune:entry:<key>    the winner as data: best config, latency, record (every
                              candidate's verdict); JSON only
    tlautotune:files:<key>    with TL_AUTOTUNE_STORE_SECRET only: the whole entry
                              directory (kernel library included) and its manifest,
                              signed with HMAC-SHA256 over key + manifest
    tlautotune:record:<ckey>  one candidate's record (Records.write's JSON); with the
                              secret signed (HMAC-SHA256), and unsigned ones are ignored
    tlautotune:lock:<key>     the cross-machine tuning lock: a token, SET NX PX, renewed

Every value is one blob, ``TLAT1\\n<sha256 of the body>\\n<body JSON>``, written with
MULTI/EXEC, so a reader sees a whole result or none and recognises garbage.

Safe by default: without a secret only JSON travels; the receiving machine compiles
the winner itself (one config, no search) and checks it against ``ref_prog`` before
use. With the secret, a signed entry is used as is; one whose signature does not
verify is refused with a warning and never written to disk or loaded.

Faults never fail a test: an unreachable, slow, full or garbage store gives one
``StoreWarning`` per session (handed to the plugin's ``warn`` callback) and the run goes on
with its local cache.

Imports only the standard library; redis-py is imported on first use.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ..model import Candidate, CandidateRecord, StoreWarning, TLAutotuneError, TuneRequest, Warn
from .files import read_json
from .manifest import BEST_CONFIG_PATH, LATENCY_PATH, RECORD_PATH

if TYPE_CHECKING:
    from .backend import SharedBackend
    from .local import Store

_T = TypeVar("_T")

PREFIX = "tlautotune:"
MAGIC = b"TLAT1\n"
SECRET_ENV = "TL_AUTOTUNE_STORE_SECRET"
SCHEMES = ("redis", "rediss")
LOCK_MS = 30_000  # a dead holder's lock frees itself after this long
POLL_S = 0.25  # how often a waiter looks for the holder's result
MAX_WAIT_S = 3600.0  # a waiter tunes itself after this long, whatever the holder does
ENTRY_FILES = {"config": BEST_CONFIG_PATH, "latency": LATENCY_PATH, "record": RECORD_PATH}

# Compare-and-renew / compare-and-delete: only the holder of the token touches the lock.
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class StoreError(TLAutotuneError):
    """The store is unreachable, slow, full, or returned something that is not ours."""


class StoreGarbage(StoreError):
    """A value in the store is not one of ours (or not whole); the store itself answers."""


class SignatureError(TLAutotuneError):
    """A signed entry does not verify against TL_AUTOTUNE_STORE_SECRET."""


class StoreUrlError(TLAutotuneError):
    """The store's URL (or the client it needs) is not usable; the message says what is accepted."""


# ----------------------------------------------------------------------------- blobs


def encode(payload: object) -> bytes:
    """One stored value: magic, the body's sha256, the body (canonical JSON)."""
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    return MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body


def decode(raw: bytes | None) -> Any:
    """The payload of a stored value; None when absent; StoreError when it is not one of ours."""
    if raw is None:
        return None
    if not raw.startswith(MAGIC) or raw[len(MAGIC) + 64:len(MAGIC) + 65] != b"\n":
        raise StoreGarbage("a value in the store is not a tlautotune blob")
    digest, body = raw[len(MAGIC):len(MAGIC) + 64], raw[len(MAGIC) + 65:]
    if hashlib.sha256(body).hexdigest().encode() != digest:
        raise StoreGarbage("a value in the store does not match its checksum")
    try:
        return json.loads(body)
    except ValueError as exc:
        raise StoreGarbage(f"a value in the store is not JSON: {exc}") from None


def sign(secret: str, key: str, manifest: str) -> str:
    """HMAC-SHA256 over the entry key and its manifest text (which lists every file's sha256)."""
    return hmac.new(secret.encode(), key.encode() + b"\0" + manifest.encode(), hashlib.sha256).hexdigest()


def sign_record(secret: str, record: dict) -> str:
    """HMAC-SHA256 of one candidate record (its canonical JSON, bound to its key)."""
    from ..engine.key import canonical_json

    return sign(secret, f"record:{record.get('ckey')}", canonical_json(record))


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


# ----------------------------------------------------------------------------- the store


class RedisStore:
    """The shared store's interface (``backend.SharedBackend``) over one Redis database. Calls raise
    StoreError on any fault."""

    def __init__(self, url: str, timeout: float = 3.0, ttl_days: float | None = None):
        self.url = url
        self.timeout = timeout
        self.ttl_ms = int(ttl_days * 86_400_000) if ttl_days else None
        self._client = None

    def __str__(self) -> str:
        return redact(self.url)

    @property
    def client(self):
        if self._client is None:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            kwargs: dict[str, str] = {}
            if urlsplit(self.url).password is None and os.environ.get("REDIS_PASSWORD"):
                kwargs["password"] = os.environ["REDIS_PASSWORD"]
            # No retries: a slow or dead store costs one timeout, then the session stops asking.
            self._client = redis.Redis.from_url(self.url, socket_timeout=self.timeout,
                                                socket_connect_timeout=self.timeout, retry=Retry(NoBackoff(), 0),
                                                **kwargs)
        return self._client

    def _do(self, fn: Callable[..., _T], *args: object) -> _T:
        from redis.exceptions import RedisError

        try:
            return fn(*args)
        except (RedisError, OSError) as exc:
            raise StoreError(f"{type(exc).__name__}: {exc}") from None

    def _get(self, name: str) -> Any:
        return decode(self._do(self.client.get, PREFIX + name))

    def get_entry(self, key: str) -> dict | None:
        doc = self._get(f"entry:{key}")
        if doc is not None and not (isinstance(doc, dict) and doc.get("key") == key):
            raise StoreGarbage(f"entry {key[:12]} in the store is malformed")
        return doc

    def get_files(self, key: str) -> dict | None:
        doc = self._get(f"files:{key}")
        if doc is not None and not (isinstance(doc, dict) and isinstance(doc.get("files"), dict)):
            raise StoreGarbage(f"signed entry {key[:12]} in the store is malformed")
        return doc

    def get_record(self, ckey: str) -> dict | None:
        doc = self._get(f"record:{ckey}")
        return doc if isinstance(doc, dict) and doc.get("ckey") == ckey else None

    def has_entry(self, key: str) -> bool:
        return bool(self._do(self.client.exists, f"{PREFIX}entry:{key}"))

    def put_entry(self, key: str, doc: dict, files: dict | None, records: list[dict]) -> None:
        """Records, signed files, then the entry, in one MULTI/EXEC: readers see all or none."""
        now = time.time()
        pipe = self.client.pipeline(transaction=True)
        for record in records:
            pipe.set(f"{PREFIX}record:{record['ckey']}", encode(record), px=self.ttl_ms)
        if files is not None:
            pipe.set(f"{PREFIX}files:{key}", encode(files), px=self.ttl_ms)
        pipe.set(f"{PREFIX}entry:{key}", encode({**doc, "key": key, "stored_at": now}), px=self.ttl_ms)
        self._do(pipe.execute)

    def lock(self, key: str, ms: int = LOCK_MS) -> str | None:
        """The tuning lock's token when this call took it, else None."""
        token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        taken = self._do(lambda: self.client.set(f"{PREFIX}lock:{key}", token, px=ms, nx=True))
        return token if taken else None

    def renew(self, key: str, token: str, ms: int = LOCK_MS) -> bool:
        return bool(self._do(self.client.eval, _RENEW, 1, f"{PREFIX}lock:{key}", token, ms))

    def unlock(self, key: str, token: str) -> None:
        self._do(self.client.eval, _RELEASE, 1, f"{PREFIX}lock:{key}", token)

    def list(self) -> list[tuple[str, dict | None, int]]:
        """(key, entry doc or None when unreadable, stored bytes of entry + files) per entry."""
        out = []
        for name in self._do(lambda: list(self.client.scan_iter(match=f"{PREFIX}entry:*", count=500))):
            key = name.decode().rsplit(":", 1)[1]
            raw = self._do(self.client.get, name)
            size = len(raw or b"") + int(self._do(self.client.strlen, f"{PREFIX}files:{key}") or 0)
            try:
                doc = decode(raw)
            except StoreGarbage:
                doc = None
            out.append((key, doc if isinstance(doc, dict) else None, size))
        return out

    def record_keys(self) -> list[str]:
        return [n.decode().rsplit(":", 1)[1]
                for n in self._do(lambda: list(self.client.scan_iter(match=f"{PREFIX}record:*", count=500)))]

    def delete(self, keys: list[str] = (), ckeys: list[str] = ()) -> int:
        """Remove entries (with their signed files) and records; returns how many values went."""
        names = [f"{PREFIX}{kind}:{k}" for k in keys for kind in ("entry", "files")]
        names += [f"{PREFIX}record:{c}" for c in ckeys]
        return int(self._do(self.client.delete, *names)) if names else 0

    def clear(self) -> int:
        names = self._do(lambda: list(self.client.scan_iter(match=f"{PREFIX}*", count=500)))
        return int(self._do(self.client.delete, *names)) if names else 0


# ----------------------------------------------------------------------------- the session's side


class Session(Protocol):
    """What the store asks of the call it serves (``engine.call.Call``, above this module)."""

    retune: bool

    @property
    def cache(self) -> Store: ...

    def tune_one(self, req: TuneRequest, cand: Candidate,
                 key: str) -> tuple[Any, list[CandidateRecord]] | str: ...  # (AutotuneResult, records)

    def notice(self, req: TuneRequest, message: str) -> None: ...


class NoStore:
    """No store configured: every question is a miss, every push a no-op."""

    def get_record(self, ckey: str) -> None:
        return None

    def fetch(self, session: Session, req: TuneRequest, cands: list[Candidate], key: str, entry: Path) -> None:
        return None

    def tuning(self, session: Session, req: TuneRequest, cands: list[Candidate], key: str,
               entry: Path) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext(None)

    def push(self, key: str, entry: Path) -> None:
        return None


class StoreTier:
    """The store behind one session's local cache: fetch on a local miss, lock, push."""

    def __init__(self, store: SharedBackend, warn: Warn, readonly: bool = False, secret: str | None = None):
        self.store = store
        self.warn = warn
        self.readonly = readonly
        self.secret = secret or None
        self.down = False
        self._warned = False
        self._refused: set[str] = set()  # keys whose signed entry failed: never asked again

    # -- faults --------------------------------------------------------------------

    def _call(self, fn: Callable[..., _T], *args: object) -> _T | None:
        """``fn(*args)``; a fault warns (once per session) and is a miss. A store that cannot
        be reached is not asked again in this session, so it costs one timeout at most."""
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

    # -- records (the Cache asks on a local miss) ----------------------------------

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

    # -- a local miss --------------------------------------------------------------

    def fetch(self, session: Session, req: TuneRequest, cands: list[Candidate], key: str,
              entry: Path) -> Any:  # an AutotuneResult (param.py, above this module) or None
        """The store's result for ``key`` as an AutotuneResult, saved in the local cache; None on a miss."""
        doc = None if key in self._refused else self._call(self.store.get_entry, key)
        if doc is None:
            return None
        if self.secret:
            files = self._call(self.store.get_files, key)
            if files is not None:
                try:
                    unpack(self.secret, key, files, entry)
                except OSError:
                    return None  # the local cache could not take it: a miss
                except SignatureError as exc:
                    self._refused.add(key)
                    self.warn(StoreWarning(f"tlautotune store {self.store}: refused the signed entry "
                                           f"{key[:12]} ({exc}); tuning here"))
                    return None
                result = session.cache.entries.load(entry, req.compile_args)
                if result is not None:
                    return result
        return self._compile_winner(session, req, cands, key, entry, doc)

    def _compile_winner(self, session: Session, req: TuneRequest, cands: list[Candidate], key: str, entry: Path,
                        doc: dict) -> Any:
        """Data only: compile the store's winner here, check it against ref_prog, time it."""
        from dataclasses import replace

        record = doc.get("record") if isinstance(doc.get("record"), dict) else {}
        remote = [c for c in record.get("candidates") or [] if isinstance(c, dict)]
        winner_ckeys = {c.get("ckey") for c in remote if c.get("config") == doc.get("config")}
        cand = next((c for c in cands if c.ckey and c.ckey in winner_ckeys and not c.error), None)
        if cand is None:
            return None
        tuned = session.tune_one(req, cand, key)
        if isinstance(tuned, str):
            self.warn(StoreWarning(f"tlautotune store {self.store}: the stored winner of {key[:12]} failed "
                                   f"here ({tuned}); tuning here"))
            return None
        result, records = tuned
        mine = {**records[0], "index": cand.index}
        merged = [mine if c.get("ckey") == cand.ckey else {**c, "reused": True} for c in remote] or [mine]
        result = replace(result, record={**result.record, "candidates": merged,
                                         "store": {"mode": "data", "tuned_at": record.get("tuned_at"),
                                                   "latency_ms": doc.get("latency", {}).get("latency")}})
        try:
            session.cache.entries.save(result, entry)
        except OSError:
            return result
        return session.cache.entries.load(entry, req.compile_args, quarantine=False) or result

    # -- the cross-machine tuning lock ---------------------------------------------

    @contextlib.contextmanager
    def tuning(self, session: Session, req: TuneRequest, cands: list[Candidate], key: str,
               entry: Path) -> Iterator[Any]:
        """Hold the store's lock on ``key`` while this process tunes it; yields the result when
        another machine's tuning finished while we waited (then nothing is held), else None.
        A holder that dies stops renewing: its lock expires and a waiter takes it."""
        if self.readonly or self.down or session.retune:
            yield None
            return
        token, fetched, told = None, None, False
        deadline = time.monotonic() + MAX_WAIT_S
        while not self.down and time.monotonic() < deadline:
            token = self._call(self.store.lock, key)
            if token or self.down:
                break
            if self._call(self.store.has_entry, key):
                fetched = self.fetch(session, req, cands, key, entry)
                break
            if not told:
                told = True
                session.notice(req, "another machine is tuning this key: waiting for its result")
            time.sleep(POLL_S)
        if token and self._call(self.store.has_entry, key):  # finished between our miss and our lock
            fetched = self.fetch(session, req, cands, key, entry)
        renewer = _Renewer(self.store, key, token) if token else None
        try:
            yield fetched
        finally:
            if renewer is not None:
                renewer.stop()
                self._call(self.store.unlock, key, token)

    # -- after a tuning ------------------------------------------------------------

    def push(self, key: str, entry: Path) -> None:
        """Send the entry just saved (data; and signed files with the secret) and its records."""
        if self.readonly or self.down:
            return
        doc = {field: read_json(entry / name) for field, name in ENTRY_FILES.items()}
        if not isinstance(doc["record"], dict) or doc["config"] is None:
            return
        records = [{k: v for k, v in c.items() if k != "reused"} for c in doc["record"].get("candidates") or []
                   if isinstance(c, dict) and isinstance(c.get("ckey"), str)]
        if self.secret:
            records = [{**r, "sig": sign_record(self.secret, r)} for r in records]
        files = pack(self.secret, key, entry) if self.secret else None
        self._call(self.store.put_entry, key, doc, files, records)


class _Renewer(threading.Thread):
    """Extends the lock while the holder lives; a lost lock is simply no longer renewed."""

    def __init__(self, store: SharedBackend, key: str, token: str):
        super().__init__(name=f"tlautotune-lock-{key[:8]}", daemon=True)
        self.store, self.key, self.token = store, key, token
        self._stop_event = threading.Event()
        self.start()

    def run(self) -> None:
        while not self._stop_event.wait(LOCK_MS / 3000):
            try:
                if not self.store.renew(self.key, self.token):
                    return
            except StoreError:
                return

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=1.0)


# ----------------------------------------------------------------------------- signed entries


def pack(secret: str, key: str, entry: Path) -> dict | None:
    """The files of a saved entry and their manifest, signed."""
    try:
        manifest = (entry / "manifest.json").read_text()
        names = json.loads(manifest)["files"]
        files = {name: base64.b64encode((entry / name).read_bytes()).decode() for name in names}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {"manifest": manifest, "files": files, "sig": sign(secret, key, manifest)}


def unpack(secret: str, key: str, files: dict, entry: Path) -> None:
    """Verify a signed entry and publish it at ``entry``; nothing is written unless it verifies."""
    from .files import atomic_write, publish_dir, staging_dir
    from .manifest import MANIFEST_PATH, CorruptEntry, verify_manifest

    manifest_text, sig = files.get("manifest"), files.get("sig")
    if not isinstance(manifest_text, str) or not isinstance(sig, str) \
            or not hmac.compare_digest(sign(secret, key, manifest_text), sig):
        raise SignatureError("its signature does not verify")
    try:
        blobs = _verified_files(key, json.loads(manifest_text), files["files"])
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise SignatureError(f"unreadable: {type(exc).__name__}: {exc}") from None
    with staging_dir(entry, tag=f"store-{key}") as staging:
        for name, data in blobs.items():
            atomic_write(staging / name, data)
        atomic_write(staging / MANIFEST_PATH, manifest_text)
        try:
            verify_manifest(staging)
        except CorruptEntry as exc:
            raise SignatureError(str(exc)) from None
        publish_dir(staging, entry)


def _verified_files(key: str, manifest: dict, files: dict) -> dict[str, bytes]:
    if manifest.get("key") != key or not isinstance(manifest.get("files"), dict):
        raise SignatureError("its manifest names another key")
    blobs = {}
    for name, meta in manifest["files"].items():
        if "/" in name or name.startswith(".") or name == "manifest.json" or "\0" in name:
            raise SignatureError(f"its manifest names {name!r}")
        data = base64.b64decode(files.get(name, ""), validate=True)
        if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            raise SignatureError(f"{name} does not match the signed manifest")
        blobs[name] = data
    return blobs


# ----------------------------------------------------------------------------- configuration


def check_url(url: str, what: str = "--tl-store / ini tl_store") -> str:
    """The URL when it names a Redis server, else a StoreUrlError saying what is accepted."""
    if urlsplit(url).scheme not in SCHEMES or not urlsplit(url).hostname:
        raise StoreUrlError(f"{what}: {redact(url)!r} is not a Redis URL; give "
                            f"redis://[user:password@]host:port/db or rediss://... (TLS)")
    import importlib.util

    if importlib.util.find_spec("redis") is None:
        raise StoreUrlError(f"{what} needs redis-py: pip install 'pytest-tlautotune[redis]'")
    return url


def open_store(url: str | None, warn: Warn, *, ttl_days: float = 30.0, timeout: float = 3.0,
               readonly: bool = False) -> StoreTier | NoStore:
    """The session's store from its (validated) options; no connection is made until first use."""
    if not url:
        return NoStore()
    store = RedisStore(check_url(url), timeout=timeout, ttl_days=ttl_days or None)
    return StoreTier(store, warn, readonly=readonly, secret=os.environ.get(SECRET_ENV))
