"""The files a run reads and writes: the baseline (--tl-baseline, --tl-save-baseline), --tl-json,
--tl-markdown."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from ..gate import (
    BASELINE_FORMAT,
    FAIL,
    IMPROVED,
    PASS,
    SKIPPED,
    UNDETECTABLE,
    baseline_document,
    check_baseline,
    ms_text,
    row_ids,
)
from ..model import RowStatus
from ..settings import get_option
from ..store.files import atomic_write
from .rows import SPEEDUP_LEGEND, canonical_json, first_line


def load_baseline(path: str) -> dict:
    """Read a baseline file; raise ValueError with a sentence when it is not one."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"baseline file {path} does not exist; write one with --tl-save-baseline {path}") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"baseline file {path} is unreadable: {exc}") from None
    return check_baseline(data, path)


def dump_readable(obj: object, indent: int = 0) -> str:
    """JSON with two-space indentation but lists of numbers on one line: diffable and short."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(str(k))}: {dump_readable(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(obj, list) and obj and not all(isinstance(v, (int, float)) for v in obj):
        return "[\n" + ",\n".join(f"{inner}{dump_readable(v, indent + 1)}" for v in obj) + f"\n{pad}]"
    return json.dumps(obj, default=str)


def json_document(config: pytest.Config, rows: list[dict], notes: Sequence[str] = ()) -> dict:
    """Everything: options, every row (samples, candidates, machine, or why it failed), its gate
    decision, and the gate's notes on the whole run."""
    return {
        "format": BASELINE_FORMAT,
        "tool": "pytest-tlautotune",
        "baseline": get_option(config, "tl_baseline"),
        "gate_metric": get_option(config, "tl_gate_metric"),
        "max_regression_pct": get_option(config, "tl_max_regression"),
        "alpha": get_option(config, "tl_alpha"),
        "notes": list(notes),
        "tests": [{"id": rid, **row} for rid, row in zip(row_ids(rows), rows, strict=True)],
    }


def markdown_lines(rows: list[dict], notes: Sequence[str] = ()) -> list[str]:
    """A Markdown table of results (and gate decisions when there are any); a failed call's row
    says so and why, and the gate's notes on the whole run follow the table."""
    gated = any("gate" in r for r in rows)
    trends = any(r.get("trend") for r in rows)
    header = ["test", "config", "latency", "ref", "speedup", "cache"]
    if gated:
        header += ["baseline", "change [CI]", "p", "gate"]
    if trends:
        header.append("trend (run medians)")
    lines = ["### tlautotune", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rid, row in sorted(zip(row_ids(rows), rows, strict=True)):
        if row.get("status") == RowStatus.FAILED:
            why = first_line(row.get("reason")).replace("<", "&lt;").replace(">", "&gt;")  # `<lambda>` is no tag
            cells = [f"`{rid}`", f"❌ tuning failed: {why}", "-", "-", "-", "failed"]
        else:
            speedup = row.get("speedup")
            cells = [f"`{rid}`", f"`{canonical_json(row.get('config'))}`", ms_text(row.get("latency_ms")),
                     ms_text(row.get("ref_latency_ms")), "-" if speedup is None else f"{speedup:.2f}x",
                     str(row.get("cache"))]
        if gated:
            d = row.get("gate") or {}
            status = d.get("status", "-")
            icon = {FAIL: "❌ ", IMPROVED: "🚀 ", PASS: "✅ ", SKIPPED: "⚠️ ", UNDETECTABLE: "〰️ "}.get(status, "")
            cells += [ms_text(d.get("baseline_ms")), change_text(d), p_text(d), f"{icon}{status}"
                      + (f" ({d['reason']})" if d.get("reason") and status != PASS else "")]
        if trends:
            cells.append(row.get("trend") or "-")
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if any(row.get("speedup") is not None for row in rows):
        lines += ["", SPEEDUP_LEGEND]
    lines += [f"\n**Warning:** tlautotune gate: {note}" for note in notes]
    return lines


def change_text(d: dict) -> str:
    if d.get("regression_pct") is None:
        return "-"
    lo, hi = d["ratio_ci"]
    return f"{d['regression_pct']:+.1f}% [{(lo - 1) * 100:+.1f}, {(hi - 1) * 100:+.1f}]"


def p_text(d: dict) -> str:
    return "-" if d.get("p_value") is None else f"{d['p_value']:.2g}"


def write_files(config: pytest.Config, rows: list[dict], notes: Sequence[str] = ()) -> None:
    """On the controller: write the baseline, JSON and Markdown files asked for (``notes``: the
    gate's notes on the whole run)."""
    if not rows:
        return
    outputs = []
    save = get_option(config, "tl_save_baseline")
    # A baseline keeps tuned rows only: with none, the file (or its absence) stays as it was.
    if save and any(row.get("status") != RowStatus.FAILED for row in rows):
        try:
            old = load_baseline(save) if Path(save).exists() else None
        except ValueError:
            old = None  # an unreadable old file is replaced, not merged
        outputs.append((save, lambda: dump_readable(baseline_document(rows, old)) + "\n", "w"))
    if get_option(config, "tl_json"):
        outputs.append((get_option(config, "tl_json"),
                        lambda: json.dumps(json_document(config, rows, notes), indent=1, default=str) + "\n", "w"))
    md = get_option(config, "tl_markdown")
    if md:
        # GitHub's step summary collects every writer of the step: append there, replace elsewhere.
        mode = "a" if md == os.environ.get("GITHUB_STEP_SUMMARY") else "w"
        outputs.append((md, lambda: "\n".join(markdown_lines(rows, notes)) + "\n\n", mode))
    for path, render, mode in outputs:
        try:
            if mode == "a":
                with open(path, "a") as f:
                    f.write(render())
            else:
                atomic_write(path, render(), mkdir=True)
        except OSError as exc:  # a report file is never worth a crash
            _report_problem(config, f"tlautotune: could not write {path}: {exc}")


def _report_problem(config: pytest.Config, message: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(message, yellow=True)
