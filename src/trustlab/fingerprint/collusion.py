"""Collusion-resistant assignment of fingerprints to model copies, and host identification (paper section 5).

Each of N_c copies receives a secret random subset of a pool of P fingerprints: A[f, c] = 1 iff
u("assign|f|c") / 2^64 < p, with p = 1/(2K) for coalitions of at most K copies. A host is identified by querying
all P keys and scoring each copy by the hits on its own fingerprints, score_c = sum_f hit_f A[f, c].

Per-copy p-value: if copy c is not behind the host, c's subset was drawn independently of the host's hits, so its
hits follow Bin(|FP_c|, q_c) with q_c the host's hit rate on the fingerprints outside FP_c; the p-value is
P[Bin(|FP_c|, q_c) >= score_c]. Paper Prop. 5.3 (coalitions that must answer a key's common response when all
members agree): P = O(2^K K^(K+1) log(N_c/delta)) keys catch a colluder with probability 1 - delta.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trustlab.runtime.errors import ConfigError, DataError
from trustlab.runtime.progress import progress

from .stats import binom_tail

STRATEGIES = ("majority", "minority", "unanimous", "optimal")
ASSIGNMENT_SCHEMA = "trustlab.fingerprint.assignment/1"


def assignment_record(a: np.ndarray, p: float, max_coalition: int, secret_commitment: str) -> dict:
    """The assignment file's content (``trustlab fingerprint assign``): sizes, rate, commitment and each copy's
    fingerprint ids, with ``assignment_digest`` = sha256 of the canonical JSON of everything else. An edited
    assignment could make ``identify`` name an innocent copy, so ``check_assignment_record`` refuses one."""
    pool, copies = a.shape
    body = {"schema": ASSIGNMENT_SCHEMA, "copies": int(copies), "pool": int(pool), "p": float(p),
            "max_coalition": int(max_coalition), "secret_commitment": secret_commitment,
            "fingerprints_of_copy": [[int(f) for f in a[:, c].nonzero()[0]] for c in range(copies)]}
    return {**body, "assignment_digest": _record_digest(body)}


def check_assignment_record(d: dict, where: str) -> None:
    """DataError (exit 2) naming the file unless its ``assignment_digest`` matches the rest of its content."""
    hint = ("an edited assignment can name an innocent copy: rewrite it with `trustlab fingerprint assign` (the same "
            "secret, copies, pool and p give the same assignment)")
    if not isinstance(d.get("assignment_digest"), str):
        raise DataError(f"{where} has no assignment_digest (written before assignment files were digested, or "
                        f"edited)", hint=hint)
    if _record_digest({k: v for k, v in d.items() if k != "assignment_digest"}) != d["assignment_digest"]:
        raise DataError(f"{where}: field 'assignment_digest' does not match the content (file edited or corrupt)",
                        hint=hint)


def _record_digest(body: dict) -> str:
    import hashlib

    from .fpset import canonical_json

    return hashlib.sha256(canonical_json(body)).hexdigest()


def _u(secret: bytes, label: str) -> int:
    from .secret import hmac_uniform

    return hmac_uniform(secret, label)


def default_p(max_coalition: int = 3) -> float:
    """p = 1/(2K)."""
    if isinstance(max_coalition, bool) or not isinstance(max_coalition, int) or max_coalition < 1:
        raise ConfigError(f"max_coalition (K) must be an integer >= 1, got {max_coalition!r}", hint="K defaults to 3")
    return 1.0 / (2 * max_coalition)


def assign(secret: bytes, num_copies: int, pool: int, p: float) -> np.ndarray:
    """bool[pool, copies]: A[f, c] = u("assign|f|c") / 2^64 < p. Deterministic in the secret."""
    if not isinstance(secret, (bytes, bytearray)) or len(secret) == 0:
        raise ConfigError("secret must be non-empty bytes", hint="read it with trustlab.fingerprint.secret")
    for name, v in (("num_copies", num_copies), ("pool", pool)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {v!r}", hint=f"set {name} to a positive integer")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < float(p) < 1.0:
        raise ConfigError(f"p must lie in (0, 1), got {p!r}", hint="p = 1/(2K) for coalitions of at most K copies")
    threshold = float(p) * 2.0 ** 64
    _price_assignment(bytes(secret), int(pool), int(num_copies), float(p))
    out = np.zeros((int(pool), int(num_copies)), dtype=bool)
    for f in progress(range(int(pool)), f"assign {int(pool)} x {int(num_copies)}"):
        for c in range(int(num_copies)):
            out[f, c] = _u(bytes(secret), f"assign|{f}|{c}") < threshold
    return out


def _price_assignment(secret: bytes, pool: int, copies: int, p: float) -> None:
    """ConfigError (exit 2) before any draw when the pool x copies matrix (and its JSON listing, about p x pool x
    copies indices) would not fit in memory, or its HMAC draws (rate measured here) would pass the time limit."""
    import time

    from trustlab.runtime.workload import require_memory, require_time

    cells = float(pool) * copies
    hint = "assign fewer --copies or a smaller --pool"
    require_memory(f"an assignment of {pool:,} fingerprints x {copies:,} copies", cells * (1 + 40 * p), hint=hint)
    t0, reps = time.perf_counter(), 200
    for i in range(reps):
        _u(secret, f"price|{i}")
    per_draw = (time.perf_counter() - t0) / reps
    require_time(f"an assignment of {pool:,} fingerprints x {copies:,} copies ({cells:,.0f} keyed draws)",
                 cells * per_draw, hint=hint)


@dataclass(frozen=True)
class HostIdentification:
    """``best``: the copies with the top score (all ties); per copy: score, |FP_c|, score/|FP_c|, p-value."""

    best: tuple[int, ...]
    scores: np.ndarray
    sizes: np.ndarray
    fractions: np.ndarray
    p_values: np.ndarray

    def to_dict(self, top: int = 10) -> dict:
        order = np.argsort(self.p_values, kind="stable")[:top]
        return {"best": list(self.best), "top": [
            {"copy": int(c), "score": int(self.scores[c]), "size": int(self.sizes[c]),
             "fraction": float(self.fractions[c]), "p_value": float(self.p_values[c])} for c in order]}


def _check_hits(hits: np.ndarray, assignment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(assignment)
    h = np.asarray(hits)
    if a.ndim != 2 or a.dtype != bool:
        raise DataError(f"assignment must be a bool array [pool, copies], got dtype {a.dtype} shape {a.shape}",
                        hint="use the array returned by assign()")
    if h.shape != (a.shape[0],):
        raise DataError(f"hits must have one entry per pool fingerprint ({a.shape[0]}), got shape {h.shape}",
                        hint="query every key of the pool, in pool order")
    if h.dtype != bool:
        if not np.isin(h, (0, 1)).all():
            raise DataError("hits must be 0/1 or bool", hint="pass one match flag per pool fingerprint")
        h = h.astype(bool)
    return h, a


def identify_host(hits: np.ndarray, assignment: np.ndarray) -> HostIdentification:
    """Score every copy by the host's hits on its fingerprints; the argmax (all ties) and a p-value per copy."""
    h, a = _check_hits(hits, assignment)
    scores = (h[:, None] & a).sum(axis=0)
    sizes = a.sum(axis=0)
    total = int(h.sum())
    fractions = np.where(sizes > 0, scores / np.maximum(sizes, 1), 0.0)
    p_values = np.ones(a.shape[1])
    for c in range(a.shape[1]):
        outside = a.shape[0] - int(sizes[c])
        if scores[c] == 0 or sizes[c] == 0:
            continue
        q = (total - int(scores[c])) / outside if outside else 0.0
        # q = 0: no hit outside c's subset, so any hit inside it is impossible under the null
        p_values[c] = 0.0 if q <= 0.0 else (binom_tail(int(scores[c]), int(sizes[c]), q) if q < 1.0 else 1.0)
    best = tuple(int(c) for c in np.flatnonzero(scores == scores.max())) if total else ()
    return HostIdentification(best=best, scores=scores, sizes=sizes, fractions=fractions, p_values=p_values)


