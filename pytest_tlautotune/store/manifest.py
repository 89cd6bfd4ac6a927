"""An entry's file names and its manifest: the size and sha256 of every file, checked before
anything in the entry is unpickled or loaded. Light: no TileLang (the CLI reads these names).

The manifest also holds the keys of TileLang's own autotuner cache that the entry answers
(``tilelang``: one note per key, or why TileLang would give none; ``engine/tilelang_key.py``),
so ``cache export`` can write the result where production code's ``@autotune`` looks. A note is
added to a published entry by replacing its manifest alone, in one rename: the files it lists do
not change, so a reader sees the old list or the new one, both true.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..engine.key import FORMAT_VERSION, sha256_hex
from ..model import TLAutotuneError
from . import safety
from .files import atomic_write

# The seed's file names (tilelang/autotuner/param.py).
BEST_CONFIG_PATH = "best_config.json"
FUNCTION_PATH = "function.pkl"
LATENCY_PATH = "latency.json"
DEVICE_KERNEL_PATH = "device_kernel.cu"
HOST_KERNEL_PATH = "host_kernel.cu"
EXECUTABLE_PATH = "executable.so"
KERNEL_LIB_PATH = "kernel_lib.so"
KERNEL_CUBIN_PATH = "kernel.cubin"
KERNEL_PY_PATH = "kernel.py"
PARAMS_PATH = "params.pkl"
# TileLang 0.1.15's name of the kernel's parameters (its AutotuneResult.load_from_disk reads it).
TILELANG_PARAMS_PATH = "params.json"
# TileLang 0.1.15's: the outputs the kernel allocates, over the compile args' (written by `cache export`).
OUT_IDX_PATH = "out_idx.json"
# Ours: the PrimFunc as TVM JSON (loads without unpickling), the manifest, the tuning record, and
# what the JSON files lose (tuples, enum members: store/typed.py).
FUNCTION_JSON_PATH = "function.json"
MANIFEST_PATH = "manifest.json"
RECORD_PATH = "record.json"
BACKEND_PATH = "backend.json"
TYPES_PATH = "types.json"

ENTRY_FILES = frozenset({BEST_CONFIG_PATH, LATENCY_PATH, PARAMS_PATH, HOST_KERNEL_PATH, BACKEND_PATH})
KERNEL_FILES = frozenset({PARAMS_PATH, HOST_KERNEL_PATH, BACKEND_PATH})


class CorruptEntry(TLAutotuneError):
    """A cache entry failed verification."""


def write_manifest(directory: Path, key: str | None = None, tilelang: list[dict] | None = None) -> None:
    """List every file of ``directory`` with its size and sha256; ``tilelang``: the entry's notes of
    TileLang's cache keys (see the module's docstring)."""
    files = {}
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if entry.is_file(follow_symlinks=False) and entry.name != MANIFEST_PATH and not entry.name.startswith("."):
            data = Path(entry.path).read_bytes()
            files[entry.name] = {"size": len(data), "sha256": sha256_hex(data)}
    manifest = {"format": FORMAT_VERSION, "key": key, "files": files}
    if tilelang:
        manifest["tilelang"] = list(tilelang)
    atomic_write(directory / MANIFEST_PATH, json.dumps(manifest, indent=1, sort_keys=True))


def tilelang_notes(manifest: object) -> list[dict]:
    """The notes of TileLang's cache keys in a manifest: ``{"key": ..., ...}`` or
    ``{"key": None, "why": ...}``; none in an entry written before they were kept."""
    notes = manifest.get("tilelang") if isinstance(manifest, dict) else None
    return [n for n in notes if isinstance(n, dict)] if isinstance(notes, list) else []


def same_note(a: dict, b: dict) -> bool:
    """Whether two notes say the same: the same TileLang key, or no key for the same reason."""
    return a.get("key") == b.get("key") and (a.get("key") is not None or a.get("why") == b.get("why"))


def add_tilelang_note(directory: Path, note: dict) -> bool:
    """Add ``note`` to the manifest of the published entry ``directory`` unless it holds one that
    says the same; False when it did. The entry is verified first (a note never blesses a changed
    file), and only the manifest is replaced. Callers hold the key's lock (``Entries.note_tilelang``).
    Raises :class:`CorruptEntry` or ``OSError``."""
    manifest = verify_manifest(directory)
    notes = tilelang_notes(manifest)
    if any(same_note(n, note) for n in notes):
        return False
    manifest["tilelang"] = [*notes, note]
    atomic_write(directory / MANIFEST_PATH, json.dumps(manifest, indent=1, sort_keys=True))
    return True


def verify_entry(directory: Path) -> None:
    """Ownership and manifest checks of an entry, before anything in it is loaded.

    Raises :class:`safety.UnsafeCache`, :class:`CorruptEntry` or ``OSError``.
    """
    safety.check_entry(directory)
    verify_manifest(directory)


def verify_manifest(directory: Path, required: frozenset = ENTRY_FILES) -> dict:
    """Check format version, presence, size and sha256 of every listed file.

    Raises :class:`CorruptEntry` for anything wrong with the manifest itself too
    (wrong shape, a name outside the entry), so callers need to catch only that.
    """
    try:
        manifest = json.loads((directory / MANIFEST_PATH).read_text())
    except (OSError, ValueError) as exc:
        raise CorruptEntry(f"unreadable manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
        raise CorruptEntry(f"format version {manifest.get('format') if isinstance(manifest, dict) else '?'} "
                           f"is not {FORMAT_VERSION}")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise CorruptEntry("manifest has no file list")
    for name, meta in files.items():
        _verify_file(directory, name, meta)
    missing = required - set(files)
    if missing:
        raise CorruptEntry(f"manifest lacks {', '.join(sorted(missing))}")
    return manifest


def _verify_file(directory: Path, name: str, meta: object) -> None:
    # A name like "../x" would make us read (and hash) files outside the entry.
    if name in ("", ".", "..") or os.sep in name or name.startswith(".") or "\0" in name:
        raise CorruptEntry(f"manifest names {name!r}, which is not a file of this entry")
    if not (isinstance(meta, dict) and isinstance(meta.get("size"), int) and isinstance(meta.get("sha256"), str)):
        raise CorruptEntry(f"manifest record of {name} is malformed")
    file = directory / name
    if file.is_symlink() or not file.is_file():
        raise CorruptEntry(f"{name} is missing or not a regular file")
    if file.stat().st_size != meta["size"]:  # before reading: a huge stray file is never read whole
        raise CorruptEntry(f"{name} does not match its manifest (size)")
    if sha256_hex(file.read_bytes()) != meta["sha256"]:
        raise CorruptEntry(f"{name} does not match its manifest (sha256)")
