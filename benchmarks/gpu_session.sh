#!/usr/bin/env bash
# Everything this project measures on the lent GPU machine, in one go (see ../shared/gpu/README.md):
#   source .gpu/device-setup.sh && bash benchmarks/gpu_session.sh "$OUT"
# Writes its logs and JSON under the given directory. The GPU machine lacks pebble and reaches no
# registry: once per checkout, `pip download --no-deps -d /tmp/w pebble && mkdir -p .gpu/extra &&
# python -m zipfile -e /tmp/w/pebble-*.whl .gpu/extra`, and prefix the command with
# `export PYTHONPATH=$PWD/.gpu/extra:$PYTHONPATH`.
set -u
out=${1:-out}
mkdir -p "$out"
export PYTEST_PLUGINS=pytest_tlautotune.plugin TL_AUTOTUNE_CACHE_DIR=$(mktemp -d)
P="python3 -m pytest -p no:cacheprovider"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,driver_version --format=csv > "$out/gpu.txt"
{
  timeout 200 $P examples -k cuda -v 2>&1 | tail -12
  echo "==== second run"
  timeout 80 $P examples -k cuda 2>&1 | tail -7
} > "$out/examples.txt" 2>&1
timeout 200 $P tests/test_cuda.py -v 2>&1 | tail -25 > "$out/cuda_tests.txt"
timeout "${GEMM_TIMEOUT:-300}" python3 benchmarks/plugin_runs.py gpu48 --cold "${COLD:-5}" --warm 3 \
  --out "$out/gpu48.json" > "$out/gpu48.txt" 2>&1
tail -8 "$out/examples.txt"; tail -6 "$out/cuda_tests.txt"; tail -12 "$out/gpu48.txt"
