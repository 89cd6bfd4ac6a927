"""The terminal: one table helper, progress lines, the summary and the gate's table."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

import pytest

from ..gate import ms_text, row_ids
from ..model import RowStatus, Status, cut_text
from ..stash import CACHE_HIT, LOGGED_AT_KEY, PENDING_KEY
from .files import change_text, p_text
from .rows import SPEEDUP_LEGEND, UNCHECKED, VS, canonical_json, first_line


def text_table(rows: Sequence[Sequence[object]]) -> list[str]:
    """Columns padded to their widest cell, two spaces apart, no trailing blanks."""
    if not rows:
        return []
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


#: Seconds between progress lines of one long tuning in a log (non-TTY output, ``-v``).
LOG_EVERY_S = 60.0


def progress_line(config: pytest.Config, nodeid: str, message: str, notice: bool = False) -> None:
    """A line per event on a terminal; silent under -q and in xdist workers.

    Written mid-test, a line breaks pytest's own progress line, which then prints the file name
    again: on a terminal that is worth a live view, in a log (CI, pytester) it is not. There the
    last message waits for the end of the test and is printed under ``-v`` only (``flush_progress``),
    except that a long tuning writes a line every ``LOG_EVERY_S`` under ``-v``, so a log shows
    where a tuning that takes minutes stands.
    """
    if hasattr(config, "workerinput") or config.get_verbosity() < 0:
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    if reporter.isatty or notice:  # a notice (waiting for another machine) is worth a line anywhere
        _write_now(config, reporter, f"[tlautotune] {nodeid}: {message}")
    else:
        config.stash.setdefault(PENDING_KEY, {})[nodeid] = message
        if config.get_verbosity() > 0:
            now = time.monotonic()
            last = config.stash.setdefault(LOGGED_AT_KEY, {}).setdefault(nodeid, now)
            if now - last >= LOG_EVERY_S:
                config.stash[LOGGED_AT_KEY][nodeid] = now
                _write_now(config, reporter, f"[tlautotune] {nodeid}: (still tuning) {message}")


def _write_now(config: pytest.Config, reporter: pytest.TerminalReporter, line: str) -> None:
    """A line mid-test, past pytest's output capture (as pytest's live logging writes)."""
    capman = config.pluginmanager.get_plugin("capturemanager")
    with capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext():
        reporter.write_line(line)


def flush_progress(config: pytest.Config, nodeid: str) -> None:
    """After pytest's line for ``nodeid``: its last progress message, under ``-v`` (non-TTY only)."""
    message = config.stash.get(PENDING_KEY, {}).pop(nodeid, None)
    config.stash.get(LOGGED_AT_KEY, {}).pop(nodeid, None)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if message and reporter is not None and config.get_verbosity() > 0:
        reporter.write_line(f"[tlautotune] {nodeid}: {message}")


