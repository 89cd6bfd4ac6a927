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

from ..model import RowStatus, Status
from .rows import CHECKED, SPEEDUP_LEGEND, UNCHECKED

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPORT_FILE = "index.html"
TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
TEMPLATE = "report.html.j2"
MAX_PLOT_ROWS = 40  # more bars than this are unreadable; the table still lists every candidate
# Row keys the page shows in its own places; the gate's keys and any unknown ones get tables of their own.
BASE_KEYS = frozenset({
    "id", "call", "nodeid", "status", "reason", "program", "config", "latency_ms", "ref_latency_ms", "speedup",
    "cache", "tuning_s", "key", "device", "device_name", "machine", "n_configs", "n_measured", "n_passed", "samples",
    "ref_samples", "candidates", "measured", "history",  # history: drawn as its own plot, not listed
})
# The gate's decision lives in row["gate"] (gate.decide's dict); flat keys on the row are shown too.
FLAT_GATE_KEYS = ("baseline_ms", "regression_pct", "p_value")
GATE_ORDER = ("status", "reason", "metric", "baseline_ms", "now_ms", "regression_pct", "p_value", "threshold_pct",
              "mdc_pct", "alpha", "n_baseline", "n_now", "baseline_device")
#: The gate's keys as the page names them; a key not listed is shown by its own name.
GATE_LABELS = {
    "status": "verdict", "reason": "why", "metric": "compared", "baseline_ms": "baseline (median)",
    "now_ms": "this run (median)", "regression_pct": "change [CI]", "p_value": "p (one-sided Mann-Whitney U)",
    "threshold_pct": "threshold", "mdc_pct": "smallest detectable change", "alpha": "significance level",
    "n_baseline": "baseline samples", "n_now": "samples in this run", "baseline_device": "baseline device",
    "ci_level": "confidence level", "baseline_ci": "baseline median's CI", "now_ci": "this run's median's CI",
    "ratio": "ratio this run / baseline", "clock": "clock", "in_baseline": "in the baseline",
    "baseline_speedup": "baseline speedup over ref_prog", "now_speedup": "speedup over ref_prog now",
}
GATE_WORDS = {"pass": "pass", "fail": "fail: regressed", "improved": "improved",
              "undetectable": "undetectable: too noisy to judge", "skipped": "skipped: not compared"}
METRIC_WORDS = {"latency": "latency", "speedup": "latency relative to ref_prog (same run)"}
#: A candidate's status as the page says it.
STATUS_WORDS = {Status.OK: "passed", Status.MISMATCH: "mismatch", Status.EARLY_STOP: "stopped early",
                Status.TIMEOUT: "timed out", Status.CRASH: "crashed", Status.COMPILE_ERROR: "compile error",
                Status.BUILD_ERROR: "build error", Status.ERROR: "error"}
CACHE_WORDS = {"hit": "hit: loaded from the cache", "miss": "miss: tuned in this run",
               "retune": "retune: tuned again (--tl-retune)"}
CHECK_WORDS = {CHECKED: "checked against ref_prog (or manual_check_prog)",
               UNCHECKED: "not checked: no ref_prog or manual_check_prog (or skip_check)"}
#: Keys of a row the page shows under "More", with their labels and how their values read.
MORE_LABELS = {"check": "output check", "loops": "calls per sample", "host_ms": "host time to launch one call",
               "timing_devices": "candidates timed on", "quarantined": "stored result quarantined",
               "trend": "trend (run medians, --tl-history)"}
TIMED = (Status.OK, Status.EARLY_STOP)  # statuses that come with a latency
PLOT_CAPTION = ("Bars: each config's median latency while searching, fastest on top; failed configs carry their "
                "status. The chosen config won the re-measurement of the best ones, so its final latency "
                "(diamond) can differ from its bar. The dashed line is ref_prog's latency; a logarithmic axis "
                "shows latencies that differ by more than ten times.")
#: Above this ratio between the largest and smallest latency drawn, the plot's axis is logarithmic:
#: a 0.008 ms reference beside 0.8 ms kernels would sit on the left edge of a linear one.
LOG_AXIS_RATIO = 10.0

# ----------------------------------------------------------------------------- formatting


def _config_text(config: object) -> str:
    if config is None:
        return "-"
    if not isinstance(config, dict):
        return str(config)
    return ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in config.items())


def _ms(value: object) -> str:
    return "-" if not _is_number(value) or math.isnan(value) else f"{value:.4g} ms"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _num(value: object, spec: str = ".4g", suffix: str = "") -> str:
    return "-" if not _is_number(value) else f"{value:{spec}}{suffix}"


