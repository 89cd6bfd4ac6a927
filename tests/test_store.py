"""The shared result store on a real Redis server (Debian's redis-server), real TileLang kernels on target "c".

"Machines" are pytest processes with their own cache directories on one store; the key
holds the machine fingerprint, so on this one host they all count as identical machines.
"""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from kernel_sources import TILELANG_313_FILTER
from test_core import TWO, gemm_test

from pytest_tlautotune.__main__ import main
from pytest_tlautotune.store.remote import SECRET_ENV, decode, encode, sign

BUGGY = "[dict(bm=16, bn=16, bk=16), dict(bm=16, bn=16, bk=32)]"  # bk=32 mismatches (bug_when_bk=32)


def entry_records(cache):
    return [json.loads(p.read_text()) for p in cache.glob("entries/*/record.json")]


def stored(store, kind):
    """{key: payload} of the store's values of one kind (entry, files, record, lock)."""
    prefix = f"tlautotune:{kind}:"
    return {k[len(prefix):]: (v if kind == "lock" else decode(v)) for k, v in store.values().items()
            if k.startswith(prefix)}


def test_machine_b_hits_what_machine_a_tuned_and_no_binary_crosses(tl, pytester, store, tmp_path):
    pytester.makepyfile(test_k=gemm_test(BUGGY, kwargs=", bug_when_bk=32"))
    tl.run(f"--tl-store={store.url}").assert_outcomes(passed=1)
    assert tl.prop("test_gemm", "tl_cache") == ["miss"]
    config_a = tl.prop("test_gemm", "tl_config")

    # Without a secret only JSON travels: no kernel library, no pickle, no signed files.
    assert set(stored(store, "entry")) and not stored(store, "files") and not stored(store, "lock")
    assert len(stored(store, "record")) == 2
    for name, raw in store.values().items():
        assert name.split(":")[1] in ("entry", "record"), name
        assert b"\x7fELF" not in raw and b"\x80\x04" not in raw and b"\x80\x05" not in raw, name
        assert json.dumps(decode(raw))  # every value is a checksummed JSON document
    entry = next(iter(stored(store, "entry").values()))
    assert set(entry) == {"key", "config", "latency", "record", "stored_at"}

    machine_b = tmp_path / "machine_b"
    tl.run(f"--tl-store={store.url}", f"--tl-cache-dir={machine_b}").assert_outcomes(passed=1)
    assert tl.prop("test_gemm", "tl_cache") == ["hit"]
    assert tl.prop("test_gemm", "tl_config") == config_a
    (record,) = entry_records(machine_b)
    # No search: the winner alone was compiled here and checked against ref_prog; the loser's
    # verdict is machine A's.
    assert record["store"]["mode"] == "data"
    assert record["phases"]["compiled"] == 1 and len(list((machine_b / "kernels").iterdir())) == 1
    verdicts = {c["config"]["bk"]: (c["status"], bool(c.get("reused"))) for c in record["candidates"]}
    assert verdicts == {16: ("ok", False), 32: ("mismatch", True)}


@pytest.mark.slow
def test_adding_a_config_on_machine_b_reuses_machine_a_verdicts(tl, pytester, store, tmp_path):
    pytester.makepyfile(test_k=gemm_test(BUGGY, kwargs=", bug_when_bk=32"))
    tl.run(f"--tl-store={store.url}").assert_outcomes(passed=1)
    three = BUGGY[:-1] + ", dict(bm=32, bn=32, bk=16)]"
    pytester.makepyfile(test_k=gemm_test(three, kwargs=", bug_when_bk=32"))
    machine_b = tmp_path / "machine_b"
    tl.run(f"--tl-store={store.url}", f"--tl-cache-dir={machine_b}").assert_outcomes(passed=1)
    assert tl.prop("test_gemm", "tl_cache") == ["miss"]  # a new space: a search here
    (record,) = entry_records(machine_b)
    reused = {json.dumps(c["config"], sort_keys=True): bool(c.get("reused")) for c in record["candidates"]}
    # The mismatch measured on machine A is not compiled again on machine B.
    assert reused[json.dumps(dict(bk=32, bm=16, bn=16), sort_keys=True)] is True
    assert reused[json.dumps(dict(bk=16, bm=32, bn=32), sort_keys=True)] is False


