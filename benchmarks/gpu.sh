#!/usr/bin/env bash
# One command for a machine with a CUDA GPU: lrpc's CUDA tests, then ResNet-50 images/s for the forward pass, an
# input-gradient pass and lrpc (otsuki2024 and default), eager and torch.compile'd — inductor with freezing, and
# mode="reduce-overhead" (CUDA graphs) — in float32 (TF32 tensor cores) and bfloat16. Runs lrpc from this source
# tree; needs torch, torchvision, numpy, networkx, pillow (pytest for the tests), nothing from a registry.
#
#   bash benchmarks/gpu.sh [OUT_DIR]          # default out/gpu: speed-*.md tables and speed-*.json
#
# Estimated (never run on a GPU yet) 5-10 minutes on an H100/H200, most of it torch.compile: one compile per run
# and compiled batch. Narrow it with RUNS="bfloat16:default" (dtype:mode pairs; mode default = inductor with
# freezing, plus the eager rows), BATCHES="64,128", COMPILE_BATCHES="128", MODELS, REPEATS, MEMORY_BATCH;
# DEVICE=cpu with COMPILE_BATCHES=0 (no compiled rows) tries the script itself on a CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/gpu}
python=${PYTHON:-python3}
device=${DEVICE:-cuda}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$out"

"$python" - "$device" <<'EOF'
import sys, torch
device = sys.argv[1]
if device.startswith("cuda") and not torch.cuda.is_available():
    sys.exit(f"benchmarks/gpu.sh: torch {torch.__version__} sees no CUDA device (DEVICE=cpu tries the script on a CPU)")
print("torch", torch.__version__, "|", torch.cuda.get_device_name() if device.startswith("cuda") else "cpu")
EOF
if [ "$device" != cpu ]; then
    "$python" -m pytest -q -p no:cacheprovider -m cuda tests/test_devices.py | tee "$out/cuda-tests.txt"
fi

# bfloat16 first, so the numbers that matter most arrive first on a short lease (each run saves its JSON after
# every (model, batch) cell); only the first run also times lrpc.compile
first=1
for run in ${RUNS:-bfloat16:default bfloat16:reduce-overhead float32:default}; do
    dtype=${run%%:*}
    mode=${run#*:}
    if [ "$mode" = default ]; then
        mode_args=()   # inductor with freezing; also the eager rows, with their GPU memory
        memory_batch=${MEMORY_BATCH:-128}
        methods="lrpc otsuki2024,lrpc default,lrpc otsuki2024 compiled,lrpc default compiled"
    else
        mode_args=(--compile-mode "$mode")
        memory_batch=0
        methods="lrpc otsuki2024 compiled"
    fi
    timing_args=()
    [ $first = 1 ] || timing_args=(--no-compile-time)
    first=0
    name="speed-$dtype-$mode"
    echo "== ${MODELS:-resnet50} $dtype, torch.compile mode $mode -> $out/$name.md"
    "$python" benchmarks/speed.py --device "$device" --dtype "$dtype" --tf32 "${mode_args[@]}" "${timing_args[@]}" \
        --models "${MODELS:-resnet50}" --batches "${BATCHES:-64,128}" --compile-batches "${COMPILE_BATCHES:-128}" \
        --methods "$methods" --repeats "${REPEATS:-5}" --targets 1 --memory-batch "$memory_batch" \
        --json "$out/$name.json" | tee "$out/$name.md"
done
