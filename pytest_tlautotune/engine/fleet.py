"""What one call does with the fleet's shared store (``--tl-store``) after a local miss.

``fetch``: the store's result for the key, saved in the local cache: a signed entry as it is
(with ``TL_AUTOTUNE_STORE_SECRET``), else the fleet's winner compiled, checked against today's
reference and timed here (one config, no search), its record merged with the other machines'
verdicts. ``tuning``: while this process tunes a key it holds the store's lock; a process that
finds the lock held waits for the holder's result instead of tuning the same key. The store
itself only gets, puts, locks and signs (``store.shared``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

from ..model import StoreWarning

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from ..model import Candidate, CandidateRecord, TuneRequest
    from ..param import AutotuneResult
    from ..session import TuneSession

    #: Compile, check and time one candidate alone here: (result, records), or why it failed
    #: (``call.Call.tune_one``).
    TuneOne = Callable[[TuneRequest, Candidate, str], "tuple[AutotuneResult, list[CandidateRecord]] | str"]

POLL_S = 0.25  # how often a waiter looks for the holder's result
MAX_WAIT_S = 3600.0  # a waiter tunes itself after this long, whatever the holder does


def fetch(run: TuneSession, tune_one: TuneOne, req: TuneRequest, cands: list[Candidate], key: str,
          entry: Path) -> AutotuneResult | None:
    """The store's result for ``key`` as an AutotuneResult, saved in the local cache; None on a miss."""
    store = run.store
    doc = store.get_entry(key)
    if doc is None:
        return None
    unpacked = store.unpack_signed(key, entry)
    if unpacked is False:
        return None
    if unpacked:
        result = run.cache.entries.load(entry, req.compile_args)
        if result is not None:
            return result
    return _compile_winner(run, tune_one, req, cands, key, entry, doc)


def _compile_winner(run: TuneSession, tune_one: TuneOne, req: TuneRequest, cands: list[Candidate], key: str,
                    entry: Path, doc: dict) -> AutotuneResult | None:
    """Data only: compile the store's winner here, check it against the reference, time it; the
    other configs keep the verdicts the fleet measured (``reused``)."""
    record = doc.get("record") if isinstance(doc.get("record"), dict) else {}
    remote = [c for c in record.get("candidates") or [] if isinstance(c, dict)]
    winner_ckeys = {c.get("ckey") for c in remote if c.get("config") == doc.get("config")}
    cand = next((c for c in cands if c.ckey and c.ckey in winner_ckeys and not c.error), None)
    if cand is None:
        return None
    tuned = tune_one(req, cand, key)
    if isinstance(tuned, str):
        run.warn(StoreWarning(f"tlautotune store {run.store}: the stored winner of {key[:12]} failed here "
                              f"({tuned}); tuning here"))
        return None
    result, records = tuned
    mine = {**records[0], "index": cand.index}
    merged = [mine if c.get("ckey") == cand.ckey else {**c, "reused": True} for c in remote] or [mine]
    result = replace(result, record={**result.record, "candidates": merged,
                                     "store": {"mode": "data", "tuned_at": record.get("tuned_at"),
                                               "latency_ms": doc.get("latency", {}).get("latency")}})
    try:
        run.cache.entries.save(result, entry)
    except OSError:
        return result
    return run.cache.entries.load(entry, req.compile_args, quarantine=False) or result


@contextlib.contextmanager
def tuning(run: TuneSession, tune_one: TuneOne, notice: Callable[[str], None], req: TuneRequest,
           cands: list[Candidate], key: str, entry: Path) -> Iterator[AutotuneResult | None]:
    """Hold the store's lock on ``key`` while this process tunes it; yields the result when
    another machine's tuning finished while we waited (then nothing is held), else None.
    ``notice``: a progress line worth printing anywhere."""
    store = run.store
    if not store.lockable or run.retune:
        yield None
        return
    lock, fetched, told = None, None, False
    deadline = time.monotonic() + MAX_WAIT_S
    while store.lockable and time.monotonic() < deadline:
        lock = store.lock(key)
        if lock or not store.lockable:
            break
        if store.has_entry(key):
            fetched = fetch(run, tune_one, req, cands, key, entry)
            break
        if not told:
            told = True
            notice("another machine is tuning this key: waiting for its result")
        time.sleep(POLL_S)
    if lock and store.has_entry(key):  # finished between our miss and our lock
        fetched = fetch(run, tune_one, req, cands, key, entry)
    try:
        yield fetched
    finally:
        if lock is not None:
            lock.release()
