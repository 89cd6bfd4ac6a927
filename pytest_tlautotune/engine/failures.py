"""A failure as plain data: who raised, what, and where in the user's code.

TileLang and TVM raise exceptions that cannot be pickled (``tvm_ffi`` errors): a
worker that let one escape would die sending it back and the reason would be lost.
Every worker job therefore catches everything and returns :func:`describe`'s dict,
which pickles, fits in a record, and reads as one line in the summary.
"""

from __future__ import annotations

import os
import re
import sysconfig
import traceback

# Who raised (the ``stage`` of a failure).
BUILD = "build"  # the program building one config's PrimFunc (the user's code)
LOWER = "lower"  # TileLang's lowering passes
COMPILER = "compiler"  # the C/C++/CUDA compiler
RUN = "run"  # the kernel at run time
REF_PROG = "ref_prog"
SUPPLY_PROG = "supply_prog"
CHECK = "manual_check_prog"
SAVE = "save"  # keeping a compiled kernel's files (the cache and the temporary directory refused them)

STAGE_WORDS = {
    BUILD: "building the config",
    LOWER: "TileLang lowering",
    COMPILER: "compiler",
    RUN: "kernel at run time",
    REF_PROG: "ref_prog",
    SUPPLY_PROG: "supply_prog",
    CHECK: "manual_check_prog",
    SAVE: "keeping the compiled kernel",
}

#: Exit code of a timing worker that hit a CUDA fault (see bench.check_and_time).
CUDA_FAULT_EXIT = 70

MAX_MESSAGE = 1500
MAX_LINES = 12
_LIBRARY_DIRS = tuple(
    os.path.realpath(p) + os.sep
    for p in {sysconfig.get_paths().get("stdlib"), sysconfig.get_paths().get("purelib"),
              sysconfig.get_paths().get("platlib")} if p
)
_OWN_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__))) + os.sep  # the package
_COMPILER_MODULES = ("tilelang/contrib/cc.py", "tilelang/contrib/nvcc.py", "tilelang/contrib/nvrtc.py",
                     "tilelang/contrib/hipcc.py", "tvm/contrib/cc.py", "tvm/contrib/nvcc.py",
                     "jit/adapter/libgen.py")
_COMPILER_WORDS = ("compilation error", "nvcc", "g++", "gcc", "clang", "compile failed", "error:")


class StageError(Exception):
    """Raised by the plugin around a call to user code whose failure has a known stage."""

    def __init__(self, stage: str, exc: BaseException):
        super().__init__(str(exc))
        self.stage = stage
        self.exc = exc


def describe(exc: BaseException, stage: str, program: object = None) -> dict:
    """``exc`` as plain data: ``stage``, ``type``, ``message`` (trimmed), ``where`` (file:line in
    the user's code, when one can be named) and ``tail`` (the last useful traceback lines)."""
    if isinstance(exc, StageError):
        stage, exc = exc.stage, exc.exc
    tb = traceback.extract_tb(exc.__traceback__)
    if stage == LOWER and _from_compiler(tb, exc):
        stage = COMPILER
    user = _user_location(tb)
    return {
        "stage": stage,
        "type": type(exc).__name__,
        "message": trim(str(exc)),
        "where": user or definition(program),
        "in_user_code": user is not None,  # a line of the user's code is on the traceback
        "tail": "".join(traceback.format_list(tb[-4:]))[-MAX_MESSAGE:],
    }


def reason(failure: dict) -> str:
    """One line for the summary: ``compiler: CalledProcessError: ... (kernels.py:12)``."""
    words = STAGE_WORDS.get(failure.get("stage"), failure.get("stage") or "")
    message = failure.get("message") or ""
    first = message.strip().splitlines()[0] if message.strip() else ""
    text = f"{words}: {failure.get('type')}: {first}"
    if failure.get("where"):
        text += f" ({failure['where']})"
    return text


