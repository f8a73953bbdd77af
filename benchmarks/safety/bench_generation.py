"""transformers generation on SmolLM2-135M (one thread): tokens/s of our batched backend at batch 8 vs batch 1
(target >= 3x), our pipeline (render, generate_samples, stop handling, decoding) vs a bare ``model.generate`` on the
same prompts and batch (the limit; target >= 0.9), and MoreThink vs default in tokens and wall time.
Prints one JSON line of ratios.
    python benchmarks/safety/bench_generation.py [--prompts 8] [--max-tokens 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import time


def bare_generate(model, tok, rendered, batch, max_tokens):
    """tokens/s of plain left-padded greedy ``model.generate`` (ids up to EOS counted)."""
    import torch

    tok.padding_side = "left"
    eos = tok.eos_token_id
    n_tok, t0 = 0, time.perf_counter()
    for s in range(0, len(rendered), batch):
        enc = tok(rendered[s:s + batch], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        for row in out[:, enc["input_ids"].shape[1]:].tolist():
            n_tok += row.index(eos) if eos in row else len(row)
    return n_tok / (time.perf_counter() - t0)


def ours(model, tok, records, batch, max_tokens, strategy="default"):
    from trustlab.safety.backends.hf import HFBackend
    from trustlab.safety.config import Sampling, Thinking
    from trustlab.safety.thinking import generate_samples

    be = HFBackend(model, tok, batch_size=batch)
    th = Thinking(strategy=strategy, think_budget=max_tokens, max_extensions=2, answer_max_tokens=max_tokens)
    t0 = time.perf_counter()
    gens = list(generate_samples(be, records, th, Sampling(max_tokens=max_tokens)))
    wall = time.perf_counter() - t0
    return sum(g.tokens for g in gens) / wall, sum(g.tokens for g in gens), wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    from trustlab.models import load_causal_lm
    from trustlab.runtime import configure_threads
    from trustlab.safety.backends.base import messages_for
    from trustlab.safety.datasets import load_prompts

    configure_threads(1)
    model, tok = load_causal_lm("smollm2-135m-instruct")
    records = load_prompts("strongreject-small", limit=args.prompts)
    rendered = [tok.apply_chat_template(messages_for(r.prompt), tokenize=False, add_generation_prompt=True)
                for r in records]
    bare_generate(model, tok, rendered[:2], 2, 4)  # warm-up
    # interleaved rounds, best of each: a shared machine's load drifts, and the best run is the least disturbed.
    # Batch 1 runs on the first half of the prompts (tokens/s does not depend on how many), batch 8 on all.
    half = max(1, args.prompts // 2)
    runs: dict[str, list[float]] = {"bare1": [], "bare8": [], "ours1": [], "ours8": []}
    for _ in range(args.rounds):
        runs["bare1"].append(bare_generate(model, tok, rendered[:half], 1, args.max_tokens))
        runs["ours1"].append(ours(model, tok, records[:half], 1, args.max_tokens)[0])
        runs["bare8"].append(bare_generate(model, tok, rendered, 8, args.max_tokens))
        runs["ours8"].append(ours(model, tok, records, 8, args.max_tokens)[0])
    bare1, bare8, ours1, ours8 = (max(runs[k]) for k in ("bare1", "bare8", "ours1", "ours8"))
    _, tok_default, wall_default = ours(model, tok, records, 8, args.max_tokens)
    _, tok_more, wall_more = ours(model, tok, records, 8, args.max_tokens, "morethink")
    print(json.dumps({
        "bench": "safety_generation", "model": "smollm2-135m-instruct", "prompts": args.prompts,
        "max_tokens": args.max_tokens, "threads": 1, "rounds": args.rounds,
        "tok_per_s": {"bare_b1": round(bare1, 2), "bare_b8": round(bare8, 2), "ours_b1": round(ours1, 2),
                      "ours_b8": round(ours8, 2)},
        "ours_b8_vs_b1": round(ours8 / ours1, 2), "bare_b8_vs_b1": round(bare8 / bare1, 2), "target_b8_vs_b1": 3.0,
        "ours_vs_bare_b8": round(ours8 / bare8, 3), "target_ours_vs_bare": 0.9,
        "morethink_vs_default": {"tokens": round(tok_more / tok_default, 2), "wall": round(wall_more / wall_default, 2)},
    }))


if __name__ == "__main__":
    main()
