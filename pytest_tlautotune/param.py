"""The seed API: compile and profile arguments, and a tuned result that persists.

Shaped like ``tilelang/autotuner/param.py`` (same names, fields, defaults and file
names), with three differences that matter for a cache shared by many processes:

* ``__hash__`` is a sha256 over a canonical form, stable across processes, and
  ``ProfileArgs`` covers its callables by qualified name + source text;
* every entry carries a manifest (size + sha256 of each file, format version) that
  ``load_from_disk`` verifies before it unpickles or loads anything;
* a bad entry is logged and answered with ``None``, never an exception.

This module imports TileLang; the plugin imports it only when a test tunes.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import cloudpickle
import tilelang

from . import safety
from .key import FORMAT_VERSION, callable_identity, canonical_json, hash_int, reach_identity, sha256_hex

logger = logging.getLogger("pytest_tlautotune")

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
# Ours: the PrimFunc as TVM JSON (loads without unpickling), the manifest, the tuning record.
FUNCTION_JSON_PATH = "function.json"
MANIFEST_PATH = "manifest.json"
RECORD_PATH = "record.json"

ExecutionBackend = Literal["auto", "tvm_ffi", "cython", "nvrtc", "torch"]
EXECUTION_BACKENDS = ("auto", "tvm_ffi", "cython", "nvrtc", "torch")
TARGETS = ("auto", "cuda", "hip", "c")
PROFILE_BACKENDS = ("event", "cupti", "cudagraph")


@dataclass(frozen=True)
class CompileArgs:
    """How one candidate PrimFunc is compiled (see ``tilelang.compile``).

    Attributes:
        out_idx: indices of the output tensors the kernel allocates and returns.
        execution_backend: ``auto|tvm_ffi|cython|nvrtc|torch``.
        target: ``auto|cuda|hip|c`` (``c`` is the CPU target), or a TVM target.
        target_host: host target for cross-compilation.
        verbose: TileLang's verbose compile output.
        pass_configs: extra ``tilelang.PassConfigKey`` options.
    """

    out_idx: list[int] | int | None = None
    execution_backend: ExecutionBackend = "auto"
    target: Any = "auto"
    target_host: Any = None
    verbose: bool = False
    pass_configs: dict[str, Any] | None = None

    def compile_program(self, program: Any):
        """Compile one PrimFunc with TileLang and return its ``JITKernel``."""
        return tilelang.compile(
            program,
            out_idx=self.out_idx,
            execution_backend=self.execution_backend,
            target=self.target,
            target_host=self.target_host,
            verbose=self.verbose,
            pass_configs=self.pass_configs,
        )

    def canonical(self) -> dict:
        """The JSON-able form that the hash and the cache key are made of."""
        return {
            "out_idx": list(self.out_idx) if isinstance(self.out_idx, (list, tuple)) else self.out_idx,
            "execution_backend": self.execution_backend,
            "target": str(self.target),
            "target_host": None if self.target_host is None else str(self.target_host),
            "verbose": self.verbose,
            "pass_configs": {str(k): v for k, v in (self.pass_configs or {}).items()},
        }

    def __hash__(self) -> int:
        return hash_int(self.canonical())


@dataclass(frozen=True)
class ProfileArgs:
    """How candidates are checked and timed.

    Attributes:
        warmup: runs before timing.
        rep: timed runs; every sample is kept, latency is their median (ms).
        timeout: seconds one candidate's check + timing may take before it is killed.
        backend: ``event|cupti|cudagraph`` on CUDA; CPU targets use host wall-clock.
        supply_type: how inputs are generated (``tilelang.TensorSupplyType``).
        ref_prog: reference program; same inputs, outputs compared element-wise.
        supply_prog: ``supply_prog(params) -> list of tensors`` replaces supply_type.
        rtol, atol: mismatch when ``|out - ref| > atol + rtol * |ref|``.
        max_mismatched_ratio: largest tolerated fraction of mismatching elements.
        skip_check: time without checking.
        manual_check_prog: ``manual_check_prog(outputs, ref_outputs)`` replaces the check.
        cache_input_tensors: generate inputs once per key and reuse them.
    """

    warmup: int = 25
    rep: int = 100
    timeout: int = 30
    backend: Literal["event", "cupti", "cudagraph"] = "event"
    supply_type: tilelang.TensorSupplyType = tilelang.TensorSupplyType.Auto
    ref_prog: Callable | None = None
    supply_prog: Callable | None = None
    rtol: float = 0.01
    atol: float = 0.01
    max_mismatched_ratio: float = 0.01
    skip_check: bool = False
    manual_check_prog: Callable | None = None
    cache_input_tensors: bool = True

    def canonical(self) -> dict:
        """JSON-able form; callables appear as qualified name + source hash."""
        data = asdict(self)
        data["supply_type"] = str(self.supply_type)
        for name in ("ref_prog", "supply_prog", "manual_check_prog"):
            fn = getattr(self, name)
            data[name] = callable_identity(fn)
            if fn is not None:  # and everything of the user's it runs: a fixed helper re-checks
                data[name + "_reaches"] = reach_identity(fn)
        return data

    def __hash__(self) -> int:
        return hash_int(self.canonical())


@dataclass(frozen=True)
class AutotuneResult:
    """The outcome of tuning one program: best config, its latency, its kernel.

    The first six fields are the seed's. ``samples``/``ref_samples`` hold every
    timing sample (ms) of the winner and of the reference; ``record`` holds the
    per-candidate records, the machine and the tuning statistics.
    """

    latency: float | None = None
    config: dict | None = None
    ref_latency: float | None = None
    libcode: str | None = None
    func: Any = None
    kernel: Callable | None = None
    samples: tuple[float, ...] = ()
    ref_samples: tuple[float, ...] = ()
    record: dict = field(default_factory=dict)

    def save_to_disk(self, path: Path | str, verbose: bool = False) -> None:
        """Write this result as a cache entry at ``path``, atomically.

        Files are staged in a sibling directory, fsynced, listed in a manifest
        and published with one rename, so readers never see a half-written
        entry; an existing entry at ``path`` is replaced only once the new one
        is complete.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        staging = path.parent / f".staging-{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir(mode=0o700)
        try:
            self._write_files(staging)
            publish_dir(staging, path)
            if verbose:
                logger.info("saved autotune result to %s", path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _write_files(self, directory: Path) -> None:
        write_text(directory / BEST_CONFIG_PATH, canonical_json(self.config))
        latency = {
            "latency": self.latency,
            "ref_latency": self.ref_latency,
            "samples": list(self.samples),
            "ref_samples": list(self.ref_samples),
        }
        write_text(directory / LATENCY_PATH, json.dumps(latency))
        write_text(directory / RECORD_PATH, json.dumps(self.record, default=str))
        if self.func is not None:
            write_bytes(directory / FUNCTION_PATH, cloudpickle.dumps(self.func))
        write_kernel_artifacts(directory, self.kernel, self.func)
        write_manifest(directory, key=self.record.get("key"))

    @classmethod
    def load_from_disk(cls, path: Path | str, compile_args: CompileArgs) -> AutotuneResult | None:
        """Load the entry at ``path`` with a callable ``kernel``.

        Returns None (and logs why) when the entry is absent, incomplete,
        corrupt, from another format version, or not safe to load.
        """
        path = Path(path)
        if not path.is_dir():
            return None
        try:
            safety.check_entry(path)
            verify_manifest(path)
            return cls._load(path, compile_args)
        except Exception as exc:  # a bad cache is a miss, never a crash
            logger.warning("ignoring cache entry %s: %s", path, exc)
            return None

    @classmethod
    def _load(cls, path: Path, compile_args: CompileArgs) -> AutotuneResult:
        config = json.loads((path / BEST_CONFIG_PATH).read_text())
        latency = json.loads((path / LATENCY_PATH).read_text())
        record = json.loads((path / RECORD_PATH).read_text()) if (path / RECORD_PATH).exists() else {}
        func = load_function(path)
        kernel = load_kernel(path, compile_args, func)
        return cls(
            latency=latency["latency"],
            config=config,
            ref_latency=latency.get("ref_latency"),
            libcode=kernel.get_kernel_source(),
            func=func,
            kernel=kernel,
            samples=tuple(latency.get("samples", ())),
            ref_samples=tuple(latency.get("ref_samples", ())),
            record=record,
        )


# ----------------------------------------------------------------------------- files


def _fsync_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` through a temp file + fsync + rename."""
    _fsync_write(Path(path), data)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` through a temp file + fsync + rename."""
    _fsync_write(Path(path), text.encode())


def kernel_lib_file(execution_backend: str) -> str:
    """The file that holds a backend's compiled library."""
    return {"nvrtc": KERNEL_CUBIN_PATH, "tvm_ffi": EXECUTABLE_PATH}.get(execution_backend, KERNEL_LIB_PATH)


def write_kernel_artifacts(directory: Path, kernel: Any, func: Any = None) -> None:
    """Write what is needed to reload ``kernel`` without compiling: sources, library, params, PrimFunc."""
    from tilelang.engine.param import dump_kernel_params

    directory = Path(directory)
    backend = kernel.execution_backend
    adapter = kernel.adapter
    device_source = kernel.kernel_source
    host_source = adapter.get_host_source() if backend == "tvm_ffi" else adapter.get_kernel_source()
    write_text(directory / DEVICE_KERNEL_PATH, device_source or "")
    write_text(directory / HOST_KERNEL_PATH, host_source or "")
    lib_path = getattr(adapter, "libpath", None)
    if backend == "tvm_ffi" and not lib_path:
        tmp = directory / f".{EXECUTABLE_PATH}.{uuid.uuid4().hex[:8]}.so"
        adapter.get_exportable_executable().export_library(str(tmp))
        os.replace(tmp, directory / EXECUTABLE_PATH)
    else:
        write_bytes(directory / kernel_lib_file(backend), Path(lib_path).read_bytes())
    if backend == "nvrtc":
        write_bytes(directory / KERNEL_PY_PATH, Path(lib_path.replace(".cubin", ".py")).read_bytes())
    # JSON despite the seed's name: TVM JSON loads without running any code.
    write_text(directory / PARAMS_PATH, dump_kernel_params(kernel.params))
    write_text(directory / "backend.json", json.dumps({"execution_backend": backend}))
    if func is not None:
        write_text(directory / FUNCTION_JSON_PATH, tilelang.tvm.ir.save_json(func))


def load_function(directory: Path) -> Any:
    """The PrimFunc of an entry: from TVM JSON when present, else the (verified) pickle."""
    if (directory / FUNCTION_JSON_PATH).exists():
        return tilelang.tvm.ir.load_json((directory / FUNCTION_JSON_PATH).read_text())
    if (directory / FUNCTION_PATH).exists():
        with open(directory / FUNCTION_PATH, "rb") as f:
            return cloudpickle.load(f)
    return None


def load_kernel(directory: Path, compile_args: CompileArgs, func: Any = None):
    """Rebuild a ``JITKernel`` from the artifacts written by :func:`write_kernel_artifacts`."""
    from tilelang.backend.module import create_backend_context
    from tilelang.engine.param import load_kernel_params
    from tilelang.jit import JITKernel
    from tilelang.jit.adapter.base import CachedTextSource

    directory = Path(directory)
    func = load_function(directory) if func is None else func
    backend = json.loads((directory / "backend.json").read_text())["execution_backend"]
    context = create_backend_context(compile_args.target, compile_args.target_host, backend)
    return JITKernel.from_database(
        func=func,
        host_kernel_source=CachedTextSource(text=(directory / HOST_KERNEL_PATH).read_text()),
        device_kernel_source=CachedTextSource(text=(directory / DEVICE_KERNEL_PATH).read_text()),
        kernel_lib_path=str(directory / kernel_lib_file(backend)),
        params=load_kernel_params((directory / PARAMS_PATH).read_text()),
        target=context.target,
        target_host=context.target_host,
        # Copies: TileLang normalises these in place, which would change our keys.
        out_idx=copy.deepcopy(compile_args.out_idx),
        execution_backend=backend,
        pass_configs=copy.deepcopy(compile_args.pass_configs),
        backend_context=context,
    )


def write_manifest(directory: Path, key: str | None = None) -> None:
    """List every file of ``directory`` with its size and sha256."""
    files = {}
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if entry.is_file(follow_symlinks=False) and entry.name != MANIFEST_PATH and not entry.name.startswith("."):
            data = Path(entry.path).read_bytes()
            files[entry.name] = {"size": len(data), "sha256": sha256_hex(data)}
    manifest = {"format": FORMAT_VERSION, "key": key, "files": files}
    write_text(directory / MANIFEST_PATH, json.dumps(manifest, indent=1, sort_keys=True))


class CorruptEntry(Exception):
    """A cache entry failed verification."""


ENTRY_FILES = frozenset({BEST_CONFIG_PATH, LATENCY_PATH, PARAMS_PATH, HOST_KERNEL_PATH, "backend.json"})
KERNEL_FILES = frozenset({PARAMS_PATH, HOST_KERNEL_PATH, "backend.json"})


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


def _verify_file(directory: Path, name: str, meta: Any) -> None:
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


def publish_dir(staging: Path, path: Path) -> None:
    """Make ``staging`` visible as ``path`` in one rename, replacing an older entry."""
    fd = os.open(staging, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if path.exists():
        # Move the old entry aside first: a reader in between sees a miss, never a mix.
        trash = path.parent / f".trash-{path.name}-{uuid.uuid4().hex[:8]}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(staging, path)
    except OSError:
        # Another process published the same key between our check and rename: theirs stands.
        if not path.is_dir():
            raise
