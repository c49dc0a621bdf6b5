#!/usr/bin/env bash
# GPU suite for any CUDA machine: the GPU-marked tests, `doctor`, and the FP8-against-bf16 benchmark matrix on
# random:* models (real widths, random weights: nothing is downloaded, no token needed).
#
#   benchmarks/gpu_suite.sh              # results in benchmarks/results/, named after the device
#   benchmarks/gpu_suite.sh --dry-run    # print the commands, run nothing (no GPU needed)
#   OUT_DIR=/tmp/results PYTHON=.venv/bin/python benchmarks/gpu_suite.sh
#
# Needs only the project's Python packages with a CUDA build of torch. Each step has a time budget; a step that
# fails or runs out of time is recorded, the suite goes on, and the exit status is 1. Every bench variant runs in its
# own process (see fp8demo/bench.py), so each one builds its random model and compiles afresh: that, not the timed
# runs, is most of the time. Expected on one H100 (estimated, not yet measured): ~28 min on a first run, ~20 min
# on a rerun whose compiles hit Inductor's cache; the estimate's breakdown is in benchmarks/README.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python}"
OUT_DIR="${OUT_DIR:-benchmarks/results}"
DRY_RUN=0
[[ "${1:-}" == "--dry-run" ]] && DRY_RUN=1

if [[ $DRY_RUN == 0 ]] && ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_suite: no CUDA GPU: torch.cuda.is_available() is false for $PYTHON (or torch is missing)." >&2
    echo "gpu_suite: run it on a CUDA machine with a CUDA build of torch; nothing was run." >&2
    exit 2
fi

# The same slug as the bench file names: "NVIDIA H100 80GB HBM3" -> nvidia-h100-80gb-hbm3.
SLUG="$("$PYTHON" -c 'from fp8demo import bench, hardware; print(bench.device_slug({"device": {"name": hardware.detect().name}}))')"
LOG="$OUT_DIR/gpu-suite-$SLUG.log"
SUITE_START=$SECONDS
STEPS_JSON=()
FAILED=0

if [[ $DRY_RUN == 0 ]]; then
    mkdir -p "$OUT_DIR"
    : > "$LOG"
    exec > >(tee -a "$LOG") 2>&1  # keep the whole run's output beside the results
fi

# step NAME BUDGET_SECONDS COMMAND...: run with a time limit, log its wall time, record its exit status.
step() {
    local name=$1 budget=$2 rc=0 t0=$SECONDS
    shift 2
    if [[ $DRY_RUN == 1 ]]; then
        printf '%q ' "$@"
        echo
        return 0
    fi
    echo "== $(date -u +%H:%M:%S) $name (budget ${budget} s): $*" >&2
    # timeout signals the whole process group, so bench's per-variant children stop too
    timeout --kill-after=30 "$budget" "$@" || rc=$?
    local took=$((SECONDS - t0))
    if [[ $rc == 124 || $rc == 137 ]]; then
        echo "== $name: ran out of its ${budget} s budget after ${took} s (exit $rc)" >&2
    else
        echo "== $name: exit $rc after ${took} s" >&2
    fi
    [[ $rc == 0 ]] || FAILED=1
    STEPS_JSON+=("{\"step\": \"$name\", \"budget_s\": $budget, \"seconds\": $took, \"exit\": $rc}")
}

step gpu-tests 240 "$PYTHON" -m pytest -q -m gpu tests

# doctor's JSON is kept whatever its verdict; its exit status is recorded but does not fail the suite.
DOCTOR_OUT="$OUT_DIR/doctor-$SLUG.json"
[[ $DRY_RUN == 1 ]] && DOCTOR_OUT=/dev/stdout
FAILED_BEFORE=$FAILED
step doctor 120 "$PYTHON" -m fp8demo doctor --model tiny --json > "$DOCTOR_OUT"
FAILED=$FAILED_BEFORE
if [[ $DRY_RUN == 0 ]] && ! "$PYTHON" -c 'import json, sys; json.load(open(sys.argv[1]))' "$DOCTOR_OUT" 2>/dev/null; then
    mv "$DOCTOR_OUT" "${DOCTOR_OUT%.json}.txt"  # not JSON: keep it for reading, out of the report's way
fi

# The matrix (flux-fast protocol: 3 warm-ups, 10 timed runs), FP8 against bf16, both compiled. "fp8" picks the
# device's FP8 variant: native where FP8 matmuls exist (compute capability >= 8.9), weight storage elsewhere.
step bench-large-turbo 600 "$PYTHON" -m fp8demo -v bench --model random:large-turbo --t5 fp8 --sizes 1024 \
    --steps 4 --guidance 0 --variants fp8+compile,bf16+compile --warmup 3 --runs 10 \
    --out "$OUT_DIR" --name "bench-random-large-turbo-$SLUG"
step bench-large 900 "$PYTHON" -m fp8demo -v bench --model random:large --t5 fp8 --sizes 1024 \
    --steps 28 --guidance 3.5 --variants fp8+compile,bf16+compile --warmup 3 --runs 10 \
    --out "$OUT_DIR" --name "bench-random-large-$SLUG"
step bench-medium 600 "$PYTHON" -m fp8demo -v bench --model random:medium --t5 auto --sizes 1024 \
    --steps 28 --guidance 4.5 --variants fp8+compile,bf16+compile --warmup 3 --runs 10 \
    --out "$OUT_DIR" --name "bench-random-medium-$SLUG"

[[ $DRY_RUN == 1 ]] && exit 0
TOTAL=$((SECONDS - SUITE_START))
SUMMARY="$OUT_DIR/gpu-suite-$SLUG.json"
{
    echo "{\"benchmark\": \"gpu suite\", \"device_slug\": \"$SLUG\", \"finished\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
    echo " \"total_seconds\": $TOTAL, \"steps\": ["
    (IFS=,; echo "  ${STEPS_JSON[*]}")
    echo "]}"
} > "$SUMMARY"
echo "== gpu suite: ${TOTAL} s in all; steps and exit codes in $SUMMARY, log in $LOG" >&2
exit $FAILED