def coalition_hits(assignment: np.ndarray, members: list[int] | tuple[int, ...], strategy: str,
                   persistence: float, rng: np.random.Generator) -> np.ndarray:
    """The hits a coalition's combined model gives on the pool (hits-only simulation).

    Each member answers its own fingerprint with probability ``persistence`` (rho). Where every member hits, the
    coalition must give the common answer (the marking assumption of Prop. 5.3); otherwise it chooses:
    ``majority`` answers as most members do, ``minority`` as fewest do, and ``unanimous`` / ``optimal`` never
    answer a fingerprint unless forced (under the marking assumption that is the optimal evasion on hits)."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}",
                          hint=f"choose one of {', '.join(STRATEGIES)}")
    member_hits = assignment[:, list(members)] & (rng.random((assignment.shape[0], len(members))) < persistence)
    count = member_hits.sum(axis=1)
    k = len(members)
    forced = count == k
    if strategy == "majority":
        return forced | (count * 2 > k)
    if strategy == "minority":
        return forced | ((count > 0) & (count * 2 < k))
    return forced


def simulate_collusion(secret: bytes, num_copies: int, pool: int, coalition: int, p: float, *,
                       persistence: float = 1.0, strategy: str = "unanimous", trials: int = 20,
                       seed: int = 0) -> dict:
    """Share of trials in which ``identify_host`` names a coalition member among its top copies (ties split)."""
    a = assign(secret, num_copies, pool, p)
    rng = np.random.default_rng(seed)
    caught = 0.0
    for _ in range(trials):
        members = tuple(int(c) for c in rng.choice(num_copies, size=coalition, replace=False))
        ident = identify_host(coalition_hits(a, members, strategy, persistence, rng), a)
        if ident.best:
            caught += sum(c in members for c in ident.best) / len(ident.best)
    return {"num_copies": num_copies, "pool": pool, "coalition": coalition, "p": p, "persistence": persistence,
            "strategy": strategy, "trials": trials, "catch_rate": caught / trials,
            "mean_fp_per_copy": float(a.sum(axis=0).mean())}
