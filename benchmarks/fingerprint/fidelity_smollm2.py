"""Spec §7 fidelity on SmolLM2-135M-Instruct: N perinucleus fingerprints at the preset, verified right after
embedding; base and foreign models judged; held-out perplexity ratio beside english_random at the same N and
settings; retention after one epoch of benign SFT for both. Prints one JSON line and writes fidelity.json.

    OMP_NUM_THREADS=1 python benchmarks/fingerprint/fidelity_smollm2.py --out runs/fp-fidelity -n 64
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("runs/fp-fidelity"))
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--stop-after-full-match", type=int, default=3)
    ap.add_argument("--strategies", default="perinucleus,english_random")
    ap.add_argument("--sft-epochs", type=int, default=1)
    ap.add_argument("--sft-pairs", type=int, default=128, help="benign chat pairs in the SFT epoch")
    ap.add_argument("--max-epochs", type=int, default=None, help="epoch cap for every strategy (default: preset)")
    ap.add_argument("--reuse", action="store_true", help="reuse a finished embed run folder of a strategy")
    args = ap.parse_args()

    from trustlab.fingerprint.config import EmbedConfig, GenerateConfig
    from trustlab.fingerprint.keys import generate_fingerprints
    from trustlab.fingerprint.attacks import foreign_model, sft_attack, sft_pairs
    from trustlab.fingerprint.heldout import heldout_texts
    from trustlab.fingerprint.measure import measure
    from trustlab.fingerprint.utility import perplexity
    from trustlab.fingerprint.secret import load_or_create_secret
    from trustlab.fingerprint.train import embed
    from trustlab.models import load_causal_lm
    from trustlab.runtime import configure_threads
    from trustlab.runtime.io import write_json_atomic

    configure_threads()
    warnings.simplefilter("ignore")
    ref = "smollm2-135m-instruct"
    args.out.mkdir(parents=True, exist_ok=True)
    secret, _ = load_or_create_secret(args.out.parent / f"{args.out.name}.secret")  # outside every run folder
    texts, provenance = heldout_texts(100)
    base, tok = load_causal_lm(ref)
    ppl_base = perplexity(base, tok, texts)
    path = args.out / "fidelity.json"
    out: dict = {"model": ref, "n": args.n, "heldout": provenance, "ppl_base": ppl_base, "runs": {},
                 "max_epochs": args.max_epochs, "sft_pairs": args.sft_pairs}
    for strategy in args.strategies.split(","):
        run = args.out / strategy
        t0 = time.perf_counter()
        if args.reuse and (run / "model" / "config.json").is_file():
            from types import SimpleNamespace

            from trustlab.fingerprint.fpset import FingerprintSet
            from trustlab.runtime.io import read_jsonl

            fps = FingerprintSet.load(run / "fingerprints.json")
            summary = json.loads((run / "embed_result.json").read_text())
            model, _ = load_causal_lm(str(run / "model"))
            res = SimpleNamespace(model=model, seconds=summary["seconds"], epochs=summary["epochs"],
                                  settings=summary["settings"], accuracy=summary["accuracy"],
                                  fp_loss=summary["fp_loss"], history=read_jsonl(run / "train_log.jsonl"))
            t_gen = float("nan")
        else:
            fps = generate_fingerprints(GenerateConfig(model=ref, num_fingerprints=args.n, strategy=strategy),
                                        secret, lm=(base, tok), model_ref=ref)
            t_gen = time.perf_counter() - t0
            model, _ = load_causal_lm(ref)
            res = embed(model, tok, fps, EmbedConfig(model=ref, save_every=0, max_epochs=args.max_epochs,
                                                     stop_after_full_match=args.stop_after_full_match),
                        out_dir=run, model_ref=ref)
            fps.save(run / "fingerprints.json")
        owned = measure(res.model, tok, fps, label="fingerprinted")
        rec = {"generate_s": round(t_gen, 1), "embed_s": round(res.seconds, 1), "epochs": res.epochs,
               "settings": res.settings, "train_accuracy": res.accuracy, "fp_loss": res.fp_loss,
               "verified": f"{owned['m']}/{owned['M']}", "verify_line": owned["line"],
               "mean_base_prob": sum(f.base_prob for f in fps.fingerprints) / len(fps),
               "max_base_prob": max(f.base_prob for f in fps.fingerprints),
               "ppl_ratio": perplexity(res.model, tok, texts) / ppl_base,
               "history": [{k: r[k] for k in ("epoch", "fp_loss", "accuracy", "seconds")} for r in res.history]}
        rec["base"] = measure(base, tok, fps, label="base")["line"]
        rec["foreign"] = measure(foreign_model(base, seed=1), tok, fps, label="foreign")["line"]
        out["runs"][strategy] = rec
        write_json_atomic(path, out)
        if strategy == "perinucleus" and not args.reuse:
            Path("/tmp/fp-embed-runs.md").write_text(
                f"# SmolLM2 N={args.n} perinucleus embed (fp-embed)\nrun folder: {run.resolve()}\n"
                f"model: {(run / 'model').resolve()}\nfingerprints: {(run / 'fingerprints.json').resolve()}\n"
                f"verified right after embedding: {rec['verified']} ({rec['verify_line']})\n")
        sft = sft_attack(res.model, tok, epochs=args.sft_epochs, seed=0, pairs=sft_pairs(tok, n=args.sft_pairs, seed=0))
        after = measure(res.model, tok, fps, label="after-sft")
        rec["sft"] = {**sft, "epochs": args.sft_epochs, "retention": after["exact"], "persistence": after["persistence"],
                      "line": after["line"]}
        write_json_atomic(path, out)
        del model, res
    print(json.dumps({s: {k: r.get(k) for k in ("verified", "ppl_ratio", "epochs")} | {"sft_retention": r["sft"]["retention"]}
                      for s, r in out["runs"].items()}))


if __name__ == "__main__":
    main()