@pytest.mark.slow
def test_with_a_secret_a_forged_verdict_is_not_reused(tl, pytester, store, tmp_path, monkeypatch):
    """Candidate records travel signed with the secret: one changed in the store (a pass turned into a
    mismatch, which would hide a good config) is measured again on machine B; the untouched mismatch
    is reused."""
    monkeypatch.setenv(SECRET_ENV, "s3cret")
    space_a = BUGGY[:-1] + ", dict(bm=32, bn=32, bk=32)]"  # two mismatches (bk=32)
    pytester.makepyfile(test_k=gemm_test(space_a, kwargs=", bug_when_bk=32"))
    tl.run(f"--tl-store={store.url}").assert_outcomes(passed=1)
    records = stored(store, "record")
    assert len(records) == 3 and all(r["sig"] for r in records.values())
    forged_key = next(k for k, r in records.items() if r["status"] == "ok")
    good = records[forged_key]
    store.client.set(f"tlautotune:record:{forged_key}", encode({**good, "status": "mismatch", "reason": "forged"}))
    pytester.makepyfile(test_k=gemm_test(space_a[:-1] + ", dict(bm=32, bn=32, bk=16)]", kwargs=", bug_when_bk=32"))
    machine_b = tmp_path / "machine_b"
    tl.run(f"--tl-store={store.url}", f"--tl-cache-dir={machine_b}").assert_outcomes(passed=1)
    (record,) = entry_records(machine_b)
    by_config = {json.dumps(c["config"], sort_keys=True): c for c in record["candidates"]}
    forged = by_config[json.dumps(dict(bk=16, bm=16, bn=16), sort_keys=True)]
    assert not forged.get("reused") and forged["status"] == "ok"  # measured here, not taken on trust
    honest = by_config[json.dumps(dict(bk=32, bm=32, bn=32), sort_keys=True)]
    assert honest.get("reused") is True and honest["status"] == "mismatch"


@pytest.mark.slow
def test_read_only_writes_nothing(tl, pytester, store, tmp_path):
    pytester.makepyfile(test_k=gemm_test())
    tl.run(f"--tl-store={store.url}").assert_outcomes(passed=1)
    before = store.values()
    tl.run(f"--tl-store={store.url}", "--tl-store-readonly", f"--tl-cache-dir={tmp_path / 'b'}").assert_outcomes(
        passed=1)
    assert tl.prop("test_gemm", "tl_cache") == ["hit"]
    pytester.makepyfile(test_k=gemm_test("[dict(bm=16, bn=32, bk=16)]"))  # a cold key: tuned here, kept here
    tl.run(f"--tl-store={store.url}", "--tl-store-readonly", f"--tl-cache-dir={tmp_path / 'c'}").assert_outcomes(
        passed=1)
    assert tl.prop("test_gemm", "tl_cache") == ["miss"]
    assert store.values() == before