def _plain(value: object) -> str:
    """A value as a person reads it: numbers to four digits, yes/no, lists joined, no JSON quotes."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if _is_number(value):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value) or "-"
    if isinstance(value, dict):
        return "; ".join(f"{k} = {_plain(v)}" for k, v in sorted(value.items())) or "-"
    return str(value)


def _status_class(status: object) -> str:
    return f"status-{status}" if status in TIMED else "status-bad"


def _status_text(status: object) -> str:
    return STATUS_WORDS.get(status, str(status))


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
    fig = figure_cls(figsize=(9.5, 1.7 + 0.32 * len(cands)), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    times = [c["median_ms"] if c.get("status") in TIMED and _is_number(c.get("median_ms")) and c["median_ms"] > 0
             else None for c in cands]
    ref, final = row.get("ref_latency_ms"), row.get("latency_ms")
    drawn = [t for t in times if t is not None] + [v for v in (ref, final) if _is_number(v) and v > 0]
    right = max(drawn, default=1.0)
    log = bool(drawn) and right / min(drawn) > LOG_AXIS_RATIO
    # A log axis has no zero: bars start a little left of the smallest latency drawn.
    left = min(drawn) / 2 if log else 0.0
    text_x = (lambda x, frac: x * (1 + 4 * frac)) if log else (lambda x, frac: x + right * frac)
    for y, cand, t in zip(range(len(cands)), cands, times, strict=True):
        if t is None:
            ax.text(text_x(left, 0.01), y, f"{_status_text(cand.get('status'))} (failed)", va="center", ha="left",
                    color="#b3261e", fontweight="bold", fontsize=9)
            continue
        is_chosen = cand.get("config") == chosen
        color = "#2e9d4b" if is_chosen else ("#c9a227" if cand.get("status") != Status.OK else "#4a78b5")
        ax.barh(y, t - left, left=left, color=color, height=0.7)
        label = f" {t:.4g} ms" + (" (chosen)" if is_chosen else "")
        label += " (stopped early)" if cand.get("status") == Status.EARLY_STOP else ""
        label_x = t
        if is_chosen and _is_number(final):
            ax.plot([final], [y], marker="D", color="black", markersize=6, linestyle="none",
                    label=f"chosen, re-measured: {final:.4g} ms")
            label_x = max(t, text_x(final, 0.015))  # keep the label clear of the diamond
        ax.text(label_x, y, label, va="center", ha="left", fontsize=8)
    if _is_number(ref) and ref > 0:
        ax.axvline(ref, color="#7a2bb5", linestyle="--", linewidth=2.0, label=f"reference (ref_prog): {ref:.4g} ms")
        # Named where it stands, above the bars, so it reads without the legend.
        ax.text(ref, -0.62, f" reference {ref:.4g} ms", color="#7a2bb5", fontsize=8, fontweight="bold",
                va="bottom", ha="left", clip_on=False)
    ax.set_yticks(range(len(cands)), [_config_text(c.get("config")) for c in cands], fontsize=8)
    ax.set_ylim(len(cands) - 0.5, -0.5)  # fastest on top, and room for the last row's label
    if log:
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log")
        ax.set_xlim(left, right * 3.5)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))  # 0.01, not 10^-2
        ax.set_xlabel("median latency of the search run (ms, logarithmic)")
    elif not drawn:
        ax.set_xticks([])
        ax.set_xlabel("no candidate has a latency: every one failed")
    else:
        ax.set_xlim(0, right * 1.35)
        ax.set_xlabel("median latency of the search run (ms)")
    ax.set_title(f"{row.get('program', '')}: {len(row.get('candidates') or [])} candidates", fontsize=10, pad=16)
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
        return {"kind": "span", "text": GATE_WORDS.get(str(value), str(value)), "css": css}
    if k == "metric":
        return _text(METRIC_WORDS.get(str(value), str(value)))
    if k == "regression_pct" and _is_number(value):
        ci = info.get("ratio_ci")
        ci_text = (f" [{(ci[0] - 1) * 100:+.1f} %, {(ci[1] - 1) * 100:+.1f} %]"
                   if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_is_number(c) for c in ci) else "")
        return _text(f"{value:+.2f} %{ci_text}")
    if k.endswith("_pct") and _is_number(value):
        return _text(f"{value:.4g} %" if k != "mdc_pct" else f"±{value:.1f} %")
    if k.endswith("_ms") and _is_number(value):
        return _text(_ms(value))
    if k.endswith("_ci") and isinstance(value, (list, tuple)) and len(value) == 2:
        return _text(f"{_ms(value[0])} to {_ms(value[1])}")
    if k == "p_value" and _is_number(value):
        return _text(f"{value:.3g}")
    if k == "ci_level" and _is_number(value):
        return _text(f"{value:.0%}")
    if k.endswith("_speedup") and _is_number(value):
        return _text(f"{value:.3f}x")
    if k == "ratio" and _is_number(value):
        return _text(f"{value:.3f}")
    return _text(_plain(value))


def _gate_pairs(row: dict) -> list[tuple[str, dict]]:
    info = _gate_info(row)
    return [(GATE_LABELS.get(k, k), _gate_value(k, info[k], info)) for k in
            [k for k in GATE_ORDER if k in info] + sorted(k for k in info if k not in GATE_ORDER)
            if info[k] is not None and k != "ratio_ci"]


def _more_value(k: str, value: object) -> str:
    if k == "check":
        return CHECK_WORDS.get(str(value), str(value))
    if k.endswith("_ms"):
        return _ms(value)
    return _plain(value)


def _other_pairs(row: dict) -> list[tuple[str, dict]]:
    """Keys someone added to the row that the page has no place for: shown with a label, not dropped
    (those without a value left out)."""
    return [(MORE_LABELS.get(k, k), _text(_more_value(k, row[k]))) for k in sorted(row)
            if k not in BASE_KEYS and k not in FLAT_GATE_KEYS and k != "gate" and row[k] not in (None, [], {}, "")]


def _candidates(row: dict) -> list[dict]:
    chosen = row.get("config")
    return [{"chosen": c.get("config") == chosen, "config": _config_text(c.get("config")),
             "status": _status_text(c.get("status")), "status_class": _status_class(c.get("status")),
             "reused": c.get("reused"), "median": _ms(c.get("median_ms")),
             "compile": _num(c.get("compile_s"), ".2f", " s"), "reason": c.get("reason") or ""}
            for c in _sorted_candidates(row.get("candidates") or [])]


def _machine(row: dict) -> tuple[str | None, list | None]:
    """The machine's one-line name and its fingerprint's pairs; (None, None) for a row without one."""
    machine = row.get("machine")
    if not machine:
        return None, None
    if not isinstance(machine, dict):
        return str(machine), None
    pairs = [(k, _text(_plain(v))) for k, v in sorted(machine.items())]
    return f"machine: {machine.get('device') or row.get('device_name') or '?'} ({row.get('device', '?')})", pairs


def _plot(row: dict) -> tuple[str | None, str | None]:
    """(the PNG as base64, why the plot failed)."""
    try:
        png = plot_candidates(row)
    except Exception as exc:  # a plot that fails costs the plot, never the report
        return None, f"{type(exc).__name__}: {exc}"
    return (base64.b64encode(png).decode("ascii") if png else None), None


def _trend_plot(row: dict) -> str | None:
    """The test's history as a base64 PNG (``--tl-history``), or None."""
    if not row.get("history"):
        return None
    from ..history.plot import plot_series

    try:
        return base64.b64encode(plot_series(row["history"], f"{row.get('id') or row.get('nodeid')}: history")
                                ).decode("ascii")
    except Exception:  # a plot that fails costs the plot, never the report
        return None


