"""The Redis backend of the store shared by a fleet of identical machines, its blob format and signing.

The local cache directory answers first; a local miss asks the store (``shared.SharedStore``;
what a call does with it: ``engine.fleet``), and a result tuned here is pushed to it. Keys in
Redis (``<key>`` is the entry key, which holds the machine fingerprint, so only identical
machines ever share a result)::

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

Faults are ``StoreError`` here; ``shared.SharedStore`` makes each one warning per session and a
miss, so they never fail a test.

Imports only the standard library; redis-py is imported on first use.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from ..model import TLAutotuneError

_T = TypeVar("_T")

PREFIX = "tlautotune:"
MAGIC = b"TLAT1\n"
SECRET_ENV = "TL_AUTOTUNE_STORE_SECRET"
SCHEMES = ("redis", "rediss")
LOCK_MS = 30_000  # a dead holder's lock frees itself after this long

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
