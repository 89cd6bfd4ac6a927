"""Ranks of one torch.distributed job on one host tune a key once and share the result."""

import json
import os
import subprocess
import sys

import pytest

TEST = '''
import json, os
import pytest
import kernels

CONFIGS = [dict(bm=bm, bn=16, bk=16) for bm in (8, 16)]

@pytest.mark.autotune(configs=CONFIGS, target="c", out_idx=[-1], ref_prog=lambda A, B: A @ B, warmup=1, rep=5)
def test_gemm(autotune, request):
    result = autotune(kernels.gemm, 32, 32, 32)
    props = dict(request.node.user_properties)
    with open(f"rank{os.environ['RANK']}.json", "w") as f:
        json.dump({"cache": props["tl_cache"], "config": result.config, "local_rank": os.environ["LOCAL_RANK"]}, f)
'''


@pytest.mark.slow
def test_torchrun_ranks_tune_once_and_share(tl, pytester):
    pytester.makepyfile(test_ranks=TEST)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(pytester.path), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "pytest",
           "test_ranks.py", "-q", "-p", "no:cacheprovider", f"--tl-cache-dir={tl.cache_dir}"]
    proc = subprocess.run(cmd, cwd=pytester.path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((pytester.path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(r["cache"] for r in ranks) == ["hit", "miss"], ranks  # one rank tuned, the other took its result
    assert ranks[0]["config"] == ranks[1]["config"]
    assert {r["local_rank"] for r in ranks} == {"0", "1"}
    entries = list((tl.cache_dir / "entries").iterdir())
    assert len(entries) == 1


@pytest.fixture(autouse=True)
def _no_outer_rank(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
