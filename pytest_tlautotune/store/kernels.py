"""Where one config's compiled kernel is: ``kernels/<ckey>/`` in the cache, or where this run kept it.

A compile worker writes the kernel itself (``engine/compile_job.py``); when the cache refuses it,
the worker keeps it in the scratch directory instead and says where (:meth:`Kernels.kept_at`).
"""

from __future__ import annotations

import os
from pathlib import Path

from .cache_dir import CacheDir


class Kernels:
    """The compiled kernels of the configs, by candidate key."""

    def __init__(self, cache_dir: CacheDir):
        self.cache_dir = cache_dir
        self._kept: dict[str, Path] = {}  # ckey -> where a compile worker kept its kernel instead

    def path(self, ckey: str) -> Path:
        """Where one config's compiled kernel is: in the cache, or where this run kept it
        when the cache refused it (:meth:`kept_at`; new ones go to :meth:`fallback`)."""
        kept = self._kept.get(ckey)
        if kept is not None:
            return kept
        own = self.cache_dir.ensure() / "kernels" / ckey
        if self.cache_dir.refusal is not None and not os.path.isdir(own):
            return self.fallback(ckey)
        return own

    def fallback(self, ckey: str) -> Path:
        """Where a compile worker keeps a kernel that the cache refuses (in the scratch dir)."""
        return self.cache_dir.scratch / f"kernel-{ckey}"

    def kept_at(self, ckey: str, path: Path, exc: OSError) -> None:
        """A compile worker kept ``ckey``'s kernel at ``path``: the cache refused it with ``exc``."""
        self._kept[ckey] = Path(path)
        self.cache_dir.refused(exc)
