#!/usr/bin/env bash
# The GPU report in one call, for an H100/H200 machine (at most 8 minutes):
# compiled-kernel tests, the attention benchmark at 16k and 64k tokens in bf16
# (head_dim 64 and 128; fovea, FMA, sliding, with flash dense and cuDNN dense as
# baselines), loss+gradient steps of the model per scheme, and one JSON with the
# ratios against them (tools/gpu_report.py says what is in it).
#
#   tools/gpu_report.sh                       # on the GPU machine
#   tools/gpu_report.sh --dry_run             # on CPU: checks the report itself
#   tools/gpu_report.sh --out DIR             # default benchmarks/out/gpu_report
#   tools/gpu_report.sh --wheelhouse DIR      # install these wheels first
#
# It uses the machine's own jax (the GPU image has jax with CUDA; no internet).
# Packages the image lacks (flax, gin-config, pytest, ...) come from
# --wheelhouse, a folder of wheels made beforehand with
# `pip download --no-deps --only-binary=:all: -d DIR <package==version>` for the
# pins in requirements*.txt except jax and jaxlib; they are installed without
# dependencies into a private folder, never over the image's jax.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
wheelhouse=""
dry_run=0
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --wheelhouse) wheelhouse=$2; shift 2 ;;
    --dry_run) dry_run=1; args+=("$1"); shift ;;
    *) args+=("$1"); shift ;;
  esac
done

if [[ -n "$wheelhouse" ]]; then
  site="${TMPDIR:-/tmp}/fovea_jax_gpu_report_site"
  "$PYTHON" -m pip install -q --no-index --no-deps --target "$site" \
    "$wheelhouse"/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [[ $dry_run == 1 ]]; then
  export JAX_PLATFORMS=cpu
else
  # tests/conftest.py hides GPUs unless these are set.
  export JAX_PLATFORMS=${JAX_PLATFORMS:-cuda}
  export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
fi

for module in jax flax gin pytest; do
  "$PYTHON" -c "import $module" 2>/dev/null ||
    echo "[gpu_report] warning: python module '$module' is missing" \
         "(stages needing it will fail; see --wheelhouse)" >&2
done

# Stage limits add up to 460 s; this bounds start-up and the summary too.
exec timeout 480 "$PYTHON" tools/gpu_report.py "${args[@]}"
