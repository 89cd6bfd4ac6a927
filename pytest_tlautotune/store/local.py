"""The local store: one cache directory, and the parts that own what lies in it.

Layout under the cache root (created 0700 on first write)::

    entries/<key>/            one tuned result (Entries.save, AutotuneResult.save_to_disk)
    candidates/<ckey>.json    the record of one config: status, reason, samples (Records)
    kernels/<ckey>/           the compiled artifacts of one config (Kernels)
    index/<fast>.json         program + args + settings -> key, and the digests of the files
                              its builds read (a hit skips building PrimFuncs) (Index)
    locks/<key>.lock          one tuner per key across processes (Locks)
    locks/device-<dev>.lock   one process times kernels on a device at a time (Locks)
    quarantine/               entries that failed verification, moved aside (Entries)

Read and write failures of records become warnings, never a crash. A filesystem that refuses
writes (full, read-only, not the user's to write: ``faults.py``) is said once, as a warning;
stored results are still served, and this run's kernels are kept in a temporary directory
(``CacheDir.scratch``, removed by :meth:`Store.close`) so every config is measured all the same.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .cache_dir import CacheDir
from .entries import Entries
from .kernels import Kernels
from .locks import Locks
from .records import Index, Records


class Store:
    """One cache root and its parts: ``entries``, ``records``, ``index``, ``kernels``, ``locks``,
    all over one :class:`CacheDir` (``cache_dir``: created on first use; whether it takes writes)."""

    def __init__(self, root: str | os.PathLike, remote_record: Callable[[str], dict | None] | None = None,
                 make_result: Callable[..., Any] | None = None, warn: Callable[[Warning], None] | None = None):
        self.cache_dir = CacheDir(root, warn)
        self.locks = Locks(self.cache_dir)
        self.kernels = Kernels(self.cache_dir)
        # A record missing here is asked of the shared store (remote.py): verdicts measured on
        # an identical machine are reused like local ones.
        self.records = Records(self.cache_dir, remote_record)
        self.index = Index(self.cache_dir)
        # ``make_result``: what a loaded entry becomes (the seed's AutotuneResult, param.py, above us).
        self.entries = Entries(self.cache_dir, self.locks, make_result)

    def close(self) -> None:
        """Remove the scratch directory of this run's kernels (a refused cache's stand-in)."""
        self.cache_dir.close()
