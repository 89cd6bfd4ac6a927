"""When the cache directory's filesystem refuses writes: which errors those are, and the one
sentence that names the filesystem and the fix.

A full disk, a read-only mount or a directory the user may not write are the cache's faults,
never a kernel's: the run goes on with its results kept in a temporary directory (``cache_dir.CacheDir``).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .files import human_size

#: The errors of a filesystem that refuses a write (as opposed to a corrupt file or a bug).
REFUSALS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


def is_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is the filesystem refusing a write (full, read-only, not ours to write)."""
    return isinstance(exc, OSError) and exc.errno in REFUSALS


def unwritable(root: Path) -> OSError | None:
    """Why nothing can be written in the existing directory ``root`` (read-only filesystem, or
    no write permission for us), as the OSError a write would raise; None when it looks writable."""
    try:
        if os.statvfs(root).f_flag & os.ST_RDONLY:
            return OSError(errno.EROFS, os.strerror(errno.EROFS), str(root))
    except OSError as exc:
        return exc if is_refusal(exc) else None
    if not os.access(root, os.W_OK | os.X_OK):
        return OSError(errno.EACCES, os.strerror(errno.EACCES), str(root))
    return None


def describe(root: Path, exc: OSError) -> str:
    """One sentence: what refused the write, on which filesystem, and what to do about it."""
    where = filesystem(root)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "quota is used up" if exc.errno == errno.EDQUOT else "is full"
        free = _free(root)
        return (f"the cache directory {root} is on a filesystem that {what} ({where}{free}): "
                f"free space there, or point --tl-cache-dir (TL_AUTOTUNE_CACHE_DIR) at another filesystem")
    if exc.errno == errno.EROFS:
        return (f"the cache directory {root} is on a read-only filesystem ({where}): stored results are "
                f"used, new ones cannot be stored; remount it read-write, or point --tl-cache-dir "
                f"(TL_AUTOTUNE_CACHE_DIR) at a writable directory to keep them")
    target = Path(exc.filename) if isinstance(exc.filename, str) else root
    while not target.exists() and target != target.parent:  # the directory that refused to hold it
        target = target.parent
    return (f"the cache directory {root} is not writable by you ({_mode(target)}, {where}): "
            f"run `chmod u+rwx {target}`, or point --tl-cache-dir (TL_AUTOTUNE_CACHE_DIR) at a directory of yours")


def filesystem(path: Path) -> str:
    """``<type> filesystem mounted at <mount point>`` for the filesystem holding ``path``."""
    real = os.path.realpath(path)
    best: tuple[str, str] | None = None
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount = parts[1].replace("\\040", " ")
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                # The longest mount point holding the path; of equal ones, the last mounted.
                if inside and (best is None or len(mount) >= len(best[0])):
                    best = (mount, parts[2])
    except OSError:
        pass
    if best is None:
        return f"the filesystem holding {real}"
    return f"{best[1]} filesystem mounted at {best[0]}"


def _free(root: Path) -> str:
    probe = Path(root)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return ""
    return f", {human_size(st.f_bavail * st.f_frsize)} free of {human_size(st.f_blocks * st.f_frsize)}"


def _mode(path: Path) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "mode unknown"
    return f"mode {stat.S_IMODE(st.st_mode):o}, owner uid {st.st_uid}, you are uid {os.getuid()}"