def _fmt(value: float | None, spec: str = ".4g", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _cells(row: dict) -> tuple:
    """One row of the summary table; a failed call shows where it stood and ``failed``."""
    passed = f"{row.get('n_passed', 0)}/{row.get('n_measured', 0)}"
    if row.get("status") == RowStatus.FAILED:
        return (row.get("id", row["nodeid"]), "-", "-", "-", "-", "failed", _fmt(row.get("tuning_s"), ".1f", " s"),
                passed)
    return (
        row.get("id", row["nodeid"]),
        cut_text(canonical_json(row["config"]), 120),
        _fmt(row["latency_ms"], suffix=" ms"),
        _fmt(row["ref_latency_ms"], suffix=" ms"),
        _fmt(row["speedup"], ".2f", "x"),
        row["cache"],
        _fmt(row["tuning_s"], ".1f", " s"),
        passed + _check_text(row.get("check")),
    )


def summary_lines(rows: list[dict], verbose: int = 0) -> list[str]:
    """The terminal summary table, grouped by file and sorted by test id, and what it cannot hold:
    why a call failed, a quarantined result; under ``-v`` each failed candidate's reason."""
    header = ("test", "config", "latency", "ref", "speedup", "cache", "tuning", "passed")
    ordered = sorted(rows, key=lambda r: (r["nodeid"], r.get("call", 1)))
    lines = text_table([header] + [_cells(row) for row in ordered])
    if any(row.get("speedup") is not None for row in rows):
        lines.append(SPEEDUP_LEGEND)
    for row in ordered:
        name = row.get("id", row["nodeid"])
        work = [f"{row[k]:.4g} {unit}" for k, unit in (("tflops", "TFLOP/s"), ("gbps", "GB/s")) if row.get(k)]
        errors = [row[k] for k in ("tflops_error", "gbps_error") if row.get(k)]
        if work or errors:
            lines.append(f"  {name}: " + ", ".join(work + errors))
        if row.get("status") == RowStatus.FAILED:
            lines.append(f"  {name}: tuning failed: {first_line(row.get('reason'))}")
        builds = row.get("builds")
        if builds and row["cache"] != CACHE_HIT:
            unbuilt = builds["configs"] - builds["built"]
            why = ("max_tuning_s ran out" if builds.get("stopped_by", "max_tuning_s") == "max_tuning_s"
                   else "the search asked for no more")
            lines.append(f"  {name}: {unbuilt} of {builds['configs']} configs never built ({why})")
        if row.get("quarantined"):
            lines.append(f"  {name}: the stored result was corrupt and tuned again: {row['quarantined']}")
        if row.get("stale"):
            lines.append(f"  {name}: the stored result was not served and was tuned again: "
                         f"{row['stale']}")
    if verbose > 0:
        for row in ordered:
            name = row.get("id", row["nodeid"])
            if row.get("check") == UNCHECKED:
                why = row.get("unchecked_why") or "no ref_prog or manual_check_prog (or skip_check), so candidates " \
                                                  "were timed without checking their output"
                lines.append(f"  {name}: unchecked: {why}")
            failed = [c for c in row["candidates"] if c["status"] != Status.OK]
            for c in failed:
                again = " (verdict reused from an earlier run)" if c.get("reused") else ""
                lines.append(f"  {name} {cut_text(canonical_json(c['config']))}: {c['status']}: {c['reason']}{again}")
            reused = sum(1 for c in row["candidates"] if c.get("reused"))
            if reused and row["cache"] != CACHE_HIT:
                lines.append(f"  {name}: {reused} of {len(row['candidates'])} verdicts reused from earlier "
                             f"runs (same kernel IR, reference code and machine); --tl-retune measures them again")
    return lines


def _check_text(check: str | None) -> str:
    """What the passed column adds: ``unchecked``, or ``vs <config>`` (checked against a reference config)."""
    if check == UNCHECKED or (check or "").startswith(VS):
        return f" {check}"
    return ""


def gate_lines(rows: list[dict]) -> list[str]:
    """The terminal table of gate decisions (empty without --tl-baseline)."""
    gated = [(rid, r) for rid, r in zip(row_ids(rows), rows, strict=True) if "gate" in r]
    if not gated:
        return []
    table = [("test", "metric", "baseline", "now", "change [CI]", "p", "gate")]
    notes = []
    for rid, row in sorted(gated):
        d = row["gate"]
        table.append((rid, d["metric"], ms_text(d["baseline_ms"]), ms_text(d["now_ms"]), change_text(d), p_text(d),
                      d["status"]))
        if d.get("reason"):
            notes.append(f"  {rid}: {d['status']}: {d['reason']}")
    lines = text_table(table)
    level = gated[0][1]["gate"].get("ci_level", 0.99)
    lines.append(f"change = median ratio now/baseline - 1, [{level:.0%} bootstrap CI]; p = one-sided Mann-Whitney U")
    return lines + notes
