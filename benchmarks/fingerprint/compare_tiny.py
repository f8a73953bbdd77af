"""perinucleus vs english_random on fp-tiny at equal settings (spec §7 checks 4-5); prints one JSON line.

    OMP_NUM_THREADS=1 python benchmarks/fingerprint/compare_tiny.py --seed 0 --lam 0.15 --beta 0.25 --lr 3e-3 -n 32 --epochs 200
"""

from __future__ import annotations

import argparse
import json
import warnings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lam", type=float, default=0.15)
    ap.add_argument("--beta", type=float, default=0.25)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("-n", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=200)
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    from trustlab.fingerprint.config import EmbedConfig, GenerateConfig
    from trustlab.fingerprint.keys import generate_fingerprints
    from trustlab.fingerprint.robustness import measure, perplexity
    from trustlab.fingerprint.tiny import heldout_texts, prepare_tiny
    from trustlab.fingerprint.train import embed
    from trustlab.models import load_causal_lm
    from trustlab.runtime import configure_threads

    configure_threads()
    path = str(prepare_tiny())
    texts = heldout_texts(100)
    base, tok = load_causal_lm(path)
    ppl_base = perplexity(base, tok, texts)
    out = {"seed": a.seed, "lambda_wa": a.lam, "beta_dm": a.beta, "lr": a.lr, "n": a.n, "epochs": a.epochs}
    for strategy in ("perinucleus", "english_random"):
        model, _ = load_causal_lm(path)
        fps = generate_fingerprints(GenerateConfig(model=path, num_fingerprints=a.n, strategy=strategy, seed=a.seed),
                                    bytes([a.seed]) * 32, lm=(base, tok))
        res = embed(model, tok, fps, EmbedConfig(model=path, lambda_wa=a.lam, beta_dm=a.beta, lr=a.lr,
                                                 max_epochs=a.epochs, seed=a.seed, save_every=0))
        out[strategy] = {"accuracy": res.accuracy, "ppl_ratio": perplexity(res.model, tok, texts) / ppl_base,
                         "base_hits": measure(base, tok, fps, label="base")["m"]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