def versions() -> str:
    """The versions a bug report needs: this plugin, Python and the packages it runs user code with."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    parts = []
    for name in ("pytest-tlautotune", "tilelang", "torch", "cloudpickle", "pebble", "pytest"):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            if name == "pytest-tlautotune":
                from .. import __version__

                parts.append(f"{name} {__version__}")
    return ", ".join(parts + [f"Python {platform.python_version()}"])


def same_failure(failures: list[dict]) -> bool:
    """Whether every config failed for one reason: same stage, type and message with the numbers
    (the config's values) left out."""
    if not failures:
        return False
    shapes = {(f.get("stage"), f.get("type"), _without_numbers(f.get("message") or "")) for f in failures}
    return len(shapes) == 1


def _without_numbers(text: str) -> str:
    return re.sub(r"\d+", "#", text)


def trim(text: str) -> str:
    """Compiler output cut to its error lines (never the whole generated source)."""
    lines = text.splitlines()
    if len(lines) > MAX_LINES:
        errors = [i for i, line in enumerate(lines) if re.search(r"\berror\b|Error|error:", line)]
        if errors:
            keep: list[int] = []
            for i in errors:
                keep.extend(j for j in range(i, min(i + 3, len(lines))) if j not in keep)
            lines = [lines[0]] + [lines[j] for j in keep[:MAX_LINES] if j != 0]
        else:
            lines = lines[:2] + ["..."] + lines[-(MAX_LINES - 3):]
    out = "\n".join(lines)
    return out if len(out) <= MAX_MESSAGE else out[: MAX_MESSAGE - 3] + "..."


def _from_compiler(tb: traceback.StackSummary, exc: BaseException) -> bool:
    if any(any(m in frame.filename.replace(os.sep, "/") for m in _COMPILER_MODULES) for frame in tb):
        return True
    text = str(exc).lower()
    return type(exc).__name__ == "CalledProcessError" or ("compil" in text and any(w in text for w in _COMPILER_WORDS))


def _is_user_file(filename: str) -> bool:
    if not filename or filename.startswith("<") or not filename.endswith(".py") or not os.path.isfile(filename):
        return False
    path = os.path.realpath(filename)
    return not path.startswith(_LIBRARY_DIRS) and not path.startswith(_OWN_DIR) and "site-packages" not in path


def _user_location(tb: traceback.StackSummary) -> str | None:
    for frame in reversed(tb):
        if _is_user_file(frame.filename):
            return f"{_short(frame.filename)}:{frame.lineno}"
    return None


def definition(program: object) -> str | None:
    """Where the kernel's function is defined, for failures raised with no user frame (lowering)."""
    import inspect

    fn = program
    for attr in ("jit_impl", "func", "orig_func"):
        fn = getattr(fn, attr, None) or fn
    fn = getattr(fn, "fn", fn)
    try:
        file = inspect.getsourcefile(fn)
        line = inspect.getsourcelines(fn)[1]
    except (TypeError, OSError):
        return None
    return f"{_short(file)}:{line}" if file else None


def _short(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return rel if not rel.startswith(".." + os.sep + ".." + os.sep) else path


def classify(exc: BaseException, stage: str, limit: float) -> tuple[str, str]:
    """Turn a pool exception into (status, reason)."""
    import concurrent.futures as cf
    import signal

    from pebble import ProcessExpired

    from ..model import Status

    if isinstance(exc, (cf.TimeoutError, TimeoutError)):
        return Status.TIMEOUT, f"{stage} exceeded {limit:g} s and was killed"
    if isinstance(exc, ProcessExpired):
        code = exc.exitcode
        sig = ""
        if code is not None and code < 0:
            try:
                sig = f" ({signal.Signals(-code).name})"
            except ValueError:
                pass
        if code == CUDA_FAULT_EXIT:
            return Status.CRASH, f"{stage}: CUDA fault (e.g. illegal memory access); the timing worker was restarted"
        return Status.CRASH, f"{stage} worker died with exit code {code}{sig}"
    status = Status.COMPILE_ERROR if stage == "compile" else Status.ERROR
    return status, f"{stage} failed: {type(exc).__name__}: {exc}"
