"""A pytest plugin for the benchmarks: when each stage of a run happened.

    TL_T0=$(date +%s.%N) python -m pytest -p benchmarks.timeline_plugin ...

Prints one line ``TIMELINE {...}`` on stderr at exit: seconds since ``TL_T0`` (the
moment the caller started the process) at plugin load, configure, collection
finish, each test's start and end, session finish and interpreter exit.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import time

T0 = float(os.environ.get("TL_T0", time.time()))
MARKS: dict[str, float] = {"plugin_loaded": time.time() - T0}


def _mark(name: str) -> None:
    MARKS.setdefault(name, round(time.time() - T0, 3))


def pytest_configure(config) -> None:
    _mark("configure")


def pytest_collection_finish(session) -> None:
    _mark("collection_finish")


def pytest_runtest_logstart(nodeid, location) -> None:
    _mark("first_test_start")


def pytest_runtest_logfinish(nodeid, location) -> None:
    MARKS["last_test_end"] = round(time.time() - T0, 3)


def pytest_sessionfinish(session) -> None:
    _mark("session_finish")


def pytest_unconfigure(config) -> None:
    _mark("unconfigure")


@atexit.register
def _print() -> None:
    _mark("exit")
    sys.stderr.write("TIMELINE " + json.dumps(MARKS) + "\n")
