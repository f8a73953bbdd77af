# Shared set-up of the LLM labs' CUDA checks (benchmarks/{fingerprint,safety}/gpu_checks.sh source it after setting
# LAB_IMPORTS, the Python lines a usable interpreter must import, and LAB_NEEDS, the same in words): the output folder
# and log, dry-run switches, the choice of Python (.venv if its torch sees CUDA, else python3 with PYTHONPATH=src;
# exit 3 when neither can), env.txt, and step NAME TIMEOUT ARGS... (one JSON line into $OUT/NAME.json within what is
# left of BUDGET seconds; FAILED=1 on a failure or a skipped step).
OUT=${OUT:-./gpu-out}
mkdir -p "$OUT"
LOG="$OUT/gpu_checks.log"
BUDGET=${GPU_CHECKS_BUDGET:-280}  # seconds for everything: under 5 minutes with set-up
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} PYTHONUNBUFFERED=1 TRUSTLAB_QUIET=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
log() { echo "gpu_checks: $*" | tee -a "$LOG"; }
cuda_ok() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' >/dev/null 2>&1; }
lab_ok() { PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" "$1" -c "$LAB_IMPORTS" >/dev/null 2>&1; }

DEV=cuda DTYPE=${GPU_CHECKS_DTYPE:-bfloat16} QUICK=()
if [ -n "${GPU_CHECKS_DRY:-}" ]; then  # bf16 matmuls are slow on a CPU: float32 unless GPU_CHECKS_DTYPE is set
  DEV=cpu QUICK=(--quick) DTYPE=${GPU_CHECKS_DTYPE:-float32} OMP_NUM_THREADS=1; log "dry run: the same steps on the CPU, --quick, $DTYPE"
fi

PY=
for cand in .venv/bin/python python3; do
  if [ "$DEV" = cpu ] || cuda_ok "$cand"; then
    if lab_ok "$cand"; then PY=$cand; break; fi
    log "$cand sees CUDA but cannot import the lab ($LAB_NEEDS)"
  fi
done
if [ -z "$PY" ]; then log "FAIL: no Python here has a CUDA torch and the lab's imports; stop"; exit 3; fi
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
{ date -u; nvidia-smi 2>&1 | head -15; echo "python: $PY"
  "$PY" -c 'import sys, torch, transformers; print(sys.version.split()[0], "torch", torch.__version__, "cuda",
    torch.version.cuda, "transformers", transformers.__version__,
    torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")'; } >"$OUT/env.txt" 2>&1
log "python $PY ($(tail -1 "$OUT/env.txt"))"
SHAPES=()
[ -f "$ASSETS/config.json" ] && SHAPES=(--shapes "$ASSETS")

FAILED=0
step() {  # step NAME TIMEOUT ARGS...: one JSON line into $OUT/NAME.json, within what is left of BUDGET
  local name=$1 limit=$2 left=$((BUDGET - SECONDS)) rc; shift 2
  if [ "$left" -lt 30 ]; then log "$name skipped: ${left}s of ${BUDGET}s left"; FAILED=1; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  log "$name (timeout ${limit}s): $*"
  timeout -k 10 "$limit" "$PY" "$@" >"$OUT/$name.json" 2>>"$LOG"; rc=$?
  if [ "$rc" -ne 0 ] || [ ! -s "$OUT/$name.json" ]; then log "$name FAILED (rc $rc)"; FAILED=1
  else log "$name done at ${SECONDS}s"; fi
}
