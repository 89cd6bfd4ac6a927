"""A pytest plugin for the benchmarks: where a test's time goes inside the plugin's fixture.

    TL_HIT_PROFILE=1 python -m pytest -p benchmarks.hit_profile_plugin ...

Wraps the stages of ``call.tune`` (request, fast key, the warm path's whole hit and, of it,
the rebuild of the winner in the timing worker and the load (the rest: the rebuild here and the
wait for the check), the machine facts, the test's row) with wall-clock timers, without changing
what they do, and prints one line ``HITPROFILE {...}`` on stderr at exit: seconds per stage
(summed over calls) and the fixture's setup and call times.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import sys
import time

TIMES: dict[str, float] = {}


def _timed(owner: object, name: str, label: str) -> None:
    inner = getattr(owner, name)

    @functools.wraps(inner)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            TIMES[label] = round(TIMES.get(label, 0.0) + time.perf_counter() - t0, 4)

    setattr(owner, name, wrapper)


def pytest_configure(config) -> None:
    if not os.environ.get("TL_HIT_PROFILE"):
        return
    from pytest_tlautotune import session
    from pytest_tlautotune.engine import builder, call, key, programs
    from pytest_tlautotune.report import rows
    from pytest_tlautotune.store import entries, records

    _timed(call, "tune", "tune")
    _timed(call, "_request", "request")  # the program resolved too
    _timed(call, "_fast_key", "fast_key")
    _timed(call, "_fast_hit", "fast_hit")  # the rebuilds (worker, here), the load, the check
    _timed(builder.Builder, "winner", "rebuild_winner_in_worker")
    _timed(session.TuneSession, "machine", "machine")
    _timed(call, "_remeasure", "remeasure")
    _timed(call, "resolve_target", "resolve_target")
    _timed(key, "file_digests", "file_digests")
    _timed(entries.Entries, "load", "load")
    _timed(records.Index, "read", "read_index")
    _timed(rows, "record_outcome", "record_outcome")
    _timed(programs, "user_kernel", "user_kernel")
    _timed(programs, "resolve", "resolve_program")


def pytest_runtest_logreport(report) -> None:
    TIMES[f"pytest_{report.when}"] = round(TIMES.get(f"pytest_{report.when}", 0.0) + report.duration, 4)


@atexit.register
def _report() -> None:
    if TIMES:
        print("HITPROFILE " + json.dumps(TIMES), file=sys.stderr, flush=True)
