"""Embedding benchmarks (spec §9), measured in one invocation; prints one JSON line of ratios.

Times are CPU seconds of the (single-threaded) run (``time.process_time``), so a busy shared machine does not
distort the ratios; wall seconds are reported beside them.

- ``lora_vs_full``: SmolLM2 N = 16, full fine-tune vs LoRA (r 8, all-linear): seconds per epoch (median) and the
  peak resident memory each training run adds over its loaded model (a fresh subprocess per run).
- ``averaging_overhead``: per-step weight averaging (lambda 0.75) vs none (lambda 0), same model and data:
  (s/epoch with averaging) / (s/epoch without) - 1. Target < 10 %.
- ``tiny_scaling``: embed time on fp-tiny at N = 16 / 32 / 64 (fixed epochs): time ratios and the R^2 of a linear
  fit of seconds against N (linear: one full-batch step touches every example once).

    OMP_NUM_THREADS=1 python benchmarks/fingerprint/bench_embed.py [--skip-smollm2] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SECRET = bytes(range(32))


def _child(spec: dict) -> dict:
    """One embed run in this (fresh) process: s/epoch and peak RSS growth during training."""
    import resource
    import warnings

    warnings.simplefilter("ignore")
    from trustlab.fingerprint.config import EmbedConfig, GenerateConfig, LoraSettings
    from trustlab.fingerprint.fpset import FingerprintSet
    from trustlab.fingerprint.keys import generate_fingerprints
    from trustlab.fingerprint.tiny import resolve_model_ref
    from trustlab.fingerprint.train import embed
    from trustlab.models import load_causal_lm
    from trustlab.runtime import configure_threads

    configure_threads()
    model, tok = load_causal_lm(resolve_model_ref(spec["model"]))
    fps_file_ok = spec.get("fps") and os.path.exists(spec["fps"])
    if fps_file_ok and len(FingerprintSet.load(spec["fps"])) >= spec["n"]:
        fps = FingerprintSet.load(spec["fps"])
    else:
        fps = generate_fingerprints(GenerateConfig(model=spec["model"], num_fingerprints=spec.get("gen_n", spec["n"])), SECRET,
                                    lm=(model, tok), model_ref=spec["model"])
        if spec.get("fps"):
            fps.save(spec["fps"])
    fps = fps.subset(fps.ids[: spec["n"]])
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cpu = [time.process_time()]  # CPU seconds of this single-threaded process: robust to a shared machine

    def tick(epoch, record):
        cpu.append(time.process_time())

    t0 = time.process_time()
    res = embed(model, tok, fps, EmbedConfig(model=spec["model"], lr=spec.get("lr"), lambda_wa=spec["lam"],
                                             max_epochs=spec["epochs"], early_stop_loss=0.0, save_every=0,
                                             lora=LoraSettings(enabled=spec.get("lora", False))),
                model_ref=spec["model"], on_epoch=tick)
    total = time.process_time() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    per_epoch = [b - a for a, b in zip(cpu, cpu[1:])][1:] or [cpu[-1] - cpu[0]]  # first epoch includes warm-up
    return {"s_per_epoch": statistics.median(per_epoch), "total_s": total,
            "wall_s_per_epoch": statistics.median(r["seconds"] for r in res.history),
            "peak_rss_growth_mb": (rss1 - rss0) / 1024, "peak_rss_mb": rss1 / 1024, "epochs": res.epochs}


def run(spec: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child")
    ap.add_argument("--skip-smollm2", action="store_true")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--tiny-epochs", type=int, default=60)
    ap.add_argument("--work", default="/tmp/trustlab-bench-embed")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return
    os.makedirs(args.work, exist_ok=True)
    report: dict = {}
    tiny_fps = os.path.join(args.work, "tiny64.json")
    scaling = {n: run({"model": "fp-tiny", "n": n, "gen_n": 64, "lam": 0.15, "lr": 3e-3, "epochs": args.tiny_epochs,
                       "fps": tiny_fps}) for n in (16, 32, 64)}
    xs, ys = list(scaling), [scaling[n]["total_s"] for n in scaling]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    ss_res = sum((y - (my + slope * (x - mx))) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    report["tiny_scaling"] = {"seconds": {str(n): round(scaling[n]["total_s"], 3) for n in scaling},
                              "ratio_32_16": ys[1] / ys[0], "ratio_64_16": ys[2] / ys[0],
                              "linear_r2": 1 - ss_res / ss_tot if ss_tot else 1.0, "epochs": args.tiny_epochs,
                              "seconds_per_fp": slope, "intercept_s": my - slope * mx}
    tiny_nowa = run({"model": "fp-tiny", "n": 64, "gen_n": 64, "lam": 0.0, "lr": 3e-3, "epochs": args.tiny_epochs, "fps": tiny_fps})
    report["averaging_overhead_tiny"] = scaling[64]["s_per_epoch"] / tiny_nowa["s_per_epoch"] - 1
    if not args.skip_smollm2:
        ref, fp = "smollm2-135m-instruct", os.path.join(args.work, "smollm2-16.json")
        full = run({"model": ref, "n": 16, "lam": 0.75, "lr": 1e-3, "epochs": args.epochs, "fps": fp})
        nowa = run({"model": ref, "n": 16, "lam": 0.0, "lr": 1e-3, "epochs": args.epochs, "fps": fp})
        lora = run({"model": ref, "n": 16, "lam": 0.75, "lr": 1e-3, "epochs": args.epochs, "fps": fp, "lora": True})
        report["lora_vs_full"] = {"full_s_per_epoch": full["s_per_epoch"], "lora_s_per_epoch": lora["s_per_epoch"],
                                  "speedup_full_over_lora": full["s_per_epoch"] / lora["s_per_epoch"],
                                  "full_peak_growth_mb": full["peak_rss_growth_mb"],
                                  "lora_peak_growth_mb": lora["peak_rss_growth_mb"],
                                  "memory_ratio_full_over_lora": full["peak_rss_growth_mb"] /
                                  max(lora["peak_rss_growth_mb"], 1e-9)}
        report["averaging_overhead_smollm2"] = full["s_per_epoch"] / nowa["s_per_epoch"] - 1
        report["averaging_target_met"] = report["averaging_overhead_smollm2"] < 0.10
    print(json.dumps(report))


if __name__ == "__main__":
    main()
