"""Metrics and refusal-judge speed, each against a baseline run in the same process. Prints one JSON line.

(a) vectorised bootstrap (10k prompts, K=5, B=1000, the three metrics at once) vs a Python loop over replicates
    and vs scipy.stats.bootstrap (percentile, vectorised), with the interval end points of each;
(b) the whole ``summarize`` (one judge, three parts, per-category blocks) on the same 10k x 5 labels;
(c) the refusal judge vs a naive ``any(s.lower() in t.lower() for s in strings)`` / ``any(s in t ...)`` on 2000
    chain-of-thought-sized texts (about 2 kB each), curated and safechain presets (target: not slower): the
    matching core (``RefusalJudge.match``) and the whole ``judge`` call (which also builds one Verdict per text).

    python benchmarks/safety/bench_metrics.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def best(fn, reps=3):
    t, out = float("inf"), None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        t = min(t, time.perf_counter() - t0)
    return out, t


def loop_bootstrap(values, n_boot, seed, alpha=0.05):
    rng = np.random.default_rng(seed)
    n = len(values)
    boot = np.empty((n_boot, values.shape[1]))
    for b in range(n_boot):
        boot[b] = values[rng.integers(0, n, n)].mean(axis=0)
    return np.quantile(boot, [alpha / 2, 1 - alpha / 2], axis=0).T


def records(n, k, rng):
    gens, labels = [], []
    cats = ["Deception", "deception", "Violence", "Hate", "Illegal goods", "Sexual content"]
    p_safe = rng.uniform(0.2, 0.95, size=n)
    for i in range(n):
        for j in range(k):
            key = f"p{i:05d}#{j}"
            gens.append({"key": key, "prompt_id": f"p{i:05d}", "sample": j, "strategy": "default",
                         "category": cats[i % len(cats)], "status": "ok", "think_tokens": int(rng.integers(0, 400)),
                         "answer_tokens": int(rng.integers(5, 200)), "closed": True, "extensions": 0})
            for part in ("response", "thought", "answer"):
                labels.append({"key": key, "strategy": "default", "judge": "refusal", "part": part, "status": "ok",
                               "unsafe": bool(rng.uniform() > p_safe[i]), "score": None})
    return gens, labels


def texts(n, rng):
    words = ("the user asks about a chemistry question and I should consider safety carefully before I answer "
             "step first second then finally result compound mixture temperature").split()
    out = []
    for i in range(n):
        body = " ".join(rng.choice(words, size=320))
        out.append(body + (" I can't help with that." if i % 3 == 0 else " Here is the answer."))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    from trustlab.runtime import configure_threads

    configure_threads(1)
    from scipy.stats import bootstrap

    from trustlab.safety import metrics as M
    from trustlab.safety import summary as S
    from trustlab.safety.judges import JudgeItem, JudgeSpec, make_judge
    from trustlab.safety.judges.refusal import CURATED, SAFECHAIN

    rng = np.random.default_rng(0)
    n, k, b = (2000, 5, 200) if args.quick else (10_000, 5, 1000)
    safe = rng.uniform(size=(n, k)) < rng.uniform(0.2, 0.95, size=(n, 1))
    vals = M.per_prompt(safe)
    ours, t_vec = best(lambda: M.bootstrap_ci(vals, b, seed=1))
    loop, t_loop = best(lambda: loop_bootstrap(vals, b, 1), reps=1)
    sp, t_scipy = best(lambda: bootstrap((vals[:, 0],), np.mean, n_resamples=b, method="percentile", rng=1,
                                         vectorized=True).confidence_interval, reps=1)
    gens, labels = records(n, k, rng)
    summary, t_sum = best(lambda: S.summarize(gens, labels, k=k, n_boot=b, seed=0), reps=1)

    docs = texts(500 if args.quick else 2000, rng)
    items = [JudgeItem("p", t) for t in docs]
    res = {}
    for preset, strings, sensitive in (("curated", CURATED, False), ("safechain", SAFECHAIN, True)):
        judge = make_judge(JudgeSpec("refusal", options={"preset": preset}))
        if sensitive:
            naive = lambda: [not any(s in t for s in strings) for t in docs]  # noqa: E731
        else:
            naive = lambda: [not any(s.lower() in t.lower() for s in strings) for t in docs]  # noqa: E731
        # interleaved repetitions, best of each: the load of a shared machine drifts between calls
        t_ours = t_naive = t_match = float("inf")
        for _ in range(5):
            verdicts, dt = best(lambda: judge.judge(items), reps=1)
            t_ours = min(t_ours, dt)
            flags, dt = best(naive, reps=1)
            t_naive = min(t_naive, dt)
            _, dt = best(lambda: [judge.match(t) is None for t in docs], reps=1)
            t_match = min(t_match, dt)
        res[preset] = {"judge_ms": round(t_ours * 1e3, 2), "match_ms": round(t_match * 1e3, 2),
                       "naive_ms": round(t_naive * 1e3, 2), "naive_over_match": round(t_naive / t_match, 2),
                       "naive_over_judge": round(t_naive / t_ours, 2),
                       "agree": float(np.mean([f == v.unsafe for f, v in zip(flags, verdicts)]))}
    print(json.dumps({
        "bench": "safety.metrics", "n_prompts": n, "k": k, "n_boot": b,
        "bootstrap_vectorised_s": round(t_vec, 3), "bootstrap_loop_s": round(t_loop, 3),
        "loop_over_vectorised": round(t_loop / t_vec, 2), "scipy_bootstrap_safe1_s": round(t_scipy, 3),
        "ci_safe1_ours": [round(x, 4) for x in ours[0]], "ci_safe1_loop": [round(x, 4) for x in loop[0]],
        "ci_safe1_scipy": [round(sp.low, 4), round(sp.high, 4)],
        "summarize_s": round(t_sum, 3), "summarize_safe1": summary["strategies"]["default"]["judges"]["refusal"]
        ["response"]["safe@1"]["value"],
        "refusal_judge": res, "n_texts": len(docs), "mean_text_chars": int(np.mean([len(t) for t in docs]))}))


if __name__ == "__main__":
    main()
