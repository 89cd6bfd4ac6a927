"""One test's history as a PNG: each run's median (with its samples' spread) over time, per machine,
and the level step when there is one. matplotlib's Agg canvas, no pyplot (no global state)."""

from __future__ import annotations

import io
import time
import warnings

from .trend import find_step, median_ms


def plot_series(runs: list[dict], title: str, threshold_pct: float = 10.0) -> bytes:
    """The plot of ``runs`` (measured rows, oldest first) as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for machine in sorted({r.get("machine") for r in runs}, key=str):
        mine = [r for r in runs if r.get("machine") == machine]
        xs = list(range(1, len(mine) + 1))
        medians = [median_ms(r) for r in mine]
        lows = [m - min(r["samples"]) for m, r in zip(medians, mine)]
        highs = [max(r["samples"]) - m for m, r in zip(medians, mine)]
        label = mine[-1].get("device_name") or machine
        ax.errorbar(xs, medians, yerr=[lows, highs], marker="o", ms=4, capsize=2, lw=1.2, label=label)
        step = find_step(mine, threshold_pct)
        if step is not None:
            ax.axvline(step.index + 0.5, color="tab:red", ls="--", lw=1)
            commit = (step.row.get("commit") or "")[:10]
            way = "slower" if step.change_pct > 0 else "faster"
            ax.annotate(f"{step.change_pct:+.0f}% ({way}) from {commit or f'run {step.index + 1}'}",
                        (step.index + 0.6, max(medians)), color="tab:red", fontsize=8, va="top")
        ax.set_xticks(xs)
        ax.set_xticklabels([_run_label(i, r) for i, r in zip(xs, mine)], rotation=45, fontsize=7, ha="right")
    ax.set_ylabel("median latency (ms)")
    ax.set_xlabel("run (commit, UTC time)")
    ax.set_title(title, fontsize=9)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    buf = io.BytesIO()
    with warnings.catch_warnings():  # a plotting library's deprecation noise is no failure of the run
        warnings.simplefilter("ignore")
        fig.savefig(buf, format="png")
    return buf.getvalue()


def _run_label(index: int, run: dict) -> str:
    """A run's tick: its commit (when git gave one) and its time, so runs of one commit stay apart."""
    commit = (run.get("commit") or "")[:7]
    date = run.get("date")
    when = time.strftime("%m-%d %H:%M", time.gmtime(date)) if isinstance(date, (int, float)) else ""
    return "\n".join(part for part in (commit, when) if part) or str(index)
