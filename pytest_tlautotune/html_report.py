"""``--tl-report DIR``: one self-contained HTML page of every tuned test.

The page (``DIR/index.html``) needs no network and no other file: CSS is
inline and each plot is a base64 PNG drawn with matplotlib's Agg canvas.
matplotlib is an optional extra (``pip install pytest-tlautotune[report]``);
without it the page has the same tables and a note instead of plots.

Only the controller writes the page, from ``Collector.rows`` (see
``report.record_outcome``), after the gate has added its keys to the rows.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import pytest

REPORT_FILE = "index.html"
MAX_PLOT_ROWS = 40  # more bars than this are unreadable; the table still lists every candidate
# Row keys that report.record_outcome writes; the gate's keys and any unknown ones get tables of their own.
BASE_KEYS = frozenset({
    "id", "call", "nodeid", "program", "config", "latency_ms", "ref_latency_ms", "speedup", "cache", "tuning_s", "key",
    "device", "device_name", "machine", "n_configs", "n_measured", "n_passed", "samples", "ref_samples",
    "candidates",
})
# The gate's decision lives in row["gate"] (gate.decide's dict); flat keys on the row are shown too.
FLAT_GATE_KEYS = ("baseline_ms", "regression_pct", "p_value")
GATE_ORDER = ("status", "reason", "metric", "baseline_ms", "now_ms", "regression_pct", "p_value", "threshold_pct",
              "alpha", "n_baseline", "n_now", "baseline_device")
TIMED = ("ok", "early_stop")
PLOT_CAPTION = ("Bars: each config's median latency while searching, fastest on top; failed configs carry their "
                "status. The chosen config won the re-measurement of the best ones, so its final latency "
                "(diamond) can differ from its bar.")  # statuses that come with a latency

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #1d2330;
       max-width: 1200px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin: 0 0 8px; word-break: break-all; }
.meta { color: #5b6475; font-size: 13px; margin-bottom: 16px; }
.note { background: #fff6d6; border: 1px solid #e5cf7a; padding: 8px 12px; border-radius: 4px; font-size: 14px; }
section.test { border: 1px solid #d6dae3; border-radius: 6px; padding: 14px 16px; margin: 18px 0; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #d6dae3; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f4f8; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12px; }
tr.chosen td { background: #e3f6e6; font-weight: 600; }
.status-ok { color: #1d7a35; } .status-early_stop { color: #8a6d00; } .status-bad { color: #b3261e; font-weight: 600; }
.gate-fail { color: #b3261e; font-weight: 700; } .gate-pass { color: #1d7a35; font-weight: 700; }
img.plot { max-width: 100%; border: 1px solid #eef0f4; }
figure { margin: 12px 0; } figcaption { color: #5b6475; font-size: 12px; max-width: 900px; }
details { margin: 6px 0; font-size: 13px; } summary { cursor: pointer; color: #34507a; }
.reason { max-width: 560px; word-break: break-word; }
"""


# ----------------------------------------------------------------------------- formatting


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _config_text(config: Any) -> str:
    if not isinstance(config, dict):
        return str(config)
    return ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in config.items())


def _ms(value: Any) -> str:
    return "-" if not isinstance(value, (int, float)) or math.isnan(value) else f"{value:.4g} ms"


def _num(value: Any, spec: str = ".4g", suffix: str = "") -> str:
    return "-" if not isinstance(value, (int, float)) else f"{value:{spec}}{suffix}"


def _status_class(status: Any) -> str:
    return f"status-{status}" if status in TIMED else "status-bad"


def _sorted_candidates(candidates: list[dict]) -> list[dict]:
    """Timed candidates by latency first, then the failed ones in their original order."""
    timed = [c for c in candidates if c.get("status") in TIMED and isinstance(c.get("median_ms"), (int, float))]
    rest = [c for c in candidates if c not in timed]
    return sorted(timed, key=lambda c: (c.get("status") != "ok", c["median_ms"])) + rest


# ----------------------------------------------------------------------------- plots


def _matplotlib_figure() -> Any:
    """matplotlib's ``Figure`` class, or None when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure


def plot_candidates(row: dict) -> bytes | None:
    """A PNG of every candidate's latency (failed ones labelled with their status), or None without matplotlib."""
    figure_cls = _matplotlib_figure()
    if figure_cls is None:
        return None
    cands = _sorted_candidates(row.get("candidates") or [])[:MAX_PLOT_ROWS]
    if not cands:
        return None
    # A plotting library's deprecation noise must not fail a run under filterwarnings=error.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _draw(figure_cls, row, cands)


