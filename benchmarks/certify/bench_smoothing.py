"""Our randomized-smoothing CERTIFY/PREDICT vs (a) a plain batched implementation of the locuslab/smoothing
reference algorithm and (b) the physical limit of the same model at the same batch.

plain: one input at a time, a batch of fresh noise per forward (torch.randn on a seeded generator), counts with
torch.bincount, the Clopper-Pearson bound from scipy (the best plain loop a user would write);
limit: the bare ``model(x + sigma * torch.randn(batch, ...))`` loop over the same number of rows, no counting.
Models: the digits MLP and the MNIST-5k CNN of the demo configs; N in {1000, 10000}, n0 = 100, batch 1000.
Each timing is repeated (ours, plain, limit in turn, the first rotating) and the medians of ms/input and of the
per-round ratios are printed; on the CPU the ratios use process CPU time (one thread: the work per row, without the
random stretches other tenants of a shared machine add to wall time), wall-time ratios are printed beside them. Checks: (a) plain fed our noise stream gives identical counts, decisions, p_lower and radius (1e-9);
(b) with independent noise, per-input abstain agreement and the abstain-rate gap in SEs.
Prints one JSON line.   OMP_NUM_THREADS=1 python benchmarks/certify/bench_smoothing.py [--quick] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


# --- the plain batched reference (Cohen et al.'s Smooth.certify / Smooth.predict, batched) ------------------------
def plain_counts(model, x, num, batch, sigma, K, gen, noise=None):
    """Counts of argmax f(x + noise) over ``num`` draws, ``batch`` per forward; ``noise(start, rows)`` supplies
    the noise (shared-noise check), else torch.randn on ``gen``."""
    import torch

    counts = torch.zeros(K, dtype=torch.long, device=x.device)
    drawn = 0
    with torch.inference_mode():
        while drawn < num:
            b = min(batch, num - drawn)
            eps = noise(drawn, b) if noise else torch.randn((b, *x.shape), generator=gen, device=x.device) * sigma
            counts += torch.bincount(model(x + eps).argmax(1), minlength=K)
            drawn += b
    return counts.cpu().numpy()


def plain_certify(model, x, n0, n, alpha, batch, sigma, K, gen, noise=None):
    """(pred, radius, p_lower, n_a): c from n0 draws, one-sided CP lower bound of p_c from n fresh draws."""
    from scipy.stats import beta, norm

    c_hat = int(plain_counts(model, x, n0, batch, sigma, K, gen, noise and noise("select")).argmax())
    n_a = int(plain_counts(model, x, n, batch, sigma, K, gen, noise and noise("estimate"))[c_hat])
    p = float(beta.ppf(alpha, n_a, n - n_a + 1)) if n_a > 0 else 0.0
    return (-1, 0.0, p, n_a) if p < 0.5 else (c_hat, float(sigma * norm.ppf(p)), p, n_a)


def plain_predict(model, x, n, alpha, batch, sigma, K, gen, noise=None):
    """Top class of n draws, or -1 when the two-sided binomial test of the top two counts has p > alpha."""
    from scipy.stats import binomtest

    c = plain_counts(model, x, n, batch, sigma, K, gen, noise and noise("predict"))
    top = np.argsort(-c, kind="stable")[:2]
    pv = binomtest(int(c[top[0]]), int(c[top[0]] + c[top[1]]), 0.5).pvalue if c[top].sum() else 1.0
    return -1 if pv > alpha else int(top[0])


def limit_loop(model, x, rows, batch, sigma, gen):
    """The forward + noise limit: ``rows`` noisy rows of the inputs ``x`` through the model, ``batch`` per forward."""
    import torch

    per = -(-rows // len(x))
    with torch.inference_mode():
        done = 0
        while done < rows:
            b = min(batch, rows - done)
            model(x[(done // per) % len(x)] + sigma * torch.randn((b, *x.shape[1:]), generator=gen, device=x.device))
            done += b


def our_stream(idx, run_seed, sigma, shape, draws, device):
    """Our noise stream of input ``idx`` (blocks of NOISE_BLOCK rows, one seeded generator per block), as slices."""
    import torch

    from trustlab.certify.smoothing import _blocks, stream_seeds

    def role_fn(role):
        sizes = list(_blocks(draws[role]))
        z = torch.cat([torch.randn((s, *shape), device=device, generator=torch.Generator(device=device).manual_seed(sd))
                       for sd, s in zip(stream_seeds(run_seed, idx, role, len(sizes)), sizes)]) * sigma
        return lambda start, rows: z[start:start + rows]
    return role_fn


# --- one model -------------------------------------------------------------------------------------------------
def bench_model(name, model, x, K, sigma, n_values, inputs, reps, alpha=0.001, n0=100, batch=1000):
    import torch

    from trustlab.certify.config import SmoothingConfig
    from trustlab.certify.smoothing import certify_inputs, predict_batch

    dev = next(model.parameters()).device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    out = {}
    for n, m in zip(n_values, inputs):
        xs = x[:m]
        xt = torch.as_tensor(xs, device=dev)
        cfg = SmoothingConfig(sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=batch)

        def timed(fn):
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            r = fn()
            sync()
            return time.perf_counter() - t0, time.process_time() - c0, r

        def gen(seed):
            return torch.Generator(device=dev).manual_seed(seed)

        runs = {
            "certify": {
                "ours": lambda: certify_inputs(model, xs, cfg, seed=0, K=K),
                "plain": lambda: [plain_certify(model, xt[i], n0, n, alpha, batch, sigma, K, gen(1000 + i))
                                  for i in range(m)],
                "limit": lambda: limit_loop(model, xt, m * (n0 + n), batch, sigma, gen(7)),
            },
            "predict": {
                "ours": lambda: predict_batch(model, xs, list(range(m)), n=n, alpha=alpha, sigma=sigma, K=K,
                                              run_seed=0, batch=batch),
                "plain": lambda: [plain_predict(model, xt[i], n, alpha, batch, sigma, K, gen(2000 + i))
                                  for i in range(m)],
                "limit": lambda: limit_loop(model, xt, m * n, batch, sigma, gen(8)),
            },
        }
        for mode, fns in runs.items():
            for f in fns.values():  # warm-up (also prices the budget once)
                f()
            times: dict = {k: [] for k in fns}
            cpu: dict = {k: [] for k in fns}
            results: dict = {}
            for rep in range(reps):
                order = list(fns)[rep % 3:] + list(fns)[:rep % 3]  # rotate who goes first
                for k in order:
                    t, c, results[k] = timed(fns[k])
                    times[k].append(t)
                    cpu[k].append(c)
            ours, plain = results["ours"], results["plain"]
            # (a) shared noise: the plain reference fed our stream reproduces our results exactly
            draws = {"select": n0, "estimate": n, "predict": n}
            if mode == "certify":
                shared = [plain_certify(model, xt[i], n0, n, alpha, batch, sigma, K, None,
                                        our_stream(i, 0, sigma, xs.shape[1:], draws, dev)) for i in range(m)]
                same = all(o["pred"] == s[0] and o["n_a"] == s[3] and abs(o["p_lower"] - s[2]) <= 1e-9
                           and abs(o["radius"] - s[1]) <= 1e-9 for o, s in zip(ours, shared))
                a_ours = np.array([o["pred"] == -1 for o in ours])
                a_ref = np.array([r[0] == -1 for r in plain])
                # bound: randomized-cp on the same counts (u per input from (seed, idx)): mean radius, certified share
                from scipy.special import ndtri

                from trustlab.certify.smoothing import p_lower_bound

                n_a = np.array([o["n_a"] for o in ours])
                rcp = p_lower_bound(n_a, n, alpha, "randomized-cp", 0, range(m))
                extra = {"mean_radius_cp": float(np.mean([o["radius"] for o in ours])),
                         "mean_radius_randomized_cp": float(np.mean(np.where(rcp >= 0.5, sigma * ndtri(rcp), 0.0))),
                         "certified_cp": float(np.mean(~a_ours)), "certified_randomized_cp": float(np.mean(rcp >= 0.5))}
            else:
                shared = [plain_predict(model, xt[i], n, alpha, batch, sigma, K, None,
                                        our_stream(i, 0, sigma, xs.shape[1:], draws, dev)) for i in range(m)]
                same = all(o[0] == s for o, s in zip(ours, shared))
                a_ours = np.array([o[0] == -1 for o in ours])
                a_ref = np.array([r == -1 for r in plain])
                extra = {}
            # (b) independent noise
            p = (a_ours.mean() + a_ref.mean()) / 2
            se = np.sqrt(2 * p * (1 - p) / m) if 0 < p < 1 else 0.0
            gap = abs(a_ours.mean() - a_ref.mean())
            med = {k: statistics.median(v) for k, v in times.items()}
            # on the CPU the ratios use process CPU time: one thread, so it is the work per row, and the other
            # tenants of a shared machine (which stretch wall time at random) drop out; on CUDA, wall time
            clock = cpu if dev.type == "cpu" else times

            def ratio(base):
                return round(statistics.median(b / o for b, o in zip(clock[base], clock["ours"])), 3)
            out[f"{name}_{mode}_N{n}"] = {
                "inputs": m, "reps": reps, "shared_noise_identical": bool(same),
                "abstain_agreement": float((a_ours == a_ref).mean()),
                "abstain_rate_ours": float(a_ours.mean()), "abstain_rate_plain": float(a_ref.mean()),
                "gap_in_se": float(gap / se) if se > 0 else (0.0 if gap == 0 else None),
                **{f"ms_per_input_{k}": round(1e3 * v / m, 3) for k, v in med.items()},
                **{f"cpu_ms_per_input_{k}": round(1e3 * statistics.median(v) / m, 3) for k, v in cpu.items()},
                # throughput ratios, median over rounds: plain time / our time, limit time / our time
                "ours_over_plain": ratio("plain"), "ours_over_limit": ratio("limit"),
                "wall_ours_over_plain": round(statistics.median(b / o for b, o in zip(times["plain"], times["ours"])), 3),
                "wall_ours_over_limit": round(statistics.median(b / o for b, o in zip(times["limit"], times["ours"])), 3),
                **extra,
            }
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


def demo_models(device: str, quick: bool):
    """The demo configs' victims: digits MLP (128, 128), gaussian sigma 0.25; MNIST-5k small CNN (if installed)."""
    import torch

    from trustlab.certify.config import TrainConfig
    from trustlab.certify.train import train
    from trustlab.data import is_installed, load, stratified_split
    from trustlab.models import mlp, small_cnn

    d = load("digits")
    tr, te = stratified_split(d.y, 0.2, 0)
    torch.manual_seed(0)
    m = mlp((1, 8, 8), (128, 128), 10)
    train(m, d.x[tr], d.y[tr], TrainConfig(procedure="gaussian", epochs=20), seed=0, device=device)
    models = [("digits_mlp", m.eval(), d.x[te])]
    if is_installed("mnist-5k"):
        mn = load("mnist-5k")
        tr, te = stratified_split(mn.y, 0.2, 0)
        torch.manual_seed(0)
        c = small_cnn((1, 28, 28), 10)
        train(c, mn.x[tr][:2000], mn.y[tr][:2000], TrainConfig(procedure="gaussian", epochs=3), seed=0,
              device=device)
        models.append(("mnist5k_cnn", c.eval(), mn.x[te]))
    return models


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=1000, help="rows per forward (all three loops)")
    ap.add_argument("--reps", type=int, default=7, help="timed rounds per case (medians are printed)")
    ap.add_argument("--models", default="digits_mlp,mnist5k_cnn")
    args = ap.parse_args()

    from trustlab.certify.smoothing import NOISE_BLOCK, NOISE_STREAM
    from trustlab.runtime import configure_threads

    configure_threads(1)
    on_cpu = args.device == "cpu"
    sizes = {"digits_mlp": (20, 4) if args.quick else (40, 8), "mnist5k_cnn": (8, 2) if on_cpu else (40, 10)}
    res = {}
    models = demo_models(args.device, args.quick)
    for name, model, x in models:
        if name in args.models.split(","):
            res.update(bench_model(name, model, x, 10, 0.25, (1000, 10_000), sizes[name], args.reps,
                                   batch=args.batch))
    res_batch = {f"digits_mlp_N{n}": bench_batch_api(models[0][1], models[0][2][:40], 10, 0.25, n, args.batch)
                 for n in (100, 1000)}
    print(json.dumps({"bench": "certify_smoothing", "baseline": "plain batched reference + forward/noise limit",
                      "device": args.device, "batch": args.batch, "noise_stream": NOISE_STREAM,
                      "noise_block": NOISE_BLOCK,
                      "min_ours_over_plain": min(v["ours_over_plain"] for v in res.values()),
                      "min_ours_over_limit": min(v["ours_over_limit"] for v in res.values()),
                      "all_shared_noise_identical": all(v["shared_noise_identical"] for v in res.values()),
                      "results": res, "certify_batch_vs_loop": res_batch}))


if __name__ == "__main__":
    main()
