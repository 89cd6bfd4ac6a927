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

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import tilelang

from .engine.key import callable_identity, hash_int, reach_identity
from .model import TargetLike

# The entry's file names live with the store; re-exported here, the seed's module.
from .store.manifest import (  # noqa: F401
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
    MANIFEST_PATH,
    PARAMS_PATH,
    RECORD_PATH,
)

if TYPE_CHECKING:
    from tilelang.jit.kernel import JITKernel
    from tvm.tirx import PrimFunc

logger = logging.getLogger("pytest_tlautotune")

ExecutionBackend = Literal["auto", "tvm_ffi", "cython", "nvrtc", "torch"]


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
    target: TargetLike = "auto"
    target_host: TargetLike | None = None
    verbose: bool = False
    pass_configs: dict[str, Any] | None = None

    def compile_program(self, program: PrimFunc) -> JITKernel:
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
        inplace: the inputs that are results of the kernel (parameter names or indices), compared
            after the kernel ran with the same inputs after ``ref_prog``; None: the inputs the
            kernel or ``ref_prog`` changes (``engine.check``).
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
    inplace: list[str | int] | None = None

    def canonical(self) -> dict:
        """JSON-able form; callables appear as qualified name + source hash. The fields are read,
        not deep-copied (``asdict`` would copy a ``supply_prog``'s tensors, and autograd refuses to
        copy a tensor that is not a graph leaf)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.inplace is None:
            del data["inplace"]  # absent when unset: the keys of tests that do not set it stay stable
        else:
            data["inplace"] = list(self.inplace)
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
    func: PrimFunc | None = None
    kernel: Callable | None = None
    samples: tuple[float, ...] = ()
    ref_samples: tuple[float, ...] = ()
    record: dict = field(default_factory=dict)

    def save_to_disk(self, path: Path | str, verbose: bool = False) -> None:
        """Write this result as a cache entry at ``path``, atomically (see ``store.artifacts.save_entry``)."""
        from .store.artifacts import save_entry

        save_entry(self, Path(path))
        if verbose:
            logger.info("saved autotune result to %s", path)

    @classmethod
    def load_from_disk(cls, path: Path | str, compile_args: CompileArgs) -> AutotuneResult | None:
        """Load the entry at ``path`` with a callable ``kernel``: one of ours, or one that TileLang's
        own ``AutotuneResult.save_to_disk`` wrote (its autotuner cache), read as TileLang reads it.

        Returns None (and logs why) when the entry is absent, incomplete,
        corrupt, from another format version, or not safe to load.
        """
        from .store.artifacts import read_entry, read_tilelang_entry
        from .store.manifest import verify_entry
        from .store.tilelang_layout import is_tilelang_entry

        path = Path(path)
        if not path.is_dir():
            return None
        try:
            if is_tilelang_entry(path):
                return cls(**read_tilelang_entry(path, compile_args))
            verify_entry(path)
            return cls(**read_entry(path, compile_args))
        except Exception as exc:  # a bad cache is a miss, never a crash
            logger.warning("ignoring cache entry %s: %s", path, exc)
            return None
