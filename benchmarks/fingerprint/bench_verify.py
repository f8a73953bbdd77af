"""Verification speed on SmolLM2-135M-Instruct at 64 keys of 16 tokens (one JSON line of ratios).

- batched vs per-key: ``verify`` with HFBackend batch 16 against batch 1 (target >= 1.5x on a 2-core CPU, where
  a bare forward measured 1.7x; far more on a GPU);
- our batched verification vs a bare batched forward over the same left-padded keys that computes only the last
  position's logits (``logits_to_keep=1``, as generation does) and takes their argmax
  (the limit; target >= 0.9).
Keys are the first 16 tokens of held-out news documents: the timing does not depend on how keys were chosen.
Each variant runs ``--repeats`` times, interleaved, and the minimum is kept (absolute times are noise here).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TRUSTLAB_QUIET", "1")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--keys", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    import torch

    from trustlab.fingerprint.backends import HFBackend
    from trustlab.fingerprint.config import VerifyConfig
    from trustlab.fingerprint.dataset import prompt_ids
    from trustlab.fingerprint.fpset import Fingerprint, FingerprintSet, tokenizer_info
    from trustlab.fingerprint.robustness import heldout_texts
    from trustlab.fingerprint.tiny import resolve_model_ref
    from trustlab.fingerprint.verify import verify
    from trustlab.models import load_causal_lm
    from trustlab.runtime import configure_threads

    threads = configure_threads()
    model, tok = load_causal_lm(resolve_model_ref(args.model))
    docs, source = heldout_texts(args.keys * 2)
    fps, seen = [], set()
    for d in docs:
        ids = tuple(tok.encode(d, add_special_tokens=False)[:16])
        if len(ids) == 16 and ids not in seen and tok.encode(tok.decode(ids), add_special_tokens=False) == list(ids):
            seen.add(ids)
            fps.append(Fingerprint(id=len(fps), key_text=tok.decode(ids), key_ids=ids, response_text=" the",
                                   response_ids=tuple(tok.encode(" the", add_special_tokens=False))))
        if len(fps) == args.keys:
            break
    fset = FingerprintSet.create(strategy="perinucleus", params={"response_length": 1, "prompt_format": "raw"},
                                 base_model={"ref": args.model}, key_model=None, tokenizer=tokenizer_info(tok),
                                 secret_commitment="0" * 64, null_p=1 / 3, fingerprints=fps)
    cfg = VerifyConfig(model=args.model)
    prompts = [prompt_ids(tok, fp.key_ids, "raw") for fp in fset.fingerprints]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def bare():
        for s in range(0, len(prompts), args.batch):
            chunk = prompts[s:s + args.batch]
            w = max(map(len, chunk))
            x = torch.full((len(chunk), w), pad)
            m = torch.zeros_like(x)
            for i, p in enumerate(chunk):
                x[i, w - len(p):] = torch.tensor(p)
                m[i, w - len(p):] = 1
            pos = (m.cumsum(1) - 1).clamp(min=0)
            with torch.no_grad():
                model(input_ids=x, attention_mask=m, position_ids=pos, logits_to_keep=1).logits[:, -1].argmax(-1)

    variants = {"per_key": lambda: verify(fset, HFBackend(model, tok, batch_size=1), cfg),
                "batched": lambda: verify(fset, HFBackend(model, tok, batch_size=args.batch), cfg),
                "bare_forward": bare}
    for fn in variants.values():  # warm-up
        fn()
    best = {k: float("inf") for k in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    out = {"bench": "fingerprint.verify", "model": args.model, "keys": len(fps), "key_tokens": 16,
           "batch": args.batch, "threads": threads, "repeats": args.repeats,
           "seconds": {k: round(v, 4) for k, v in best.items()},
           "batched_vs_per_key": round(best["per_key"] / best["batched"], 3),
           "batched_vs_bare_forward": round(best["bare_forward"] / best["batched"], 3),
           "targets": {"batched_vs_per_key": 1.5, "batched_vs_bare_forward": 0.9}, "key_source": source}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
