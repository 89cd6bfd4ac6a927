"""TileLang's own autotuner cache layout: recognising an entry TileLang wrote, and writing one of
ours there (``cache export``) so production code's ``@tilelang.autotune`` finds it and tunes nothing.

TileLang 0.1.15 looks a tuning up at ``AutoTuner._get_cache_dir() / <its key>`` (under
``$TILELANG_CACHE_DIR/<version>/<platform>/autotuner``) and, with ``AutotuneResult.load_from_disk``,
reads ``best_config.json``, ``function.pkl`` (the PrimFunc, cloudpickled), ``latency.json``,
``out_idx.json``, the kernel's sources, its library (named by backend) and ``params.json``. The
key of an entry is the note its manifest holds (``manifest.add_tilelang_note``), made when the
plugin tuned or served a TileLang tuner (``engine/tilelang_key.py``).

Light: the standard library only (the CLI imports it); the files are copied, nothing is loaded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .files import atomic_write, publish_dir, read_json, staging_dir
from .manifest import (
    BACKEND_PATH,
    BEST_CONFIG_PATH,
    DEVICE_KERNEL_PATH,
    EXECUTABLE_PATH,
    FUNCTION_PATH,
    HOST_KERNEL_PATH,
    KERNEL_CUBIN_PATH,
    KERNEL_LIB_PATH,
    KERNEL_PY_PATH,
    LATENCY_PATH,
    MANIFEST_PATH,
    OUT_IDX_PATH,
    PARAMS_PATH,
    RECORD_PATH,
    TILELANG_PARAMS_PATH,
    CorruptEntry,
    tilelang_notes,
    verify_entry,
)
from .safety import UnsafeCache


def library_files(backend: str) -> list[str]:
    """The files of a backend's compiled library, as TileLang names them."""
    if backend == "nvrtc":
        return [KERNEL_CUBIN_PATH, KERNEL_PY_PATH]
    return [EXECUTABLE_PATH if backend == "tvm_ffi" else KERNEL_LIB_PATH]


def required_files(backend: str) -> list[str]:
    """What TileLang's loader needs of an entry whose kernel runs on ``backend``."""
    return [BEST_CONFIG_PATH, FUNCTION_PATH, LATENCY_PATH, DEVICE_KERNEL_PATH, HOST_KERNEL_PATH,
            *library_files(backend), TILELANG_PARAMS_PATH]


def is_tilelang_entry(path: Path) -> bool:
    """Whether ``path`` holds a result in TileLang's own layout: its files, and none of those only
    the plugin writes (an entry of ours that lost its manifest is corrupt, not TileLang's)."""
    return (path / TILELANG_PARAMS_PATH).is_file() and not (path / MANIFEST_PATH).exists() \
        and not (path / BACKEND_PATH).exists()


@dataclass(frozen=True)
class Exported:
    """What ``cache export`` did with one TileLang key of an entry (or with an entry that has none)."""

    entry: str  # the entry's key
    tilelang_key: str | None
    written: Path | None  # where TileLang's layout was written
    why_not: str | None  # why nothing was written


def export_entry(entry: Path, dest: Path, force: bool = False, tilelang_version: str | None = None) -> list[Exported]:
    """Write the result of ``entry`` (verified first) into ``dest/<tilelang key>/`` for every key of
    TileLang's that its manifest notes: staged beside it and published with one rename. An existing
    directory there is replaced only with ``force``. An entry without a key says why.
    ``tilelang_version``: the TileLang that reads ``dest``; a key noted under another is not written
    (TileLang's key holds its version: that TileLang would never look it up)."""
    name = entry.name
    try:
        verify_entry(entry)
        manifest = json.loads((entry / MANIFEST_PATH).read_text())
    except (CorruptEntry, UnsafeCache, OSError, ValueError) as exc:
        return [Exported(name, None, None, f"the entry does not verify ({exc}); nothing exported")]
    notes = tilelang_notes(manifest)
    keyed = {n["key"]: n for n in notes if isinstance(n.get("key"), str) and _hex64(n["key"])}
    if not keyed:
        whys = list(dict.fromkeys(str(n.get("why")) for n in notes if n.get("why")))
        why = "; ".join(whys) if whys else ("no key of TileLang's is noted for it (stored by an older plugin: "
                                            "run its test once more and the hit notes it)")
        return [Exported(name, None, None, why)]
    out = []
    keys = []
    for key, note in keyed.items():
        if tilelang_version is not None and note.get("tilelang") != tilelang_version:
            out.append(Exported(name, key, None, f"tuned for TileLang {note.get('tilelang')}; the installed "
                                                 f"TileLang {tilelang_version} looks up other keys"))
        else:
            keys.append(key)
    try:
        dest.mkdir(parents=True, exist_ok=True)  # TileLang's directory: made as TileLang makes it
    except OSError as exc:
        return out + [Exported(name, key, None, f"cannot create {dest}: {exc}") for key in keys]
    for key in keys:
        target = dest / key
        if os.path.lexists(target) and not force:
            out.append(Exported(name, key, None, f"{target} exists already (pass --force to replace it)"))
            continue
        try:
            with staging_dir(target, tag=f"tlautotune-{key[:16]}") as staging:
                _write_layout(entry, staging, manifest)
                publish_dir(staging, target)
        except (OSError, ValueError, KeyError) as exc:
            out.append(Exported(name, key, None, f"writing {target} failed: {type(exc).__name__}: {exc}"))
            continue
        out.append(Exported(name, key, target, None))
    return out


def _write_layout(entry: Path, directory: Path, manifest: dict) -> None:
    """TileLang's files of ``entry`` into ``directory`` (the entry's own bytes, verified)."""
    files = manifest.get("files") or {}
    backend = (read_json(entry / BACKEND_PATH) or {}).get("execution_backend")
    if not isinstance(backend, str):
        raise ValueError("the entry does not say which backend its kernel runs on")
    if FUNCTION_PATH not in files:
        raise ValueError(f"the entry has no {FUNCTION_PATH} (its PrimFunc), which TileLang's loader needs")
    copied = [BEST_CONFIG_PATH, FUNCTION_PATH, DEVICE_KERNEL_PATH, HOST_KERNEL_PATH, *library_files(backend)]
    for name in copied:
        if name not in files:
            raise ValueError(f"the entry has no {name}")
        atomic_write(directory / name, (entry / name).read_bytes())
    # TileLang's name of the kernel's parameters (entries of older plugins have only params.pkl, the same JSON).
    params = TILELANG_PARAMS_PATH if TILELANG_PARAMS_PATH in files else PARAMS_PATH
    atomic_write(directory / TILELANG_PARAMS_PATH, (entry / params).read_bytes())
    latency = json.loads((entry / LATENCY_PATH).read_text())
    atomic_write(directory / LATENCY_PATH, json.dumps({"latency": latency["latency"],
                                                       "ref_latency": latency.get("ref_latency")}))
    # The outputs the kernel was compiled with: TileLang's loader prefers them over its compile args'.
    record = read_json(entry / RECORD_PATH) or {}
    compile_args = record.get("compile_args") if isinstance(record.get("compile_args"), dict) else {}
    atomic_write(directory / OUT_IDX_PATH, json.dumps({"out_idx": compile_args.get("out_idx")}))


def _hex64(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)
