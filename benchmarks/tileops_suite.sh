#!/usr/bin/env bash
# TileOPs' tuned tests, unchanged, with TileLang's own tuner and through the plugin's interception
# (--tl-intercept), on the GPU machine; then both sets of winners re-timed in one process.
#
#   source .gpu/device-setup.sh && bash benchmarks/tileops_suite.sh OUTDIR
#
# TILEOPS: a TileOPs checkout (default .gpu/tileops: tile-ai/TileOPs, fetched into an ignored folder;
# it needs pyyaml and einops). Its tests run from its root with PYTHONPATH=src:., whole files (its
# conftest checks test tiers per file) with the tuned cases picked by -k: the GEMM, MHA forward,
# FP8 indexer and softmax cases TileLang's tuner takes minutes on, and the tiled reduce and vector
# norm autotune tests.
# STEPS (default "plugin tilelang compare"): plugin = cold (fresh caches), warm, then `cache export`
# of its entries into TileLang's layout; tilelang = TileLang's tuner, fresh TileLang cache, stopped
# after TL_S seconds (default 420; a stopped run's figure is a lower bound), each test after TL_TEST_S
# seconds where set (pytest-timeout; such a test's time is a lower bound); compare =
# benchmarks/tileops_compare.py (outcomes, times, winners re-timed side by side).
# Writes tops-*.xml/.log/.json and tops-summary.txt under OUTDIR (at most 8 files).
set -u
out=$(realpath "${1:-out-tileops}")
mkdir -p "$out"
root=$PWD
tops=$(realpath "${TILEOPS:-.gpu/tileops}")
work=${TOPS_WORK:-/tmp/tops-work}
mkdir -p "$work"
STEPS=${STEPS:-plugin tilelang compare}
# The quicker tunings first, so a TileLang run stopped at TL_S has finished as many as it could.
FILES="tests/ops/test_reduce.py tests/ops/test_vector_norm.py tests/ops/test_softmax.py
  tests/ops/test_fp8_lightning_indexer.py tests/ops/attention/test_mha.py tests/ops/test_gemm.py"
K='(test_gemm and fp16-tuned-wide and not alt) or (test_mha_fwd and tuned) or (test_indexer and True-None-True)'
K="$K"' or (test_softmax_op and True) or (test_reduce and autotune) or (test_vector_norm and autotune)'
export PYTHONPATH=$tops/src:$tops:${PYTHONPATH:-}
# The plugin by module name where it is not installed (the GPU machine runs the checkout as it is);
# PYTEST_PLUGINS would load it into TileLang's own run too.
unset PYTEST_PLUGINS
load=()
python3 -c "import importlib.metadata as m, sys
sys.exit(any(ep.value.startswith('pytest_tlautotune') for ep in m.entry_points(group='pytest11')))" \
  && load=(-p pytest_tlautotune.plugin)

run() {  # name, seconds, pytest arguments...
  local name=$1 limit=$2 t0 rc
  shift 2
  t0=$(date +%s%N)
  (cd "$tops" && timeout -s INT -k 20 "$limit" python3 -m pytest $FILES -k "$K" -p no:cacheprovider -rfEs \
     --junitxml="$out/tops-$name.xml" "$@" > "$out/tops-$name.log" 2>&1)
  rc=$?
  echo "$name: exit $rc, whole process $(( ($(date +%s%N) - t0) / 1000000 )) ms" | tee -a "$out/tops-summary.txt"
  tail -3 "$out/tops-$name.log"
}

for step in $STEPS; do
  echo "==== $step $(date +%T)"
  case $step in
    plugin)
      for phase in cold warm; do
        TILELANG_CACHE_DIR=$work/tl-under-plugin \
          run "plugin-$phase" "${PLUGIN_S:-240}" "${load[@]}" --tl-intercept --tl-cache-dir="$work/plugin" \
          --tl-json="$out/tops-plugin-$phase.json"
      done
      python3 -m pytest_tlautotune cache export --cache-dir "$work/plugin" --all "$work/exported" \
        > "$work/export.txt" 2>&1
      echo "export: exit $?" | tee -a "$out/tops-summary.txt"
      cat "$work/export.txt" >> "$out/tops-summary.txt" ;;
    tilelang)
      TILELANG_CACHE_DIR=$work/tl-own run tilelang-cold "${TL_S:-420}" -p no:tlautotune \
        -p no:pytest_tlautotune.plugin ${TL_TEST_S:+--timeout=$TL_TEST_S --timeout-method=signal} ;;
    compare)
      timeout "${COMPARE_S:-150}" python3 "$root/benchmarks/tileops_compare.py" --out "$out" \
        --tilelang-cache "$work/tl-own" --exported "$work/exported" --export-log "$work/export.txt" \
        2>&1 | tee -a "$out/tops-summary.txt" ;;
  esac
done
