"""Sequential ownership verification: reveal keys a batch at a time, stop as soon as the evidence decides.

Null hypothesis H0 (the fixed-M test's): the suspect was not derived from the fingerprinted model. Then whatever it
answers to key i, even knowing every earlier key and answer, matches with probability at most p0_i, the key's
per-key null under the matching rule (``stats.key_nulls``): the response was chosen by an HMAC of the owner's
secret, which the suspect never saw. So P[hit_i | earlier answers] <= p0_i for every key, in any order.

The test is a **test martingale** built from per-key likelihood ratios against a *predictable* alternative rate:

    E_t = prod_{i <= t} ( q_i / p0_i  if key i hit,  else  (1 - q_i) / (1 - p0_i) ),
    q_i = clip((hits so far + prior_rate * prior_weight) / (keys so far + prior_weight), p0_i, max_rate)

q_i uses only answers before key i. For a fixed q >= p0 and a true hit rate r <= p0, the factor's mean is
1 + (r - p0)(q - p0) / (p0 (1 - p0)) <= 1, so E_t is a nonnegative supermartingale under H0 with E_0 = 1, and
Ville's inequality gives P[sup_t E_t >= 1/alpha] <= alpha. The decision may therefore look after every batch and
stop at any data-dependent time (a batch, the budget, futility) without losing the level; ``p_value`` =
min(1, 1 / max_t E_t) is an anytime-valid p-value.

Why this e-process: a fixed alternative q wastes evidence when the copy's true hit rate differs from q (a fine-tuned
or suppressed copy answers 40-90 %), and a mixture over q pays a constant factor on every decision; the running
estimate (Robbins' predictable plug-in) adapts to the copy's rate at no cost in validity. The prior (0.9, weight 10)
starts near the rate of a freshly fingerprinted model, so an intact copy with p0 = 1/3 decides after 7 hits at
alpha = 1e-3, the same count the fixed-M binomial test needs at its best. ``max_rate`` < 1 keeps a single miss from
zeroing the process (a miss at q = 0.99 costs a factor of 0.015; q = 1 would cost everything).

Stopping rules (``run_sequential``), checked after each batch:
1. OWNED as soon as E_t >= 1/alpha;
2. "not owned" (futility) as soon as E_t times the best the remaining keys could add (all of them hit: the all-hit
   path maximises E, since a hit never lowers the factor or later bets) stays below 1/alpha;
3. "not owned" when the budget of revealed keys is spent, or when a batch was answered not at all;
4. INCONCLUSIVE, sending nothing, when even all the usable keys within the budget hitting could not reach 1/alpha
   (as the fixed test says INCONCLUSIVE when alpha is out of reach).
Each batch is the fewest further keys whose all-hit path could reach 1/alpha (``step=None``), or ``step`` keys.
Keys are queried in a secret-seeded order (``key_order``), with keys that the ledger shows as revealed last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

from trustlab.runtime.errors import BackendError
from trustlab.runtime.validate import check_types, require_range

OWNED, NOT_OWNED, INCONCLUSIVE = "OWNED", "not owned", "INCONCLUSIVE"
# the suspect answers a batch of key ids: (hits of the answered keys, reason per unanswered key)
Ask = Callable[[list[int]], "tuple[dict[int, bool], dict[int, str]]"]


@dataclass(frozen=True)
class SequentialConfig:
    """Settings of the sequential test (``alpha`` is the verify config's). ``budget``: most keys revealed (None:
    every key); ``step``: keys per batch (None: the fewest that could still decide)."""

    budget: Optional[int] = None
    step: Optional[int] = None
    prior_rate: float = 0.9
    prior_weight: float = 10.0
    max_rate: float = 0.99

    def __post_init__(self):
        check_types(self)
        if self.budget is not None:
            require_range("budget", self.budget, 1)
        if self.step is not None:
            require_range("step", self.step, 1)
        require_range("max_rate", self.max_rate, 0.0, 1.0, lo_open=True, hi_open=True)
        require_range("prior_rate", self.prior_rate, 0.0, self.max_rate, lo_open=True)
        require_range("prior_weight", self.prior_weight, 0.0, None, lo_open=True)


# --------------------------------------------------------------------------------------------------------------
# The e-process (pure)
# --------------------------------------------------------------------------------------------------------------
def bet_rate(hits: int, n: int, p0: float, cfg: SequentialConfig) -> float:
    """q for the next key after ``hits`` of ``n`` answered keys: the prior-smoothed hit rate, clipped to
    [p0, max_rate] (q = p0 is no bet: factor 1 either way)."""
    q = (hits + cfg.prior_rate * cfg.prior_weight) / (n + cfg.prior_weight)
    return min(max(q, p0), cfg.max_rate) if p0 < cfg.max_rate else p0


def log_factor(hit: bool, p0: float, q: float) -> float:
    """log of the likelihood ratio of one answer: q/p0 for a hit, (1-q)/(1-p0) for a miss (0 when q = p0: no bet,
    which also covers p0 = 1)."""
    if q == p0:
        return 0.0
    return math.log(q / p0) if hit else math.log1p(-q) - math.log1p(-p0)


@dataclass
class EProcess:
    """The running test martingale (log scale) over the answered keys."""

    cfg: SequentialConfig
    log_e: float = 0.0
    max_log_e: float = 0.0
    hits: int = 0
    n: int = 0

    def update(self, hit: bool, p0: float) -> tuple[float, float]:
        """Add one answered key; returns (q bet on it, log E after it)."""
        q = bet_rate(self.hits, self.n, p0, self.cfg)
        self.log_e += log_factor(hit, p0, q)
        self.max_log_e = max(self.max_log_e, self.log_e)
        self.hits += int(hit)
        self.n += 1
        return q, self.log_e

    def keys_to_reach(self, p0s: Sequence[float], log_threshold: float) -> Optional[int]:
        """The fewest of the next keys (p0s in query order) whose all-hit path reaches ``log_threshold``; None when
        even all of them hitting falls short."""
        log_e, hits, n = self.log_e, self.hits, self.n
        if log_e >= log_threshold:
            return 0
        for j, p0 in enumerate(p0s, 1):
            log_e += log_factor(True, p0, bet_rate(hits, n, p0, self.cfg))
            hits, n = hits + 1, n + 1
            if log_e >= log_threshold:
                return j
        return None


def min_keys(p0s: Sequence[float], alpha: float, cfg: SequentialConfig = SequentialConfig()) -> Optional[int]:
    """The fewest keys (in this order) that can yield OWNED at ``alpha`` if all of them hit; None if none can."""
    return EProcess(cfg).keys_to_reach(list(p0s), math.log(1 / alpha))


@dataclass(frozen=True)
class SequentialOutcome:
    """What the sequential test decided and which keys it revealed (ids in query order)."""

    decision: str
    reason: str
    alpha: float
    log_e: float
    max_log_e: float
    revealed: tuple[int, ...]
    batches: tuple[tuple[int, ...], ...]
    hits: int
    answered: int
    unanswered: dict[int, str]
    trajectory: tuple[dict, ...]  # per answered key: id, p0, q, hit, log10_e
    available: int  # keys the order offered (after dropping no-evidence keys)
    budget: int

    @property
    def owned(self) -> bool:
        return self.decision == OWNED

    @property
    def e_value(self) -> float:
        return math.exp(min(self.log_e, 700.0))

    @property
    def p_value(self) -> float:
        """Anytime-valid: min(1, 1 / max_t E_t) (Ville)."""
        return min(1.0, math.exp(-self.max_log_e))

    @property
    def line(self) -> str:
        return (f"{self.decision} (sequential) {self.hits}/{self.answered} matched, {len(self.revealed)} of "
                f"{self.available} keys revealed, E={self.e_value:.3g} (needs >= {1 / self.alpha:g}) "
                f"anytime p<={self.p_value:.2g} alpha={self.alpha:g}: {self.reason}")

    def to_dict(self) -> dict:
        return {"decision": self.decision, "reason": self.reason, "alpha": self.alpha,
                "e_value": self.e_value, "log10_e_value": self.log_e / math.log(10),
                "max_log10_e_value": self.max_log_e / math.log(10), "p_value": self.p_value,
                "keys_revealed": len(self.revealed), "revealed": list(self.revealed),
                "batches": [list(b) for b in self.batches], "m": self.hits, "answered": self.answered,
                "unanswered": list(self.unanswered), "available": self.available,
                "unanswered_reasons": {str(k): v for k, v in self.unanswered.items()},
                "budget": self.budget, "trajectory": list(self.trajectory), "line": self.line}


def run_sequential(order: Sequence[int], p0: Mapping[int, float], ask: Ask, alpha: float,
                   cfg: SequentialConfig = SequentialConfig()) -> SequentialOutcome:
    """Query the keys of ``order`` batch by batch through ``ask`` and apply the stopping rules of the module
    docstring. ``p0[i]`` is key i's null hit rate under H0; keys whose p0 leaves nothing to bet (p0 >= max_rate)
    are never revealed. Raises BackendError when the suspect answered no key at all."""
    require_range("alpha", alpha, 0.0, 1.0, lo_open=True, hi_open=True)
    for i in order:
        require_range(f"p0[{i}]", p0[i], 0.0, 1.0, lo_open=True)
    keys = [i for i in order if p0[i] < cfg.max_rate]
    budget = len(keys) if cfg.budget is None else min(cfg.budget, len(keys))
    log_threshold = math.log(1 / alpha)
    ep = EProcess(cfg)
    revealed: list[int] = []
    batches: list[tuple[int, ...]] = []
    unanswered: dict[int, str] = {}
    trajectory: list[dict] = []
    decision, reason = NOT_OWNED, ""
    while True:
        if ep.log_e >= log_threshold:
            decision, reason = OWNED, f"E reached 1/alpha after {len(revealed)} keys"
            break
        rest = keys[len(revealed):budget]
        need = ep.keys_to_reach([p0[i] for i in rest], log_threshold)
        if need is None:
            if not revealed:  # no key can decide: nothing is sent, and "not owned" is not claimed
                decision = INCONCLUSIVE
                reason = (f"even if all {len(rest)} usable keys hit, E cannot reach 1/alpha; no key was sent"
                          if rest else "no key can be evidence under its null (p0 >= max_rate); no key was sent")
            elif not rest:
                reason = "every key is revealed" if budget == len(keys) else f"the budget of {budget} keys is spent"
            else:
                within = " within the budget" if budget < len(keys) else ""
                reason = f"futility: even if all {len(rest)} remaining keys{within} hit, E stays below 1/alpha"
            break
        batch = rest[:need if cfg.step is None else cfg.step]
        hits, missing = ask(list(batch))
        revealed.extend(batch)
        batches.append(tuple(batch))
        answered_now = 0
        for i in batch:
            if i not in hits:
                unanswered[i] = missing.get(i, "no answer")
                continue
            answered_now += 1
            q, log_e = ep.update(bool(hits[i]), p0[i])
            trajectory.append({"id": i, "p0": p0[i], "q": q, "hit": bool(hits[i]), "log10_e": log_e / math.log(10)})
        if answered_now == 0:
            if ep.n == 0:
                first = next(iter(unanswered.values()), "no answer")
                raise BackendError(f"the suspect answered none of the {len(batch)} keys of the first batch: {first}",
                                   hint="check the backend (nothing was decided)")
            reason = f"the suspect answered none of the {len(batch)} keys of the last batch; stopped"
            break
    return SequentialOutcome(decision=decision, reason=reason, alpha=float(alpha), log_e=ep.log_e,
                             max_log_e=ep.max_log_e, revealed=tuple(revealed), batches=tuple(batches), hits=ep.hits,
                             answered=ep.n, unanswered=unanswered, trajectory=tuple(trajectory),
                             available=len(keys), budget=budget)


# --------------------------------------------------------------------------------------------------------------
# The query order
# --------------------------------------------------------------------------------------------------------------
def key_order(secret: bytes, set_digest: str, ids: Sequence[int]) -> list[int]:
    """The secret-seeded query order: ids sorted by u("seq|<set digest>|<id>") (HMAC of the owner's secret, as
    every keyed choice of the lab). A suspect cannot predict which key comes next; the owner re-derives the order."""
    from .secret import hmac_uniform

    return sorted(ids, key=lambda i: (hmac_uniform(secret, f"seq|{set_digest}|{i}"), i))


def unrevealed_first(order: Sequence[int], revealed: Mapping[int, int]) -> list[int]:
    """``order`` with keys never revealed first, then by how often each was revealed (stable: the secret order
    breaks ties)."""
    return sorted(order, key=lambda i: revealed.get(i, 0))


# --------------------------------------------------------------------------------------------------------------
# Sequential verification of a suspect (the verb behind ``trustlab fingerprint verify --mode sequential``)
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SequentialResult:
    """A sequential verdict: the outcome, what was verified, and the ledger's count of keys left unrevealed."""

    outcome: SequentialOutcome
    target: str
    match: str
    rule: str
    set_digest: str
    secret_commitment: str
    notes: tuple[str, ...]
    per_fingerprint: tuple[dict, ...]
    batch_notes: tuple[tuple[str, ...], ...] = ()
    ledger: Optional[str] = None
    unrevealed: Optional[int] = None  # keys of the set never sent to any suspect, after this run
    ledger_warning: Optional[str] = None

    @property
    def owned(self) -> bool:
        return self.outcome.owned

    @property
    def line(self) -> str:
        line = self.outcome.line
        if self.unrevealed is not None:
            line += f"; {self.unrevealed} key(s) of the set never revealed"
        return line

    def to_dict(self) -> dict:
        o = self.outcome.to_dict()
        from .stats import ATTACK_CAVEAT

        return {**o, "mode": "sequential", "line": self.line, "caveat": ATTACK_CAVEAT, "target": self.target,
                "match": self.match,
                "rule": self.rule, "set_digest": self.set_digest, "secret_commitment": self.secret_commitment,
                "notes": list(self.notes), "ledger": self.ledger, "unrevealed": self.unrevealed,
                "ledger_warning": self.ledger_warning, "M": o["answered"],
                "batch_notes": [list(b) for b in self.batch_notes],
                "fingerprints": list(self.per_fingerprint)}


