"""``--tl-report DIR``: one self-contained HTML page of every tuned test.

The page (``DIR/index.html``) needs no network and no other file: CSS is
inline and each plot is a base64 PNG drawn with matplotlib's Agg canvas.
matplotlib is an optional extra (``pip install pytest-tlautotune[report]``);
without it the page has the same tables and a note instead of plots.

Only the controller writes the page, from ``Collector.rows`` (see
``rows.record_outcome``), after the gate has added its keys to the rows. The markup is
``templates/report.html.j2`` (Jinja2, autoescaped); this module prepares the values as text.
"""

from __future__ import annotations

import base64
import datetime
import io
import json
import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ..model import Status

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPORT_FILE = "index.html"
TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
TEMPLATE = "report.html.j2"
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
TIMED = (Status.OK, Status.EARLY_STOP)
PLOT_CAPTION = ("Bars: each config's median latency while searching, fastest on top; failed configs carry their "
                "status. The chosen config won the re-measurement of the best ones, so its final latency "
                "(diamond) can differ from its bar.")  # statuses that come with a latency

# ----------------------------------------------------------------------------- formatting


def _config_text(config: object) -> str:
    if not isinstance(config, dict):
        return str(config)
    return ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in config.items())


def _ms(value: object) -> str:
    return "-" if not isinstance(value, (int, float)) or math.isnan(value) else f"{value:.4g} ms"


def _num(value: object, spec: str = ".4g", suffix: str = "") -> str:
    return "-" if not isinstance(value, (int, float)) else f"{value:{spec}}{suffix}"


def _status_class(status: object) -> str:
    return f"status-{status}" if status in TIMED else "status-bad"


def _sorted_candidates(candidates: list[dict]) -> list[dict]:
    """Timed candidates by latency first, then the failed ones in their original order."""
    timed = [c for c in candidates if c.get("status") in TIMED and isinstance(c.get("median_ms"), (int, float))]
    rest = [c for c in candidates if c not in timed]
    return sorted(timed, key=lambda c: (c.get("status") != Status.OK, c["median_ms"])) + rest


# ----------------------------------------------------------------------------- plots


def _matplotlib_figure() -> type[Figure] | None:
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


def _draw(figure_cls: type[Figure], row: dict, cands: list[dict]) -> bytes:
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
        color = "#2e9d4b" if is_chosen else ("#c9a227" if cand.get("status") != Status.OK else "#4a78b5")
        ax.barh(y, t, color=color, height=0.7)
        label = f" {t:.4g} ms" + (" (chosen)" if is_chosen else "")
        label += " (stopped early)" if cand.get("status") == Status.EARLY_STOP else ""
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
# What the template shows, as text: Jinja2 escapes it. A cell is {"kind": text|code|span, "text", "css"}.


def _text(value: object) -> dict:
    return {"kind": "text", "text": str(value)}


def _code(value: object) -> dict:
    return {"kind": "code", "text": str(value)}


def _gate_info(row: dict) -> dict:
    """The gate's decision: ``row["gate"]`` (a dict, or a bare status) plus flat keys a gate may add to the row."""
    gate = row.get("gate")
    info = dict(gate) if isinstance(gate, dict) else ({} if gate is None else {"status": gate})
    for k in FLAT_GATE_KEYS:
        if k in row and k not in info:
            info[k] = row[k]
    return info


def _gate_value(k: str, value: object, info: dict) -> dict:
    if k == "status":
        css = {"fail": "gate-fail", "failed": "gate-fail", "pass": "gate-pass", "improved": "gate-pass"}.get(
            str(value).lower(), "")
        return {"kind": "span", "text": str(value), "css": css}
    if k == "regression_pct" and isinstance(value, (int, float)):
        ci = info.get("ratio_ci")
        ci_text = (f" [{(ci[0] - 1) * 100:+.1f} %, {(ci[1] - 1) * 100:+.1f} %]"
                   if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(c, (int, float)) for c in ci)
                   else "")
        return _text(f"{value:+.2f} %{ci_text}")
    if k.endswith("_ms") and isinstance(value, (int, float)):
        return _text(_ms(value))
    if k == "p_value" and isinstance(value, (int, float)):
        return _text(f"{value:.3g}")
    return _text(json.dumps(value, default=str) if isinstance(value, (dict, list)) else value)


