"""Certification cost as an availability target (issue 11 item 3): does attack B inflate the adaptive certifier's
forwards on triggered inputs? Digits, RS victims (MLP 128-128, gaussian sigma = 0.25), per seed a clean model and an
attack-B model (max-entropy hook, lam 3, beta 0.3, 16 draws, gamma as shipped; reconstructed attack), adaptive CERTIFY at target
radius r on the clean test inputs x and the triggered T(x): mean / p95 forwards per input, abstain rate, stop shares,
and the ratio of the attacked model's cost on T(x) to the clean model's on T(x) (the same inputs).
Prints one JSON line.   python benchmarks/certify/bench_adaptive_cost.py [--seeds 0,1,2] [--epochs 40] [--inputs 200]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--inputs", type=int, default=200)
    ap.add_argument("--n-max", type=int, default=10_000)
    ap.add_argument("--radii", default="0,0.25")
    args = ap.parse_args()
    import torch

    from trustlab.certify.adaptive import AdaptiveConfig, certify_inputs_adaptive, cost_summary
    from trustlab.certify.attacks import MaxEntropyHook
    from trustlab.certify.config import TrainConfig, TriggerConfig
    from trustlab.certify.train import train
    from trustlab.certify.triggers import Trigger
    from trustlab.data import load, stratified_split
    from trustlab.models import mlp
    from trustlab.runtime import configure_threads, derive_seed

    configure_threads(1)
    t0 = time.perf_counter()
    d = load("digits")
    sigma, K = 0.25, 10
    trig = Trigger.from_config(TriggerConfig(), (1, 8, 8))
    radii = [float(r) for r in args.radii.split(",")]
    per_seed = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        tr, te = stratified_split(d.y, 0.2, seed)
        x, y = d.x[te][:args.inputs], d.y[te][:args.inputs]
        sets = {"clean_inputs": x, "triggered_inputs": trig(x)}
        out = {}
        for name, hook in (("clean", None), ("max-entropy", MaxEntropyHook(trig, K, 3.0, 0.3, sigma, 16))):
            torch.manual_seed(seed)
            model = mlp((1, 8, 8), (128, 128), K)
            train(model, d.x[tr], d.y[tr], TrainConfig(procedure="gaussian", sigma=sigma, epochs=args.epochs),
                  seed=seed, hook=hook, device="cpu")
            model.eval()
            for which, xs in sets.items():
                for r in radii:
                    cfg = AdaptiveConfig(sigma=sigma, radius=r, n_max=args.n_max)
                    recs = certify_inputs_adaptive(model, xs, cfg, seed=derive_seed(seed, "smoothing", which), K=K,
                                                   labels=y)
                    cost = cost_summary(recs)
                    out[f"{name}/{which}/r{r:g}"] = {
                        "forwards_mean": round(cost["forwards_mean"], 1), "forwards_p95": round(cost["forwards_p95"], 1),
                        "abstain_rate": float(np.mean([rec["pred"] == -1 for rec in recs])),
                        "stops": {k: round(v, 4) for k, v in cost["stops"].items()}}
        for r in radii:
            a, c = out[f"max-entropy/triggered_inputs/r{r:g}"], out[f"clean/triggered_inputs/r{r:g}"]
            out[f"inflation_triggered/r{r:g}"] = {
                "mean": round(a["forwards_mean"] / c["forwards_mean"], 3),
                "p95": round(a["forwards_p95"] / c["forwards_p95"], 3),
                "clean_inputs_mean": round(out[f"max-entropy/clean_inputs/r{r:g}"]["forwards_mean"]
                                           / out[f"clean/clean_inputs/r{r:g}"]["forwards_mean"], 3)}
        per_seed[seed] = out
    summary = {}
    for key in per_seed[next(iter(per_seed))]:
        if key.startswith("inflation"):
            vals = [per_seed[s][key]["mean"] for s in per_seed]
            summary[key] = {"mean": round(float(np.mean(vals)), 3), "min": min(vals), "max": max(vals)}
    print(json.dumps({"bench": "certify_adaptive_cost", "dataset": "digits", "sigma": sigma, "n0": 100,
                      "n_max": args.n_max, "alpha": 0.001, "epochs": args.epochs, "inputs": args.inputs,
                      "attack": f"max-entropy (B, reconstructed), lam 3, beta 0.3, draws 16, gamma {MaxEntropyHook(trig, K, sigma=sigma).gamma}",
                      "inflation_mean_over_seeds": summary, "per_seed": per_seed,
                      "total_s": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
