"""The verdicts of one tuning: one record per config, kept here and in the store.

A stored verdict is reused where it still holds (:meth:`RecordBook.stored`); every new one is
written to the store and counted in the progress line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..model import REUSABLE_FAILURES, Candidate, CandidateRecord, Status, TuneRequest

if TYPE_CHECKING:
    from ..store.records import Records


class RecordBook:
    """``records`` maps a config's index to its record."""

    def __init__(self, req: TuneRequest, store: Records, reuse: bool = True,
                 progress: Callable[[str], None] | None = None):
        self.req = req
        self.store = store
        self.reuse = reuse
        self.progress = progress or (lambda msg: None)
        self.records: dict[int, CandidateRecord] = {}

    def best_ms(self) -> float | None:
        return min((r["median_ms"] for r in self.records.values() if r["status"] == Status.OK), default=None)

    def in_order(self) -> list[CandidateRecord]:
        """The records in config order."""
        return [self.records[i] for i in sorted(self.records)]

    def results(self) -> dict[int, float | None]:
        """What the search learns of each measured config: its median (an early-stopped one's from
        its first samples: it ran, slow), or None where it failed."""
        ran = (Status.OK, Status.EARLY_STOP)
        return {i: r.get("median_ms") if r["status"] in ran else None for i, r in self.records.items()}

    def stored(self, cand: Candidate, vs: str | None, kernel_ok: Callable[[Candidate], bool]) -> dict | None:
        """The store's verdict on ``cand`` where it stands (None: measure it). ``vs``: the reference
        the verdict must have been given against; ``kernel_ok``: whether its compiled kernel is there."""
        if not self.reuse:
            return None
        old = self.store.read(cand.ckey)
        # Verdicts about the kernel itself stand; compile errors, crashes and timeouts may
        # come from the environment, so they are tried again. A pass needs its kernel. A
        # record without ``compared`` was made by a check that did not compare in-place
        # results: measured again; one checked against another reference config too.
        status = old.get("status") if old and "compared" in old and old.get("vs") == vs else None
        if status in REUSABLE_FAILURES or (status == Status.OK and kernel_ok(cand)):
            return old
        return None

    def add(self, cand: Candidate, fields: dict, store: bool = True) -> None:
        """Record ``fields`` as ``cand``'s verdict; ``store``: write it to the store too."""
        record = {"ckey": cand.ckey, "index": cand.index, "config": cand.config, "reason": None, **fields}
        record["index"], record["config"] = cand.index, cand.config
        self.records[cand.index] = record
        if store and cand.ckey:
            self.store.write(record)
        n_ok = sum(r["status"] == Status.OK for r in self.records.values())
        best = self.best_ms()
        self.progress(
            f"{len(self.records)}/{len(self.req.configs)} measured, {n_ok} passed"
            + (f", best {best:.4g} ms" if best is not None else "")
        )
