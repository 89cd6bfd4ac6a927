"""What a shared store's backend must answer: the interface ``shared.SharedStore`` and the CLI use.

``remote.RedisStore`` is the one backend. Another (an object store, a database) implements
:class:`SharedBackend` with the same meanings, raises ``remote.StoreError`` (``StoreGarbage`` for
a value that is not one of ours) on any fault, and is chosen by URL in ``shared.open_store``; the
layer above it does the rest: the blob format (``remote.encode``/``decode``), signing
(``remote.sign``, ``sign_record``, ``pack``/``unpack``) and the policy on faults (``shared``), and
what a call does with the answers (``engine.fleet``).

The local store (``local.Store``) shares one question with it, :class:`RecordSource`: a local
record miss is asked of the shared store through ``get_record``.
"""

from __future__ import annotations

from typing import Protocol


class RecordSource(Protocol):
    """One config's verdict by candidate key, or None where there is none (or none to trust)."""

    def get_record(self, ckey: str) -> dict | None: ...


class SharedBackend(RecordSource, Protocol):
    """A store shared by identical machines. Keys are entry keys (they hold the machine's
    fingerprint) and candidate keys; values are JSON documents."""

    def get_entry(self, key: str) -> dict | None:
        """The winner as data: ``config``, ``latency``, ``record``, ``key``, ``stored_at``."""

    def get_files(self, key: str) -> dict | None:
        """The signed entry directory (``manifest``, ``files``, ``sig``; see ``remote.pack``)."""

    def has_entry(self, key: str) -> bool: ...

    def put_entry(self, key: str, doc: dict, files: dict | None, records: list[dict]) -> None:
        """Records, signed files and the entry, all or none visible to a reader."""

    def lock(self, key: str, ms: int = ...) -> str | None:
        """Take the tuning lock of ``key`` for ``ms``: its token, or None where another holds it."""

    def renew(self, key: str, token: str, ms: int = ...) -> bool:
        """Extend the lock while ``token`` still holds it; False once it is lost."""

    def unlock(self, key: str, token: str) -> None: ...

    def list(self) -> list[tuple[str, dict | None, int]]:
        """(key, entry doc or None when unreadable, stored bytes) per entry: ``cache list``."""

    def record_keys(self) -> list[str]: ...

    def delete(self, keys: list[str] = (), ckeys: list[str] = ()) -> int:
        """Remove entries (with their signed files) and records; how many values went."""

    def clear(self) -> int: ...
