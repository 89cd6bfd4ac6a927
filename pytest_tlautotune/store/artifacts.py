"""Write and load an entry's files: the tuned result and the compiled kernel (imports TileLang)."""

from __future__ import annotations

import copy
import json
import logging
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudpickle
import tilelang

from . import typed
from .files import atomic_write, publish_dir, staging_dir
from .manifest import (
    BACKEND_PATH,
    BEST_CONFIG_PATH,
    DEVICE_KERNEL_PATH,
    EXECUTABLE_PATH,
    FUNCTION_JSON_PATH,
    FUNCTION_PATH,
    HOST_KERNEL_PATH,
    KERNEL_CUBIN_PATH,
    KERNEL_LIB_PATH,
    KERNEL_PY_PATH,
    LATENCY_PATH,
    PARAMS_PATH,
    RECORD_PATH,
    TILELANG_PARAMS_PATH,
    TYPES_PATH,
    write_manifest,
)

if TYPE_CHECKING:
    from tilelang.jit.kernel import JITKernel
    from tvm.tirx import PrimFunc

logger = logging.getLogger("pytest_tlautotune")


def save_entry(result: Any, path: Path, tilelang: list[dict] | None = None) -> None:
    """Write ``result`` (an ``AutotuneResult``) as a cache entry at ``path``, atomically.

    Files are staged in a sibling directory, fsynced, listed in a manifest and published
    with one rename, so readers never see a half-written entry; an existing entry at
    ``path`` is replaced only once the new one is complete. ``tilelang``: the notes of TileLang's
    cache keys the entry answers (``manifest.write_manifest``).
    """
    with staging_dir(Path(path)) as staging:
        _write_result(result, staging, tilelang)
        publish_dir(staging, Path(path))


def _write_result(result: Any, directory: Path, tilelang: list[dict] | None = None) -> None:
    # Plain JSON in the config's own key order (TileLang's loader reads it); what JSON loses of the
    # config and the record goes beside it, so a hit returns them as the miss did.
    config, config_types = typed.dumps(result.config)
    record, record_types = typed.dumps(result.record)
    atomic_write(directory / BEST_CONFIG_PATH, config)
    atomic_write(directory / RECORD_PATH, record)
    atomic_write(directory / TYPES_PATH, json.dumps({"config": config_types, "record": record_types}))
    latency = {
        "latency": result.latency,
        "ref_latency": result.ref_latency,
        "samples": list(result.samples),
        "ref_samples": list(result.ref_samples),
    }
    atomic_write(directory / LATENCY_PATH, json.dumps(latency))
    if result.func is not None:
        atomic_write(directory / FUNCTION_PATH, cloudpickle.dumps(result.func))
    write_kernel_artifacts(directory, result.kernel, result.func)
    atomic_write(directory / TILELANG_PARAMS_PATH, (directory / PARAMS_PATH).read_bytes())
    write_manifest(directory, key=result.record.get("key"), tilelang=tilelang)


