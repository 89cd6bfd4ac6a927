"""Performance over time: every run's result rows appended to a history store, read back to
judge a test against its recent best, to find the run where its level stepped, and to plot it.

``open_history(url)`` picks the backend by URL: an SQLite file (``sqlite:///path`` or a bare
path, the default) or Redis (``redis://`` / ``rediss://``, the server ``--tl-store`` uses). A
backend is transport only (``append``, ``read``); what a history row holds is :func:`entry`'s,
and what it means is ``trend.py``'s (pure). Writes are one transaction per run, so a run's rows
land together or not at all; concurrent writers (CI jobs, pytest processes) never lose a row.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
from typing import Protocol

#: The fields of a row's machine fingerprint that name the hardware (software versions are left
#: out on purpose: a new TileLang that slows a kernel is a step in its history, not a new machine).
HARDWARE_FIELDS = ("device_kind", "device", "capability", "machine", "cores")


class HistoryError(Exception):
    """The history cannot be read or written (unreachable, corrupt, unsupported URL)."""


class History(Protocol):
    """A backend: a place rows are appended to and read back from."""

    url: str

    def append(self, rows: list[dict]) -> None:
        """Append one run's rows, all or none."""

    def read(self, test: str | None = None, since: float | None = None) -> list[dict]:
        """Rows (oldest first), of one test id or all, dated ``since`` or later."""

    def close(self) -> None:
        """Release the connection."""


def open_history(url: str, timeout: float = 3.0) -> History:
    """The backend for ``url``: ``redis://``/``rediss://`` Redis, else an SQLite file
    (``sqlite:///abs/path``, ``sqlite:///rel/path`` or a bare path)."""
    if url.startswith(("redis://", "rediss://")):
        from .redis import RedisHistory

        return RedisHistory(url, timeout)
    if "://" in url and not url.startswith("sqlite://"):
        raise HistoryError(f"history URL {url!r} is not supported: give a file path, sqlite:///path or redis://...")
    from .sqlite import SQLiteHistory

    return SQLiteHistory(sqlite_path(url), timeout)


def sqlite_path(url: str) -> str:
    """The file of an SQLite history URL (``sqlite:///x`` is ``x``, ``sqlite:////abs`` is ``/abs``)."""
    path = url[len("sqlite:///"):] if url.startswith("sqlite:///") else url
    return os.path.abspath(os.path.expanduser(path))


def machine_id(machine: dict | None) -> str:
    """A short, stable id of the hardware a row was measured on."""
    hardware = {k: (machine or {}).get(k) for k in HARDWARE_FIELDS}
    return hashlib.sha256(json.dumps(hardware, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RunContext:
    """What a run knows about itself: when, which commit and branch (from git, where present)."""

    run_id: str
    date: float
    commit: str | None
    branch: str | None


def run_context(cwd: str) -> RunContext:
    """This run's context; commit and branch from ``git`` in ``cwd`` when it is a checkout
    (CI variables first: a detached checkout knows its branch only from them)."""
    now = time.time()
    commit = os.environ.get("GITHUB_SHA") or os.environ.get("CI_COMMIT_SHA") or _git(cwd, "rev-parse", "HEAD")
    branch = (os.environ.get("GITHUB_HEAD_REF") or os.environ.get("GITHUB_REF_NAME")
              or os.environ.get("CI_COMMIT_REF_NAME") or _git(cwd, "rev-parse", "--abbrev-ref", "HEAD"))
    if branch == "HEAD":
        branch = None
    run_id = hashlib.sha256(f"{now}-{os.getpid()}-{os.urandom(8).hex()}".encode()).hexdigest()[:16]
    return RunContext(run_id, now, commit, branch)


def _git(cwd: str, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def entry(row: dict, run: RunContext) -> dict:
    """What the history keeps of one result row (a row that failed to tune has no numbers, and
    is kept with its status so a test's history shows when it broke)."""
    samples = [round(float(s), 6) for s in row.get("samples") or []]
    return {
        "test": row.get("id") or row.get("nodeid"),
        "program": row.get("program"),
        "config": row.get("config"),
        "status": row.get("status", "ok"),
        "latency_ms": _r(row.get("latency_ms")),
        "samples": samples,
        "ref_latency_ms": _r(row.get("ref_latency_ms")),
        "ref_samples": [round(float(s), 6) for s in row.get("ref_samples") or []],
        "measured": row.get("measured"),
        "host_ms": _r(row.get("host_ms")),
        "tflops": _r(row.get("tflops")),
        "gbps": _r(row.get("gbps")),
        "device": row.get("device"),
        "device_name": row.get("device_name"),
        "machine": machine_id(row.get("machine")),
        "machine_info": row.get("machine"),
        "cache": row.get("cache"),
        "run": run.run_id,
        "date": run.date,
        "commit": run.commit,
        "branch": run.branch,
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 6)
