#!/usr/bin/env bash
# The one script a GPU session runs (issues #14 and #15), sized for a
# 10-minute slot on the H200 machine (python3 with torch and pytest; nothing
# is installed): build the extension (~90 s on 16 cores), run the CUDA tests
# (emulated and real, pytest -x), then benchmarks/gpu_report.py (under 5
# minutes). Everything it writes goes under $OUT:
#   session.log       what ran, when, and each step's exit status
#   nvidia-smi.txt    the card
#   build.log         the build (the ptxas resource report included)
#   pytest.log        the CUDA tests
#   gpu_report.md     the report's table (BENCHMARKS.md takes it, with the GPU's name and the date)
#   gpu_report.log    the report's full output
# Each step has its own time limit, so that a hang cannot eat the slot; the
# report runs even when a test fails (its own correctness checks run first).
# Worst case 150 + 170 + 270 s: inside the 10 minutes.
#
#   OUT=/some/dir benchmarks/gpu_session.sh [--quick]    # --quick: the report at its smoke-test size
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_session_out}
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the in-place build, not an installed copy
REPORT_ARGS=()
[ "${1:-}" = "--quick" ] && REPORT_ARGS+=(--quick)
mkdir -p "$OUT"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/session.log"; }

log "start: $(git rev-parse --short HEAD 2>/dev/null || echo 'no git'), $($PY -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda)')"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1

log "build (SPARSE_KERNELS_CUDA_ARCHS=9.0 MAX_JOBS=16)"
SPARSE_KERNELS_CUDA_ARCHS=9.0 MAX_JOBS=16 timeout 150 $PY setup.py build_ext --inplace > "$OUT/build.log" 2>&1
rc=$?
log "build exit status $rc"
if [ $rc -ne 0 ]; then
    tail -n 40 "$OUT/build.log"
    exit 1
fi

# The CUDA tests: every kernel emulated and on the device, the ptxas report
# of this build, the GPU report script, the no-synchronisation step.
# test_cuda_benchmark.py is left out: it needs pytest-benchmark, and
# gpu_report.py times the same products.
log "CUDA tests"
SPARSE_KERNELS_BUILD_LOG="$OUT/build.log" timeout 170 $PY -m pytest -x -q -p no:cacheprovider \
    tests/test_cuda_emulated.py tests/test_cuda_wide_emulated.py tests/test_cuda_bsr_emulated.py \
    tests/test_cuda_persistent_lstm.py tests/test_cuda_lstm_plan.py tests/test_cuda_gpu_report.py \
    tests/test_ptxas_report.py > "$OUT/pytest.log" 2>&1
log "tests exit status $? ($(tail -n 1 "$OUT/pytest.log"))"

log "gpu_report.py ${REPORT_ARGS[*]:-}"
timeout 270 $PY benchmarks/gpu_report.py "${REPORT_ARGS[@]}" --out "$OUT/gpu_report.md" > "$OUT/gpu_report.log" 2>&1
log "report exit status $?"
log "done"