def read_entry(path: Path, compile_args: Any, func: PrimFunc | None = None) -> dict:
    """The fields of the AutotuneResult stored at ``path`` (verified already), kernel loaded.

    ``func``: the winner's PrimFunc as this process built it (its IR hash checked against the
    stored one), used instead of the stored copy: TVM's serialisation does not round-trip every
    layout annotation, so a PrimFunc that crossed a file is used only where nothing better exists.
    """
    config = read_config(path)
    latency = json.loads((path / LATENCY_PATH).read_text())
    record = _read_typed(path, RECORD_PATH, "record") if (path / RECORD_PATH).exists() else {}
    func = load_function(path) if func is None else func
    kernel = load_kernel(path, compile_args, func)
    return dict(
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


def read_config(path: Path) -> dict:
    """The winner's config stored at ``path``, as the test gave it (tuples, enum members)."""
    return _read_typed(path, BEST_CONFIG_PATH, "config")


def _read_typed(path: Path, name: str, part: str) -> Any:
    types = json.loads((path / TYPES_PATH).read_text()).get(part, []) if (path / TYPES_PATH).exists() else []
    return typed.loads((path / name).read_text(), types if isinstance(types, list) else [])


def kernel_lib_file(execution_backend: str) -> str:
    """The file that holds a backend's compiled library."""
    return {"nvrtc": KERNEL_CUBIN_PATH, "tvm_ffi": EXECUTABLE_PATH}.get(execution_backend, KERNEL_LIB_PATH)


def write_kernel_artifacts(directory: Path, kernel: JITKernel, func: PrimFunc | None = None) -> None:
    """Write what is needed to reload ``kernel`` without compiling: sources, library, params, PrimFunc."""
    from tilelang.engine.param import dump_kernel_params

    directory = Path(directory)
    backend = kernel.execution_backend
    adapter = kernel.adapter
    device_source = kernel.kernel_source
    host_source = adapter.get_host_source() if backend == "tvm_ffi" else adapter.get_kernel_source()
    atomic_write(directory / DEVICE_KERNEL_PATH, device_source or "")
    atomic_write(directory / HOST_KERNEL_PATH, host_source or "")
    lib_path = getattr(adapter, "libpath", None)
    if backend == "tvm_ffi" and not lib_path:
        tmp = directory / f".{EXECUTABLE_PATH}.{uuid.uuid4().hex[:8]}.so"
        adapter.get_exportable_executable().export_library(str(tmp), fcompile=create_shared,
                                                           fpack_imports=pack_imports)
        os.replace(tmp, directory / EXECUTABLE_PATH)
    else:
        atomic_write(directory / kernel_lib_file(backend), Path(lib_path).read_bytes())
    if backend == "nvrtc":
        atomic_write(directory / KERNEL_PY_PATH, Path(lib_path.replace(".cubin", ".py")).read_bytes())
    # JSON despite the seed's name: TVM JSON loads without running any code.
    atomic_write(directory / PARAMS_PATH, dump_kernel_params(kernel.params))
    atomic_write(directory / BACKEND_PATH, json.dumps({"execution_backend": backend}))
    if func is not None:
        atomic_write(directory / FUNCTION_JSON_PATH, tilelang.tvm.ir.save_json(func))


def create_shared(output: str, objects: list[str], options: list[str] | None = None, **kwargs: Any) -> None:
    """TVM's ``create_shared`` for a tvm_ffi kernel's library, its host code compiled as C.

    TVM writes the host code as C (``lib0.c``, guarded ``extern "C"`` for C++) and hands it to its
    compiler (``CXX``, ``CC``, else ``g++``), which compiles a ``.c`` file as C++: TVM's runtime
    headers then make 23,000 lines and 0.12 s on a 2-core VM (0.18-0.38 s on an H200 host), as C
    3,600 lines and 0.03 s. The same compiler compiles it here, told the language (``-x c``: the C
    front end of g++ or clang++); same source, same symbols. Where that fails (a host source only C++ accepts,
    a compiler without ``-x``), TVM's own command.
    """
    from tvm.contrib import cc as tvm_cc

    as_c = [arg for o in objects for arg in (["-x", "c", o, "-x", "none"] if str(o).endswith(".c") else [o])]
    if as_c != list(objects):
        try:
            return tvm_cc.create_shared(output, as_c, options, **kwargs)
        except RuntimeError as exc:
            logger.debug("host library: compiling its C as C failed (%s); TVM's command instead", exc)
    return tvm_cc.create_shared(output, objects, options, **kwargs)


#: The symbol TVM's loader reads a library's packed device modules from (TVM's ``ModulePackImportsToC``).
PACKED_SYMBOL = "__tvm_ffi__library_bin"


def pack_imports(mod: Any, is_system_lib: bool, symbol_prefix: str, workspace_dir: str) -> str:
    """The packed device modules of ``mod`` (the cubin) as an object source for ``export_library``.

    TVM writes them as C, one hex byte per element (1.3 MB of C for a 250 KB GEMM cubin), which
    g++ took 0.2 s to compile; here the same bytes go into an assembly file by ``.incbin`` (the
    assembler copies them). The symbol, its bytes and its section are those TVM's C declares.
    A system library or a symbol prefix keeps TVM's C.
    """
    import tvm_ffi

    workspace = Path(workspace_dir)
    if is_system_lib or symbol_prefix:
        path = workspace / f"{symbol_prefix}devc.c"
        path.write_text(tvm_ffi.get_global_func("runtime.ModulePackImportsToC")(mod, is_system_lib, symbol_prefix))
        return str(path)
    data = tvm_ffi.get_global_func("runtime.ModulePackImportsToTensor")(mod).numpy().tobytes()
    blob = workspace / "devc.bin"
    blob.write_bytes(data)
    path = workspace / "devc.s"
    path.write_text("\n".join([
        "  .section .rodata",
        f"  .globl {PACKED_SYMBOL}",
        f"  .type {PACKED_SYMBOL}, %object",
        "  .balign 16",
        f"{PACKED_SYMBOL}:",
        f'  .incbin "{blob}"',
        f"  .size {PACKED_SYMBOL}, {len(data)}",
        '  .section .note.GNU-stack,"",%progbits',
        "",
    ]))
    return str(path)


def save_kernel(kernel: JITKernel, func: PrimFunc | None, out: Path) -> None:
    """Publish one compiled candidate's artifacts at ``out`` (staged, manifest, one rename)."""
    with staging_dir(out) as staging:
        write_kernel_artifacts(staging, kernel, func)
        write_manifest(staging)
        publish_dir(staging, out)


def load_function(directory: Path) -> PrimFunc:
    """The PrimFunc of an entry: from TVM JSON when present, else the (verified) pickle."""
    if (directory / FUNCTION_JSON_PATH).exists():
        return tilelang.tvm.ir.load_json((directory / FUNCTION_JSON_PATH).read_text())
    if (directory / FUNCTION_PATH).exists():
        with open(directory / FUNCTION_PATH, "rb") as f:
            return cloudpickle.load(f)
    return None


def load_kernel(directory: Path, compile_args: Any, func: PrimFunc | None = None) -> JITKernel:
    """Rebuild a ``JITKernel`` from the artifacts written by :func:`write_kernel_artifacts`."""
    from tilelang.backend.module import create_backend_context

    directory = Path(directory)
    func = load_function(directory) if func is None else func
    backend = json.loads((directory / BACKEND_PATH).read_text())["execution_backend"]
    context = create_backend_context(compile_args.target, compile_args.target_host, backend)
    return _from_database(directory, context, PARAMS_PATH, func, compile_args.out_idx, compile_args.pass_configs)


def _from_database(directory: Path, context: Any, params_name: str, func: PrimFunc | None, out_idx: Any,
                   pass_configs: dict | None) -> JITKernel:
    """The kernel whose sources, library and parameters are in ``directory``, for ``context``'s backend."""
    from tilelang.engine.param import load_kernel_params
    from tilelang.jit import JITKernel
    from tilelang.jit.adapter.base import CachedTextSource

    backend = context.execution_backend.name
    return JITKernel.from_database(
        func=func,
        host_kernel_source=CachedTextSource(text=(directory / HOST_KERNEL_PATH).read_text()),
        device_kernel_source=CachedTextSource(text=(directory / DEVICE_KERNEL_PATH).read_text()),
        kernel_lib_path=str(directory / kernel_lib_file(backend)),
        params=load_kernel_params((directory / params_name).read_text()),
        target=context.target,
        target_host=context.target_host,
        # Copies: TileLang normalises these in place, which would change our keys.
        out_idx=copy.deepcopy(out_idx),
        execution_backend=backend,
        pass_configs=copy.deepcopy(pass_configs),
        backend_context=context,
    )


def read_tilelang_entry(path: Path, compile_args: Any) -> dict:
    """The fields of a result that TileLang's own ``AutotuneResult.save_to_disk`` wrote at ``path``
    (its autotuner cache: ``tilelang_layout.is_tilelang_entry``), read as TileLang's loader reads
    them: the kernel for the backend ``compile_args`` resolve to, the outputs of ``out_idx.json``
    over the compile args', the tuning's numbers set on the kernel.

    Such an entry has no manifest: the owner checks of ``safety.check_entry`` run before anything is
    unpickled or loaded. Raises ``CorruptEntry`` (a file missing), ``UnsafeCache`` or what reading raises.
    """
    from tilelang.backend.module import create_backend_context

    from .manifest import OUT_IDX_PATH, CorruptEntry
    from .safety import check_entry
    from .tilelang_layout import required_files

    path = Path(path)
    check_entry(path)
    context = create_backend_context(compile_args.target, compile_args.target_host, compile_args.execution_backend)
    missing = [name for name in required_files(context.execution_backend.name) if not (path / name).is_file()]
    if missing:
        raise CorruptEntry(f"TileLang's entry lacks {', '.join(missing)}")
    config = json.loads((path / BEST_CONFIG_PATH).read_text())
    latency = json.loads((path / LATENCY_PATH).read_text())
    with open(path / FUNCTION_PATH, "rb") as f:
        func = cloudpickle.load(f)
    out_idx = json.loads((path / OUT_IDX_PATH).read_text()).get("out_idx") if (path / OUT_IDX_PATH).exists() else None
    kernel = _from_database(path, context, TILELANG_PARAMS_PATH, func,
                            compile_args.out_idx if out_idx is None else out_idx, compile_args.pass_configs)
    kernel.update_tuner_result(config=config, latency=latency["latency"], ref_latency=latency.get("ref_latency"))
    return dict(latency=latency["latency"], config=config, ref_latency=latency.get("ref_latency"),
                libcode=kernel.get_kernel_source(), func=func, kernel=kernel)
