"""What a compile worker does with one candidate: build its PrimFunc (the user's code), compile
it, and publish its artifacts; each job returns plain data (TileLang/TVM exceptions do not pickle,
and one escaping would kill the worker on its way back and lose the reason). The processes that run
these jobs are ``workers.py``'s.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..store.files import remove_tree

TEMP_PREFIX = "tlautotune-compile-"


@contextlib.contextmanager
def private_tempdir():
    """Point ``tempfile`` at a directory of this job's own, removed afterwards.

    TileLang's C and CUDA library generators (``jit/adapter/libgen.py``) write the source and
    the library as ``NamedTemporaryFile(delete=False)`` in the default temp directory and never
    remove them: without this every candidate leaves a ``tmp*.cpp`` and ``tmp*.so`` in $TMPDIR.
    The loaded library stays mapped after its file is gone.
    """
    import tempfile

    saved = tempfile.tempdir
    private = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-")
    tempfile.tempdir = private
    try:
        yield private
    finally:
        tempfile.tempdir = saved
        remove_tree(private, ignore_errors=True)


_SPECS: dict[str, tuple[Any, set[str]]] = {}  # per worker: each request's unpickled BuildSpec, files it read


def build_candidate(spec_id: str, spec_blob: bytes, config: dict, env: dict, sys_path: list[str],
                    keep: bool = False) -> dict:
    """Build one config's PrimFunc (the user's code) and describe it (worker side), with the
    user files loading the program and building it read (``reads``); ``keep`` adds the PrimFunc
    itself (for a compile in this process)."""
    import pickle

    from .failures import BUILD, describe
    from .reads import recording

    with _environment(env, sys_path):
        try:
            if spec_id not in _SPECS:
                with recording() as loading:
                    spec = pickle.loads(spec_blob)
                _SPECS[spec_id] = (spec, loading)
            spec, loading = _SPECS[spec_id]
        except BaseException as exc:  # noqa: BLE001 - the program cannot be loaded here at all
            return {"spec_error": describe(exc, BUILD)}
        reads: set[str] = set()
        try:
            with _captured_output(), recording(spec.target) as reads:
                built = spec.build(config)
            # The PrimFunc itself stays here: TVM's serialisation does not round-trip every layout
            # annotation (a swizzled shared layout came back as `_i // 8 + 1` and failed to lower),
            # so the compile job builds it again where it compiles it.
            out = {**built.summary(), "reads": sorted(loading | reads)}
            if keep:
                out["func"] = built.func
            return out
        except BaseException as exc:  # noqa: BLE001 - every failure is a record on this config
            return {"error": describe(exc, BUILD, spec.target), "reads": sorted(loading | reads)}


def compile_candidate(source: Any, compile_args: Any, out_dir: str, fallback_dir: str | None = None) -> dict:
    """Build (see ``build_candidate``) and compile one candidate, publish its artifacts at
    ``out_dir`` (worker side). ``source`` is a pickled PrimFunc (built in the test process) or
    ``(spec_id, spec_blob, config, env, sys_path, ir_sha)``. Where the cache's filesystem refuses
    them (full, read-only: ``store.faults``), they go to ``fallback_dir``, and the answer says
    so (``kept_at``, ``refused``): the cache's fault is not the kernel's.

    What the compiler prints goes into the failure, not through pytest's capture.
    """
    import pickle

    from .failures import BUILD, LOWER, SAVE, describe, trim

    if isinstance(source, bytes):
        func = pickle.loads(source)
    else:
        spec_id, spec_blob, config, env, sys_path, ir_sha = source
        built = build_candidate(spec_id, spec_blob, config, env, sys_path, keep=True)
        if "error" in built or "spec_error" in built:
            return {"error": built.get("error") or built["spec_error"]}
        if built["ir_sha"] != ir_sha:
            return {"error": {"stage": BUILD, "type": "ProgramError", "where": None, "tail": "",
                              "message": "the program built a different kernel for this config than a moment "
                                         "before (does it depend on randomness or the time?)"}}
        func = built["func"]
    output = None
    try:
        with _captured_output() as output:
            return _compile(func, compile_args, out_dir, fallback_dir)
    except _NotKept as exc:
        return {"error": describe(exc.__cause__, SAVE)}
    except BaseException as exc:  # noqa: BLE001 - every failure is a record on this config
        failure = describe(exc, LOWER)
        printed = output.text() if output is not None else ""
        if printed.strip() and printed.strip() not in failure["message"]:
            failure["output"] = trim(printed)
        return {"error": failure}


class _NotKept(Exception):
    """The compiled kernel could be kept neither in the cache nor in the fallback directory."""


def _compile(func: Any, compile_args: Any, out_dir: str, fallback_dir: str | None = None) -> dict:
    from ..store.artifacts import save_kernel
    from ..store.faults import is_refusal

    started_at, t0 = time.time(), time.perf_counter()
    kept: dict = {}
    with private_tempdir():
        kernel = compile_args.compile_program(func)
        t_compiled = time.perf_counter()
        try:
            save_kernel(kernel, func, Path(out_dir))
        except OSError as exc:
            if not is_refusal(exc) or not fallback_dir or fallback_dir == out_dir:
                raise _NotKept() from exc
            try:
                save_kernel(kernel, func, Path(fallback_dir))
            except OSError as again:
                raise _NotKept() from again
            kept = {"kept_at": fallback_dir,
                    "refused": {"errno": exc.errno, "strerror": exc.strerror, "filename": exc.filename}}
    # compile_s covers the whole job (compile and save); save_s the artifacts alone.
    end = time.perf_counter()
    from .device_compile import last

    out = {"compile_s": end - t0, "save_s": end - t_compiled, "pid": os.getpid(), "started_at": started_at, **kept}
    if last:  # which compiler built the device code (NVRTC, or nvcc and why)
        out["device_compiler"] = dict(last)
        last.clear()
    return out


class _Output:
    def __init__(self, file: Any):
        self.file = file

    def text(self) -> str:
        self.file.seek(0)
        return self.file.read().decode(errors="replace")


class _captured_output:  # noqa: N801 - used as a context manager
    """Send this process's fds 1 and 2 to a temporary file for the block (compilers write there)."""

    def __enter__(self) -> _Output:
        import tempfile

        sys.stdout.flush()
        sys.stderr.flush()
        self.file = tempfile.TemporaryFile()
        self.saved = [os.dup(1), os.dup(2)]
        os.dup2(self.file.fileno(), 1)
        os.dup2(self.file.fileno(), 2)
        return _Output(self.file)

    def __exit__(self, *exc: Any) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in zip((1, 2), self.saved):
            os.dup2(saved, fd)
            os.close(saved)


class _environment:  # noqa: N801 - used as a context manager
    """The test process's environment variables and sys.path for one job: a kernel that reads
    an environment variable at build time builds what the test process would."""

    def __init__(self, env: dict, sys_path: list[str]):
        self.env, self.sys_path = env, sys_path

    def __enter__(self) -> None:
        self.saved_env, self.saved_path = dict(os.environ), list(sys.path)
        if self.env is not None:
            os.environ.clear()
            os.environ.update(self.env)
            os.environ["CUDA_VISIBLE_DEVICES"] = self.saved_env.get("CUDA_VISIBLE_DEVICES", "")
            if "CUDA_VISIBLE_DEVICES" not in self.saved_env:
                del os.environ["CUDA_VISIBLE_DEVICES"]
        if self.sys_path is not None:
            sys.path[:] = self.sys_path

    def __exit__(self, *exc: Any) -> None:
        os.environ.clear()
        os.environ.update(self.saved_env)
        sys.path[:] = self.saved_path
