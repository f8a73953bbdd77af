"""Our randomized-smoothing CERTIFY vs a per-input re-implementation of the locuslab/smoothing reference algorithm
(one input at a time, a batch of noise per forward, Python per-sample counting, two-sided CP at 2*alpha).

(a) shared noise: identical counts/decisions, p_lower and radius to 1e-9; (b) independent noise (reference on the
global torch RNG): per-input abstain agreement and abstain-rate gap in SEs; (c) throughput ratio ours/reference.
Prints one JSON line.   python benchmarks/certify/bench_smoothing.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def reference_certify(model, x, n0, n, alpha, batch, sigma, K, noise=None):
    """Cohen et al.'s Smooth.certify for one input; ``noise(role, count)`` supplies noise, else torch's global RNG."""
    import torch
    from scipy.stats import beta, norm

    def sample(num, role):
        counts = np.zeros(K, dtype=int)
        drawn = 0
        with torch.no_grad():
            while num > 0:
                b = min(batch, num)
                xb = x.unsqueeze(0).repeat((b, 1, 1, 1))
                eps = noise(role, drawn, b) if noise else torch.randn_like(xb) * sigma
                preds = model(xb + eps).argmax(1)
                for idx in preds.cpu().numpy():  # the reference's per-sample counting
                    counts[idx] += 1
                num -= b
                drawn += b
        return counts

    c_hat = sample(n0, "select").argmax()
    n_a = sample(n, "estimate")[c_hat]
    # statsmodels proportion_confint(n_a, n, alpha=2*alpha, method="beta")[0]
    p = beta.ppf(alpha, n_a, n - n_a + 1) if n_a > 0 else 0.0
    return (-1, 0.0, p, n_a) if p < 0.5 else (int(c_hat), sigma * norm.ppf(p), p, n_a)


def shared_noise(idx, run_seed, sigma, shape, device="cpu"):
    """Our per-input block streams, cut into whatever batch the reference asks for."""
    import torch

    from trustlab.certify.smoothing import _blocks, block_seed

    cache = {}

    def fn(role, start, count):
        if role not in cache:
            total = {"select": fn.n0, "estimate": fn.n}[role]
            parts = [torch.randn((s, *shape), device=device,
                                 generator=torch.Generator(device=device).manual_seed(block_seed(run_seed, idx, role, b)))
                     for b, s in enumerate(_blocks(total))]
            cache[role] = torch.cat(parts) * sigma
        return cache[role][start:start + count]
    return fn


def bench_model(name, model, x, K, sigma, n_values, alpha=0.001, n0=100, batch=1000, inputs=(40, 10)):
    import torch

    dev = next(model.parameters()).device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    from trustlab.certify.config import SmoothingConfig
    from trustlab.certify.smoothing import certify_inputs

    out = {}
    for n, m in zip(n_values, inputs):
        xs = x[:m]
        cfg = SmoothingConfig(sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=batch)
        certify_inputs(model, xs[:2], cfg, seed=1, K=K)  # warm-up
        reference_certify(model, torch.as_tensor(xs[0], device=dev), n0, n, alpha, batch, sigma, K)  # warm-up
        sync()
        t0 = time.perf_counter()
        ours = certify_inputs(model, xs, cfg, seed=0, K=K)
        sync()
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        torch.manual_seed(0)
        ref = [reference_certify(model, torch.as_tensor(xs[i], device=dev), n0, n, alpha, batch, sigma, K)
               for i in range(m)]
        sync()
        t_ref = time.perf_counter() - t0
        # (a) shared noise
        shared = []
        for i in range(m):
            fn = shared_noise(i, 0, sigma, xs.shape[1:], dev)
            fn.n0, fn.n = n0, n
            shared.append(reference_certify(model, torch.as_tensor(xs[i], device=dev), n0, n, alpha, batch, sigma, K,
                                            fn))
        same = all(o["pred"] == s[0] and o["n_a"] == s[3] and abs(o["p_lower"] - s[2]) <= 1e-9
                   and abs(o["radius"] - s[1]) <= 1e-9 for o, s in zip(ours, shared))
        # (b) independent noise
        a_ours = np.array([o["pred"] == -1 for o in ours])
        a_ref = np.array([r[0] == -1 for r in ref])
        p = (a_ours.mean() + a_ref.mean()) / 2
        se = np.sqrt(2 * p * (1 - p) / m) if 0 < p < 1 else 0.0
        gap = abs(a_ours.mean() - a_ref.mean())
        out[f"{name}_N{n}"] = {"inputs": m, "shared_noise_identical": same,
                               "abstain_agreement": float((a_ours == a_ref).mean()),
                               "abstain_rate_ours": float(a_ours.mean()), "abstain_rate_ref": float(a_ref.mean()),
                               "gap_in_se": float(gap / se) if se > 0 else (0.0 if gap == 0 else None),
                               "ms_per_input_ours": round(1e3 * t_ours / m, 2),
                               "ms_per_input_ref": round(1e3 * t_ref / m, 2), "ratio": round(t_ref / t_ours, 2)}
    return out


def bench_batch_api(model, x, K: int, sigma: float, n: int, batch: int) -> dict:
    """``SmoothedClassifier.certify_batch`` (noise of several inputs packed per forward) vs a loop of ``certify``:
    identical results (same idx streams), ms per input and the speed-up."""
    from trustlab.certify.smoothing import SmoothedClassifier

    g = SmoothedClassifier(model, K, sigma)
    idx = list(range(len(x)))
    t0 = time.perf_counter()
    many = g.certify_batch(x, 100, n, 0.001, batch=batch, gen=0, idx=idx)
    t_batch = time.perf_counter() - t0
    t0 = time.perf_counter()
    one = [g.certify(x[i], 100, n, 0.001, batch=batch, gen=0, idx=i) for i in idx]
    t_loop = time.perf_counter() - t0
    return {"inputs": len(x), "n": n, "identical": all(many[i] == one[i] for i in idx),
            "ms_per_input_batch": round(1e3 * t_batch / len(x), 2), "ms_per_input_loop": round(1e3 * t_loop / len(x), 2),
            "ratio_loop_over_batch": round(t_loop / t_batch, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=1000, help="rows per forward (both implementations)")
    args = ap.parse_args()
    import torch

    from trustlab.certify.config import TrainConfig
    from trustlab.certify.train import train
    from trustlab.data import is_installed, load, stratified_split
    from trustlab.models import mlp, small_cnn
    from trustlab.runtime import configure_threads

    configure_threads(1)
    d = load("digits")
    tr, te = stratified_split(d.y, 0.2, 0)
    torch.manual_seed(0)
    m = mlp((1, 8, 8), (128, 128), 10)
    train(m, d.x[tr], d.y[tr], TrainConfig(procedure="gaussian", epochs=20), seed=0, device=args.device)
    res = bench_model("digits_mlp", m.eval(), d.x[te], 10, 0.25, (1000, 10_000), batch=args.batch,
                      inputs=(20, 4) if args.quick else (60, 12))
    if is_installed("mnist-5k") and not args.quick:
        mn = load("mnist-5k")
        tr, te = stratified_split(mn.y, 0.2, 0)
        torch.manual_seed(0)
        c = small_cnn((1, 28, 28), 10)
        train(c, mn.x[tr][:2000], mn.y[tr][:2000], TrainConfig(procedure="gaussian", epochs=3), seed=0,
              device=args.device)
        res.update(bench_model("mnist5k_cnn", c.eval(), mn.x[te], 10, 0.25, (1000, 10_000), batch=args.batch,
                               inputs=(8, 2) if args.device == "cpu" else (40, 10)))
    ratios = [v["ratio"] for v in res.values()]
    res_batch = {f"digits_mlp_N{n}": bench_batch_api(m.eval(), d.x[te][:40], 10, 0.25, n, args.batch)
                 for n in (100, 1000)}
    print(json.dumps({"bench": "certify_smoothing", "baseline": "per-input locuslab/smoothing re-implementation",
                      "device": args.device, "batch": args.batch,
                      "min_ratio": min(ratios), "results": res, "certify_batch_vs_loop": res_batch}))


if __name__ == "__main__":
    main()