def planned_nulls(fps, backend, cfg, notes: list) -> tuple[str, dict[int, float]]:
    """(rule, p0_i of every key) before any key is sent, as ``verify`` computes them (``stats.key_nulls`` under the
    rule the backend and ``match`` imply, raised to ``null_p`` when the config sets one)."""
    from .backends import HFBackend
    from .stats import key_nulls
    from .verify import null_override

    null_override(fps, cfg)  # a null_p below the proven null: ConfigError before anything is sent
    local = isinstance(backend, HFBackend)
    rule = "token" if local and cfg.match == "exact" else cfg.match
    p0s = key_nulls(fps, rule, backend.tokenizer if local else None, notes)
    floor = 0.0 if cfg.null_p is None else float(cfg.null_p)
    return rule, {fp.id: max(float(p), floor) for fp, p in zip(fps.fingerprints, p0s)}


def verify_sequential(fps, backend, cfg, secret: bytes, scfg: SequentialConfig = SequentialConfig(), *,
                      ledger=None, suspect: Optional[dict] = None, run: Optional[str] = None) -> SequentialResult:
    """Verify ``backend`` batch by batch (``run_sequential``): each batch goes through ``verify(fps, backend, cfg,
    keys=batch)`` (same prompts, matching and per-key nulls as the fixed-M test). The order is ``key_order``
    (secret-seeded); with a ``ledger`` keys never revealed come first and each batch is recorded *before* it is
    sent. ``cfg.num_queries`` caps the keys revealed (the budget). Null hypothesis: see the module docstring."""
    import dataclasses
    import re

    from trustlab.runtime.errors import BackendError as _BackendError

    from .secret import check_commitment
    from .verify import describe, verify

    fps.check_integrity()
    check_commitment(secret, fps.secret_commitment)  # the order is the owner's: another secret is exit 2
    notes: list[str] = []
    rule, p0 = planned_nulls(fps, backend, cfg, notes)
    order = key_order(secret, fps.set_digest, fps.ids)
    if ledger is not None:
        order = unrevealed_first(order, ledger.revealed(fps.set_digest))
    if cfg.num_queries is not None:
        scfg = dataclasses.replace(scfg, budget=min(scfg.budget or cfg.num_queries, cfg.num_queries))
    who = suspect if suspect is not None else {"target": describe(backend, cfg)}
    rows: list[dict] = []
    batch_notes: list[list[str]] = []

    def ask(batch: list[int]):
        if ledger is not None:
            ledger.append(set_digest=fps.set_digest, keys=batch, suspect=who, verb="verify", mode="sequential",
                          run=run)
        try:
            res = verify(fps, backend, cfg, keys=batch)
        except _BackendError as exc:
            if not rows:  # nothing answered yet: the endpoint's own error and hint (exit 4), as the fixed test
                raise
            return {}, {i: exc.message for i in batch}  # later: stop on the evidence so far, naming the failure
        rows.extend(res.per_fingerprint)
        batch_notes.append(list(res.notes))
        for note in res.notes:  # each kind of note once (batch counts differ); every batch's own in batch_notes
            if re.sub(r"\d+", "N", note) not in {re.sub(r"\d+", "N", n) for n in notes}:
                notes.append(note)
        for k, v in res.key_p0.items():  # verify's own nulls are the ones tested (they equal the plan)
            p0[k] = max(p0[k], float(v))
        return dict(res.key_hits), {k: str(v) for k, v in res.unanswered_reasons.items()}

    dropped = [i for i in order if p0[i] >= scfg.max_rate]
    if dropped:
        notes.append(f"{len(dropped)} key(s) never sent: their null hit rate under {cfg.match} matching is "
                     f">= {scfg.max_rate:g}, so a hit there is no evidence")
    outcome = run_sequential(order, p0, ask, cfg.alpha, scfg)
    unrevealed, warning = None, None
    if ledger is not None:
        fresh_p0 = {i: (p if p < scfg.max_rate else 1.0) for i, p in p0.items()}
        unrevealed, warning = ledger_status(ledger, fps, fresh_p0, lambda ps: min_keys(sorted(ps), cfg.alpha, scfg),
                                            cfg.alpha)
    return SequentialResult(outcome=outcome, target=describe(backend, cfg), match=cfg.match, rule=rule,
                            set_digest=fps.set_digest, secret_commitment=fps.secret_commitment, notes=tuple(notes),
                            per_fingerprint=tuple(rows), batch_notes=tuple(map(tuple, batch_notes)),
                            ledger=None if ledger is None else str(ledger.path),
                            unrevealed=unrevealed, ledger_warning=warning)


