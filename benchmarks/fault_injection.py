"""Fault injection: SIGKILL the tuning pytest process at points spread over tuning and saving.

    python benchmarks/fault_injection.py [--trials 20] [--json FILE]

One calibration run (fresh cache) measures when tuning starts (the per-key lock file appears)
and when the entry is published. Each trial then gets a fresh cache, starts `python -m pytest`
tuning a small CPU GEMM space, and `kill -9`s the pytest process as tuning starts, as its first
compiled kernel appears, a delay after tuning started (delays spread over the measured window),
or a few milliseconds after the entry's staging directory appears (inside `save_to_disk`).
Nothing in the plugin is patched: the points are found by watching the cache directory every
half millisecond.

After the kill, everything the dead process started (compile and timing workers, the fork
server) must exit by itself within ``ORPHAN_S`` seconds ("drained": how long that took; what
is left then is counted as "orphans", and killed). Then every visible entry must pass
`store.safety.check_entry` + `store.manifest.verify_manifest` and load with
`AutotuneResult.load_from_disk`, every visible compiled kernel must pass its manifest, every
candidate record must parse, and the same pytest runs again and must pass (a hit, or a miss
that tunes again).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNELS = (ROOT / "examples" / "kernels_cpu.py").read_text()  # the inner runs import it as `kernels`

TEST = '''
import pytest, torch
import kernels

CONFIGS = [dict(bm=16, bn=16, bk=16), dict(bm=32, bn=32, bk=32), dict(bm=16, bn=32, bk=16), dict(bm=32, bn=16, bk=32)]

@pytest.mark.autotune(configs=CONFIGS, target="c", out_idx=[-1], ref_prog=lambda A, B: A @ B, warmup=1, rep=5)
def test_gemm(autotune):
    result = autotune(kernels.gemm, 64, 64, 64)
    A, B = torch.randn(64, 64), torch.randn(64, 64)
    torch.testing.assert_close(result.kernel(A, B), A @ B, rtol=1e-3, atol=1e-3)
'''

# Events seen in the cache directory, in the order tuning produces them.
EVENTS = ("lock", "kernel", "staging", "entry")
#: Seconds after the kill by which everything the killed run started must have exited.
ORPHAN_S = 10.0


def _visible(directory: Path) -> list[Path]:
    try:
        return [p for p in directory.iterdir() if not p.name.startswith(".")]
    except OSError:
        return []


def _events(cache: Path) -> set[str]:
    seen = set()
    try:
        if any(p.suffix == ".lock" and not p.name.startswith("device-") for p in (cache / "locks").iterdir()):
            seen.add("lock")
    except OSError:
        pass
    if _visible(cache / "kernels"):
        seen.add("kernel")
    try:
        if any(p.name.startswith(".staging-") for p in (cache / "entries").iterdir()):
            seen.add("staging")
    except OSError:
        pass
    if _visible(cache / "entries"):
        seen.add("entry")
    return seen


class Watcher(threading.Thread):
    """Polls the cache every half millisecond; records when each event was first seen and, given an
    ``anchor``, SIGKILLs ``proc`` ``delay`` s after the anchor was first seen. The kill is sent from
    this thread, in the same pass that sees the anchor: a kill inside ``save_to_disk`` has the
    10-20 ms between the staging directory and the published entry, and a second thread's turn at
    the GIL could take a share of that on a loaded machine."""

    def __init__(self, cache: Path, t0: float, anchor: str | None = None, delay: float = 0.0):
        super().__init__(daemon=True)
        self.cache, self.t0, self.anchor, self.delay = cache, t0, anchor, delay
        self.first: dict[str, float] = {}
        self.stop = threading.Event()
        self.proc: subprocess.Popen | None = None
        self.killed_at: float | None = None
        self.killed_phase: str | None = None

    def run(self) -> None:
        while not self.stop.is_set():
            seen = _events(self.cache)
            now = time.perf_counter() - self.t0
            for event in seen:
                self.first.setdefault(event, now)
            if (self.proc is not None and self.killed_at is None and self.anchor in self.first
                    and now >= self.first[self.anchor] + self.delay and self.proc.poll() is None):
                self.proc.send_signal(signal.SIGKILL)
                self.killed_at = time.perf_counter() - self.t0
                self.killed_phase = max(seen, key=EVENTS.index) if seen else "start"
            time.sleep(0.0005)


def _env(cache: Path) -> dict:
    # TileLang's own kernel cache, one per trial: shared, it would make later trials compile nothing.
    env = dict(os.environ, TILELANG_CACHE_DIR=f"{cache}-tilelang")
    env.pop("PYTEST_ADDOPTS", None)
    env.pop("PYTEST_XDIST_WORKER", None)
    env.pop("PYTEST_XDIST_WORKER_COUNT", None)
    return env


def _cmd(cache: Path, junit: Path) -> list[str]:
    return [sys.executable, "-m", "pytest", "test_k.py", "-q", "-p", "no:cacheprovider",
            f"--tl-cache-dir={cache}", f"--junitxml={junit}"]


def _pgroup(pgid: int) -> list[str]:
    """Live processes of process group ``pgid`` (the dead pytest's workers and fork server)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            try:
                cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:160]
            except OSError:
                cmdline = "?"
            pids.append(f"{stat.parent.name}: {cmdline}")
    return pids


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def kill_run(workdir: Path, cache: Path, anchor: str | None, delay: float, limit: float = 300) -> dict:
    """Run pytest; SIGKILL it ``delay`` s after ``anchor`` is first seen (None: let it finish)."""
    t0 = time.perf_counter()
    watcher = Watcher(cache, t0, anchor, delay)
    watcher.start()
    proc = subprocess.Popen(_cmd(cache, workdir / "junit-kill.xml"), cwd=workdir, env=_env(cache),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    watcher.proc = proc
    out = {"killed": False, "phase": None, "orphans": 0}
    try:
        while proc.poll() is None and time.perf_counter() - t0 < limit:
            time.sleep(0.005)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if watcher.killed_at is not None:
            out.update(killed=True, at_s=round(watcher.killed_at, 3), phase=watcher.killed_phase)
            # What the dead process left running (workers notice within a second; the fork server
            # exits as it sees its parent gone, after its interpreter's shutdown): how long until
            # none is left, and what still runs after ORPHAN_S.
            killed_at = time.perf_counter()
            while _pgroup(proc.pid) and time.perf_counter() - killed_at < ORPHAN_S:
                time.sleep(0.05)
            out["drained_s"] = round(time.perf_counter() - killed_at, 2)
            out["orphan_cmds"] = _pgroup(proc.pid)
            out["orphans"] = len(out["orphan_cmds"])
    finally:
        _kill_group(proc.pid)
        watcher.stop.set()
        watcher.join()
    out["rc"] = proc.returncode
    out["events"] = {k: round(v, 3) for k, v in watcher.first.items()}
    out["output"] = proc.stdout.read().decode(errors="replace")[-3000:]
    return out


def verify(cache: Path) -> dict:
    """Check everything a later run could pick up from ``cache``."""
    from pytest_tlautotune.param import AutotuneResult, CompileArgs
    from pytest_tlautotune.store import safety
    from pytest_tlautotune.store.manifest import KERNEL_FILES, verify_manifest

    compile_args = CompileArgs(out_idx=[-1], target="c", execution_backend="cython")
    report = {"entries": 0, "corrupt_entries": [], "kernels": 0, "corrupt_kernels": [], "bad_records": [],
              "leftovers": 0}
    for entry in _visible(cache / "entries"):
        report["entries"] += 1
        try:
            safety.check_entry(entry)
            verify_manifest(entry)
        except Exception as exc:
            report["corrupt_entries"].append(f"{entry.name[:12]}: {exc}")
            continue
        if AutotuneResult.load_from_disk(entry, compile_args) is None:
            report["corrupt_entries"].append(f"{entry.name[:12]}: load_from_disk returned None")
    for kernel in _visible(cache / "kernels"):
        report["kernels"] += 1
        try:
            verify_manifest(kernel, KERNEL_FILES)
        except Exception as exc:
            report["corrupt_kernels"].append(f"{kernel.name[:12]}: {exc}")
    for record in _visible(cache / "candidates"):
        try:
            assert isinstance(json.loads(record.read_text()), dict)
        except Exception as exc:
            report["bad_records"].append(f"{record.name[:12]}: {exc}")
    for sub in ("entries", "kernels", "candidates"):
        try:
            report["leftovers"] += sum(p.name.startswith(".") for p in (cache / sub).iterdir())
        except OSError:
            pass
    return report


def rerun(workdir: Path, cache: Path) -> dict:
    junit = workdir / "junit-rerun.xml"
    t0 = time.perf_counter()
    proc = subprocess.run(_cmd(cache, junit), cwd=workdir, env=_env(cache), capture_output=True, text=True)
    out = {"rc": proc.returncode, "s": round(time.perf_counter() - t0, 2), "cache": None}
    if junit.exists():
        values = [p.get("value") for p in ET.parse(junit).getroot().iter("property") if p.get("name") == "tl_cache"]
        out["cache"] = values[0] if values else None
    if proc.returncode:
        out["output"] = (proc.stdout + proc.stderr)[-3000:]
    return out


def plan(trials: int, window: float) -> list[tuple[str, float]]:
    """Kill points: two at events of tuning, then delays spread over [lock, entry published], and
    about 30% just inside save_to_disk.

    The points at events (the lock appears: tuning starts; the first compiled kernel appears) and
    in save_to_disk are reached by every trial whatever its speed. The spread delays come from the
    calibration run's clock: a trial that runs faster than the calibration may finish before its
    kill time, and is reported as "exited".
    """
    n_save = max(1, round(trials * 0.3)) if trials > 1 else 0
    n_spread = trials - n_save
    at_events = [("lock", 0.0), ("kernel", 0.0)][:n_spread]
    n_timed = n_spread - len(at_events)
    points = at_events + [("lock", window * (i + 0.5) / n_timed) for i in range(n_timed)]
    save_delays = [0.0, 0.001, 0.002, 0.005, 0.010, 0.020]
    points += [("staging", save_delays[i % len(save_delays)]) for i in range(n_save)]
    return points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--json", help="write every trial's data here")
    args = parser.parse_args(argv)

    base = Path(tempfile.mkdtemp(prefix="tl-fault-"))
    (base / "kernels.py").write_text(KERNELS)
    (base / "test_k.py").write_text(TEST)
    (base / "pytest.ini").write_text("[pytest]\n")

    calib = kill_run(base, base / "cache-calibration", None, 0.0)
    if calib["rc"] != 0 or "entry" not in calib["events"] or "lock" not in calib["events"]:
        print(calib["output"])
        raise SystemExit(f"calibration run failed (rc {calib['rc']}, events {calib['events']})")
    window = calib["events"]["entry"] - calib["events"]["lock"]
    print(f"calibration: tuning starts at {calib['events']['lock']:.2f} s, entry published at "
          f"{calib['events']['entry']:.2f} s (window {window:.2f} s); events {calib['events']}")

    rows = []
    header = (f"{'#':>2}  {'kill point':<18} {'killed at':>9}  {'phase':<8} {'orphans':>7}  {'entries':>7} "
              f"{'corrupt':>7}  {'kernels':>7} {'corrupt':>7}  {'leftover':>8}  {'drained':>7}  {'rerun':<11}")
    print(header)
    print("-" * len(header))
    for i, (anchor, delay) in enumerate(plan(args.trials, window)):
        cache = base / f"cache-{i}"
        killed = kill_run(base, cache, anchor, delay)
        checked = verify(cache)
        again = rerun(base, cache)
        ok = again["rc"] == 0 and again["cache"] in ("hit", "miss")
        row = {"trial": i, "anchor": anchor, "delay_s": round(delay, 4), **killed, **checked,
               "rerun": again, "rerun_ok": ok}
        row.pop("output")
        rows.append(row)
        point = f"{anchor}+{delay * 1000:.0f}ms"
        at = f"{killed['at_s']:.2f} s" if killed["killed"] else "exited"
        print(f"{i:>2}  {point:<18} {at:>9}  {killed['phase'] or '-':<8} {killed['orphans']:>7}  "
              f"{checked['entries']:>7} {len(checked['corrupt_entries']):>7}  {checked['kernels']:>7} "
              f"{len(checked['corrupt_kernels']):>7}  {checked['leftovers']:>8}  "
              f"{format(killed.get('drained_s', 0), '.2f') + ' s':>7}  "
              f"{(again['cache'] or 'FAIL') + ' ' + format(again['s'], '.1f') + 's':<11}", flush=True)
        for problem in checked["corrupt_entries"] + checked["corrupt_kernels"] + checked["bad_records"]:
            print(f"      ! {problem}")
        if not ok:
            print(again.get("output", ""))

    totals = {
        "trials": len(rows),
        "killed": sum(r["killed"] for r in rows),
        "killed_while_saving": sum(r["phase"] == "staging" for r in rows),
        "visible_entries": sum(r["entries"] for r in rows),
        "corrupt_entries": sum(len(r["corrupt_entries"]) for r in rows),
        "corrupt_kernels": sum(len(r["corrupt_kernels"]) for r in rows),
        "bad_records": sum(len(r["bad_records"]) for r in rows),
        "rerun_failed": sum(not r["rerun_ok"] for r in rows),
        "rerun_hit": sum(r["rerun"]["cache"] == "hit" for r in rows),
        "rerun_miss": sum(r["rerun"]["cache"] == "miss" for r in rows),
        "orphans": sum(r["orphans"] for r in rows),
        "drained_max_s": max((r.get("drained_s", 0.0) for r in rows), default=0.0),
        "leftovers": sum(r["leftovers"] for r in rows),
    }
    print("totals: " + ", ".join(f"{k} {v}" for k, v in totals.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"calibration": calib["events"], "window_s": window,
                                               "rows": rows, "totals": totals}, indent=1, default=str))
    bad = (totals["corrupt_entries"] + totals["corrupt_kernels"] + totals["bad_records"] + totals["rerun_failed"]
           + totals["orphans"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