def _gate_pairs(row: dict) -> list[tuple[str, dict]]:
    info = _gate_info(row)
    return [(k, _gate_value(k, info[k], info)) for k in
            [k for k in GATE_ORDER if k in info] + sorted(k for k in info if k not in GATE_ORDER)
            if info[k] is not None and k != "ratio_ci"]


def _other_pairs(row: dict) -> list[tuple[str, dict]]:
    """Keys someone added to the row that this page does not know yet: shown, not dropped."""
    return [(k, _text(json.dumps(row[k], default=str))) for k in sorted(row)
            if k not in BASE_KEYS and k not in FLAT_GATE_KEYS and k not in ("gate", "measured")]


def _candidates(row: dict) -> list[dict]:
    chosen = row.get("config")
    return [{"chosen": c.get("config") == chosen, "config": _config_text(c.get("config")),
             "status": c.get("status"), "status_class": _status_class(c.get("status")), "reused": c.get("reused"),
             "median": _ms(c.get("median_ms")), "compile": _num(c.get("compile_s"), ".2f", " s"),
             "reason": c.get("reason") or ""}
            for c in _sorted_candidates(row.get("candidates") or [])]


def _machine(row: dict) -> tuple[str, list | None]:
    machine = row.get("machine") or {}
    if not isinstance(machine, dict):
        return str(machine), None
    pairs = [(k, _text(json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v))
             for k, v in sorted(machine.items())]
    return f"machine: {machine.get('device') or row.get('device_name') or '?'} ({row.get('device', '?')})", pairs


def _plot(row: dict) -> tuple[str | None, str | None]:
    """(the PNG as base64, why the plot failed)."""
    try:
        png = plot_candidates(row)
    except Exception as exc:  # a plot that fails costs the plot, never the report
        return None, f"{type(exc).__name__}: {exc}"
    return (base64.b64encode(png).decode("ascii") if png else None), None


def _test_view(row: dict, with_plots: bool, anchor: str) -> dict:
    machine, machine_pairs = _machine(row)
    plot, plot_error = _plot(row) if with_plots else (None, None)
    return {
        "anchor": anchor,
        "name": row.get("id") or row.get("nodeid"),
        "config": _config_text(row.get("config")),
        "latency": _ms(row.get("latency_ms")),
        "ref_latency": _ms(row.get("ref_latency_ms")),
        "gate_status": _gate_value("status", _gate_info(row).get("status", ""), {}),
        "summary": [
            ("kernel", _code(row.get("program"))),
            ("chosen config", _code(_config_text(row.get("config")))),
            ("latency", _text(_ms(row.get("latency_ms")))),
            ("reference latency", _text(_ms(row.get("ref_latency_ms")))),
            ("speedup over reference", _text(_num(row.get("speedup"), ".2f", "x"))),
            ("candidates passed", _text(f"{row.get('n_passed', '?')} of {row.get('n_measured', '?')} measured "
                                        f"({row.get('n_configs', '?')} configs)")),
            ("cache", _text(row.get("cache"))),
            ("measured", _text(row.get("measured", "this run"))),
            ("tuning time", _text(_num(row.get("tuning_s"), ".1f", " s"))),
            ("device", _text(f"{row.get('device_name') or '?'} ({row.get('device', '?')})")),
            ("cache key", _code(str(row.get("key"))[:16])),
        ],
        "gate": _gate_pairs(row),
        "other": _other_pairs(row),
        "plot": plot,
        "plot_error": plot_error,
        "candidates": _candidates(row),
        "machine": machine,
        "machine_pairs": machine_pairs,
    }


def render(rows: list[dict]) -> str:
    """The whole report page for ``rows`` (``Collector.rows``) as one HTML string."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    with_plots = _matplotlib_figure() is not None
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    rows = sorted(rows, key=lambda r: (str(r.get("nodeid")), r.get("call", 1)))
    tests = [_test_view(row, with_plots, f"t{i}") for i, row in enumerate(rows)]
    return env.get_template(TEMPLATE).render(tests=tests, with_plots=with_plots, now=now, plot_caption=PLOT_CAPTION)


def write_report(rows: list[dict], directory: str | os.PathLike) -> Path:
    """Write ``directory/index.html`` (creating the directory) and return its path."""
    directory = Path(directory).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / REPORT_FILE
    # Temp file + rename: a browser open on the old page never reads half a new one.
    from ..store.files import atomic_write

    atomic_write(path, render(rows))
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
