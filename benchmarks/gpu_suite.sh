#!/usr/bin/env bash
# GPU suite for any CUDA machine: the GPU-marked tests, `doctor`, the FP8-against-bf16 benchmark matrix on
# random:* models (real widths, random weights: nothing is downloaded, no token needed), and, with HF_TOKEN, the
# fidelity of each speed recipe on SD3.5 Large Turbo and Large (real weights).
#
#   benchmarks/gpu_suite.sh              # results in benchmarks/results/, named after the device
#   benchmarks/gpu_suite.sh --dry-run    # print the commands, run nothing (no GPU needed)
#   OUT_DIR=/tmp/results PYTHON=.venv/bin/python benchmarks/gpu_suite.sh
#
# Needs only the project's Python packages with a CUDA build of torch. Each step has a time budget; a step that
# fails or runs out of time is recorded, the suite goes on, and the exit status is 1. Every bench variant runs in its
# own process (see fp8demo/bench.py), so each one builds its random model and compiles afresh: that, not the timed
# runs, is most of the time. Expected on one H100 (estimated, not yet measured): ~28 min on a first run, ~20 min
# on a rerun whose compiles hit Inductor's cache, plus ~22 min for the fidelity steps when HF_TOKEN is set; the
# estimate's breakdown is in benchmarks/README.md.
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

# Fidelity on the real weights: each speed recipe's pictures against bf16's (LPIPS, PSNR, SSIM beside seconds,
# memory and blocks skipped) on the first PartiPrompts of the fixed sample, one seed, into
# $OUT_DIR/fidelity-<model>-<device>/. SD3.5 Large and Large Turbo are gated: without HF_TOKEN (licence accepted)
# these steps are skipped. Download each model before the suite (python -m fp8demo info --model large-turbo): the
# budgets do not cover it. LPIPS needs torchvision and AlexNet's weights (docs/performance.md, "Fidelity"). Prompt
# counts are sized to 10-12 min each on an H100 (estimated, not yet measured): six engines load (~45 s each) and
# two or three compile (~2.5 min each); the images themselves take ~1.5 min (Turbo ~0.5 s each, Large ~3 s).
FIDELITY_RECIPES=bf16,fp8-storage,fp8-native,fp8-native+compile,fp8-native+compile+cache,fp8-native+compile+fp8-attention
if [[ $DRY_RUN == 1 || -n "${HF_TOKEN:-}" ]]; then
    step fidelity-large-turbo 900 "$PYTHON" -m fp8demo -v fidelity --model large-turbo --recipes "$FIDELITY_RECIPES" \
        --prompts parti200 --limit 32 --seeds 1 --out "$OUT_DIR/fidelity-large-turbo-$SLUG"
    step fidelity-large 900 "$PYTHON" -m fp8demo -v fidelity --model large --recipes "$FIDELITY_RECIPES" \
        --prompts parti200 --limit 8 --seeds 1 --steps 28 --guidance 3.5 --out "$OUT_DIR/fidelity-large-$SLUG"
else
    echo "== fidelity: skipped: HF_TOKEN is not set (SD3.5 Large and Large Turbo are gated models)" >&2
fi

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
