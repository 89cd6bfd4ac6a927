"""What the user sees: test properties, progress lines, the terminal summary.

Per-test results travel as ``item.user_properties`` (junit XML, xdist) and as a
``tl_results`` attribute on the call report, which xdist serialises to the
controller; only the controller prints the summary and writes files.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest

RESULTS_KEY = pytest.StashKey[list]()
PENDING_KEY = pytest.StashKey[dict]()  # nodeid -> the last progress message not printed yet (non-TTY)
CHECKED, UNCHECKED = "checked", "unchecked"


class QuarantineWarning(pytest.PytestWarning):
    """A stored result failed verification: it was moved to quarantine and tuned again."""


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
        "check": check_kind(req.profile_args),
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
    quarantined = session.cache.quarantined.get(outcome.key) if outcome.key else None
    if quarantined:
        row["quarantined"] = quarantined
        props.append(("tl_quarantined", quarantined))
    item.user_properties.extend(props)
    if quarantined:  # after tuning and saving: under filterwarnings=error the new result is kept
        warnings.warn(QuarantineWarning(f"{item.nodeid}: the stored result {outcome.key[:12]} was corrupt "
                                        f"({quarantined}); moved to quarantine and tuned again"), stacklevel=1)
    row = json.loads(json.dumps(row, default=str))  # plain data: it crosses xdist's execnet
    item.stash.setdefault(RESULTS_KEY, []).append(row)
    return row


def row_id(nodeid: str, call: int) -> str:
    """The id of a test's ``call``-th autotune result (baselines, JSON, summaries key on it)."""
    return nodeid if call == 1 else f"{nodeid}[call {call}]"


def check_kind(profile_args: Any) -> str:
    """``unchecked`` when nothing compares a candidate's output (no ref_prog, no manual_check_prog)."""
    checked = (profile_args.ref_prog is not None or profile_args.manual_check_prog is not None) \
        and not profile_args.skip_check
    return CHECKED if checked else UNCHECKED


def progress_line(config: pytest.Config, nodeid: str, message: str, notice: bool = False) -> None:
    """A line per event on a terminal; silent under -q and in xdist workers.

    Written mid-test, a line breaks pytest's own progress line, which then prints the file name
    again: on a terminal that is worth a live view, in a log (CI, pytester) it is not. There the
    last message waits for the end of the test and is printed under ``-v`` only (``flush_progress``).
    """
    if hasattr(config, "workerinput") or config.get_verbosity() < 0:
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    if reporter.isatty or notice:  # a notice (waiting for another machine) is worth a line anywhere
        reporter.write_line(f"[tlautotune] {nodeid}: {message}")
    else:
        config.stash.setdefault(PENDING_KEY, {})[nodeid] = message


def flush_progress(config: pytest.Config, nodeid: str) -> None:
    """After pytest's line for ``nodeid``: its last progress message, under ``-v`` (non-TTY only)."""
    message = config.stash.get(PENDING_KEY, {}).pop(nodeid, None)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if message and reporter is not None and config.get_verbosity() > 0:
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
            f"{row['n_passed']}/{row['n_measured']}" + (" unchecked" if row.get("check") == UNCHECKED else ""),
        ))
    widths = [max(len(str(r[i])) for r in table) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    for row in rows:
        if row.get("quarantined"):
            lines.append(f"  {row['nodeid']}: the stored result was corrupt and tuned again: {row['quarantined']}")
    if verbose > 0:
        for row in rows:
            if row.get("check") == UNCHECKED:
                lines.append(f"  {row['nodeid']}: unchecked: no ref_prog or manual_check_prog (or skip_check), "
                             f"so candidates were timed without checking their output")
            failed = [c for c in row["candidates"] if c["status"] != "ok"]
            name = row.get("id", row["nodeid"])
            for c in failed:
                again = " (verdict reused from an earlier run)" if c.get("reused") else ""
                lines.append(f"  {name} {canonical_json(c['config'])}: {c['status']}: {c['reason']}{again}")
            reused = sum(1 for c in row["candidates"] if c.get("reused"))
            if reused and row["cache"] != "hit":
                lines.append(f"  {name}: {reused} of {len(row['candidates'])} verdicts reused from earlier "
                             f"runs (same kernel IR, reference code and machine); --tl-retune measures them again")
    return lines


def to_json(rows: list[dict]) -> str:
    return json.dumps({"tests": rows}, indent=1, default=str)
