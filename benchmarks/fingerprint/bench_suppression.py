"""The suppression and detection family of arXiv 2509.26598 and the top-r verifier on SmolLM2-135M-Instruct with
N fingerprints (issue 18 item 5): attack success against utility cost, one plot and one table.

The fingerprinted model is embedded once (perinucleus, the SmolLM2 preset, stop_after_full_match 3) and cached
under --cache (default $TRUSTLAB_CACHE/bench-suppression-smollm2-n<N>, the owner secret beside it, never inside a
run folder); later runs reuse it. Baselines (the unattacked model's perplexity and trivia score, its clean verdict)
are measured in the same run, and every cost is printed as a ratio (perplexity) or a difference (trivia) to them.

    OMP_NUM_THREADS=1 nice python benchmarks/fingerprint/bench_suppression.py --out runs/fp-suppression
    ... --model fp-tiny -n 32      # the same on the test model (minutes -> seconds)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings
from pathlib import Path


def embedded(ref: str, n: int, cache: Path):
    """(fingerprinted model, tokenizer, fps, seconds spent embedding now or recorded earlier)."""
    from trustlab.fingerprint.config import EmbedConfig, GenerateConfig
    from trustlab.fingerprint.fpset import FingerprintSet
    from trustlab.fingerprint.keys import generate_fingerprints
    from trustlab.fingerprint.secret import load_or_create_secret
    from trustlab.fingerprint.tiny import resolve_model_ref
    from trustlab.fingerprint.train import embed
    from trustlab.models import load_causal_lm

    timing = cache / "timing.json"
    if timing.is_file() and (cache / "model" / "config.json").is_file():
        model, tok = load_causal_lm(str(cache / "model"))
        return model, tok, FingerprintSet.load(cache / "fingerprints.json"), json.loads(timing.read_text())
    cache.mkdir(parents=True, exist_ok=True)
    secret, _ = load_or_create_secret(cache.parent / f"{cache.name}.secret")
    base, tok = load_causal_lm(resolve_model_ref(ref))
    t0 = time.perf_counter()
    fps = generate_fingerprints(GenerateConfig(model=ref, num_fingerprints=n), secret, lm=(base, tok), model_ref=ref)
    t_gen = time.perf_counter() - t0
    fps.save(cache / "fingerprints.json")
    model, _ = load_causal_lm(resolve_model_ref(ref))
    res = embed(model, tok, fps, EmbedConfig(model=ref, save_every=0, stop_after_full_match=3), out_dir=cache,
                model_ref=ref)
    info = {"generate_s": round(t_gen, 1), "embed_s": round(res.seconds, 1), "epochs": res.epochs,
            "accuracy": res.accuracy}
    timing.write_text(json.dumps(info))
    return res.model, tok, fps, info


def table(r: dict) -> list[str]:
    fam, topr = r["suppress_family"], r.get("topr") or {}
    lines = [f"clean: {r['clean']['line']}",
             f"clean utility: perplexity {fam['ppl_clean']:.3f}, trivia-MC {fam['mc_clean']:.3f} "
             f"({fam['mc_items']} items)", "",
             "| attack | attack success | lenient hits after | verdict after | perplexity ratio | trivia change |"
             " keys flagged | benign flagged |", "|---|---|---|---|---|---|---|---|"]
    for a in fam["attacks"]:
        kf = "" if a.get("keys_flagged") is None else f"{a['keys_flagged']:.2f}"
        bf = "" if a.get("benign_flagged") is None else f"{a['benign_flagged']:.2f}"
        lines.append(f"| {a['attack']} | {a['attack_success']:.2f} | {a['lenient']:.2f} | {a['decision']} "
                     f"({a['m']}/{a['M']}) | {a['ppl_ratio']:.3f} | {a['mc_delta']:+.3f} | {kf} | {bf} |")
    if topr:
        ranks = list(topr["raw"])
        lines += ["", "top-r on the raw reported distribution (logprobs computed before the host's processors): "
                  + "; ".join(topr["raw"][k]["line"] for k in ranks), "",
                  "| attack (processed reports) | greedy verdict | " + " | ".join(f"top-{k}" for k in ranks)
                  + " | perplexity ratio | trivia change |", "|---|---|" + "---|" * len(ranks) + "---|---|"]
        for a in topr["attacks"]:
            cells = " | ".join(f"{a['topr'][k]['decision']} {a['topr'][k]['m']}/{a['topr'][k]['M']} "
                               f"(p={a['topr'][k]['p_value']:.2g})" for k in ranks)
            lines.append(f"| {a['attack']} | {a['decision']} {a['m']}/{a['M']} | {cells} | {a['ppl_ratio']:.3f} | "
                         f"{a['mc_delta']:+.3f} |")
        lines.append(f"cheapest attack beating top-r (by perplexity): {topr['cheapest_win']}; beating greedy: "
                     f"{topr['cheapest_greedy_win']}; candidates per key k = {topr['k']}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("runs/fp-suppression"))
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--ppl-docs", type=int, default=100)
    ap.add_argument("--mc-subset", type=int, default=100)
    ap.add_argument("--experiments", default="suppress_family,topr",
                    help="run a part now (each is recorded and skipped by a later run in the same --out)")
    args = ap.parse_args()

    from trustlab.fingerprint.config import RobustnessConfig
    from trustlab.fingerprint.robustness import run_robustness
    from trustlab.fingerprint.tiny import resolve_model_ref
    from trustlab.models import load_causal_lm
    from trustlab.runtime import configure_threads

    configure_threads()
    warnings.simplefilter("ignore")
    root = Path(os.environ.get("TRUSTLAB_CACHE", Path.home() / ".cache" / "trustlab"))
    cache = args.cache or root / f"bench-suppression-{args.model}-n{args.n}"
    t0 = time.perf_counter()
    fmodel, tok, fps, embed_info = embedded(args.model, args.n, cache)
    base, _ = load_causal_lm(resolve_model_ref(args.model))
    t1 = time.perf_counter()
    results = {}
    for exp in ("suppress_family", "topr"):  # one run folder each: a part can run (and resume) on its own
        cfg = RobustnessConfig(fingerprinted=str(cache / "model"), base=args.model, experiments=(exp,),
                               ppl_docs=args.ppl_docs, mc_subset=args.mc_subset)
        path = args.out / exp / "robustness.json"
        if exp in args.experiments.split(","):
            results[exp] = run_robustness(cfg, args.out / exp, models=(fmodel, tok, base), fps=fps).results
        elif path.is_file():
            results[exp] = json.loads(path.read_text())
    if set(results) != {"suppress_family", "topr"} or any(e not in results[e] for e in results):
        print(f"recorded so far under {args.out}: {', '.join(results)}; run the rest with --experiments")
        return
    r = {**results["topr"], **results["suppress_family"]}
    r["topr"] = results["topr"]["topr"]
    lines = table(r)
    print("\n".join(lines))
    from trustlab.fingerprint.plots import suppression_tradeoff

    plot = suppression_tradeoff(r["suppress_family"], r["topr"], args.out / "suppression_tradeoff.png")
    summary = {"model": args.model, "n": len(fps), "embed": embed_info, "cache": str(cache),
               "load_s": round(t1 - t0, 1), "experiments_s": round(time.perf_counter() - t1, 1), "plot": str(plot),
               "seconds": {e: results[e][e]["seconds"] for e in results},
               "success": {a["attack"]: a["attack_success"] for a in r["suppress_family"]["attacks"]},
               "ppl_ratio": {a["attack"]: round(a["ppl_ratio"], 4) for a in r["suppress_family"]["attacks"]},
               "topr_cheapest_win": r["topr"]["cheapest_win"]}
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print(json.dumps(summary, default=lambda x: None if isinstance(x, float) and math.isnan(x) else str(x)))


if __name__ == "__main__":
    main()
