"""``python -m pytest_tlautotune cache ...`` on a cache filled by real tuning runs (TileLang, target "c")."""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
from kernel_sources import KERNELS

from pytest_tlautotune.__main__ import main
from pytest_tlautotune.cli import default_cache_dir

INNER = '''
import pytest
import kernels


def gemm(M, N, K, bm=16, bn=16, bk=16, dtype="float32"):
    return kernels.gemm(M, N, K, bm, bn, bk, dtype, bug_when_bk=32)  # deliberate bug: bk == 32 is wrong


SETTINGS = dict(target="c", out_idx=[-1], ref_prog=lambda A, B: A @ B, warmup=2, rep=10)


@pytest.mark.autotune(configs=[dict(bm=16, bn=16, bk=16), dict(bm=16, bn=16, bk=32)], **SETTINGS)
def test_square(autotune):
    autotune(gemm, 64, 64, 64)


@pytest.mark.autotune(configs=[dict(bm=16, bn=16, bk=16), dict(bm=32, bn=32, bk=16)], **SETTINGS)
def test_tall(autotune):
    autotune(gemm, 128, 32, 64)
'''


def run_inner(pytester, cache, *args):
    # "--opt=value": a separate token naming an existing directory would move pytest's rootdir.
    return pytester.runpytest(f"--tl-cache-dir={cache}", "-p", "no:cacheprovider", *args)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return tmp_path_factory.mktemp("tuned") / "cache"


@pytest.fixture
def cache(pytester, template, tmp_path):
    """A copy of a cache that one inner run tuned (two tests), made once per module."""
    pytester.makepyfile(kernels=KERNELS, test_inner=INNER)
    if not template.exists():
        building = template.with_name("building")
        run_inner(pytester, building).assert_outcomes(passed=2)
        os.rename(building, template)
    copy = tmp_path / "cache"
    shutil.copytree(template, copy, symlinks=True)
    return copy


def entries(cache):
    return {p.name: json.loads((p / "record.json").read_text()) for p in (cache / "entries").iterdir()}


def entry_of(cache, test):
    return next(key for key, record in entries(cache).items() if record["nodeid"].endswith(f"::{test}"))


def ckeys(record):
    return {c["ckey"] for c in record["candidates"]}