def _summary(row: dict) -> list[tuple[str, dict]]:
    passed = (f"{row.get('n_passed', 0)} of {row.get('n_measured', 0)} measured "
              f"({row['n_configs'] if row.get('n_configs') is not None else '?'} configs)")
    name, kind = row.get("device_name"), row.get("device") or "-"
    device = f"{name} ({kind})" if name else kind
    if row.get("status") == RowStatus.FAILED:
        return [("kernel", _code(row.get("program"))), ("candidates passed", _text(passed)),
                ("tuning time", _text(_num(row.get("tuning_s"), ".1f", " s"))), ("device", _text(device))]
    speedup = row.get("speedup")
    return [
        ("kernel", _code(row.get("program"))),
        ("chosen config", _code(_config_text(row.get("config")))),
        ("latency", _text(_ms(row.get("latency_ms")))),
        ("reference latency", _text(_ms(row.get("ref_latency_ms")))),
        ("speedup over reference", _text(f"{speedup:.2f}x (ref_prog latency / kernel latency)"
                                         if _is_number(speedup) else "-")),
        ("candidates passed", _text(passed)),
        ("cache", _text(CACHE_WORDS.get(str(row.get("cache")), _plain(row.get("cache"))))),
        ("measured", _text(row.get("measured", "this run"))),
        ("tuning time", _text(_num(row.get("tuning_s"), ".1f", " s"))),
        ("device", _text(device)),
        ("cache key", _code(str(row.get("key"))[:16])),
    ]


def _test_view(row: dict, with_plots: bool, anchor: str) -> dict:
    machine, machine_pairs = _machine(row)
    plot, plot_error = _plot(row) if with_plots else (None, None)
    failed = row.get("status") == RowStatus.FAILED
    speedup = row.get("speedup")
    return {
        "anchor": anchor,
        "name": row.get("id") or row.get("nodeid"),
        "failed": failed,
        "failure": row.get("reason") or "" if failed else "",
        "outcome": {"kind": "span", "text": "tuning failed", "css": "gate-fail"} if failed else _text("tuned"),
        "config": _config_text(row.get("config")),
        "latency": _ms(row.get("latency_ms")),
        "ref_latency": _ms(row.get("ref_latency_ms")),
        "speedup": f"{speedup:.2f}x" if _is_number(speedup) else "-",
        "gate_status": _gate_value("status", _gate_info(row).get("status", ""), {}),
        "summary": _summary(row),
        "gate": _gate_pairs(row),
        "other": _other_pairs(row),
        "plot": plot,
        "plot_error": plot_error,
        "trend": row.get("trend") or "",
        "trend_plot": _trend_plot(row) if with_plots else None,
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
    n_failed = sum(t["failed"] for t in tests)
    return env.get_template(TEMPLATE).render(tests=tests, n_failed=n_failed, with_plots=with_plots, now=now,
                                             plot_caption=PLOT_CAPTION, speedup_legend=SPEEDUP_LEGEND)


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