@pytest.mark.slow
def test_signed_entries_travel_whole_and_a_tampered_one_is_refused(tl, pytester, store, tmp_path, monkeypatch):
    monkeypatch.setenv(SECRET_ENV, "s3cret")
    pytester.makepyfile(test_k=gemm_test())
    tl.run(f"--tl-store={store.url}").assert_outcomes(passed=1)
    ((key, files),) = stored(store, "files").items()
    assert files["sig"] == sign("s3cret", key, files["manifest"]) and "kernel_lib.so" in files["files"]

    machine_b = tmp_path / "machine_b"
    tl.run(f"--tl-store={store.url}", f"--tl-cache-dir={machine_b}").assert_outcomes(passed=1)
    assert tl.prop("test_gemm", "tl_cache") == ["hit"]
    assert not (machine_b / "kernels").exists() or not list((machine_b / "kernels").iterdir())  # nothing compiled
    (record,) = entry_records(machine_b)
    assert "store" not in record  # machine A's entry, as it was

    # An attacker swaps the library and updates the manifest to match, but cannot sign it.
    manifest = json.loads(files["manifest"])
    evil = b"\x7fELF evil"
    import base64
    import hashlib

    files["files"]["kernel_lib.so"] = base64.b64encode(evil).decode()
    manifest["files"]["kernel_lib.so"] = {"size": len(evil), "sha256": hashlib.sha256(evil).hexdigest()}
    files["manifest"] = json.dumps(manifest)
    store.client.set(f"tlautotune:files:{key}", encode(files))
    machine_c = tmp_path / "machine_c"
    result = tl.run(f"--tl-store={store.url}", f"--tl-cache-dir={machine_c}",
                    "-W", TILELANG_313_FILTER)
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*StoreWarning*refused the signed entry*signature does not verify*tuning here*"])
    assert tl.prop("test_gemm", "tl_cache") == ["miss"]  # re-tuned here
    assert b"evil" not in b"".join(p.read_bytes() for p in machine_c.rglob("*") if p.is_file())
    files = stored(store, "files")[key]  # and pushed again, properly signed
    assert files["sig"] == sign("s3cret", key, files["manifest"])


