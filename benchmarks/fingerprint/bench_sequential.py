"""Keys revealed per decision: sequential verification (e-process, secret-seeded order) against fixed-M, same
suspects, same alpha; verdicts must be identical. Prints one JSON line and writes bench_sequential.json.

fp-tiny: N perinucleus fingerprints are generated and embedded at the tiny preset (about a minute on one thread),
then the embedded model (expected OWNED), the untouched base and a seeded random init of its config (expected not
owned) are verified both ways. SmolLM2: pass an embedded model folder, its fingerprint file and secret
(``--smollm2-model DIR --smollm2-fps FILE --smollm2-secret FILE``, e.g. from fidelity_smollm2.py at -n 64).

Besides the one decision under the owner's secret order, the recorded answers (greedy decoding: each key's answer
is fixed) are replayed through ``run_sequential`` under ``--orders`` random orders, giving the spread of keys
revealed an other secret would have needed; "decisions per set" is how many OWNED verdicts the set yields before
its unrevealed keys run out when the ledger steers every verification to fresh keys.

    OMP_NUM_THREADS=1 python benchmarks/fingerprint/bench_sequential.py --out runs/bench-sequential -n 64
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
import warnings
from pathlib import Path


def judge(name, fps, model, tok, secret, alpha, orders, rng):
    """Fixed-M and sequential verdicts on one local suspect, plus the replay over random orders."""
    import numpy as np

    from trustlab.fingerprint.backends import HFBackend
    from trustlab.fingerprint.config import VerifyConfig
    from trustlab.fingerprint.sequential import SequentialConfig, run_sequential, verify_sequential
    from trustlab.fingerprint.verify import verify

    backend = HFBackend(model, tok)
    cfg = VerifyConfig(model=name, alpha=alpha)
    t0 = time.process_time()
    fixed = verify(fps, backend, cfg)
    t_fixed = time.process_time() - t0
    t0 = time.process_time()
    seq = verify_sequential(fps, backend, cfg, secret)
    t_seq = time.process_time() - t0
    hits, p0 = dict(fixed.key_hits), dict(fixed.key_p0)
    replay = []
    for _ in range(orders):
        order = [int(i) for i in rng.permutation(sorted(hits))]
        out = run_sequential(order, p0, lambda b: ({i: hits[i] for i in b}, {}), alpha, SequentialConfig())
        replay.append((len(out.revealed), out.decision))
    counts = np.array([r[0] for r in replay])
    decisions = {d for _, d in replay}
    return {
        "suspect": name, "n_keys": len(fps), "hits": int(sum(hits.values())), "p0s": sorted(p0.values()),
        "fixed": {"decision": fixed.decision.decision, "keys_revealed": fixed.queried,
                  "p_value": fixed.decision.p_value,
                  "cpu_s": round(t_fixed, 2)},
        "sequential": {"decision": seq.outcome.decision, "keys_revealed": len(seq.outcome.revealed),
                       "batches": [len(b) for b in seq.outcome.batches], "e_value": seq.outcome.e_value,
                       "reason": seq.outcome.reason, "cpu_s": round(t_seq, 2)},
        "identical_verdict": fixed.decision.decision == seq.outcome.decision,
        "ratio_keys": len(seq.outcome.revealed) / fixed.queried,
        "replay": {"orders": orders, "mean_keys": float(counts.mean()), "median_keys": float(np.median(counts)),
                   "max_keys": int(counts.max()), "decisions": sorted(decisions),
                   "identical_in_every_order": decisions == {fixed.decision.decision}},
    }


def simulated_copies(n, p0, alpha, reps, rng, rates=(0.4, 0.5, 0.6, 0.7, 0.84, 0.95, 1.0)):
    """Copies that keep a share ``rate`` of n fingerprints (Bernoulli answers): OWNED rate of each test, how
    often their verdicts agree, keys the sequential test revealed (the fixed test reveals n)."""
    import numpy as np

    from trustlab.fingerprint.sequential import run_sequential
    from trustlab.fingerprint.stats import binom_tail

    out = []
    for rate in rates:
        draws = rng.random((reps, n)) < rate
        fixed, seq, keys = [], [], []
        for h in draws:
            res = run_sequential(range(n), {i: p0 for i in range(n)},
                                 lambda b, h=h: ({i: bool(h[i]) for i in b}, {}), alpha)
            fixed.append(binom_tail(int(h.sum()), n, p0) <= alpha)
            seq.append(res.owned)
            keys.append(len(res.revealed))
        fixed, seq = np.array(fixed), np.array(seq)
        out.append({"hit_rate": rate, "fixed_owned": float(fixed.mean()), "sequential_owned": float(seq.mean()),
                    "agree": float((fixed == seq).mean()), "mean_keys": float(np.mean(keys)),
                    "median_keys": float(np.median(keys))})
    return out


def decisions_per_set(p0s, alpha):
    """OWNED verdicts a set yields when each verification reveals only fresh keys and every key hits."""
    from trustlab.fingerprint.sequential import min_keys

    need = min_keys(sorted(p0s), alpha)
    return 0 if need is None else len(p0s) // need


def fp_tiny_suspects(n, secret, workdir):
    """(fps, [(name, model, tok)]): fp-tiny with n fingerprints embedded, its base, a seeded random init."""
    from trustlab.fingerprint.attacks import foreign_model
    from trustlab.fingerprint.config import EmbedConfig, GenerateConfig
    from trustlab.fingerprint.keys import generate_fingerprints
    from trustlab.models.fp_tiny import prepare_tiny
    from trustlab.fingerprint.train import embed
    from trustlab.models import load_causal_lm

    path = str(prepare_tiny())
    base, tok = load_causal_lm(path)
    fps = generate_fingerprints(GenerateConfig(model="fp-tiny", num_fingerprints=n), secret, lm=(base, tok),
                                model_ref="fp-tiny")
    model, _ = load_causal_lm(path)
    embed(model, tok, fps, EmbedConfig(model="fp-tiny", save_every=0), out_dir=workdir / f"tiny-{n}",
          model_ref="fp-tiny")
    model.eval()
    return fps, [("fp-tiny embedded", model, tok), ("fp-tiny base", base, tok),
                 ("random init", foreign_model(base, seed=1), tok)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("runs/bench-sequential"))
    ap.add_argument("-n", type=int, nargs="+", default=[64, 32], help="fp-tiny set sizes")
    ap.add_argument("--alpha", type=float, default=1e-3)
    ap.add_argument("--orders", type=int, default=1000, help="random orders replayed per suspect")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sim-reps", type=int, default=500, help="simulated copies per hit rate (N=64, p0=1/3)")
    ap.add_argument("--smollm2-model", type=Path)
    ap.add_argument("--smollm2-fps", type=Path)
    ap.add_argument("--smollm2-secret", type=Path)
    args = ap.parse_args()

    import numpy as np

    from trustlab.fingerprint.fpset import FingerprintSet
    from trustlab.fingerprint.sequential import fixed_min_keys
    from trustlab.fingerprint.secret import load_secret
    from trustlab.models import load_causal_lm
    from trustlab.runtime import configure_threads
    from trustlab.runtime.io import write_json_atomic

    configure_threads()
    warnings.simplefilter("ignore")
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    secret = hashlib.sha256(f"bench-sequential|{args.seed}".encode()).digest()
    rows = []
    for n in args.n:
        fps, suspects = fp_tiny_suspects(n, secret, args.out)
        for name, model, tok in suspects:
            row = judge(name, fps, model, tok, secret, args.alpha, args.orders, rng)
            row["model"] = f"fp-tiny N={n}"
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("model", "suspect", "fixed", "sequential")}), flush=True)
    if args.smollm2_model:
        fps = FingerprintSet.load(args.smollm2_fps)
        smol_secret = load_secret(args.smollm2_secret)
        model, tok = load_causal_lm(str(args.smollm2_model))
        base, _ = load_causal_lm("smollm2-135m-instruct")
        for name, m in (("SmolLM2 embedded", model), ("SmolLM2 base", base)):
            row = judge(name, fps, m, tok, smol_secret, args.alpha, args.orders, rng)
            row["model"] = f"SmolLM2 N={len(fps)}"
            rows.append(row)
            print(json.dumps({k: row[k] for k in ("model", "suspect", "fixed", "sequential")}), flush=True)
    owned = [r for r in rows if r["fixed"]["decision"] == "OWNED"]
    summary = {
        "alpha": args.alpha,
        "all_verdicts_identical": all(r["identical_verdict"] and r["replay"]["identical_in_every_order"]
                                      for r in rows),
        "owned_ratio_keys": {r["model"]: round(r["ratio_keys"], 4) for r in owned},
        "owned_replay_mean_ratio": {r["model"]: round(r["replay"]["mean_keys"] / r["n_keys"], 4) for r in owned},
        "not_owned_ratio_keys": {f"{r['model']} / {r['suspect']}": round(r["ratio_keys"], 4) for r in rows
                                 if r["fixed"]["decision"] != "OWNED"},
        "decisions_per_set": {r["model"]: {"sequential": decisions_per_set(r["p0s"], args.alpha), "fixed": 1}
                              for r in owned},
        # target <= 1/5 of the keys; no test can go below floor = (fewest all-hit keys the fixed test needs) / N
        "floor_ratio": {r["model"]: round(fixed_min_keys(r["p0s"], args.alpha) / r["n_keys"], 4) for r in owned},
        "target_met": {r["model"]: r["ratio_keys"] <= 0.2 for r in owned},
        "simulated_copies_n64_p0_1_3": simulated_copies(64, 1 / 3, args.alpha, args.sim_reps, rng),
    }
    write_json_atomic(args.out / "bench_sequential.json", {"summary": summary, "rows": rows})
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
