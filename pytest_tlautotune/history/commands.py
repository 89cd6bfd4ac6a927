"""``python -m pytest_tlautotune history show|regressions|plot``: read a test history.

The history is ``--history URL``, else the ``tl_history`` of the pytest ini file found from the
current directory upward (relative to that file), else ``$TL_AUTOTUNE_HISTORY``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from . import HistoryError, open_history
from .trend import DAY_S, find_step, measured, median_ms, regressions, series, trend_line


def default_url(cwd: Path | None = None) -> str | None:
    from ..settings import ini_option

    found = ini_option(Path.cwd() if cwd is None else cwd, "tl_history")
    if found:
        inipath, value = found
        return value if "://" in value else os.path.join(inipath.parent, os.path.expanduser(value))
    return os.environ.get("TL_AUTOTUNE_HISTORY") or None


def add_commands(groups: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--history", metavar="URL", default=None,
                        help="the history: a file, sqlite:///path or redis://... (default: tl_history of the "
                             "pytest ini file found from here upward, else $TL_AUTOTUNE_HISTORY)")
    common.add_argument("--window", metavar="DAYS", type=float, default=14.0, help="days to look back (default 14)")
    history = groups.add_parser("history", help="show a test's history, its regressions, a plot")
    commands = history.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = commands.add_parser("show", parents=[common], help="every test's runs, or one test's")
    p.add_argument("test", nargs="?", help="a test id (or the part of one after the file), e.g. test_k.py::test_gemm")
    p.set_defaults(func=cmd_show)
    p = commands.add_parser("regressions", parents=[common],
                            help="tests whose latest run is slower than their best in the window, and since when")
    p.add_argument("--threshold", metavar="PCT", type=float, default=10.0, help="percent slower (default 10)")
    p.set_defaults(func=cmd_regressions)
    p = commands.add_parser("plot", parents=[common], help="a PNG of one test's run medians")
    p.add_argument("test", help="a test id")
    p.add_argument("-o", "--output", metavar="FILE", default=None, help="the PNG (default: <test>.png)")
    p.add_argument("--threshold", metavar="PCT", type=float, default=10.0, help="a step worth marking (default 10)")
    p.set_defaults(func=cmd_plot)


def run(args: argparse.Namespace) -> int:
    url = args.history or default_url()
    if not url:
        sys.stderr.write("tlautotune: no history given: pass --history URL, or set tl_history in the pytest ini "
                         "file or $TL_AUTOTUNE_HISTORY\n")
        return 2
    try:
        history = open_history(url, timeout=10.0)
        try:
            rows = history.read(since=time.time() - args.window * DAY_S)
        finally:
            history.close()
    except HistoryError as exc:
        sys.stderr.write(f"tlautotune: {exc}\n")
        return 1
    return args.func(rows, args, sys.stdout)


def _match(rows: list[dict], test: str) -> str | None:
    """The test id ``test`` names: itself, or the one id ending in it."""
    ids = sorted({r["test"] for r in rows})
    if test in ids:
        return test
    found = [i for i in ids if i.endswith(test) or i.endswith("/" + test) or i.split("::", 1)[-1] == test]
    return found[0] if len(found) == 1 else None


def _date(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M")


def _commit(row: dict) -> str:
    return (row.get("commit") or "-")[:10]


def cmd_show(rows: list[dict], args: argparse.Namespace, out: TextIO) -> int:
    from ..report.terminal import text_table

    if args.test:
        test = _match(rows, args.test)
        if test is None:
            sys.stderr.write(f"tlautotune: no test {args.test!r} in the history (see `history show`)\n")
            return 1
        table = [("date", "commit", "branch", "machine", "median ms", "config", "status")]
        for r in sorted((r for r in rows if r["test"] == test), key=lambda r: r.get("date", 0)):
            median = f"{median_ms(r):.4g}" if r.get("samples") else "-"
            table.append((_date(r["date"]), _commit(r), r.get("branch") or "-", r.get("device_name") or "?",
                          median, str(r.get("config")), r.get("status") or "ok"))
        out.write(f"{test}\n" + "\n".join(text_table(table)) + "\n")
        return 0
    table = [("test", "machine", "runs", "best ms", "latest ms", "trend")]
    for test in sorted({r["test"] for r in rows}):
        for machine in sorted({r.get("machine") for r in rows if r["test"] == test}, key=str):
            runs = series(rows, test, machine)
            if not runs:
                continue
            table.append((test, runs[-1].get("device_name") or machine, str(len(runs)),
                          f"{min(map(median_ms, runs)):.4g}", f"{median_ms(runs[-1]):.4g}", trend_line(runs)))
    if len(table) == 1:
        out.write("the history holds no measured run in the window\n")
        return 0
    out.write("\n".join(text_table(table)) + "\n")
    return 0


def cmd_regressions(rows: list[dict], args: argparse.Namespace, out: TextIO) -> int:
    found = regressions(rows, args.threshold, since=time.time() - args.window * DAY_S)
    if not found:
        out.write(f"no test is more than {args.threshold:g}% slower than its best in the last {args.window:g} days\n")
        return 0
    for reg in found:
        line = (f"{reg.test} on {reg.latest.get('device_name') or reg.machine}: {median_ms(reg.latest):.4g} ms, "
                f"{reg.change_pct:+.1f}% against its best {median_ms(reg.best):.4g} ms "
                f"({_date(reg.best['date'])}, commit {_commit(reg.best)})")
        if reg.step is not None:
            line += (f"; stepped {reg.step.change_pct:+.1f}% at run {reg.step.index + 1} "
                     f"({_date(reg.step.row['date'])}, commit {_commit(reg.step.row)}, "
                     f"branch {reg.step.row.get('branch') or '-'})")
        out.write(line + "\n")
    return 1


def cmd_plot(rows: list[dict], args: argparse.Namespace, out: TextIO) -> int:
    test = _match(rows, args.test)
    if test is None:
        sys.stderr.write(f"tlautotune: no test {args.test!r} in the history (see `history show`)\n")
        return 1
    path = args.output or (test.replace("/", "_").replace("::", "-") + ".png")
    from .plot import plot_series

    with open(path, "wb") as f:
        f.write(plot_series(measured([r for r in rows if r["test"] == test]), test, args.threshold))
    out.write(f"{path}\n")
    return 0


def step_text(runs: list[dict], threshold_pct: float) -> str | None:
    """The step a test's runs show, in words (for the report)."""
    step = find_step(runs, threshold_pct)
    if step is None:
        return None
    return f"{step.change_pct:+.1f}% from run {step.index + 1} (commit {_commit(step.row)}, {_date(step.row['date'])})"