@pytest.mark.slow
def test_two_machines_on_one_cold_key_tune_once(tl, pytester, store, tmp_path):
    pytester.makepyfile(test_k=gemm_test())
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pytester.path), os.environ.get("PYTHONPATH", "")]))
    procs = []
    for name in ("a", "b"):
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--tl-cache-dir={tmp_path / name}",
               f"--tl-store={store.url}", f"--junitxml={tmp_path / name}.xml", "test_k.py"]
        procs.append(subprocess.Popen(cmd, cwd=pytester.path, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT))
    outs = [p.communicate(timeout=600)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    caches = []
    for name in ("a", "b"):
        case = next(ET.parse(tmp_path / f"{name}.xml").getroot().iter("testcase"))
        caches += [p.get("value") for p in case.iter("property") if p.get("name") == "tl_cache"]
    assert sorted(caches) == ["hit", "miss"], outs
    assert len(stored(store, "entry")) == 1 and not stored(store, "lock")


@pytest.mark.slow
def test_a_dead_holders_lock_expires_and_the_waiter_tunes(tl, pytester, store, tmp_path):
    pytester.makepyfile(test_k=gemm_test())
    tl.run(f"--tl-store={store.url}").assert_outcomes(passed=1)
    (key,) = stored(store, "entry")
    store.client.flushall()
    store.client.set(f"tlautotune:lock:{key}", "a-machine-that-died", px=20_000)  # expires while B waits
    result = tl.run(f"--tl-store={store.url}", f"--tl-cache-dir={tmp_path / 'b'}", "-s")  # -s: progress lines
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*another machine is tuning this key: waiting for its result*"])
    assert tl.prop("test_gemm", "tl_cache") == ["miss"]
    assert set(stored(store, "entry")) == {key} and not stored(store, "lock")


KILLED = """
import os, signal, time
import pytest, torch
import kernels

SETTINGS = dict(target="c", out_idx=[-1], ref_prog=lambda A, B: A @ B, warmup=1, rep=5)

@pytest.mark.autotune(configs=[dict(bm=16, bn=16, bk=16)], **SETTINGS)
def test_1_tunes_and_pushes(autotune):
    autotune(kernels.gemm, 64, 64, 64)

def test_2_store_dies_or_hangs():
    os.kill(int(os.environ["STORE_PID"]), getattr(signal, os.environ["STORE_SIGNAL"]))
    time.sleep(0.5)

@pytest.mark.autotune(configs=[dict(bm=16, bn=16), dict(bm=32, bn=32)], **{**SETTINGS, "ref_prog": lambda A, B: A + B})
def test_3_tunes_without_the_store(autotune):
    autotune(kernels.elementwise_add, 64, 64)

@pytest.mark.autotune(configs=[dict(bm=32, bn=16, bk=16)], **SETTINGS)
def test_4_tunes_without_the_store(autotune):
    autotune(kernels.gemm, 64, 64, 64)
"""


@pytest.mark.parametrize(("sig", "error"), [("SIGKILL", "ConnectionError"), ("SIGSTOP", "TimeoutError")])
@pytest.mark.slow
def test_the_store_killed_or_hung_mid_run_costs_one_warning(tl, pytester, redis_servers, monkeypatch, sig, error):
    server = redis_servers()
    monkeypatch.setenv("STORE_PID", str(server.proc.pid))
    monkeypatch.setenv("STORE_SIGNAL", sig)
    pytester.makepyfile(test_k=KILLED)
    result = tl.run(f"--tl-store={server.url}", "--tl-store-timeout=1",
                    "-W", TILELANG_313_FILTER)
    result.assert_outcomes(passed=4, warnings=1)
    result.stdout.fnmatch_lines([f"*StoreWarning: tlautotune store redis://127.0.0.1:*{error}*"
                                 "using the local cache only; not asked again in this run*"])
    assert [tl.prop(f"test_{n}_tunes_without_the_store", "tl_cache") for n in (3, 4)] == [["miss"], ["miss"]]


@pytest.mark.slow
def test_garbage_in_the_store_costs_one_warning(tl, pytester, store, tmp_path):
    pytester.makepyfile(test_k=gemm_test())
    tl.run(f"--tl-store={store.url}").assert_outcomes(passed=1)
    for name in store.values():
        store.client.set(name, b"\x00garbage")
    result = tl.run(f"--tl-store={store.url}", f"--tl-cache-dir={tmp_path / 'b'}",
                    "-W", TILELANG_313_FILTER)
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*StoreWarning*not a tlautotune blob*using the local cache only*"])
    assert tl.prop("test_gemm", "tl_cache") == ["miss"]
    assert all(isinstance(doc, dict) for doc in stored(store, "entry").values())  # overwritten by a whole one


@pytest.mark.slow
def test_ttl_and_the_cli_on_the_store(tl, pytester, store, capsys):
    pytester.makepyfile(test_k=gemm_test(TWO))
    tl.run(f"--tl-store={store.url}", "--tl-store-ttl=2").assert_outcomes(passed=1)
    names = list(store.values())
    assert names and all(86_400 < store.client.ttl(n) <= 2 * 86_400 for n in names)

    (key,) = stored(store, "entry")
    assert main(["cache", "list", "--store", store.url]) == 0
    out = capsys.readouterr().out
    assert key[:12] in out and "test_k.py::test_gemm" in out and "1 entry, " in out
    assert main(["cache", "show", key[:8], "--store", store.url]) == 0
    assert "candidates (2):" in capsys.readouterr().out
    assert main(["cache", "prune", "--older-than", "1", "--store", store.url]) == 0
    assert "pruned 0 of 1 entries" in capsys.readouterr().out and store.values().keys() == set(names)
    assert main(["cache", "prune", "--older-than", "0", "--store", store.url]) == 0
    assert "pruned 1 of 1 entries older than 0 days and 2 unreferenced" in capsys.readouterr().out
    assert store.values() == {}


def test_bad_urls_are_usage_errors(pytester):
    result = pytester.runpytest("--tl-store=http://example.com")
    result.stderr.fnmatch_lines(["*--tl-store*'http://example.com' is not a Redis URL*redis://*"])
    assert main(["cache", "list", "--store", "redis://127.0.0.1:1/0"]) == 1


def test_help_with_a_store_configured_imports_no_redis(pytester):
    pytester.makeconftest("""
import sys
def pytest_unconfigure(config):
    print("HEAVY", sorted(m for m in ("redis", "torch", "tilelang") if m in sys.modules))
""")
    result = pytester.runpytest_subprocess("--help", "--tl-store=redis://127.0.0.1:1/0")
    result.stdout.fnmatch_lines(["*--tl-store-readonly*", "HEAVY []"])
