#!/usr/bin/env bash
# One command on a machine with an NVIDIA GPU: the GPU bench rows, the GPU load-test report and the
# per-request overhead, each part bounded by `timeout` (about 5 minutes in all, 8 at the very most).
#
#   bash benchmarks/gpu_report.sh
#
# Writes (commit them whenever this has run on a GPU):
#   benchmarks/results/bench-gpu.csv, bench-gpu.json   knet bench --device cuda (published method vs ours)
#   reports/gpu/report.md, *.png, rows.csv, results.json   knet loadtest with the service on CUDA
#   reports/gpu/overhead.txt                             knet bench-overhead with the service on CUDA
#   reports/gpu/run.log                                  what ran, how long, and each part's exit status
# Without CUDA it stops at once with exit status 2 and writes nothing. Settings (environment):
#   KNET_GPU_REPORT_MODELS   zoo models (default: twomoon potential1 digits)
#   KNET_GPU_REPORT_OUT      report folder (default: reports/gpu); the bench rows go to
#                            KNET_GPU_REPORT_BENCH_OUT (default: benchmarks/results/bench-gpu)
#   KNET_GPU_REPORT_DEVICE   cuda (default); cpu only to rehearse the script where there is no GPU
#   KNET_GPU_REPORT_QUICK=1  the smallest version of every part (the test suite's rehearsal)
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck disable=SC1091
source scripts/setup.sh

DEVICE="${KNET_GPU_REPORT_DEVICE:-cuda}"
MODELS="${KNET_GPU_REPORT_MODELS:-twomoon potential1 digits}"
OUT="${KNET_GPU_REPORT_OUT:-reports/gpu}"
BENCH_OUT="${KNET_GPU_REPORT_BENCH_OUT:-benchmarks/results/bench-gpu}"
QUICK="${KNET_GPU_REPORT_QUICK:-0}"

case "$DEVICE" in
    cuda) if ! python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
              echo "gpu_report: torch sees no CUDA device here (torch $(python -c 'import torch; print(torch.__version__)')); nothing was run" >&2
              exit 2
          fi ;;
    cpu) echo "gpu_report: rehearsal on the CPU (KNET_GPU_REPORT_DEVICE=cpu): the figures are not GPU figures" >&2 ;;
    *) echo "gpu_report: KNET_GPU_REPORT_DEVICE must be cuda or cpu, got '$DEVICE'" >&2; exit 2 ;;
esac

if [ "$QUICK" = 1 ]; then
    # the XLA peer is a CPU column: a CPU rehearsal of this GPU report leaves it out (it compiles per batch size)
    BENCH_ARGS=(--batches 1 64 --baseline-budget-s 0.5 --baseline-repeats 1 --ours-budget-s 0.3 --baseline-max-s 5 --no-xla)
    LOAD_ARGS=(--quick --no-simulate)
    OVERHEAD_ROUNDS=20
    BOUNDS=(240 300 120)
else
    BENCH_ARGS=(--batches 1 64 1024 16384 --baseline-budget-s 2 --baseline-repeats 3 --ours-budget-s 0.5 --baseline-max-s 20)
    LOAD_ARGS=(--step-s 3 --rows 1 64 1024 --concurrency 1 8 --simulate-timeout 30)
    OVERHEAD_ROUNDS=300
    BOUNDS=(120 300 60)
fi

mkdir -p "$OUT" "$(dirname "$BENCH_OUT")"
LOG="$OUT/run.log"
{
    echo "# benchmarks/gpu_report.sh, $(date -u +%Y-%m-%dT%H:%M:%SZ), device $DEVICE, models: $MODELS"
    python -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"
} > "$LOG"
FAILED=0

# part NAME BOUND_S COMMAND...: run it under `timeout`, log its wall time and exit status
part() {
    local name="$1" bound="$2"; shift 2
    local t0=$SECONDS
    echo "[gpu_report] $name (at most ${bound} s): $*" >&2
    timeout --kill-after=10 "$bound" "$@"
    local rc=$?
    echo "$name: exit $rc in $((SECONDS - t0)) s (bound ${bound} s): $*" >> "$LOG"
    if [ "$rc" -ne 0 ]; then
        FAILED=1
        [ "$rc" -eq 124 ] && echo "[gpu_report] $name ran past ${bound} s and was stopped" >&2
    fi
}

# shellcheck disable=SC2086  # MODELS is a list of words
part bench "${BOUNDS[0]}" knet bench --device "$DEVICE" --models $MODELS "${BENCH_ARGS[@]}" \
    --csv "$BENCH_OUT.csv" --out-json "$BENCH_OUT.json"
# shellcheck disable=SC2086
KNET_SERVICE_DEVICE="$DEVICE" part loadtest "${BOUNDS[1]}" knet loadtest --models $MODELS --out "$OUT" "${LOAD_ARGS[@]}"
# the loadtest's `knet serve` stored the zoo, which the overhead benchmark serves
KNET_SERVICE_DEVICE="$DEVICE" part overhead "${BOUNDS[2]}" \
    bash -c "knet bench-overhead --rounds $OVERHEAD_ROUNDS > '$OUT/overhead.txt'"

echo "[gpu_report] done: $OUT (report.md, overhead.txt, run.log), $BENCH_OUT.{csv,json}" >&2
exit "$FAILED"
