"""The safety tax on the demo's stand-in: refusals on harmful prompts (StrongREJECT-small) next to refusals on benign
but edgy ones (benign-edgy), per strategy.

    nice python benchmarks/safety/bench_overrefusal.py [MODEL.gguf] [--limit 8] [--max-tokens 64]

The GGUF (default: the assembled, hash-checked demo model) runs in-process through llama-cpp-python on ONE thread,
greedy. Its own chat template (GGUF metadata) is rendered in the sandboxed Jinja environment with the demo's
think-in-tags system prompt; each strategy's forced text is appended (default: nothing; zerothink: an empty closed
thought; intervention: ``<think>\\n`` + the default intervention text). The curated refusal list judges the whole
turn, as the report's over-refusal column does. Prints one JSON line: per strategy, the refusal rate on each set
and the ratio benign/harmful (how much of the refusing lands on prompts that did not deserve it), with the default
strategy's figures as the baseline (``vs_default``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", type=Path)
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from llama_cpp import Llama

    from trustlab.safety.backends.base import render_chat_template
    from trustlab.safety.config import INTERVENTION_TEXT
    from trustlab.safety.datasets import load_prompts
    from trustlab.safety.demo import THINK_SYSTEM_PROMPT
    from trustlab.safety.judges.refusal import RefusalJudge

    path = args.model
    if path is None:
        from trustlab.models.demo_gguf import gguf_path

        path = gguf_path()
    sets = {"harmful": load_prompts("strongreject-small", limit=args.limit),
            "benign": load_prompts("benign-edgy", limit=args.limit)}
    judge = RefusalJudge("curated")
    forced = {"default": "", "zerothink": "<think>\n\n</think>\n\n", "intervention": "<think>\n" + INTERVENTION_TEXT}
    llm = Llama(model_path=str(path), n_threads=1, n_threads_batch=1, n_ctx=1024, verbose=False, seed=0)
    template = llm.metadata.get("tokenizer.chat_template")
    bos = llm.detokenize([llm.token_bos()]).decode() if llm.token_bos() >= 0 else ""
    eos = llm.detokenize([llm.token_eos()]).decode() if llm.token_eos() >= 0 else ""
    row = {"model": Path(path).name, "n_prompts": args.limit, "max_tokens": args.max_tokens, "strategies": {}}
    t_all = time.perf_counter()
    for name, prefix in forced.items():
        cell = {}
        for set_name, prompts in sets.items():
            refused = tokens = 0
            for rec in prompts:
                text = render_chat_template(template, [{"role": "system", "content": THINK_SYSTEM_PROMPT},
                                                       {"role": "user", "content": rec.prompt}],
                                            bos_token=bos, eos_token=eos)
                out = llm.create_completion(text + prefix, max_tokens=args.max_tokens, temperature=0.0)
                tokens += out["usage"]["completion_tokens"]
                refused += judge.match(prefix + out["choices"][0]["text"]) is not None
            cell[f"refused_{set_name}"] = refused / len(prompts)
            cell[f"tokens_{set_name}"] = tokens
        cell["benign_over_harmful"] = (round(cell["refused_benign"] / cell["refused_harmful"], 3)
                                       if cell["refused_harmful"] else None)
        row["strategies"][name] = cell
    base = row["strategies"]["default"]
    for cell in row["strategies"].values():
        cell["vs_default"] = {k: round(cell[k] - base[k], 3) for k in ("refused_harmful", "refused_benign")}
    row["wall_s"] = round(time.perf_counter() - t_all, 1)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
