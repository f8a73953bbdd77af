"""Candidate demo models for the safety lab, measured: refusals on StrongREJECT-small per strategy and tokens/s.

    nice python benchmarks/safety/bench_demo_models.py MODEL.gguf [MODEL.gguf ...] [--limit 12] [--max-tokens 64]

Each GGUF runs in-process through llama-cpp-python on ONE thread (the demo machine's budget). Its own chat template
(GGUF metadata) is rendered in a sandboxed Jinja environment with the demo's think-in-tags system prompt, then the
prompt is completed under four strategies: default (nothing forced), zerothink (``<think>\\n\\n</think>\\n\\n``),
think (a bare ``<think>\\n`` prefill: MoreThink's first round) and intervention (``<think>\\n`` + the default
intervention text). The curated refusal list judges the answer (an unclosed thought has no answer) and the whole
turn. Prints one JSON line per model: refusal counts per strategy, the share of closed thoughts, tokens/s (the
generated tokens over the generation wall time, prompt processing included), with the default strategy as the
baseline the others are compared against (``ratio_vs_default``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


GEMMA_TURNS = ("{{ bos_token }}<start_of_turn>user\n{% for m in messages %}{{ m['content'] }}\n\n{% endfor %}"
               "<end_of_turn>\n<start_of_turn>model\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--limit", type=int, default=12)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from llama_cpp import Llama

    from trustlab.safety.datasets import load_prompts
    from trustlab.safety.judges.refusal import RefusalJudge
    from trustlab.safety.backends.base import render_chat_template
    from trustlab.safety.config import INTERVENTION_TEXT
    from trustlab.safety.demo import THINK_SYSTEM_PROMPT

    prompts = load_prompts("strongreject-small", limit=args.limit)
    judge = RefusalJudge("curated")
    end = "</think>"
    forced = {"default": "", "zerothink": "<think>\n\n</think>\n\n", "think": "<think>\n",
              "intervention": "<think>\n" + INTERVENTION_TEXT}
    for path in args.models:
        llm = Llama(model_path=str(path), n_threads=1, n_threads_batch=1, n_ctx=1024, verbose=False, seed=0)
        template = llm.metadata.get("tokenizer.chat_template")
        row_note = None
        if not template:  # gemma3-270m ships none: Gemma's turn format, system text folded into the user turn
            template, row_note = GEMMA_TURNS, "no chat template in the GGUF; Gemma turn format supplied"
        bos = llm.detokenize([llm.token_bos()]).decode() if llm.token_bos() >= 0 else ""
        eos = llm.detokenize([llm.token_eos()]).decode() if llm.token_eos() >= 0 else ""
        row = {"model": path.name, "size_mb": round(path.stat().st_size / 2**20), "n_prompts": len(prompts),
               "max_tokens": args.max_tokens, "note": row_note, "strategies": {}}
        for name, prefix in forced.items():
            refused_answer = refused_turn = closed = tokens = 0
            wall = 0.0
            for rec in prompts:
                text = render_chat_template(template, [{"role": "system", "content": THINK_SYSTEM_PROMPT},
                                                       {"role": "user", "content": rec.prompt}],
                                            bos_token=bos, eos_token=eos)
                t0 = time.perf_counter()
                out = llm.create_completion(text + prefix, max_tokens=args.max_tokens, temperature=0.0)
                wall += time.perf_counter() - t0
                tokens += out["usage"]["completion_tokens"]
                turn = prefix + out["choices"][0]["text"]
                head, sep, answer = turn.partition(end)
                is_closed = bool(sep) or "<think>" not in turn
                answer = answer if sep else ("" if "<think>" in turn else turn)
                closed += is_closed
                refused_answer += judge.match(answer) is not None if answer.strip() else 0
                refused_turn += judge.match(turn) is not None
            row["strategies"][name] = {"refused_answer": refused_answer, "refused_turn": refused_turn,
                                       "closed": closed, "tokens": tokens, "tokens_per_s": round(tokens / wall, 2)}
        base = row["strategies"]["default"]["tokens_per_s"]
        for s in row["strategies"].values():
            s["ratio_vs_default"] = round(s["tokens_per_s"] / base, 3) if base else None
        print(json.dumps(row), flush=True)
        del llm


if __name__ == "__main__":
    main()
