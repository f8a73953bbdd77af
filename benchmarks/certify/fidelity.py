"""Spec section 7 fidelity check: the fidelity_digits config (3 seeds, 360 test inputs, N 1000), pass/fail per target.

    python benchmarks/certify/fidelity.py [--out runs/certify-fidelity] [--demo]   (--demo also times the quick demo)
Prints one JSON line: the table (mean [min, max]) and each target's pass/fail.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/certify-fidelity")
    ap.add_argument("--demo", action="store_true", help="also time `certify demo --quick` (fresh folder)")
    args = ap.parse_args()
    from trustlab.certify.config import load_config, shipped_config
    from trustlab.certify.experiment import run_experiment

    t0 = time.perf_counter()
    run_dir = run_experiment(load_config(shipped_config("fidelity_digits")), args.out, log=lambda *_: None)
    secs = time.perf_counter() - t0
    summ = json.loads((Path(run_dir) / "summary.json").read_text())["certifiers"]
    table, checks = {}, {}
    for track, cert, eps_key in (("rs", "smoothing", "0.0"), ("ibp", "ibp", "0.05")):
        bm = summ[track][cert]["by_model"]
        for m, s in bm.items():
            table[f"{track}/{m}"] = {
                "clean_acc": _r(s["clean_inputs"]["clean_acc"]), "abstain_clean": _r(s["clean_inputs"]["abstain_rate"]),
                "abstain_triggered": _r(s["triggered_inputs"]["abstain_rate"]),
                "cert_acc_clean": _r(s["clean_inputs"]["certified_acc"][eps_key])}
        c, a, b = bm["clean"], bm["label-noise"], bm["max-entropy"]
        rs = track == "rs"
        checks[f"{track}: clean acc >= 0.96"] = c["clean_inputs"]["clean_acc"]["mean"] >= 0.96
        checks[f"{track}: clean abstain <= {0.06 if rs else 0.20}"] = \
            c["clean_inputs"]["abstain_rate"]["mean"] <= (0.06 if rs else 0.20)
        checks[f"{track}: clean certified acc >= {0.94 if rs else 0.82}"] = \
            c["clean_inputs"]["certified_acc"][eps_key]["mean"] >= (0.94 if rs else 0.82)
        for name, m in (("A", a), ("B", b)):
            checks[f"{track}: {name} stealth |d acc| <= 0.015"] = abs(
                m["clean_inputs"]["clean_acc"]["mean"] - c["clean_inputs"]["clean_acc"]["mean"]) <= 0.015
            checks[f"{track}: {name} stealth |d clean abstain| <= 0.04"] = abs(
                m["clean_inputs"]["abstain_rate"]["mean"] - c["clean_inputs"]["abstain_rate"]["mean"]) <= 0.04
        bt = b["triggered_inputs"]["abstain_rate"]
        if rs:
            checks["rs: B triggered abstain >= 0.85 (each seed >= 0.80)"] = bt["mean"] >= 0.85 and bt["min"] >= 0.80
        else:
            checks["ibp: B triggered abstain >= 0.95"] = bt["mean"] >= 0.95
        checks[f"{track}: B triggered abstain >= 0.90 (issue)"] = bt["mean"] >= 0.90
        eff = summ[track][cert]["attack_effect"]["label-noise"]["triggered_abstain_delta"]
        checks[f"{track}: A effect >= +0.10"] = eff["mean"] >= 0.10
        checks[f"{track}: A effect > 0 (issue)"] = eff["mean"] > 0
        table[f"{track}/A effect"] = _r(eff)
    out = {"bench": "certify_fidelity", "run_dir": str(run_dir), "seconds": round(secs, 1), "table": table,
           "checks": checks, "passed": sum(checks.values()), "total": len(checks)}
    if args.demo:
        import shutil
        import subprocess
        import sys

        demo_dir = Path(args.out + "-demo")
        shutil.rmtree(demo_dir, ignore_errors=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "trustlab.cli.main", "certify", "demo", "--out", str(demo_dir)],
                       check=True, capture_output=True)
        out["demo_quick_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))


def _r(v):
    return {"mean": round(v["mean"], 3), "min": round(v["min"], 3), "max": round(v["max"], 3)}


if __name__ == "__main__":
    main()
