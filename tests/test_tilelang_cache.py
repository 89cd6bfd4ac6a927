"""Both ways with TileLang's own autotuner cache: a result TileLang's ``save_to_disk`` wrote loads with
the plugin's ``load_from_disk``, and ``cache export`` writes the plugin's results where production
code's own ``@tilelang.autotune`` finds them.

TileLang's own tuner cannot tune on a CPU (it benchmarks on a CUDA device): production code that gets
the tuned kernel and its config there was served by its cache, which the export filled. Production code
tunes in the ways TileLang offers: ``@tilelang.autotune`` over a lazy and an eager ``@tilelang.jit``, and
``AutoTuner.from_kernel(...).run()`` over a closure.
"""

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from kernel_sources import KERNELS, STRICT_INI

# Production code as users write it: TileLang's decorators, no ref_prog, nothing of the plugin's.
PROD = r'''
import tilelang
import tilelang.cpu.language as T
from tilelang.autotuner import AutoTuner

import kernels


@tilelang.autotune(configs=[dict(bm=16), dict(bm=32)])
@tilelang.jit(out_idx=[1], target="c")  # counted from the front, as TileOPs writes it; the plugin keys [-1]
def relu(M, N, bm: int = 8):
    return kernels.relu(M, N, bm, 16)


def reference(A):
    return A.clamp(min=0)


@tilelang.autotune(configs=[dict(bm=16), dict(bm=32)], ref_prog=reference)
@tilelang.jit(out_idx=[-1], target="c")
def relu_checked(M, N, bm: int = 8):
    return kernels.relu(M, N, bm, 16)


def tuned_relu(M, N):
    """API mode: the kernel a closure over the shapes (TileLang's key holds the closure's values)."""

    def kernel(bm=None):
        return kernels.relu(M, N, bm, 16)

    tuner = AutoTuner.from_kernel(kernel, configs=[dict(bm=16), dict(bm=32)])
    return tuner.set_compile_args(out_idx=[-1], target="c").run(warmup=1, rep=3)


@tilelang.autotune(configs=[dict(bm=16), dict(bm=32)])
@tilelang.jit(target="c")
def eager_sub(A, B, bm: int = 16):
    """Eager style: the output a T.empty, no out_idx."""
    M, N = T.const("M, N")
    A: T.Tensor[[M, N], T.float32]
    B: T.Tensor[[M, N], T.float32]
    C = T.empty((M, N), T.float32)
    with T.Kernel(T.ceildiv(M, bm)) as bx:
        for i, j in T.grid(bm, N):
            C[bx * bm + i, j] = A[bx * bm + i, j] - B[bx * bm + i, j]
    return C
'''

TESTS = r'''
import pytest
import torch

import prod


def test_intercepted():
    kernel = prod.relu(64, 32)  # TileLang's tuner, served by the plugin (--tl-intercept)
    A = torch.randn(64, 32)
    torch.testing.assert_close(kernel(A), A.clamp(min=0))


def test_checked():
    kernel = prod.relu_checked(64, 32)
    A = torch.randn(64, 32)
    torch.testing.assert_close(kernel(A), A.clamp(min=0))


@pytest.mark.autotune(warmup=1, rep=3)
def test_fixture(autotune):
    result = autotune(prod.relu, 32, 32)
    A = torch.randn(32, 32)
    torch.testing.assert_close(result.kernel(A), A.clamp(min=0))


@pytest.mark.autotune(configs=[dict(bm=8)], warmup=1, rep=3)
def test_other_space(autotune):
    autotune(prod.relu, 16, 32)


def test_api():
    result = prod.tuned_relu(64, 32)
    A = torch.randn(64, 32)
    torch.testing.assert_close(result.kernel(A), A.clamp(min=0))


def test_eager():
    A, B = torch.randn(64, 32), torch.randn(64, 32)
    torch.testing.assert_close(prod.eager_sub(A, B), A - B)
'''

# Production code calling the tuned functions: prints what TileLang's own tuner returned.
PRODUCTION = r'''
import json
import torch
import prod

out = {}
for shape in ((64, 32), (32, 32)):
    kernel = prod.relu(*shape)
    A = torch.randn(*shape)
    torch.testing.assert_close(kernel(A), A.clamp(min=0))
    out["x".join(map(str, shape))] = {"config": kernel.config, "latency": kernel.latency}
result = prod.tuned_relu(64, 32)
A, B = torch.randn(64, 32), torch.randn(64, 32)
torch.testing.assert_close(result.kernel(A), A.clamp(min=0))
out["api"] = {"config": result.config, "latency": result.latency}
torch.testing.assert_close(prod.eager_sub(A, B), A - B)
kernel = prod.eager_sub.compile(A, B)
out["eager"] = {"config": kernel.config, "latency": kernel.latency}
print(json.dumps(out))
'''


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST")}
    return {**env, **extra}


