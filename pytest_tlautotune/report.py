"""What the user sees: test properties, progress lines, the terminal summary.

Per-test results travel as ``item.user_properties`` (junit XML, xdist) and as a
``tl_results`` attribute on the call report, which xdist serialises to the
controller; only the controller prints the summary and writes files.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

RESULTS_KEY = pytest.StashKey[list]()


def canonical_json(value: Any) -> str:
    """``key.canonical_json``, imported on use (``key`` loads hashlib; ``--help`` needs none of it)."""
    from .key import canonical_json as dump

    return dump(value)


def _median(samples: Any) -> float | None:
    import statistics

    return statistics.median(samples) if samples else None


def record_outcome(item: pytest.Item, req: Any, outcome: Any, settings: Any, session: Any) -> dict:
    """Store one fixture call's outcome as user properties and as a row for the summary.

    Every call of the fixture in a test is its own row: the first is known by the test's
    node id, the n-th by ``<nodeid>[call n]`` (stable while the test calls in the same order).
    """
    result = outcome.result
    records = outcome.records or []
    call = len(item.stash.get(RESULTS_KEY, [])) + 1
    row = {
        "id": row_id(item.nodeid, call),
        "call": call,
        "nodeid": item.nodeid,
        "program": req.program_name,
        "config": result.config,
        "latency_ms": result.latency,
        "ref_latency_ms": result.ref_latency,
        "speedup": (result.ref_latency / result.latency) if result.ref_latency and result.latency else None,
        "cache": outcome.cache,
        "tuning_s": outcome.tuning_s,
        "key": outcome.key,
        "device": req.device,
        "device_name": result.record.get("device_info", {}).get("device") or session.machine(
            req.device_kind).get("device"),
        "machine": session.machine(req.device_kind),
        "n_configs": len(req.configs),
        "n_measured": len(records),
        "n_passed": sum(r.get("status") == "ok" for r in records),
        "samples": list(result.samples),
        "loops": result.record.get("loops"),  # calls per sample, when this run re-timed the winner
        "ref_samples": list(result.ref_samples),
        "candidates": [
            {k: r.get(k) for k in ("config", "status", "reason", "median_ms", "compile_s", "reused")}
            for r in records
        ],
    }
    props = [
        ("tl_id", row["id"]),  # which call the properties after it belong to
        ("tl_latency_ms", result.latency),
        ("tl_config", canonical_json(result.config)),
        ("tl_cache", outcome.cache),
        ("tl_tuning_s", round(outcome.tuning_s, 3)),
    ]
    if result.ref_latency is not None:
        props.insert(2, ("tl_ref_latency_ms", result.ref_latency))
    item.user_properties.extend(props)
    row = json.loads(json.dumps(row, default=str))  # plain data: it crosses xdist's execnet
    item.stash.setdefault(RESULTS_KEY, []).append(row)
    return row


def row_id(nodeid: str, call: int) -> str:
    """The id of a test's ``call``-th autotune result (baselines, JSON, summaries key on it)."""
    return nodeid if call == 1 else f"{nodeid}[call {call}]"


def progress_line(config: pytest.Config, nodeid: str, message: str) -> None:
    """One progress line per event through the terminal reporter; silent under -q and in xdist workers."""
    if hasattr(config, "workerinput") or config.get_verbosity() < 0:
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    reporter.write_line(f"[tlautotune] {nodeid}: {message}")


def _fmt(value: float | None, spec: str = ".4g", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def summary_lines(rows: list[dict], verbose: int = 0) -> list[str]:
    """The terminal summary table, grouped by file and sorted by test id."""
    header = ("test", "config", "latency", "ref", "speedup", "cache", "tuning", "passed")
    table = [header]
    for row in sorted(rows, key=lambda r: (r["nodeid"], r.get("call", 1))):
        table.append((
            row.get("id", row["nodeid"]),
            canonical_json(row["config"]),
            _fmt(row["latency_ms"], suffix=" ms"),
            _fmt(row["ref_latency_ms"], suffix=" ms"),
            _fmt(row["speedup"], ".2f", "x"),
            row["cache"],
            _fmt(row["tuning_s"], ".1f", " s"),
            f"{row['n_passed']}/{row['n_measured']}",
        ))
    widths = [max(len(str(r[i])) for r in table) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    if verbose > 0:
        for row in rows:
            failed = [c for c in row["candidates"] if c["status"] != "ok"]
            name = row.get("id", row["nodeid"])
            for c in failed:
                lines.append(f"  {name} {canonical_json(c['config'])}: {c['status']}: {c['reason']}")
    return lines


def to_json(rows: list[dict]) -> str:
    return json.dumps({"tests": rows}, indent=1, default=str)
