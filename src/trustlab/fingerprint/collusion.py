"""Collusion-resistant assignment of fingerprints to model copies, and host identification (paper section 5).

Each of N_c copies receives a secret random subset of a pool of P fingerprints: A[f, c] = 1 iff
u("assign|f|c") / 2^64 < p, with p = 1/(2K) for coalitions of at most K copies. A host is identified by querying
all P keys and scoring each copy by the hits on its own fingerprints, score_c = sum_f hit_f A[f, c].

Per-copy p-value, H0_c: copy c is not behind the host (nor in its coalition). Each fingerprint joined c's subset by
its own keyed draw, independent of the host's answers, so given |FP_c| = n_c the subset is a uniformly random n_c-subset
of the P pool keys, independent of which T keys the host hit: score_c ~ Hypergeometric(P, T, n_c) exactly, and
p_c = P[score_c >= observed] (``scipy.stats.hypergeom.sf``, conditional on T and n_c; no plug-in rate). One stray hit
that falls in a 17-key subset of a 100-key pool gives p = 0.17, not 0. Scanning N copies tests N hypotheses, so
``identify_host`` reports Holm-adjusted p-values (``holm``: step-down, controls the family-wise error at alpha under
any dependence between the copies' tests) and accuses only copies whose adjusted p is at most alpha. Paper Prop. 5.3
(coalitions that must answer a key's common response when all members agree): P = O(2^K K^(K+1) log(N_c/delta)) keys
catch a colluder with probability 1 - delta.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trustlab.runtime.errors import ConfigError, DataError
from trustlab.runtime.progress import progress

from .stats import DEFAULT_ALPHA

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
    """``best``: the accused copies (Holm-adjusted p <= ``alpha``) with the top score among them (all ties), empty
    when none is accused; per copy: score, |FP_c|, score/|FP_c|, the exact hypergeometric p-value and its Holm
    adjustment across the copies scanned."""

    best: tuple[int, ...]
    scores: np.ndarray
    sizes: np.ndarray
    fractions: np.ndarray
    p_values: np.ndarray  # exact per-copy p-values (not adjusted)
    adjusted: np.ndarray = None  # Holm-adjusted across all copies
    alpha: float = DEFAULT_ALPHA

    @property
    def accused(self) -> tuple[int, ...]:
        return tuple(int(c) for c in np.flatnonzero(self.adjusted <= self.alpha))

    def to_dict(self, top: int = 10) -> dict:
        """``p_value`` in each row is the Holm-adjusted one (the one a decision reads); ``p_unadjusted`` beside."""
        order = np.lexsort((-self.scores, self.p_values))[:top]
        return {"best": list(self.best), "accused": list(self.accused), "alpha": self.alpha,
                "copies_scanned": int(len(self.scores)), "null": "hypergeometric given the hits, Holm-adjusted",
                "top": [{"copy": int(c), "score": int(self.scores[c]), "size": int(self.sizes[c]),
                         "fraction": float(self.fractions[c]), "p_value": float(self.adjusted[c]),
                         "p_unadjusted": float(self.p_values[c])} for c in order]}


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values: sort ascending, p_(i) * (N - i + 1) for i = 1..N, running maximum,
    capped at 1. Rejecting where the adjusted value is <= alpha keeps the family-wise error at alpha."""
    p = np.asarray(p_values, dtype=float)
    n = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, p[order] * (n - np.arange(n)))
    out = np.empty(n)
    out[order] = np.maximum.accumulate(scaled)
    return out


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


def identify_host(hits: np.ndarray, assignment: np.ndarray, alpha: float = DEFAULT_ALPHA) -> HostIdentification:
    """Score every copy by the host's hits on its fingerprints; exact p-values (module docstring), their Holm
    adjustment across the copies, and the accused copies with the top score."""
    from scipy.stats import hypergeom

    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < float(alpha) < 1.0:
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha!r}", hint="the default is alpha = 1e-3")
    h, a = _check_hits(hits, assignment)
    scores = (h[:, None] & a).sum(axis=0)
    sizes = a.sum(axis=0)
    total = int(h.sum())
    fractions = np.where(sizes > 0, scores / np.maximum(sizes, 1), 0.0)
    p_values = np.where(scores > 0, hypergeom.sf(scores - 1, a.shape[0], total, sizes), 1.0)
    p_values = np.clip(p_values, 0.0, 1.0)
    adjusted = holm(p_values)
    accused = np.flatnonzero(adjusted <= alpha)
    best = ()
    if accused.size:
        top = scores[accused].max()
        best = tuple(int(c) for c in accused if scores[c] == top)
    return HostIdentification(best=best, scores=scores, sizes=sizes, fractions=fractions, p_values=p_values,
                              adjusted=adjusted, alpha=float(alpha))


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