def test_list_shows_test_kernel_config_latency_device_size_age(cache, capsys):
    assert main(["cache", "list", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["key", "test", "kernel", "config", "latency", "device", "size", "age"]
    for key, record in entries(cache).items():
        line = next(line for line in lines if line.startswith(key[:12]))
        config = json.loads((cache / "entries" / key / "best_config.json").read_text())
        latency = json.loads((cache / "entries" / key / "latency.json").read_text())["latency"]
        assert record["nodeid"] in line and " gemm " in line
        assert ", ".join(f"{k}={v}" for k, v in config.items()) in line
        assert f"{latency:.4g} ms" in line
        assert f"{record['device_info']['device']} (cpu)" in line
        assert re.search(r" [0-9.]+ KiB  +[0-9]+ (s|min)$", line)  # size, then age: tuned minutes ago
    assert lines[-1].startswith("2 entries, ")


def test_list_json_matches_the_files(cache, capsys):
    assert main(["cache", "list", "--json", "--cache-dir", str(cache)]) == 0
    listed = {e["key"]: e for e in json.loads(capsys.readouterr().out)}
    assert set(listed) == set(entries(cache))
    for key, e in listed.items():
        d = cache / "entries" / key
        assert e["latency_ms"] == json.loads((d / "latency.json").read_text())["latency"]
        assert e["config"] == json.loads((d / "best_config.json").read_text())
        assert e["size"] == sum(f.stat().st_size for f in d.iterdir())
        assert e["tuned_at"] == json.loads((d / "record.json").read_text())["tuned_at"]


def test_show_takes_a_unique_prefix_and_lists_candidates(cache, capsys):
    key = entry_of(cache, "test_square")
    prefix = next(key[:n] for n in range(1, 65) if sum(k.startswith(key[:n]) for k in entries(cache)) == 1)
    assert main(["cache", "show", prefix, "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert f"key           {key}" in out
    assert "test_inner.py::test_square" in out and "kernel        gemm" in out
    assert "candidates (2):" in out
    assert "bm=16, bn=16, bk=16  ok" in out
    assert "bm=16, bn=16, bk=32  mismatch" in out and "elements mismatch" in out

    assert main(["cache", "show", "", "--cache-dir", str(cache)]) == 1
    assert "2 entries start with ''" in capsys.readouterr().err
    assert main(["cache", "show", "nokey", "--cache-dir", str(cache)]) == 1
    assert "no cache entry with a key starting with 'nokey'" in capsys.readouterr().err


def test_prune_removes_old_entries_and_their_kernels_and_keeps_the_rest_usable(cache, pytester, capsys):
    old_key, new_key = entry_of(cache, "test_square"), entry_of(cache, "test_tall")
    record_path = cache / "entries" / old_key / "record.json"
    old = json.loads(record_path.read_text())
    record_path.write_text(json.dumps({**old, "tuned_at": time.time() - 10 * 86400}))  # tuned 10 days ago
    kept = entries(cache)[new_key]

    assert main(["cache", "prune", "--older-than", "5", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert f"removed {old_key[:12]}  test_inner.py::test_square" in out
    assert "pruned 1 of 2 entries older than 5 days" in out
    assert set(entries(cache)) == {new_key}
    gone = ckeys(old) - ckeys(kept)
    assert gone
    for ckey in gone:
        assert not (cache / "kernels" / ckey).exists() and not (cache / "candidates" / f"{ckey}.json").exists()
    for ckey in ckeys(kept):
        assert (cache / "candidates" / f"{ckey}.json").exists()
    assert not [p for p in (cache / "entries").iterdir() if p.name.startswith(".")]  # no trash left behind

    assert main(["cache", "prune", "--older-than", "5", "--cache-dir", str(cache)]) == 0
    assert "pruned 0 of 1 entries" in capsys.readouterr().out
    # What is left still loads: the kept test runs from the cache alone.
    run_inner(pytester, cache, "--tl-no-tune", "-k", "test_tall").assert_outcomes(passed=1, deselected=1)


def test_clear_empties_the_cache_but_not_what_links_point_to(cache, tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not the cache's")
    (cache / "entries" / "linked").symlink_to(outside, target_is_directory=True)
    (cache / "kernels" / "linked-file").symlink_to(outside / "keep.txt")

    assert main(["cache", "clear", "--cache-dir", str(cache)]) == 0
    assert f"from {cache}" in capsys.readouterr().out
    for sub in ("entries", "candidates", "kernels"):
        assert list((cache / sub).iterdir()) == [], sub
    assert (outside / "keep.txt").read_text() == "not the cache's"

    assert main(["cache", "list", "--cache-dir", str(cache)]) == 0
    assert capsys.readouterr().out == f"no cache entries in {cache}\n"


def test_module_entry_point_uses_the_environment_default(cache, tmp_path):
    env = {**os.environ, "TL_AUTOTUNE_CACHE_DIR": str(cache)}
    cli = [sys.executable, "-m", "pytest_tlautotune", "cache"]
    listed = subprocess.run([*cli, "list"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "test_inner.py::test_square" in listed.stdout and "test_inner.py::test_tall" in listed.stdout
    key = entry_of(cache, "test_tall")
    shown = subprocess.run([*cli, "show", key[:20]], env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0 and f"key           {key}" in shown.stdout
    pruned = subprocess.run([*cli, "prune", "--older-than", "0"], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert pruned.returncode == 0 and "pruned 2 of 2 entries" in pruned.stdout
    assert list((cache / "entries").iterdir()) == []
    # Everything unreferenced and older than the cutoff (now) goes too.
    assert list((cache / "kernels").iterdir()) == [] and list((cache / "candidates").iterdir()) == []


def test_a_missing_cache_is_reported_not_created(tmp_path, capsys):
    missing = tmp_path / "none"
    assert main(["cache", "list", "--cache-dir", str(missing)]) == 0
    assert capsys.readouterr().out == f"no cache at {missing} (nothing tuned yet, or pass --cache-dir)\n"
    assert main(["cache", "show", "abc", "--cache-dir", str(missing)]) == 1
    assert main(["cache", "clear", "--cache-dir", str(missing)]) == 0
    assert not missing.exists()


def test_bad_arguments_exit_with_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["cache", "prune", "--older-than", "soon"])
    assert exc.value.code == 2
    assert "'soon' is not a number of days >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["cache", "prune"])
    assert exc.value.code == 2


def test_default_cache_dir_follows_env_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("TL_AUTOTUNE_CACHE_DIR", str(tmp_path / "env"))
    assert default_cache_dir() == str(tmp_path / "env")
    monkeypatch.delenv("TL_AUTOTUNE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == str(tmp_path / "xdg" / "tlautotune")
