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


def test_show_takes_a_test_id_its_file_or_its_name(cache, capsys):
    square, tall = entry_of(cache, "test_square"), entry_of(cache, "test_tall")
    for what in ("test_inner.py::test_square", "test_square", "test_inner.py::test_square[call 1]"):
        assert main(["cache", "show", what, "--cache-dir", str(cache)]) == 0, what
        out = capsys.readouterr().out
        assert f"key           {square}" in out and tall not in out
        assert "bm=16, bn=16, bk=32  mismatch" in out
    # A file names both of its tests: each entry in full, oldest first.
    assert main(["cache", "show", "test_inner.py", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 entries for test_inner.py::test_square, test_inner.py::test_tall, oldest first")
    assert f"key           {square}" in out and f"key           {tall}" in out
    assert main(["cache", "show", "test_inner.py::test_wide", "--cache-dir", str(cache)]) == 1
    assert "none tuned for a test 'test_inner.py::test_wide'" in capsys.readouterr().err


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


def index_keys(cache):
    return sorted(json.loads(p.read_text())["key"] for p in (cache / "index").iterdir())


def test_clear_says_what_it_removed_and_counts_no_quarantine_as_entries(cache, capsys):
    (cache / "quarantine").mkdir()
    bad = cache / "quarantine" / "0123abcd-1234abcd"
    bad.mkdir()
    (bad / "WHY").write_text("manifest mismatch")
    (cache / "quarantine" / "4567-link").symlink_to(cache / "nowhere")
    (cache / "quarantine" / "4567-link.WHY").write_text("a link")
    assert len(index_keys(cache)) == 2

    assert main(["cache", "clear", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert re.fullmatch(rf"removed 2 entries, \d+ candidate records, \d+ kernels, 2 quarantined entries, 2 index files "
                        rf"from {re.escape(str(cache))}\n", out), out
    for sub in ("entries", "candidates", "kernels", "quarantine", "index"):
        assert list((cache / sub).iterdir()) == [], sub


def test_prune_removes_the_index_of_removed_entries_and_old_quarantine(cache, capsys):
    old_key, new_key = entry_of(cache, "test_square"), entry_of(cache, "test_tall")
    record_path = cache / "entries" / old_key / "record.json"
    record_path.write_text(json.dumps({**json.loads(record_path.read_text()), "tuned_at": time.time() - 10 * 86400}))
    assert index_keys(cache) == sorted([old_key, new_key])
    (cache / "quarantine").mkdir()
    old_bad, new_bad = cache / "quarantine" / "aaaa-1", cache / "quarantine" / "bbbb-2"
    old_bad.mkdir()
    new_bad.mkdir()
    ten_days_ago = time.time() - 10 * 86400
    os.utime(old_bad, (ten_days_ago, ten_days_ago))
    dangling = cache / "index" / ("f" * 64 + ".json")  # an old index file whose entry was quarantined
    dangling.write_text(json.dumps({"key": "e" * 64}))
    os.utime(dangling, (ten_days_ago, ten_days_ago))

    assert main(["cache", "prune", "--older-than", "5", "--cache-dir", str(cache)]) == 0
    assert "2 index files pointing to no entry and 1 quarantined files" in capsys.readouterr().out
    assert index_keys(cache) == [new_key]
    assert not old_bad.exists() and new_bad.exists()


def test_show_into_a_closed_pipe_prints_no_traceback(cache):
    # `cache show KEY | head`: the reader is gone before the output is written.
    key = entry_of(cache, "test_tall")
    with subprocess.Popen([sys.executable, "-m", "pytest_tlautotune", "cache", "show", key, "--cache-dir",
                           str(cache)], stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        proc.stdout.close()
        err = proc.stderr.read().decode()
        proc.wait(timeout=120)
    assert err == "", err
    assert proc.returncode == 141


@pytest.mark.parametrize(("filename", "text"), [
    ("pytest.ini", "[pytest]\ntl_cache_dir = .tlc\n"),
    ("pyproject.toml", '[tool.pytest.ini_options]\ntl_cache_dir = ".tlc"\n'),
    ("tox.ini", "[pytest]\ntl_cache_dir = .tlc\n"),
    ("setup.cfg", "[tool:pytest]\ntl_cache_dir = .tlc\n"),
])
def test_cli_default_is_the_ini_cache_dir_relative_to_the_ini_file(monkeypatch, tmp_path, filename, text):
    (tmp_path / filename).write_text(text)
    sub = tmp_path / "tests"
    sub.mkdir()
    monkeypatch.setenv("TL_AUTOTUNE_CACHE_DIR", str(tmp_path / "env"))  # the ini wins, as in pytest
    monkeypatch.chdir(sub)
    assert default_cache_dir() == str(tmp_path / ".tlc")
    # The first file with pytest settings from the cwd upward is the one, as pytest picks it.
    (sub / "pytest.ini").write_text("[pytest]\n")
    assert default_cache_dir() == str(tmp_path / "env")
    (sub / "pytest.ini").unlink()
    (sub / "setup.cfg").write_text("[metadata]\nname = x\n")  # no pytest section: not a pytest config
    assert default_cache_dir() == str(tmp_path / ".tlc")


def test_cli_and_plugin_share_the_ini_cache(cache, pytester, monkeypatch):
    # Tuned from the project root with a relative tl_cache_dir; the CLI run from tests/ lists it.
    pytester.makeini("[pytest]\ntl_cache_dir = .tlc\n")
    shutil.copytree(cache, pytester.path / ".tlc", symlinks=True)
    sub = pytester.mkdir("tests")
    monkeypatch.chdir(sub)
    monkeypatch.delenv("TL_AUTOTUNE_CACHE_DIR", raising=False)
    listed = subprocess.run([sys.executable, "-m", "pytest_tlautotune", "cache", "list"], capture_output=True,
                            text=True, timeout=120)
    assert "test_inner.py::test_tall" in listed.stdout, listed.stdout + listed.stderr
