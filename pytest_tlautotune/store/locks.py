"""The cache's lock files: one tuner per entry key across processes, one timing process per device.

``locks/<key>.lock`` and ``locks/device-<dev>.lock`` in the cache; where the cache refuses to
create or open one, the same name in this user's lock directory under the system's temporary
directory, so the processes of one machine still agree.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from . import faults, safety
from .cache_dir import CacheDir


class Locks:
    """File locks and lock paths under one cache directory."""

    def __init__(self, cache_dir: CacheDir):
        self.cache_dir = cache_dir

    def entry(self, key: str, timeout: float = -1):
        """A file lock per entry key; symlinks are refused by filelock >= 3.20.1."""
        from filelock import FileLock

        return FileLock(self._path(f"{key}.lock"), timeout=timeout)

    def device_path(self, device: str) -> str:
        """The lock file the timing workers of ``device`` hold while they time a kernel."""
        return self._path(f"device-{device.replace(':', '-')}.lock")

    def _path(self, name: str) -> str:
        """The lock file ``name`` in the cache; where the cache refuses to create or open it, one
        in this user's lock directory under the system's temporary directory."""
        path = self.cache_dir.ensure() / "locks" / name
        if self.cache_dir.refusal is None:
            try:
                os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600))
                return str(path)
            except OSError as exc:
                if not faults.is_refusal(exc):
                    return str(path)  # filelock says what is wrong (a symlink, ...)
                self.cache_dir.refused(exc, tell=False)
        own = Path(tempfile.gettempdir()) / f"tlautotune-locks-{os.getuid()}"
        with contextlib.suppress(FileExistsError):
            own.mkdir(mode=0o700)
        safety.check_dir(own, "lock directory")
        return str(own / name)
