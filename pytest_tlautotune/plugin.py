"""pytest wiring: options, the ``autotune`` marker and fixture, the gate's check, report hooks.

The only module that talks to pytest about a test's fate: the stages below raise
``engine.call.CallFailed`` / ``model.TargetUnavailable`` and hand their warnings to :func:`warn`;
here they become ``pytest.fail``, ``pytest.skip`` and ``warnings.warn``.

Imports only the standard library and pytest: torch and TileLang load when a
test first calls the fixture, so ``pytest --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .settings import (
    SettingsError,
    TuneSettings,
    add_options,
    gate_options,
    gate_source,
    get_option,
    merge_marks,
    validate_options,
)
from .stash import (  # noqa: F401 - public names of this module
    RESULTS_KEY,
    RETIME_KEY,
    collector_key,
    session_key,
    settings_key,
)

if TYPE_CHECKING:
    from xdist.workermanage import WorkerController

    from .param import AutotuneResult

MARKER_HELP = (
    "autotune(configs=[...], **settings): tune the program the `autotune` fixture is called with. "
    "Settings: any CompileArgs/ProfileArgs field (target, out_idx, ref_prog, rtol, atol, warmup, rep, ...) "
    "and strategy, max_trials, max_tuning_s, seed, early_stop_factor, top_k, compile_timeout, max_regression, "
    "reference_config. In a test that does not use the fixture, TileLang's own tuner calls are served by the "
    "plugin with these settings."
)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    validate_options(config)  # a bad option fails now, not after minutes of tuning
    if not hasattr(config, "workerinput"):
        _warn_misplaced_root(config)
    if getattr(config.option, "help", False) or getattr(config.option, "version", False):
        return  # nothing will run: no session (keeps `pytest --help` fast)
    from .session import TuneSession

    config.stash[session_key] = TuneSession(config, warn=warn)
    config.stash[collector_key] = collector = Collector(config)
    config.pluginmanager.register(collector, "tlautotune-collector")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(), "tlautotune-xdist")


def _warn_misplaced_root(config: pytest.Config) -> None:
    """Say so when an option's value moved pytest's rootdir (see ``project``): test ids stay the
    same, but pytest's own settings in the project's ini file were not read."""
    from .project import misplaced_root

    message = misplaced_root(config)
    if message:
        from .model import RootdirWarning

        config.issue_config_time_warning(RootdirWarning(message), stacklevel=2)


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(session_key, None)
    if session is not None:
        session.close()
    collector = config.stash.get(collector_key, None)
    if collector is not None:
        config.pluginmanager.unregister(collector)


class XdistHooks:
    """Registered only when pytest-xdist is active (its hook must exist)."""

    @pytest.hookimpl
    def pytest_configure_node(self, node: WorkerController) -> None:
        node.workerinput["tl_session_start"] = node.config.stash[session_key].started


#: ``autotune`` as a word (the marker, the fixture, TileLang's decorator), not within ``pytest_tlautotune``:
#: a module that only imports this package (its own tests) starts no fork server.
_MENTIONS_AUTOTUNE = re.compile(rb"\bautotune\b")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> None:
    """A Python file that mentions autotune is about to be imported: start the compile workers'
    fork server now, so its TileLang import runs alongside this process's."""
    session = parent.config.stash.get(session_key, None)
    if session is None or session.prestarted or file_path.suffix != ".py" or parent.config.option.collectonly:
        return None
    import fnmatch

    if not any(fnmatch.fnmatch(file_path.name, pat) for pat in parent.config.getini("python_files")):
        return None
    try:
        mentions = _MENTIONS_AUTOTUNE.search(file_path.read_bytes()) is not None
    except OSError:
        return None
    if mentions:
        session.prestart()
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Validate the autotune marker of every test that will run, so a bad argument fails before any
    tuning; last, after ``-k``/``-m``/``--deselect`` dropped the tests that will not run."""
    errors = []
    for item in items:
        marks = list(item.iter_markers("autotune"))
        if not marks:
            continue
        try:
            item.stash[settings_key] = merge_marks(marks)
        except SettingsError as exc:
            errors.append(f"{item.nodeid}: @pytest.mark.autotune: {exc}")
    if errors:
        raise pytest.UsageError("\n".join(errors))
    session = config.stash[session_key]
    if not config.option.collectonly and (session.intercept or any(
            "autotune" in getattr(i, "fixturenames", ()) or i.get_closest_marker("autotune") for i in items)):
        session.prestart()


@pytest.fixture
def autotune(request: pytest.FixtureRequest):
    """``autotune(program, *args, **kwargs) -> AutotuneResult``.

    ``program(*args, **kwargs, **config)`` returns one candidate's PrimFunc; the
    configs and settings come from ``@pytest.mark.autotune``.
    """
    item = request.node
    settings = _item_settings(item)

    def tune(program: object, *args: Any, **kwargs: Any) -> AutotuneResult:
        return _tune(item, settings, program, args, kwargs)

    return tune


def _item_settings(item: pytest.Item) -> TuneSettings:
    settings = item.stash.get(settings_key, None)
    if settings is None:
        marks = list(item.iter_markers("autotune"))
        settings = merge_marks(marks) if marks else TuneSettings()
    return settings


def _tune(item: pytest.Item, settings: TuneSettings, program: object, args: tuple, kwargs: dict) -> AutotuneResult:
    """One tuning of ``item`` (a fixture call, or TileLang's tuner served by ``intercept.py``): its
    result, or the test failed or skipped with the reason (a failed call is a row too)."""
    from .engine.call import CallFailed, tune
    from .model import TargetUnavailable
    from .report.rows import record_failure

    t0 = time.perf_counter()
    try:
        return tune(item.config.stash[session_key], item, settings, program, args, kwargs)
    except CallFailed as exc:
        failed, skipped, request, records = str(exc), None, exc.request, exc.records
    except TargetUnavailable as exc:
        failed, skipped = None, str(exc)
    except Exception as exc:  # not one of ours: still a row saying so, then the error as it is
        record_failure(item, f"{type(exc).__name__}: {exc}", program, None, [], time.perf_counter() - t0)
        raise
    # Outside the except blocks: the report is the message alone, with no exception chained to it.
    if skipped is not None:
        pytest.skip(skipped)
    record_failure(item, failed, program, request, records, time.perf_counter() - t0)
    pytest.fail(failed, pytrace=False)


def warn(warning: Warning) -> None:
    """Issue a warning a stage handed up (a call, the store, the report rows)."""
    warnings.warn(warning, stacklevel=2)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    try:
        with _intercepting(item):
            result = yield
        # The gate runs after the test body passed, so its failure is the test's failure.
        _check_gate(item)
    finally:
        # The gate's re-timers hold the calls' requests (their arguments): not kept past the test.
        if RETIME_KEY in item.stash:
            del item.stash[RETIME_KEY]
    return result


def _intercepting(item: pytest.Item) -> contextlib.AbstractContextManager:
    """TileLang's own tuner calls in the test body served by the plugin (``intercept.py``), where
    ``--tl-intercept`` or the test's marker asks for it; else nothing."""
    session = item.config.stash.get(session_key, None)
    if session is None:
        return contextlib.nullcontext()
    from . import intercept

    if not intercept.wanted(item, session.intercept):
        return contextlib.nullcontext()
    settings = _item_settings(item)
    return intercept.intercepting(lambda program, args, kwargs, own: _tune(item, own, program, args, kwargs),
                                  settings, marked=item.get_closest_marker("autotune") is not None)


def _check_gate(item: pytest.Item) -> None:
    """Gate every autotune result of ``item`` against ``--tl-baseline`` (or the history's best runs,
    ``--tl-gate-against=history``); fail the test on a regression."""
    rows = item.stash.get(RESULTS_KEY, None)
    source = gate_source(item.config)
    if not rows or not source:
        return
    from .gate import judge
    from .model import GateWarning

    opts = gate_options(item.config)
    if source == "history":
        tests, source = _history_tests(item, rows)
        if tests is None:  # said in the gate's table, never the test's failure
            from .gate import SKIPPED, decide

            for row in rows:
                row["gate"] = {**decide(None, row, threshold_pct=opts.threshold_pct, alpha=opts.alpha),
                               "status": SKIPPED, "reason": source}
            return
    else:
        try:
            tests, error = _baseline(item.config, source)["tests"], None
        except ValueError as exc:
            error = f"tlautotune gate: {exc}"
        if error:
            pytest.fail(error, pytrace=False)
    settings = item.stash.get(settings_key, None)
    threshold = settings.get("max_regression") if settings is not None else None
    retimers = item.stash.get(RETIME_KEY, {})
    verdict = judge(rows, tests, source, metric=opts.metric, alpha=opts.alpha, strict=opts.strict,
                    threshold_pct=float(threshold if threshold is not None else opts.threshold_pct),
                    confirm=opts.confirm, retime=lambda rid: retimers[rid]() if rid in retimers else None)
    if verdict.retimed:
        from .report.rows import renumber

        renumber(item, verdict.retimed)
    item.user_properties.extend(verdict.properties)
    for message in verdict.warnings:  # last: under filterwarnings=error a warning raises
        item.warn(GateWarning(message))
    if verdict.failures:
        pytest.fail("\n".join(verdict.failures), pytrace=False)


def _history_tests(item: pytest.Item, rows: list[dict]) -> tuple[dict | None, str]:
    """{row id: its best history run on this machine within the window} and the source's name,
    or (None, why) when the history cannot be read (never the test's failure)."""
    import time

    from .history import HistoryError, machine_id, open_history
    from .history.trend import DAY_S, best_per_test

    url = get_option(item.config, "tl_history")
    since = time.time() - get_option(item.config, "tl_history_window") * DAY_S
    try:
        history = open_history(url, get_option(item.config, "tl_store_timeout"))
        try:
            runs = [r for row in rows for r in history.read(row.get("id") or row["nodeid"], since)]
        finally:
            history.close()
    except (HistoryError, OSError) as exc:
        return None, f"the history could not be read: {exc}"
    tests = {}
    for row in rows:
        machine = machine_id(row.get("machine"))
        tests.update(best_per_test([r for r in runs if r["test"] == (row.get("id") or row["nodeid"])],
                                   machine, since))
    return tests, f"the history {url} (best of {get_option(item.config, 'tl_history_window'):g} days)"


def _baseline(config: pytest.Config, path: str) -> dict:
    """The baseline file, read once per process (kept on the run's ``TuneSession``)."""
    from .report.files import load_baseline

    session = config.stash.get(session_key, None)
    cached = getattr(session, "baseline", None)
    if cached is not None and cached[0] == path:
        return cached[1]
    data = load_baseline(path)
    if session is not None:
        session.baseline = (path, data)
    return data


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    rows = item.stash.get(RESULTS_KEY, None)
    if rows and call.when == "call":
        report.tl_results = rows  # crosses xdist to the controller with the report
    if report.skipped and isinstance(report.longrepr, tuple) and _raised_here(report.longrepr[0]):
        # A skip raised inside the plugin (a CUDA target without a GPU) is about the test: point
        # `pytest -rs` at the test, not at our source line (what pytest does for skip markers).
        path, line = item.reportinfo()[:2]
        report.longrepr = (os.fspath(path), (line or 0) + 1, report.longrepr[2])
    return report


def _raised_here(path: str) -> bool:
    return os.path.dirname(os.path.abspath(path)) == os.path.dirname(os.path.abspath(__file__))


class Collector:
    """The controller's side: gathers result rows from reports, prints and writes at the end."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.rows: list[dict] = []
        self.history_note: str | None = None  # what happened to this run's rows in --tl-history
        self.gate_notes: list[str] = []  # what the whole run's gate has to say (nothing compared)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        rows = getattr(report, "tl_results", None)
        if rows and report.when == "call":
            self.rows.extend(rows)

    @pytest.hookimpl(trylast=True)  # after the terminal reporter finished the test's own line
    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        from .report.terminal import flush_progress

        flush_progress(self.config, nodeid)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(self.config, "workerinput"):
            return
        self._check_matched(session)
        from .report.files import write_files

        url = get_option(self.config, "tl_history")
        if url and self.rows:  # first, so the reports' trends end with this run
            self.history_note = _append_history(self.config, url, self.rows)
            _attach_trends(self.config, url, self.rows)
        write_files(self.config, self.rows, self.gate_notes)
        report_dir = get_option(self.config, "tl_report")
        if report_dir:  # after the gate, so the page shows its verdicts
            from .report.html import write_for_session

            write_for_session(self.config, self.rows, report_dir)

    def _check_matched(self, session: pytest.Session) -> None:
        """A gate run in which no test is in the baseline compared nothing: say so, and with
        ``--tl-strict-baseline`` fail the run."""
        path = get_option(self.config, "tl_baseline")
        if not path or not self.rows:
            return
        from .gate import unmatched

        try:
            tests = _baseline(self.config, path)["tests"]
        except ValueError:
            return  # every gated test failed with the reason already
        note = unmatched(self.rows, tests, path)
        if note is None:
            return
        if gate_options(self.config).strict:
            note += " (--tl-strict-baseline: the run fails)"
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        self.gate_notes.append(note)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.rows:
            return
        from .report.terminal import gate_lines, summary_lines

        terminalreporter.write_sep("=", "tlautotune summary")
        for line in summary_lines(self.rows, self.config.get_verbosity()):
            terminalreporter.write_line(line)
        if self.history_note:
            terminalreporter.write_line(self.history_note)
        lines = gate_lines(self.rows)
        if lines or self.gate_notes:
            terminalreporter.write_sep("-", "tlautotune latency gate")
            for line in lines:
                terminalreporter.write_line(line)
            for note in self.gate_notes:
                terminalreporter.write_line(f"WARNING: tlautotune gate: {note}", yellow=True, bold=True)


def _append_history(config: pytest.Config, url: str, rows: list[dict]) -> str:
    """Append this run's rows to the history; a line for the summary (a history that cannot be
    written costs the history, never a test)."""
    from .history import HistoryError, entry, open_history, run_context

    run = run_context(str(config.rootpath))
    try:
        history = open_history(url, get_option(config, "tl_store_timeout"))
        try:
            history.append([entry(row, run) for row in rows])
        finally:
            history.close()
    except (HistoryError, OSError) as exc:
        return f"tlautotune history: this run's {len(rows)} row(s) were not recorded: {exc}"
    where = f"commit {run.commit[:12]}" if run.commit else "no git commit"
    return f"tlautotune history: {len(rows)} row(s) appended to {history.url} ({where})"


def _attach_trends(config: pytest.Config, url: str, rows: list[dict]) -> None:
    """Each row's runs on its machine within the window (``history``) and their one-line trend
    (``trend``), for the Markdown and the HTML report; a history that cannot be read adds none."""
    import time

    from .history import HistoryError, machine_id, open_history
    from .history.trend import DAY_S, series, trend_line

    try:
        history = open_history(url, get_option(config, "tl_store_timeout"))
        try:
            runs = history.read(since=time.time() - get_option(config, "tl_history_window") * DAY_S)
        finally:
            history.close()
    except (HistoryError, OSError):
        return
    for row in rows:
        mine = series(runs, row.get("id") or row["nodeid"], machine_id(row.get("machine")))
        if mine:
            row["trend"] = trend_line(mine)
            row["history"] = [{k: r.get(k) for k in ("date", "commit", "samples", "latency_ms", "machine",
                                                     "device_name")} for r in mine[-30:]]


def cache_dir(config: pytest.Config) -> str:
    """The cache directory this run uses (for conftest files and tools)."""
    return get_option(config, "tl_cache_dir")
