"""Adaptive certification vs fixed-N CERTIFY (issue 11 items 2-3) on the digits MLP and the MNIST-5k CNN.

For N in {10^4, 10^5} and target radius r in {0, 0.25, 0.5}: base-model forwards per input (mean, p95) of the
adaptive certifier with budget n_max = N against fixed-N CERTIFY's n0 + N; decision agreement with fixed-N
("certified at radius >= r" on the same paired noise streams) on all inputs and where the adaptive certifier decided
(stop != budget); stop shares; wall-time ratio fixed / adaptive (fixed-N's one run serves every r).
Prints one JSON line.   python benchmarks/certify/bench_adaptive.py [--digits 40] [--mnist 8] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

RADII = (0.0, 0.25, 0.5)


def bench_model(name, model, x, y, K, sigma, n_values, *, alpha=0.001, n0=100, batch=1000, first=64,
                growth=1.5, sync=lambda: None):
    from trustlab.certify.adaptive import AdaptiveConfig, certify_inputs_adaptive, cost_summary
    from trustlab.certify.config import SmoothingConfig
    from trustlab.certify.smoothing import certify_inputs

    out = {}
    certify_inputs(model, x[:2], SmoothingConfig(sigma=sigma, n0=n0, n=1000, alpha=alpha, batch_size=batch),
                   seed=1, K=K)  # warm-up
    for n in n_values:
        cfg = SmoothingConfig(sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=batch)
        sync()
        t0 = time.perf_counter()
        fixed = certify_inputs(model, x, cfg, seed=0, K=K, labels=y)
        sync()
        t_fixed = time.perf_counter() - t0
        for r in RADII:
            acfg = AdaptiveConfig(sigma=sigma, radius=r, n0=n0, n_max=n, alpha=alpha, first=first, growth=growth,
                                  batch_size=batch)
            sync()
            t0 = time.perf_counter()
            ad = certify_inputs_adaptive(model, x, acfg, seed=0, K=K, labels=y)
            sync()
            t_ad = time.perf_counter() - t0
            f_cert = np.array([f["pred"] != -1 and f["radius"] >= r for f in fixed])
            a_cert = np.array([a["pred"] != -1 for a in ad])
            decided = np.array([a["stop"] != "budget" for a in ad])
            cost = cost_summary(ad)
            key = f"{name}_N{n}_r{r:g}"
            out[key] = {
                "inputs": len(x), "fixed_forwards": n0 + n,
                "adaptive_forwards_mean": round(cost["forwards_mean"], 1),
                "adaptive_forwards_p95": round(cost["forwards_p95"], 1),
                "forwards_ratio": round((n0 + n) / cost["forwards_mean"], 2),
                "agreement_all": float((f_cert == a_cert).mean()),
                "agreement_where_both_decide": (float((f_cert == a_cert)[decided].mean()) if decided.any()
                                                else None),
                "decided_share": float(decided.mean()),
                "stops": {k: round(v, 4) for k, v in cost["stops"].items()},
                "certified_fixed": float(f_cert.mean()), "certified_adaptive": float(a_cert.mean()),
                "certified_acc_fixed": float(np.mean([c and f["pred"] == f["label"] for c, f in zip(f_cert, fixed)])),
                "certified_acc_adaptive": float(np.mean([a["pred"] == a["label"] for a in ad])),
                "s_per_input_fixed": round(t_fixed / len(x), 4), "s_per_input_adaptive": round(t_ad / len(x), 4),
                "wall_ratio": round(t_fixed / t_ad, 2)}
        out[f"{name}_N{n}_randomized_cp"] = rcp_on_records(fixed, n, alpha, sigma)
    return out


def rcp_on_records(fixed, n, alpha, sigma, seed=0):
    """Fixed-N certificates re-bounded with the randomized Clopper-Pearson lower bound (u from a seeded generator,
    independent of the draws): mean radius and certified share, CP vs randomized CP, on the same counts."""
    from scipy.stats import norm

    from trustlab.certify.randomized_cp import randomized_cp_lower
    from trustlab.certify.stats import cp_lower, max_radius

    k = np.array([f["n_a"] for f in fixed])
    u = np.random.default_rng(seed).uniform(size=len(k))
    cap = max_radius(n, alpha, sigma) * 2  # L = 1 (probability <= alpha at k = n) -> a finite radius
    radii = {}
    for name, low in (("cp", cp_lower(k, n, alpha)), ("rcp", randomized_cp_lower(k, n, alpha, u))):
        low = np.atleast_1d(low)
        radii[name] = np.where(low >= 0.5, np.minimum(sigma * norm.ppf(np.minimum(low, 1 - 1e-16)), cap), 0.0)
    return {"mean_radius_cp": round(float(radii["cp"].mean()), 4),
            "mean_radius_rcp": round(float(radii["rcp"].mean()), 4),
            "certified_cp": float((radii["cp"] > 0).mean()), "certified_rcp": float((radii["rcp"] > 0).mean()),
            "rcp_ge_cp": bool((radii["rcp"] >= radii["cp"] - 1e-12).all())}


def rcp_coverage(reps=40_000, seed=0):
    """Empirical P(L > p) of CP and randomized CP (exactly alpha for the latter) at a few (p, n, alpha)."""
    from trustlab.certify.randomized_cp import randomized_cp_lower
    from trustlab.certify.stats import cp_lower

    rng = np.random.default_rng(seed)
    out = {}
    for p, n, a in ((0.3, 20, 0.05), (0.9, 100, 0.05), (0.99, 100, 0.01), (0.999, 1000, 0.01), (0.5, 11, 0.05)):
        k, u = rng.binomial(n, p, reps), rng.uniform(size=reps)
        out[f"p{p}_n{n}_a{a}"] = {"miss_cp": float((cp_lower(k, n, a) > p).mean()),
                                  "miss_rcp": float((randomized_cp_lower(k, n, a, u) > p).mean())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--digits", type=int, default=40, help="digits test inputs (0 skips)")
    ap.add_argument("--mnist", type=int, default=8, help="MNIST-5k test inputs (0 skips)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--first", type=int, default=64, help="first estimation batch")
    ap.add_argument("--growth", type=float, default=1.5, help="batch growth factor")
    args = ap.parse_args()
    import torch

    from trustlab.certify.config import TrainConfig
    from trustlab.certify.train import train
    from trustlab.data import is_installed, load, stratified_split
    from trustlab.models import mlp, small_cnn
    from trustlab.runtime import configure_threads

    configure_threads(1)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    kw = dict(batch=args.batch, first=args.first, growth=args.growth, sync=sync)
    t0 = time.perf_counter()
    res = {}
    if args.digits:
        d = load("digits")
        tr, te = stratified_split(d.y, 0.2, 0)
        torch.manual_seed(0)
        m = mlp((1, 8, 8), (128, 128), 10)
        train(m, d.x[tr], d.y[tr], TrainConfig(procedure="gaussian", epochs=20), seed=0, device=args.device)
        res.update(bench_model("digits_mlp", m.eval(), d.x[te][:args.digits], d.y[te][:args.digits], 10, 0.25,
                               (10_000, 100_000), **kw))
    if args.mnist and is_installed("mnist-5k"):
        mn = load("mnist-5k")
        tr, te = stratified_split(mn.y, 0.2, 0)
        torch.manual_seed(0)
        c = small_cnn((1, 28, 28), 10)
        train(c, mn.x[tr][:2000], mn.y[tr][:2000], TrainConfig(procedure="gaussian", epochs=3), seed=0,
              device=args.device)
        res.update(bench_model("mnist5k_cnn", c.eval(), mn.x[te][:args.mnist], mn.y[te][:args.mnist], 10, 0.25,
                               (10_000, 100_000), **kw))
    at_1e5 = [v for k, v in res.items() if "_N100000_" in k and "forwards_ratio" in v]
    both = [v["agreement_where_both_decide"] for v in at_1e5 if v["agreement_where_both_decide"] is not None]
    print(json.dumps({"bench": "certify_adaptive", "confidence_sequence": "beta-binomial mixture, Beta(1/2, 1/2)",
                      "alpha": 0.001, "sigma": 0.25, "n0": 100, "device": args.device, "batch": args.batch,
                      "first": args.first, "growth": args.growth,
                      "min_forwards_ratio_N1e5": min(v["forwards_ratio"] for v in at_1e5),
                      "min_agreement_where_both_decide_N1e5": min(both) if both else None,
                      "target_met": bool(min(v["forwards_ratio"] for v in at_1e5) >= 10 and both
                                         and min(both) >= 0.99),
                      "randomized_cp_coverage": rcp_coverage(),
                      "total_s": round(time.perf_counter() - t0, 1), "results": res}))


if __name__ == "__main__":
    main()