def _pytest(path, cache, *args, env=None):
    junit = path / "junit.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:xdist", "-q",
                           f"--tl-cache-dir={cache}", f"--junitxml={junit}", *args],
                          cwd=path, capture_output=True, text=True, env=env or _env(), timeout=600)
    configs = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        for prop in case.iter("property"):
            if prop.get("name") == "tl_config":
                configs[case.get("name")] = json.loads(prop.get("value"))
    return proc, configs


def cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "pytest_tlautotune", "cache", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=env or _env(), timeout=300)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """The inner session, tuned once: (project dir, cache dir, {test: the plugin's winner})."""
    path = tmp_path_factory.mktemp("project")
    (path / "kernels.py").write_text(KERNELS)
    (path / "prod.py").write_text(PROD)
    (path / "test_prod.py").write_text(TESTS)
    (path / "pytest.ini").write_text(STRICT_INI)
    cache = path / "cache"
    proc, configs = _pytest(path, cache, "--tl-intercept")
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    assert set(configs) == {"test_intercepted", "test_checked", "test_fixture", "test_other_space", "test_api",
                            "test_eager"}, configs
    return path, cache, configs


def _tilelang_dir(root):
    """TileLang's autotuner cache directory with ``TILELANG_CACHE_DIR=root``, as TileLang computes it."""
    code = "from tilelang.autotuner.tuner import AutoTuner; print(AutoTuner._get_cache_dir())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=_env(TILELANG_CACHE_DIR=str(root)), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def _exported(directory):
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith(".")) if directory.is_dir() else []


@pytest.mark.xdist_group("tilelang_cache")
def test_production_code_loads_the_exported_results_without_tuning(tuned, tmp_path):
    path, cache, configs = tuned
    root = tmp_path / "tilelang-cache"
    dest = _tilelang_dir(root)
    assert dest.startswith(str(root)) and dest.endswith("autotuner")
    env = _env(TILELANG_CACHE_DIR=str(root))
    (path / "production.py").write_text(PRODUCTION)

    before = subprocess.run([sys.executable, "production.py"], cwd=path, capture_output=True, text=True, env=env,
                            timeout=600)
    # Nothing exported yet: TileLang's own tuner tries, and on a CPU it cannot.
    assert before.returncode != 0 and "Auto-tuning failed" in before.stderr, before.stderr[-3000:]

    done = cli("export", "--all", dest, "--cache-dir", cache)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    exported = [line for line in lines if line.startswith("exported ")]
    assert len(exported) == 4, done.stdout
    for test in ("test_intercepted", "test_fixture", "test_api", "test_eager"):
        assert any(f"test_prod.py::{test} " in line for line in exported), done.stdout
    assert len(_exported(Path(dest))) == 4
    # Tunings TileLang would not find are said, with why, and not written.
    checked = [line for line in lines if "test_checked" in line]
    assert len(checked) == 1 and checked[0].startswith("not exported ") and \
        "the @tilelang.autotune sets ref_prog: TileLang never caches such a tuning" in checked[0], done.stdout
    other = [line for line in lines if "test_other_space" in line]
    assert len(other) == 1 and 'the winner {"bm":8} is not in the config space' in other[0], done.stdout

    after = subprocess.run([sys.executable, "production.py"], cwd=path, capture_output=True, text=True, env=env,
                           timeout=600)
    assert after.returncode == 0, after.stderr[-3000:]
    got = json.loads(after.stdout.strip().splitlines()[-1])
    assert got["64x32"]["config"] == configs["test_intercepted"]
    assert got["32x32"]["config"] == configs["test_fixture"]
    assert got["api"]["config"] == configs["test_api"]
    assert got["eager"]["config"] == configs["test_eager"]
    assert all(v["latency"] > 0 for v in got.values())


