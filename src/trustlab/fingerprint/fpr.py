"""The false-positive rate, measured: verify models that never saw the fingerprints against many fresh sets.

H0 holds by construction: a key pool (keys and their perinucleus candidates) is drawn once on a base model, and each
trial draws a fresh 32-byte secret and a fresh subset of keys; the secret picks each key's response among its
candidates (``secret.hmac_choice``, the rule of ``strategies.perinucleus_choice``). The suspects never saw any
secret. Given the keys, a greedy suspect's outputs are fixed and the trials' secrets are independent, so the number
of wrong OWNED verdicts is Binomial(trials, FPR) with FPR <= alpha when the test is valid; ``summarize`` flags a
count above the 0.999 quantile of Binomial(trials, alpha).

Each trial goes through the real ``verify`` (a local backend whose generations are memoised per prompt, or an
OpenAI-compatible server replaying a model's outputs), and its hit count is also scored by the OLD test (binomial
with p0 = 1/k under every rule), to show where that one breaks.

A *forger* suspect is part of H0 too: anyone holding the public base model knows each key's candidates (not which
one the secret chose) and can answer, per key, the text that matches the most candidates under the rule.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from .backends import HFBackend
from .fpset import FingerprintSet
from .matching import _witnesses, text_hit
from .secret import commitment, hmac_choice
from .stats import binom_tail

ALPHAS = (0.05, 0.01, 0.001)


def fresh_set(pool: FingerprintSet, secret: bytes, ids: Sequence[int], tokenizer: Any) -> FingerprintSet:
    """The set a new owner with ``secret`` would have made from these pool keys (response length 1):
    response = candidates[u("pn|" + key_text) mod k], as ``strategies.perinucleus_choice`` picks it."""
    by_id = {fp.id: fp for fp in pool.fingerprints}
    fps = []
    for new_id, i in enumerate(ids):
        fp = by_id[i]
        c = fp.candidates[hmac_choice(secret, "pn|" + fp.key_text, len(fp.candidates))]
        fps.append(dataclasses.replace(fp, id=new_id, response_ids=(c,), response_text=tokenizer.decode([c])))
    fields = {f.name: getattr(pool, f.name) for f in dataclasses.fields(pool)}
    fields.update(fingerprints=tuple(fps), secret_commitment=commitment(secret), subset_of=None,
                  params={**pool.params, "response_length": 1}, created=pool.created)
    return FingerprintSet.create(**fields)


class CachedHF(HFBackend):
    """A local model whose greedy generations are memoised per (prompt, length): the suspect's output for a key
    does not depend on the secret, so every trial reuses it (the verdicts still go through ``verify``)."""

    def __post_init__(self):
        super().__post_init__()
        self._memo: dict = {}

    def generate(self, prompts, max_new_tokens, *, temperature=0.0, n=1, seed=None):
        keys = [(tuple(p) if not isinstance(p, str) else p, max_new_tokens) for p in prompts]
        todo = [i for i, k in enumerate(keys) if k not in self._memo]
        if todo:
            outs = super().generate([prompts[i] for i in todo], max_new_tokens, temperature=temperature, n=n,
                                    seed=seed)
            for i, o in zip(todo, outs):
                self._memo[keys[i]] = o
        self.failures = {}
        return [self._memo[k] for k in keys]


def replay_table(model: Any, tok: Any, pool: FingerprintSet, max_new: int) -> dict[str, str]:
    """key_text -> the text a server running (model, tok) would complete it with (greedy, ``max_new`` tokens)."""
    from .verify import _local_text_prompt

    lm = HFBackend(model, tok, batch_size=16)
    prompts = [_local_text_prompt(tok, fp, "raw", None) for fp in pool.fingerprints]
    outs = lm.generate(prompts, max_new)
    return {fp.key_text: o[0].text for fp, o in zip(pool.fingerprints, outs)}


def forger_table(pool: FingerprintSet, tok: Any, rule: str) -> dict[str, str]:
    """key_text -> the output matching the most of the key's candidates under ``rule`` (the candidates are public
    to anyone with the base model; the secret choice among them is not)."""
    out = {}
    for fp in pool.fingerprints:
        texts = [tok.decode([c]) for c in fp.candidates]
        out[fp.key_text] = max(_witnesses(texts, rule), key=lambda w: sum(text_hit(rule, w, t) for t in texts))
    return out


def run_trials(pool: FingerprintSet, tok: Any, make_backend: Callable[[], Any], cfg: Any, *, trials: int,
               keys_per_set: int, seed: int) -> list[dict]:
    """``trials`` fresh sets (secret and key subset from ``seed``), each verified by ``verify``: per trial the new
    p-value (per-key nulls, Poisson-binomial) and the old one (binomial at 1/k) of the same hits."""
    from .verify import verify

    rng = np.random.default_rng(seed)
    backend = make_backend()
    out = []
    k = int(pool.params["nucleus_k"])
    for _ in range(trials):
        secret = bytes(rng.integers(0, 256, size=32, dtype=np.uint8))
        ids = sorted(rng.choice(len(pool), size=min(keys_per_set, len(pool)), replace=False).tolist())
        fps = fresh_set(pool, secret, [pool.fingerprints[i].id for i in ids], tok)
        res = verify(fps, backend, cfg, base_tokenizer=tok)
        m, M = sum(res.key_hits.values()), len(res.key_hits)
        out.append({"p_new": res.decision.p_value, "decision": res.decision.decision, "m": m, "M": M,
                    "p_old": binom_tail(m, M, 1.0 / k), "mean_p0": float(np.mean(list(res.key_p0.values())))})
    return out


def binomial_limit(trials: int, alpha: float, level: float = 1e-3) -> int:
    """The smallest count c with P[Bin(trials, alpha) >= c] <= level: c or more wrong OWNED rejects FPR <= alpha."""
    from scipy.stats import binom

    return int(binom.isf(level, trials, alpha)) + 1


def summarize(rows: list[dict], alphas: Sequence[float] = ALPHAS) -> dict:
    """Wrong-OWNED counts at each alpha (new and old test) with the binomial limit and a pass flag."""
    T = len(rows)
    out = {"trials": T, "mean_hits": float(np.mean([r["m"] / r["M"] for r in rows])),
           "mean_p0": float(np.mean([r["mean_p0"] for r in rows])), "alphas": {}}
    for a in alphas:
        new = sum(r["p_new"] <= a for r in rows)
        old = sum(r["p_old"] <= a for r in rows)
        lim = binomial_limit(T, a)
        out["alphas"][a] = {"new": new, "old": old, "limit": lim, "new_ok": new < lim, "old_ok": old < lim}
    return out
