"""The plugin's state in ``config.stash`` / ``item.stash``, and the cache outcomes every stage names.

A module of its own (standard library and pytest only) so that the stages below the plugin
(session, gate, report) reach the run's state without importing ``plugin`` back.
"""

from __future__ import annotations

import pytest

session_key = pytest.StashKey["TuneSession"]()
collector_key = pytest.StashKey["object"]()
settings_key = pytest.StashKey["TuneSettings"]()

#: item.stash: the rows of a test's autotune calls (they cross xdist on the report).
RESULTS_KEY = pytest.StashKey[list]()
#: item.stash: row id -> a callable that times that call's winner again in this run (the gate's
#: confirmation of a regression, ``gate.judge``); it returns the row's new numbers.
RETIME_KEY = pytest.StashKey[dict]()
#: config.stash: nodeid -> the last progress message not printed yet (non-TTY).
PENDING_KEY = pytest.StashKey[dict]()
#: config.stash: nodeid -> when its last progress line was written in a log (non-TTY, -v).
LOGGED_AT_KEY = pytest.StashKey[dict]()

#: How an ``autotune(...)`` call got its result.
CACHE_HIT, CACHE_MISS, CACHE_RETUNE = "hit", "miss", "retune"

__all__ = ["CACHE_HIT", "CACHE_MISS", "CACHE_RETUNE", "LOGGED_AT_KEY", "PENDING_KEY", "RESULTS_KEY", "RETIME_KEY",
           "collector_key", "session_key", "settings_key"]