@pytest.mark.xdist_group("tilelang_cache")
def test_an_existing_export_is_replaced_only_with_force(tuned, tmp_path):
    _, cache, _ = tuned
    dest = tmp_path / "autotuner"
    assert cli("export", "test_intercepted", dest, "--cache-dir", cache).returncode == 0
    (key,) = _exported(dest)
    files = sorted(p.name for p in (dest / key).iterdir())
    assert files == sorted(["best_config.json", "device_kernel.cu", "function.pkl", "host_kernel.cu",
                            "kernel_lib.so", "latency.json", "out_idx.json", "params.json"])
    (dest / key / "mine.txt").write_text("not the plugin's")

    again = cli("export", "test_intercepted", dest, "--cache-dir", cache)
    assert again.returncode == 1
    assert f"{dest / key} exists already (pass --force to replace it)" in again.stdout, again.stdout
    assert (dest / key / "mine.txt").read_text() == "not the plugin's"

    forced = cli("export", "test_intercepted", dest, "--force", "--cache-dir", cache)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert sorted(p.name for p in (dest / key).iterdir()) == files
    assert not [p for p in dest.iterdir() if p.name.startswith(".")]  # no staging left behind


@pytest.mark.xdist_group("tilelang_cache")
def test_an_entry_stored_without_a_note_gets_one_on_its_next_hit(tuned, tmp_path):
    path, cache, _ = tuned
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    for manifest in copy.glob("entries/*/manifest.json"):  # as a plugin that kept no notes stored it
        data = json.loads(manifest.read_text())
        data.pop("tilelang", None)
        manifest.write_text(json.dumps(data))
    dest = tmp_path / "autotuner"
    none = cli("export", "test_intercepted", dest, "--cache-dir", copy)
    assert none.returncode == 1 and "no key of TileLang's is noted for it" in none.stdout, none.stdout

    proc, _ = _pytest(path, copy, "--tl-intercept", "-k", "test_intercepted")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "hit" in proc.stdout
    done = cli("export", "test_intercepted", dest, "--cache-dir", copy)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(_exported(dest)) == 1


def test_an_entry_tilelangs_own_tuner_saved_loads_with_the_plugins_loader(tmp_path):
    """TileLang's ``AutotuneResult.save_to_disk`` writes a real kernel (target "c"); the plugin's
    ``AutotuneResult.load_from_disk`` reads it: its config, latency and a kernel that computes."""
    (tmp_path / "kernels.py").write_text(KERNELS)
    (tmp_path / "prod.py").write_text(PROD)
    script = r'''
import json, pathlib, sys
import torch
from tilelang.autotuner.param import AutotuneResult as TileLangResult
from pytest_tlautotune.param import AutotuneResult, CompileArgs
import prod

kernel = prod.relu.jit_impl(64, 32, bm=32)
saved = TileLangResult(latency=0.25, config={"bm": 32}, ref_latency=0.5, libcode=kernel.get_kernel_source(),
                       func=kernel.prim_func, kernel=kernel)
entry = pathlib.Path(sys.argv[1]) / "autotuner" / "somekey"
saved.save_to_disk(entry)
loaded = AutotuneResult.load_from_disk(entry, CompileArgs(out_idx=[-1], target="c"))
A = torch.randn(64, 32)
torch.testing.assert_close(loaded.kernel(A), A.clamp(min=0))
print(json.dumps({"files": sorted(p.name for p in entry.iterdir()), "config": loaded.config,
                  "latency": loaded.latency, "ref_latency": loaded.ref_latency,
                  "kernel_config": loaded.kernel.config, "kernel_latency": loaded.kernel.latency}))
'''
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "tl")], cwd=tmp_path, capture_output=True,
                          text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "manifest.json" not in got["files"] and "out_idx.json" in got["files"]  # TileLang's layout, as it is
    assert got["config"] == got["kernel_config"] == {"bm": 32}
    assert got["latency"] == got["kernel_latency"] == 0.25 and got["ref_latency"] == 0.5


@pytest.mark.slow
def test_export_from_the_shared_store(store, tmp_path):
    """With the store's secret, the store's signed files are exported as a cache directory's are;
    without it the store holds data only, and export says so."""
    path = tmp_path / "project"
    path.mkdir()
    (path / "kernels.py").write_text(KERNELS)
    (path / "prod.py").write_text(PROD)
    (path / "test_prod.py").write_text(TESTS)
    (path / "pytest.ini").write_text(STRICT_INI)
    env = _env(TL_AUTOTUNE_STORE_SECRET="s3cret")
    proc, configs = _pytest(path, tmp_path / "cache", "--tl-intercept", f"--tl-store={store.url}", "-k",
                            "test_intercepted", env=env)
    assert proc.returncode == 0, proc.stdout[-3000:]
    dest = tmp_path / "autotuner"
    plain = cli("export", "--all", dest, "--store", store.url)
    assert plain.returncode == 1 and "the store holds this entry as data only" in plain.stdout, plain.stdout
    assert _exported(dest) == []
    done = cli("export", "--all", dest, "--store", store.url, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    (key,) = _exported(dest)
    assert json.loads((dest / key / "best_config.json").read_text()) == configs["test_intercepted"]