def _draw(figure_cls: Any, row: dict, cands: list[dict]) -> bytes:
    chosen = row.get("config")
    fig = figure_cls(figsize=(9.5, 1.5 + 0.32 * len(cands)), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    times = [c["median_ms"] if c.get("status") in TIMED and isinstance(c.get("median_ms"), (int, float)) else None
             for c in cands]
    ref, final = row.get("ref_latency_ms"), row.get("latency_ms")
    marks = [v for v in (ref, final) if isinstance(v, (int, float))]
    right = max([t for t in times if t is not None] + marks, default=1.0) or 1.0
    for y, cand, t in zip(range(len(cands)), cands, times, strict=True):
        if t is None:
            ax.text(right * 0.01, y, f"{cand.get('status')} (failed)", va="center", ha="left", color="#b3261e",
                    fontweight="bold", fontsize=9)
            continue
        is_chosen = cand.get("config") == chosen
        color = "#2e9d4b" if is_chosen else ("#c9a227" if cand.get("status") != "ok" else "#4a78b5")
        ax.barh(y, t, color=color, height=0.7)
        label = f" {t:.4g} ms" + (" (chosen)" if is_chosen else "")
        label += " (stopped early)" if cand.get("status") == "early_stop" else ""
        label_x = t
        if is_chosen and isinstance(final, (int, float)):
            ax.plot([final], [y], marker="D", color="black", markersize=6, linestyle="none",
                    label=f"chosen, re-measured: {final:.4g} ms")
            label_x = max(t, final + right * 0.015)  # keep the label clear of the diamond
        ax.text(label_x, y, label, va="center", ha="left", fontsize=8)
    if isinstance(ref, (int, float)):
        ax.axvline(ref, color="#7a2bb5", linestyle="--", linewidth=1.2, label=f"reference: {ref:.4g} ms")
    ax.set_yticks(range(len(cands)), [_config_text(c.get("config")) for c in cands], fontsize=8)
    ax.set_ylim(len(cands) - 0.5, -0.5)  # fastest on top, and room for the last row's label
    ax.set_xlim(0, right * 1.35)
    ax.set_xlabel("median latency of the search run (ms)")
    ax.set_title(f"{row.get('program', '')}: {len(row.get('candidates') or [])} candidates", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# ----------------------------------------------------------------------------- page


def _kv_table(pairs: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{_esc(k)}</th><td>{v}</td></tr>" for k, v in pairs)
    return f"<table>{cells}</table>"


def _gate_info(row: dict) -> dict:
    """The gate's decision: ``row["gate"]`` (a dict, or a bare status) plus flat keys a gate may add to the row."""
    gate = row.get("gate")
    info = dict(gate) if isinstance(gate, dict) else ({} if gate is None else {"status": gate})
    for k in FLAT_GATE_KEYS:
        if k in row and k not in info:
            info[k] = row[k]
    return info


def _gate_value(k: str, value: Any, info: dict) -> str:
    if k == "status":
        css = {"fail": "gate-fail", "failed": "gate-fail", "pass": "gate-pass", "improved": "gate-pass"}.get(
            str(value).lower(), "")
        return f'<span class="{css}">{_esc(value)}</span>'
    if k == "regression_pct" and isinstance(value, (int, float)):
        ci = info.get("ratio_ci")
        ci_text = (f" [{(ci[0] - 1) * 100:+.1f} %, {(ci[1] - 1) * 100:+.1f} %]"
                   if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(c, (int, float)) for c in ci)
                   else "")
        return _esc(f"{value:+.2f} %{ci_text}")
    if k.endswith("_ms") and isinstance(value, (int, float)):
        return _esc(_ms(value))
    if k == "p_value" and isinstance(value, (int, float)):
        return _esc(f"{value:.3g}")
    return _esc(json.dumps(value, default=str) if isinstance(value, (dict, list)) else value)


def _gate_html(row: dict) -> str:
    info = _gate_info(row)
    pairs = [(k, _gate_value(k, info[k], info)) for k in
             [k for k in GATE_ORDER if k in info] + sorted(k for k in info if k not in GATE_ORDER)
             if info[k] is not None and k != "ratio_ci"]
    gate = "<h3>Gate</h3>" + _kv_table(pairs) if pairs else ""
    # Keys someone added to the row that this page does not know yet: shown, not dropped.
    other = [(k, _esc(json.dumps(row[k], default=str))) for k in sorted(row)
             if k not in BASE_KEYS and k not in FLAT_GATE_KEYS and k not in ("gate", "measured")]
    return gate + ("<h3>More</h3>" + _kv_table(other) if other else "")


def _candidates_table(row: dict) -> str:
    chosen = row.get("config")
    head = "<tr><th>#</th><th>config</th><th>status</th><th>median</th><th>compile</th><th>reason</th></tr>"
    body = []
    for i, c in enumerate(_sorted_candidates(row.get("candidates") or []), 1):
        status = c.get("status")
        css = ' class="chosen"' if c.get("config") == chosen else ""
        reused = " (reused)" if c.get("reused") else ""
        body.append(
            f"<tr{css}><td class=num>{i}</td><td><code>{_esc(_config_text(c.get('config')))}</code></td>"
            f'<td class="{_status_class(status)}">{_esc(status)}{reused}</td>'
            f"<td class=num>{_esc(_ms(c.get('median_ms')))}</td>"
            f"<td class=num>{_esc(_num(c.get('compile_s'), '.2f', ' s'))}</td>"
            f"<td class=reason>{_esc(c.get('reason') or '')}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def _machine_html(row: dict) -> str:
    machine = row.get("machine") or {}
    if not isinstance(machine, dict):
        return f"<p>machine: {_esc(machine)}</p>"
    pairs = [(k, _esc(json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v))
             for k, v in sorted(machine.items())]
    summary = f"machine: {machine.get('device') or row.get('device_name') or '?'} ({row.get('device', '?')})"
    return f"<details><summary>{_esc(summary)}</summary>{_kv_table(pairs)}</details>"


def _test_html(row: dict, with_plots: bool, anchor: str) -> str:
    speedup = row.get("speedup")
    summary = _kv_table([
        ("kernel", f"<code>{_esc(row.get('program'))}</code>"),
        ("chosen config", f"<code>{_esc(_config_text(row.get('config')))}</code>"),
        ("latency", _esc(_ms(row.get("latency_ms")))),
        ("reference latency", _esc(_ms(row.get("ref_latency_ms")))),
        ("speedup over reference", _esc(_num(speedup, ".2f", "x"))),
        ("candidates passed", _esc(f"{row.get('n_passed', '?')} of {row.get('n_measured', '?')} measured "
                                   f"({row.get('n_configs', '?')} configs)")),
        ("cache", _esc(row.get("cache"))),
        ("measured", _esc(row.get("measured", "this run"))),
        ("tuning time", _esc(_num(row.get("tuning_s"), ".1f", " s"))),
        ("device", _esc(f"{row.get('device_name') or '?'} ({row.get('device', '?')})")),
        ("cache key", f"<code>{_esc(str(row.get('key'))[:16])}</code>"),
    ])
    plot = ""
    if with_plots:
        try:
            png = plot_candidates(row)
        except Exception as exc:  # a plot that fails costs the plot, never the report
            plot = f'<p class="note">plot failed: {_esc(type(exc).__name__)}: {_esc(exc)}</p>'
        else:
            if png:
                data = base64.b64encode(png).decode("ascii")
                name = _esc(row.get("id") or row.get("nodeid"))
                plot = (f'<figure><img class="plot" alt="latency of every candidate of {name}" '
                        f'src="data:image/png;base64,{data}"><figcaption>{PLOT_CAPTION}</figcaption></figure>')
    name = _esc(row.get("id") or row.get("nodeid"))
    return (f'<section class="test" id="{anchor}"><h2>{name}</h2>{summary}{_gate_html(row)}{plot}'
            f"<h3>Candidates</h3>{_candidates_table(row)}{_machine_html(row)}</section>")


def render(rows: list[dict]) -> str:
    """The whole report page for ``rows`` (``Collector.rows``) as one HTML string."""
    with_plots = _matplotlib_figure() is not None
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    note = "" if with_plots else (
        '<p class="note">matplotlib is not installed, so this report has tables but no plots; '
        "install it with <code>pip install matplotlib</code> (or <code>pytest-tlautotune[report]</code>).</p>")
    rows = sorted(rows, key=lambda r: (str(r.get("nodeid")), r.get("call", 1)))
    body = "".join(_test_html(row, with_plots, f"t{i}") for i, row in enumerate(rows))
    index = "".join(
        f"<tr><td><a href=\"#t{i}\">{_esc(r.get('id') or r.get('nodeid'))}</a></td><td><code>"
        f"{_esc(_config_text(r.get('config')))}"
        f"</code></td><td class=num>{_esc(_ms(r.get('latency_ms')))}</td><td class=num>"
        f"{_esc(_ms(r.get('ref_latency_ms')))}</td><td>{_gate_value('status', _gate_info(r).get('status', ''), {})}"
        "</td></tr>"
        for i, r in enumerate(rows))
    overview = ("<table><tr><th>test</th><th>chosen config</th><th>latency</th><th>reference</th><th>gate</th></tr>"
                f"{index}</table>") if rows else "<p>No autotuned test ran in this session.</p>"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<title>tlautotune report</title>"
        f"<style>{CSS}</style></head><body><h1>tlautotune report</h1>"
        f'<div class="meta">{len(rows)} autotuned test(s), written {_esc(now)}</div>'
        f"{note}{overview}{body}</body></html>\n"
    )


def write_report(rows: list[dict], directory: str | os.PathLike) -> Path:
    """Write ``directory/index.html`` (creating the directory) and return its path."""
    directory = Path(directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / REPORT_FILE
    # Temp file + rename: a browser open on the old page never reads half a new one.
    tmp = directory / f".{REPORT_FILE}.{os.getpid()}.tmp"
    tmp.write_text(render(rows), encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_for_session(config: pytest.Config, rows: list[dict], directory: str) -> None:
    """``Collector.pytest_sessionfinish``'s call: write the page and say where; a failure is one line, not a crash."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    try:
        path = write_report(rows, directory)
    except OSError as exc:
        message = f"[tlautotune] could not write the HTML report into {directory}: {exc}"
    else:
        message = f"[tlautotune] HTML report: {path}"
    if reporter is not None and config.get_verbosity() >= 0:
        reporter.write_line(message)
