"""One row per ``autotune(...)`` call, and its test properties.

Per-test results travel as ``item.user_properties`` (junit XML, xdist) and as a
``tl_results`` attribute on the call report, which xdist serialises to the
controller; only the controller prints the summary and writes files.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from ..model import Outcome, QuarantineWarning, RowStatus, Status, TuneRequest, Warn, row_id
from ..project import stable_id
from ..stash import RESULTS_KEY, settings_key

if TYPE_CHECKING:
    from ..param import ProfileArgs

CHECKED, UNCHECKED = "checked", "unchecked"
#: What a row's speedup divides (the summary, the Markdown and the HTML report say it).
SPEEDUP_LEGEND = "speedup = ref_prog latency / kernel latency (above 1x the kernel is faster than the reference)"


def first_line(text: object) -> str:
    """The first line of a (failure) message, for a table cell."""
    lines = str(text or "").strip().splitlines()
    return lines[0] if lines else ""


VS = "vs "  # checked against a reference config's outputs: "vs {...}"


def canonical_json(value: object) -> str:
    """``key.canonical_json``, imported on use (``key`` loads hashlib; ``--help`` needs none of it)."""
    from ..engine.key import canonical_json as dump

    return dump(value)


def record_outcome(item: pytest.Item, req: TuneRequest, outcome: Outcome, machine: dict, quarantined: str | None,
                   warn: Warn) -> dict:
    """Store one fixture call's outcome as user properties and as a row for the summary.

    ``machine`` is the fingerprint of the device's machine; ``quarantined`` why the stored result
    was moved aside in this run (it was tuned again: a ``QuarantineWarning``), if it was.

    Every call of the fixture in a test is its own row: the first is known by the test's
    node id, the n-th by ``<nodeid>[call n]`` (stable while the test calls in the same order).
    """
    result = outcome.result
    records = outcome.records or []
    call = len(item.stash.get(RESULTS_KEY, [])) + 1
    row = {
        "id": row_id(stable_id(item), call),
        "call": call,
        "nodeid": item.nodeid,
        "status": RowStatus.TUNED,
        "program": req.program_name,
        "config": result.config,
        "latency_ms": result.latency,
        "ref_latency_ms": result.ref_latency,
        "speedup": (result.ref_latency / result.latency) if result.ref_latency and result.latency else None,
        "cache": outcome.cache,
        "tuning_s": outcome.tuning_s,
        "key": outcome.key,
        "device": req.device,  # where the winner was confirmed
        "timing_devices": list(req.timing_devices),  # where candidates were timed
        "device_name": result.record.get("device_info", {}).get("device") or machine.get("device"),
        "machine": machine,
        "n_configs": len(req.configs),
        "n_measured": len(records),
        "n_passed": sum(r.get("status") == Status.OK for r in records),
        "check": check_kind(req.profile_args, records, result.record.get("reference")),
        "unchecked_why": unchecked_why(req.profile_args, records, result.record.get("reference")),
        "builds": result.record.get("builds"),  # where max_tuning_s cut the builds: how many were built
        "samples": list(result.samples),
        "loops": result.record.get("loops"),  # calls per sample, when this run re-timed the winner
        "host_ms": result.record.get("host_ms"),  # host time to launch one call (CUDA, re-timed runs)
        "ref_samples": list(result.ref_samples),
        "candidates": _candidates(records),
    }
    row.update(throughput(item, req, result.latency))
    props = [
        ("tl_id", row["id"]),  # which call the properties after it belong to
        ("tl_latency_ms", result.latency),
        ("tl_config", canonical_json(result.config)),
        ("tl_cache", outcome.cache),
        ("tl_tuning_s", round(outcome.tuning_s, 3)),
    ]
    if result.ref_latency is not None:
        props.insert(2, ("tl_ref_latency_ms", result.ref_latency))
    props.extend((f"tl_{name}", float(f"{row[name]:.6g}")) for name in ("tflops", "gbps") if row.get(name) is not None)
    if quarantined:
        row["quarantined"] = quarantined
        props.append(("tl_quarantined", quarantined))
    if outcome.stale:  # the stored winner failed today's check: tuned again
        row["stale"] = outcome.stale
        props.append(("tl_stale", outcome.stale))
    item.user_properties.extend(props)
    if quarantined:  # after tuning and saving: under filterwarnings=error the new result is kept
        warn(QuarantineWarning(f"{item.nodeid}: the stored result {outcome.key[:12]} was corrupt "
                               f"({quarantined}); moved to quarantine and tuned again"))
    row = json.loads(json.dumps(row, default=str))  # plain data: it crosses xdist's execnet
    item.stash.setdefault(RESULTS_KEY, []).append(row)
    return row


def renumber(item: pytest.Item, retimed: dict[str, dict]) -> None:
    """The latency properties of the calls the gate timed again (row id: the new numbers, already
    in the rows) say the numbers the gate decided on, as the rows do."""
    props, current = item.user_properties, None
    for i, (name, value) in enumerate(props):
        if name == "tl_id":
            current = value
        elif current in retimed and name in ("tl_latency_ms", "tl_ref_latency_ms"):
            props[i] = (name, retimed[current][name.removeprefix("tl_")])
        elif current in retimed and name in ("tl_tflops", "tl_gbps") and retimed[current].get(name[3:]) is not None:
            props[i] = (name, float(f"{retimed[current][name[3:]]:.6g}"))


def throughput(item: pytest.Item, req: TuneRequest, latency_ms: float | None) -> dict:
    """``tflops`` / ``gbps`` of the winner, where the marker gives the work (``flops=``, ``bytes=``:
    a number, or a callable of the program's arguments as the test passed them)."""
    settings = item.stash.get(settings_key, None)
    out: dict = {}
    if settings is None or not latency_ms:
        return out
    args, kwargs = req.program.example_args
    for name, key, scale in (("flops", "tflops", 1e12), ("bytes", "gbps", 1e9)):
        work = settings.get(name)
        if work is None:
            continue
        try:
            value = float(work(*args, **kwargs) if callable(work) else work)
        except Exception as exc:  # noqa: BLE001 - the user's callable: said in the row, not fatal
            out[f"{key}_error"] = f"{name}= raised {type(exc).__name__}: {exc}"
            continue
        out[name], out[key] = value, value / (latency_ms * 1e-3) / scale
    return out


def _candidates(records: list[dict]) -> list[dict]:
    return [{k: r.get(k) for k in ("config", "status", "reason", "median_ms", "compile_s", "reused", "timed_on")}
            for r in records]


def record_failure(item: pytest.Item, message: str, program: object, req: TuneRequest | None, records: list[dict],
                   tuning_s: float) -> dict:
    """A row for a fixture call that failed its test (``message``: why, as the test reports it):
    the summary, the JSON, the Markdown and the HTML report list it with its reason and the
    candidates measured before it failed. ``req`` is None when the call failed before its request
    was made (a wrong program or marker argument)."""
    call = len(item.stash.get(RESULTS_KEY, [])) + 1
    reason = message.removeprefix(f"{item.nodeid}: ")
    name = req.program_name if req is not None else getattr(program, "__name__", type(program).__name__)
    row = {
        "id": row_id(stable_id(item), call),
        "call": call,
        "nodeid": item.nodeid,
        "status": RowStatus.FAILED,
        "reason": reason,
        "program": name,
        "config": None,
        "latency_ms": None,
        "ref_latency_ms": None,
        "speedup": None,
        "cache": None,
        "tuning_s": tuning_s,
        "device": req.device if req is not None else None,
        "n_configs": len(req.configs) if req is not None else None,
        "n_measured": len(records),
        "n_passed": sum(r.get("status") == Status.OK for r in records),
        "check": check_kind(req.profile_args) if req is not None else None,
        "samples": [],
        "ref_samples": [],
        "candidates": _candidates(records),
    }
    item.user_properties.extend([("tl_id", row["id"]), ("tl_failed", reason.splitlines()[0] if reason else "")])
    row = json.loads(json.dumps(row, default=str))
    item.stash.setdefault(RESULTS_KEY, []).append(row)
    return row


def check_kind(profile_args: ProfileArgs, records: list[dict] = (), reference: dict | None = None) -> str:
    """``unchecked`` when nothing was compared: no ref_prog or manual_check_prog (or skip_check),
    or the candidates that passed compared nothing (no output, no in-place input); ``vs <config>``
    when a reference config's outputs did (``engine/reference_config.py``)."""
    if reference and not profile_args.skip_check:
        return f"{VS}{canonical_json(reference.get('config'))}"
    return UNCHECKED if unchecked_why(profile_args, records) else CHECKED


def unchecked_why(profile_args: ProfileArgs, records: list[dict] = (), reference: dict | None = None) -> str | None:
    """Why the candidates were timed without checking them, or None when they were checked."""
    if reference and not profile_args.skip_check:
        return None
    if (profile_args.ref_prog is None and profile_args.manual_check_prog is None) or profile_args.skip_check:
        return "no ref_prog or manual_check_prog (or skip_check), so candidates were timed without checking " \
               "their output"
    passed = [r for r in records if r.get("status") == Status.OK and "compared" in r]
    if passed and not any(r["compared"] for r in passed):
        return "nothing was compared: the kernel returns no output and no input is a result (inplace=[])"
    return None