def fixed_min_keys(p0s: Sequence[float], alpha: float) -> Optional[int]:
    """The fewest keys that can give the fixed-M test OWNED at ``alpha``: all of them hitting, the smallest p0s
    first (the Poisson-binomial tail of M hits out of M is the product of the p0s); None when no number can."""
    log_p, log_alpha = 0.0, math.log(alpha)
    for j, p in enumerate(sorted(p0s), 1):
        log_p += math.log(p)
        if log_p <= log_alpha:
            return j
    return None


def ledger_status(ledger, fps, p0: Mapping[int, float], need_fn: Callable[[list[float]], Optional[int]],
                  alpha: float) -> tuple[int, Optional[str]]:
    """(keys of the set never revealed to any suspect, a warning when they are too few for a decision at alpha;
    ``need_fn(p0s of those keys)`` is the fewest all-hit keys the test needs, None when no number suffices)."""
    seen = ledger.revealed(fps.set_digest)
    fresh = [i for i in fps.ids if i not in seen]
    if need_fn([p0[i] for i in fresh if p0[i] < 1.0]) is not None:
        return len(fresh), None
    return len(fresh), (f"only {len(fresh)} key(s) remain unrevealed: too few for a decision at alpha={alpha:g} "
                        "(even if all of them hit); generate and embed fresh fingerprints")


def fixed_keys(fps, secret: bytes, ledger, num_queries: Optional[int]) -> list[int]:
    """The keys a fixed-M verification with a ledger sends: all of them, or the first ``num_queries`` of the
    secret order with unrevealed keys first (instead of the seeded subset)."""
    order = unrevealed_first(key_order(secret, fps.set_digest, fps.ids), ledger.revealed(fps.set_digest))
    return order if num_queries is None else order[:num_queries]
