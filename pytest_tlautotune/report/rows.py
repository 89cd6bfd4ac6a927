"""One row per ``autotune(...)`` call, and its test properties.

Per-test results travel as ``item.user_properties`` (junit XML, xdist) and as a
``tl_results`` attribute on the call report, which xdist serialises to the
controller; only the controller prints the summary and writes files.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from ..model import Outcome, QuarantineWarning, Status, TuneRequest, Warn, row_id
from ..stash import RESULTS_KEY, settings_key

if TYPE_CHECKING:
    from ..param import ProfileArgs

CHECKED, UNCHECKED = "checked", "unchecked"


def canonical_json(value: object) -> str:
    """``key.canonical_json``, imported on use (``key`` loads hashlib; ``--help`` needs none of it)."""
    from ..key import canonical_json as dump

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
        "id": row_id(item.nodeid, call),
        "call": call,
        "nodeid": item.nodeid,
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
        "check": check_kind(req.profile_args),
        "builds": result.record.get("builds"),  # where max_tuning_s cut the builds: how many were built
        "samples": list(result.samples),
        "loops": result.record.get("loops"),  # calls per sample, when this run re-timed the winner
        "host_ms": result.record.get("host_ms"),  # host time to launch one call (CUDA, re-timed runs)
        "ref_samples": list(result.ref_samples),
        "candidates": [
            {k: r.get(k) for k in ("config", "status", "reason", "median_ms", "compile_s", "reused", "timed_on")}
            for r in records
        ],
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
    item.user_properties.extend(props)
    if quarantined:  # after tuning and saving: under filterwarnings=error the new result is kept
        warn(QuarantineWarning(f"{item.nodeid}: the stored result {outcome.key[:12]} was corrupt "
                               f"({quarantined}); moved to quarantine and tuned again"))
    row = json.loads(json.dumps(row, default=str))  # plain data: it crosses xdist's execnet
    item.stash.setdefault(RESULTS_KEY, []).append(row)
    return row


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


def check_kind(profile_args: ProfileArgs) -> str:
    """``unchecked`` when nothing compares a candidate's output (no ref_prog, no manual_check_prog)."""
    checked = (profile_args.ref_prog is not None or profile_args.manual_check_prog is not None) \
        and not profile_args.skip_check
    return CHECKED if checked else UNCHECKED
