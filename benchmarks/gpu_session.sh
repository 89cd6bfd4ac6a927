#!/usr/bin/env bash
# Everything this project measures on the lent GPU machine, in one go (see ../shared/gpu/README.md):
#   source .gpu/device-setup.sh && bash benchmarks/gpu_session.sh "$OUT"
# STEPS picks what runs (default: all, in this order): profile examples cuda gpu48 gpu48spawn gate tileops
# (tileops: benchmarks/tileops_suite.sh, TileOPs' tuned tests with TileLang's tuner and through the plugin;
# it needs a TileOPs checkout in .gpu/tileops or $TILEOPS).
# COLD / WARM set the gpu48 cold and warm run counts (5 / 3); GATE_ARGS the gate run's flags (--threshold 5).
# Writes its logs and JSON under the given directory. The GPU machine lacks pebble and reaches no
# registry: once per checkout, `pip download --no-deps -d /tmp/w pebble && mkdir -p .gpu/extra &&
# python -m zipfile -e /tmp/w/pebble-*.whl .gpu/extra`, and prefix the command with
# `export PYTHONPATH=$PWD/.gpu/extra:$PYTHONPATH`.
set -u
out=${1:-out}
mkdir -p "$out"
export PYTEST_PLUGINS=pytest_tlautotune.plugin TL_AUTOTUNE_CACHE_DIR=$(mktemp -d)
P="python3 -m pytest -p no:cacheprovider"
STEPS=${STEPS:-profile examples cuda gpu48 gpu48spawn gate tileops}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,driver_version --format=csv > "$out/gpu.txt"
nproc >> "$out/gpu.txt"
for step in $STEPS; do
  echo "==== $step $(date +%T)"
  case $step in
    profile) timeout 200 python3 benchmarks/compile_profile.py --configs 3 > "$out/profile.txt" 2>&1
             tail -c 3000 "$out/profile.txt" ;;
    examples) { timeout 200 $P examples -k cuda -v 2>&1 | tail -12
                echo "==== second run"
                timeout 80 $P examples -k cuda 2>&1 | tail -7; } > "$out/examples.txt" 2>&1
              tail -8 "$out/examples.txt" ;;
    cuda) timeout 200 $P tests/test_cuda.py -v 2>&1 | tail -25 > "$out/cuda_tests.txt"; tail -6 "$out/cuda_tests.txt" ;;
    gpu48) timeout "${GEMM_TIMEOUT:-300}" python3 benchmarks/plugin_runs.py gpu48 --cold "${COLD:-5}" \
             --warm "${WARM:-3}" --out "$out/gpu48.json" > "$out/gpu48.txt" 2>&1; tail -12 "$out/gpu48.txt" ;;
    gpu48spawn) TL_AUTOTUNE_WORKER_START=spawn timeout 150 python3 benchmarks/plugin_runs.py gpu48 --cold 1 \
                  --warm 0 --out "$out/gpu48spawn.json" > "$out/gpu48spawn.txt" 2>&1; tail -4 "$out/gpu48spawn.txt" ;;
    gate) timeout "${GATE_TIMEOUT:-420}" python3 benchmarks/gate_aa.py --device cuda --trials "${GATE_TRIALS:-20}" ${GATE_ARGS:---threshold 5} \
            --out "$out/gate_gpu.json" > "$out/gate_gpu.txt" 2>&1; tail -12 "$out/gate_gpu.txt" ;;
    tileops) bash benchmarks/tileops_suite.sh "$out/tileops" ;;
  esac
done
