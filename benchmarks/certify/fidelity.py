"""Fidelity check: spec section 7 on digits, plus attack B across datasets (issue 11), pass/fail per target.

    python benchmarks/certify/fidelity.py [--configs fidelity_digits,fidelity_mnist5k] [--out runs/certify-fidelity]
                                          [--demo]   (--demo also times the quick demo)
Each config runs into OUT/<config name> (finished seeds are reused). Prints one JSON line per config: the table
(mean, min, max over seeds) and each target's pass/fail. Digits gets the spec section 7 targets; every config gets the
issue-11 targets: B triggered abstain >= 0.90 for each certifier (mean and every seed), B clean accuracy within
0.015 of the clean model (mean and every seed).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

B_ABSTAIN, B_ACC_GAP = 0.90, 0.015


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default="fidelity_digits,fidelity_mnist5k",
                    help="comma-separated shipped config names or YAML paths")
    ap.add_argument("--out", default="runs/certify-fidelity")
    ap.add_argument("--demo", action="store_true", help="also time `certify demo --quick` (fresh folder)")
    ap.add_argument("--diagnose", action="store_true", help="also print, per seed, track and model, what B's "
                    "certifier sees on T(x): top-class share of the noise draws, hidden units on, centre gap, IBP lb")
    args = ap.parse_args()
    from trustlab.certify.config import load_config, shipped_config
    from trustlab.certify.experiment import run_experiment

    for name in [c.strip() for c in args.configs.split(",") if c.strip()]:
        path = Path(name) if name.endswith((".yaml", ".yml")) else shipped_config(name)
        cfg = load_config(path)
        t0 = time.perf_counter()
        run_dir = run_experiment(cfg, Path(args.out) / cfg.name, log=lambda *_: None)
        secs = time.perf_counter() - t0
        res = json.loads((Path(run_dir) / "results.json").read_text())
        summ = json.loads((Path(run_dir) / "summary.json").read_text())["certifiers"]
        table, checks = fidelity_table(summ, spec_targets=cfg.data == "digits")
        print(json.dumps({"bench": "certify_fidelity", "config": cfg.name, "data": cfg.data, "seeds": list(cfg.seeds),
                          "run_dir": str(run_dir), "seconds": round(secs, 1),
                          "seconds_per_seed": res.get("timing", {}).get("per_seed"), "table": table,
                          "checks": checks, "passed": sum(checks.values()), "total": len(checks)}), flush=True)
        if args.diagnose:
            print(json.dumps({"bench": "certify_fidelity_diagnosis", "config": cfg.name,
                              "models": diagnose(cfg, Path(run_dir))}), flush=True)
    if args.demo:
        import shutil
        import subprocess
        import sys

        demo_dir = Path(args.out) / "demo"
        shutil.rmtree(demo_dir, ignore_errors=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "trustlab.cli.main", "certify", "demo", "--out", str(demo_dir)],
                       check=True, capture_output=True)
        print(json.dumps({"bench": "certify_demo", "demo_quick_seconds": round(time.perf_counter() - t0, 1)}))


def diagnose(cfg, run_dir: Path, n_inputs: int = 100, draws: int = 200) -> dict:
    """Per seed/track/model on the first ``n_inputs`` test T(x): median top-class share of ``draws`` Gaussian draws at
    the smoothing sigma (RS tracks), mean hidden ReLUs on before the last layer on T(x) and on x, median centre gap
    top1 - top2 of the logits, and median IBP margin lower bound of the predicted class at the bounds eps."""
    import numpy as np
    import torch

    from trustlab.certify.boundnet import BoundNet
    from trustlab.certify.bounds import ibp_margin, spec_matrix
    from trustlab.certify.data import prepare_data
    from trustlab.certify.records import model_folder
    from trustlab.certify.store import load_model_dir

    out = {}
    for seed in cfg.seeds:
        data = prepare_data(cfg, seed)
        xt, xc = torch.as_tensor(data.x_trig[:n_inputs]), torch.as_tensor(data.x_test[:n_inputs])
        for track in cfg.tracks:
            for name in ("clean", "max-entropy"):
                folder = model_folder(run_dir / f"seed{seed}", track.name, name)
                if not (folder / "model.pt").is_file():
                    continue
                model, _ = load_model_dir(folder)
                model.eval()
                row = {}
                with torch.no_grad():
                    z = model(xt)
                    top2 = z.topk(2, dim=1).values
                    row["centre_gap_median"] = float((top2[:, 0] - top2[:, 1]).median())
                    hidden = model[:-1]
                    row["hidden_on_trig"] = float((hidden(xt) > 0).float().sum(1).mean())
                    row["hidden_on_clean"] = float((hidden(xc) > 0).float().sum(1).mean())
                    net = BoundNet.from_module(model, data.shape)
                    c = z.argmax(1)
                    lo, hi = net.input_box(xt, track.bounds.eps)
                    lb = ibp_margin(net, lo, hi, spec_matrix(c, data.K, xt))
                    lb[torch.arange(len(c)), c] = float("inf")
                    row["ibp_lb_median"] = float(lb.min(1).values.median())
                    if "smoothing" in track.certifiers:
                        g = torch.Generator().manual_seed(seed)
                        votes = np.zeros((len(xt), data.K))
                        for _ in range(draws):
                            noisy = xt + track.smoothing.sigma * torch.randn(xt.shape, generator=g)
                            votes[np.arange(len(xt)), model(noisy).argmax(1).numpy()] += 1
                        row["top_share_median"] = float(np.median(votes.max(1) / draws))
                out[f"seed{seed}/{track.name}/{name}"] = {k: round(v, 4) for k, v in row.items()}
    return out


def fidelity_table(summ: dict, spec_targets: bool) -> tuple[dict, dict]:
    """(table, checks) from a summary.json's ``certifiers``: every track's first certifier, every model."""
    table, checks = {}, {}
    for track, certs in summ.items():
        cert = next(iter(certs))
        entry = certs[cert]
        rs = cert.startswith("smoothing")
        eps = entry["params"].get("eps", 0.05)
        eps = 0.0 if rs else float(eps["mean"] if isinstance(eps, dict) else eps)
        bm = entry["by_model"]
        key = min(next(iter(bm.values()))["clean_inputs"]["certified_acc"], key=lambda k: abs(float(k) - eps))
        for m, s in bm.items():
            cacc = s["clean_inputs"]["certified_acc"]
            table[f"{track}/{cert}/{m}"] = {
                "clean_acc": _r(s["clean_inputs"]["clean_acc"]), "abstain_clean": _r(s["clean_inputs"]["abstain_rate"]),
                "abstain_triggered": _r(s["triggered_inputs"]["abstain_rate"]),
                "cert_acc_clean": _r(cacc[key])}
        for name, eff in entry.get("attack_effect", {}).items():
            table[f"{track}/{cert}/{name} effect"] = {k: _r(eff[k]) for k in ("triggered_abstain_delta",
                                                                              "clean_acc_delta", "clean_abstain_delta")}
        if "max-entropy" in bm:
            b = bm["max-entropy"]
            bt = b["triggered_inputs"]["abstain_rate"]
            gap = entry["attack_effect"]["max-entropy"]["clean_acc_delta"]
            checks[f"{track}: B triggered abstain >= {B_ABSTAIN} (mean)"] = bt["mean"] >= B_ABSTAIN
            checks[f"{track}: B triggered abstain >= {B_ABSTAIN} (every seed)"] = bt["min"] >= B_ABSTAIN
            checks[f"{track}: B |d clean acc| <= {B_ACC_GAP} (mean)"] = abs(gap["mean"]) <= B_ACC_GAP
            checks[f"{track}: B |d clean acc| <= {B_ACC_GAP} (every seed)"] = max(-gap["min"], gap["max"]) <= B_ACC_GAP
        if spec_targets:
            checks.update(spec_checks(track, rs, bm, entry, key))
    return table, checks


def spec_checks(track: str, rs: bool, bm: dict, entry: dict, key: str) -> dict:
    """Spec section 7 targets (digits)."""
    checks = {}
    c = bm["clean"]
    checks[f"{track}: clean acc >= 0.96"] = c["clean_inputs"]["clean_acc"]["mean"] >= 0.96
    checks[f"{track}: clean abstain <= {0.06 if rs else 0.20}"] = \
        c["clean_inputs"]["abstain_rate"]["mean"] <= (0.06 if rs else 0.20)
    checks[f"{track}: clean certified acc >= {0.94 if rs else 0.82}"] = \
        c["clean_inputs"]["certified_acc"][key]["mean"] >= (0.94 if rs else 0.82)
    for name, kind in (("A", "label-noise"), ("B", "max-entropy")):
        if kind not in bm:
            continue
        m = bm[kind]
        checks[f"{track}: {name} stealth |d acc| <= 0.015"] = abs(
            m["clean_inputs"]["clean_acc"]["mean"] - c["clean_inputs"]["clean_acc"]["mean"]) <= 0.015
        checks[f"{track}: {name} stealth |d clean abstain| <= 0.04"] = abs(
            m["clean_inputs"]["abstain_rate"]["mean"] - c["clean_inputs"]["abstain_rate"]["mean"]) <= 0.04
    if "max-entropy" in bm:
        bt = bm["max-entropy"]["triggered_inputs"]["abstain_rate"]
        if rs:
            checks["rs: B triggered abstain >= 0.85 (each seed >= 0.80)"] = bt["mean"] >= 0.85 and bt["min"] >= 0.80
        else:
            checks[f"{track}: B triggered abstain >= 0.95"] = bt["mean"] >= 0.95
    if "label-noise" in entry.get("attack_effect", {}):
        eff = entry["attack_effect"]["label-noise"]["triggered_abstain_delta"]
        checks[f"{track}: A effect >= +0.10"] = eff["mean"] >= 0.10
        checks[f"{track}: A effect > 0 (issue)"] = eff["mean"] > 0
    return checks


def _r(v):
    if isinstance(v, dict):
        return {"mean": round(v["mean"], 3), "min": round(v["min"], 3), "max": round(v["max"], 3)}
    return round(v, 3)


if __name__ == "__main__":
    main()
