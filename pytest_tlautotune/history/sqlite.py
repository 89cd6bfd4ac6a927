"""The history in an SQLite file (the default backend): one table, one row per result row.

Each run's rows go in one transaction (``BEGIN IMMEDIATE``: writers queue on SQLite's lock for
up to ``timeout`` seconds instead of failing), so two pytest processes or CI jobs appending at
once both land whole. A file that is not a readable database (truncated, overwritten) raises
:class:`HistoryError`; ``append`` then moves it aside (``<file>.corrupt-<time>``, kept for the
user) and starts a new history, so the next runs are recorded again.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time

from . import HistoryError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    test TEXT NOT NULL,
    date REAL NOT NULL,
    machine TEXT,
    run TEXT,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_test_date ON runs (test, date);
"""


class SQLiteHistory:
    def __init__(self, path: str, timeout: float = 3.0):
        self.path, self.url, self.timeout = path, f"sqlite:///{path}", max(timeout, 30.0)

    def _connect(self, create: bool) -> sqlite3.Connection:
        if not create and not os.path.exists(self.path):
            raise HistoryError(f"history file {self.path} does not exist")
        if create:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        try:
            con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        except sqlite3.DatabaseError as exc:
            raise HistoryError(f"history file {self.path} is not a readable history ({exc})") from None
        try:
            con.executescript(_SCHEMA) if create else con.execute("SELECT 1 FROM runs LIMIT 1")
        except sqlite3.DatabaseError as exc:
            # Closed here: Python 3.13 warns of an unclosed connection (a ResourceWarning, an error
            # under -W error), and the test the history was read for would fail for it.
            con.close()
            raise HistoryError(f"history file {self.path} is not a readable history ({exc})") from None
        return con

    def append(self, rows: list[dict]) -> None:
        if not rows:
            return
        try:
            con = self._connect(create=True)
        except HistoryError:
            if not os.path.exists(self.path):
                raise
            aside = f"{self.path}.corrupt-{int(time.time())}"
            os.replace(self.path, aside)
            con = self._connect(create=True)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.executemany("INSERT INTO runs (test, date, machine, run, data) VALUES (?, ?, ?, ?, ?)",
                            [(r["test"], r["date"], r["machine"], r["run"], json.dumps(r, sort_keys=True))
                             for r in rows])
            con.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise HistoryError(f"could not append to the history file {self.path} ({exc})") from None
        finally:
            con.close()

    def read(self, test: str | None = None, since: float | None = None) -> list[dict]:
        con = self._connect(create=False)
        try:
            query, args = "SELECT data FROM runs WHERE date >= ?", [since or 0.0]
            if test is not None:
                query += " AND test = ?"
                args.append(test)
            rows = con.execute(query + " ORDER BY date, id", args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise HistoryError(f"history file {self.path} is not a readable history ({exc})") from None
        finally:
            con.close()
        return [json.loads(data) for (data,) in rows]

    def close(self) -> None:
        pass
