"""Sequential verification: the e-process keeps its level under H0 on a Bernoulli oracle (Ville), and each stopping
rule fires exactly when the module docstring says (pure numpy oracles: no model)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from trustlab.fingerprint.sequential import (INCONCLUSIVE, NOT_OWNED, OWNED, EProcess, SequentialConfig, bet_rate,
                                             key_order, log_factor, min_keys, run_sequential, unrevealed_first)
from trustlab.fingerprint.stats import binom_tail
from trustlab.runtime.errors import BackendError, ConfigError

REPS = 2000


def oracle(hits):
    """A suspect whose answer to key i is ``hits[i]`` (None: never answered)."""
    def ask(batch):
        return ({i: bool(hits[i]) for i in batch if hits[i] is not None},
                {i: "HTTP 500" for i in batch if hits[i] is None})
    return ask


def tolerance(reps: int, alpha: float) -> int:
    """The most wrong OWNED verdicts a level-alpha test may give in ``reps`` runs (binomial 1 - 1e-4 quantile)."""
    return int(binom.ppf(1 - 1e-4, reps, alpha))


def null_wrong_owned(p0s, alpha, reps=REPS, seed=0, cfg=SequentialConfig()):
    """Wrong OWNED verdicts of the sequential test when each key hits with probability exactly p0 (the worst
    case of H0), and the keys it revealed on average."""
    rng = np.random.default_rng(seed)
    n = len(p0s)
    draws = rng.random((reps, n)) < np.asarray(p0s)
    p0 = dict(enumerate(p0s))
    wrong, revealed = 0, 0
    for r in range(reps):
        out = run_sequential(range(n), p0, oracle(draws[r]), alpha, cfg)
        wrong += out.owned
        revealed += len(out.revealed)
    return wrong, revealed / reps


@pytest.mark.parametrize("alpha,p0s", [
    (0.05, [1 / 3] * 64),  # the level is measurable here (~100 expected at the bound)
    (1e-3, [1 / 3] * 64),  # the lab's default alpha
    (0.05, [1 / 3, 2 / 3, 1 / 5, 1 / 2] * 12),  # per-key nulls that differ (text matching)
])
def test_wrong_owned_rate_under_the_null_is_at_most_alpha(alpha, p0s):
    wrong, _ = null_wrong_owned(p0s, alpha)
    assert wrong <= tolerance(REPS, alpha), (wrong, REPS, alpha)


def test_the_calibration_check_catches_a_test_that_peeks():
    """Negative control: re-running the fixed binomial test after every key (peeking, no e-process) breaks the
    level on the same oracle, and the tolerance used above sees it."""
    rng = np.random.default_rng(1)
    p0, n, alpha = 1 / 3, 64, 0.05
    draws = rng.random((REPS, n)) < p0
    cum = draws.cumsum(axis=1)
    tails = binom.sf(cum - 1, np.arange(1, n + 1), p0)  # P[Bin(t, p0) >= hits after t keys], every t
    wrong_peek = int((tails <= alpha).any(axis=1).sum())
    assert wrong_peek > tolerance(REPS, alpha)


def test_all_hits_decide_after_the_fewest_keys_in_one_batch():
    out = run_sequential(range(64), {i: 1 / 3 for i in range(64)}, oracle([True] * 64), 1e-3)
    assert out.decision == OWNED and out.revealed == tuple(range(7)) and out.batches == (tuple(range(7)),)
    assert min_keys([1 / 3] * 64, 1e-3) == 7  # also the fixed binomial test's minimum: (1/3)^7 <= 1e-3 < (1/3)^6
    assert binom_tail(7, 7, 1 / 3) <= 1e-3 < binom_tail(6, 6, 1 / 3)
    # the e-value by hand: q_j = (j + 9) / (j + 10) for the j-th hit (prior 0.9, weight 10), factor q_j / p0
    e = math.prod(3 * (j + 9) / (j + 10) for j in range(7))
    assert out.e_value == pytest.approx(e) and e >= 1000 and out.p_value == pytest.approx(1 / e)
    assert "7 of 64 keys revealed" in out.line and out.line.startswith("OWNED (sequential)")


def test_futility_stops_when_the_remaining_keys_cannot_reach_the_threshold():
    out = run_sequential(range(10), {i: 1 / 3 for i in range(10)}, oracle([False] * 10), 1e-3)
    assert out.decision == NOT_OWNED and out.revealed == tuple(range(7)) and "futility" in out.reason
    # one miss among 8 keys: the 8th key cannot make up for it, so no key beyond the first batch is revealed
    hits = [True] * 3 + [False] + [True] * 4
    out = run_sequential(range(8), {i: 1 / 3 for i in range(8)}, oracle(hits), 1e-3)
    assert out.decision == NOT_OWNED and len(out.revealed) == 7 and "futility" in out.reason


def test_a_miss_asks_for_just_enough_more_keys():
    hits = [True] * 3 + [False] + [True] * 60
    out = run_sequential(range(64), {i: 1 / 3 for i in range(64)}, oracle(hits), 1e-3)
    assert out.decision == OWNED and out.batches[0] == tuple(range(7))
    ep = EProcess(SequentialConfig())
    for h in hits[:7]:
        ep.update(h, 1 / 3)
    need = ep.keys_to_reach([1 / 3] * 57, math.log(1e3))
    assert out.batches[1] == tuple(range(7, 7 + need)) and len(out.batches) == 2


def test_budget_stops_with_not_owned():
    hits = [True] * 3 + [False] + [True] * 60
    out = run_sequential(range(64), {i: 1 / 3 for i in range(64)}, oracle(hits), 1e-3, SequentialConfig(budget=7))
    assert out.decision == NOT_OWNED and out.revealed == tuple(range(7)) and out.budget == 7
    assert out.reason == "the budget of 7 keys is spent"
    out = run_sequential(range(5), {i: 1 / 3 for i in range(5)}, oracle([True] * 5), 1e-3)
    assert out.decision == INCONCLUSIVE and out.revealed == () and "no key was sent" in out.reason  # 5 never do
    out = run_sequential(range(5), {i: 0.995 for i in range(5)}, oracle([True] * 5), 1e-3)
    assert out.decision == INCONCLUSIVE and out.revealed == () and out.available == 0


def test_fixed_step_and_keys_without_evidence():
    p0 = {i: (0.995 if i % 2 else 1 / 3) for i in range(40)}  # odd keys: p0 above max_rate, nothing to bet
    out = run_sequential(range(40), p0, oracle([True] * 40), 1e-3, SequentialConfig(step=2))
    assert out.decision == OWNED and all(i % 2 == 0 for i in out.revealed)
    assert [len(b) for b in out.batches] == [2, 2, 2, 2] and out.available == 20
    assert bet_rate(0, 0, 0.95, SequentialConfig()) == 0.95  # q = p0: a factor of 1 either way
    assert log_factor(True, 0.95, 0.95) == 0 and log_factor(False, 0.95, 0.95) == pytest.approx(0)


def test_unanswered_keys_are_revealed_but_carry_no_evidence():
    hits = [True, None, True, True, True, True, True] + [True] * 20
    out = run_sequential(range(27), {i: 1 / 3 for i in range(27)}, oracle(hits), 1e-3)
    assert out.decision == OWNED and 1 in out.revealed and out.unanswered == {1: "HTTP 500"}
    assert out.answered == len(out.revealed) - 1 == 7
    with pytest.raises(BackendError, match="answered none"):
        run_sequential(range(20), {i: 1 / 3 for i in range(20)}, oracle([None] * 20), 1e-3)
    hits = [True] * 3 + [False] + [True] * 3 + [None] * 20  # answered, then the server died
    out = run_sequential(range(27), {i: 1 / 3 for i in range(27)}, oracle(hits), 1e-3)
    assert out.decision == NOT_OWNED and "answered none" in out.reason and out.answered == 7


def test_config_is_validated():
    with pytest.raises(ConfigError, match="max_rate"):
        SequentialConfig(max_rate=1.0)
    with pytest.raises(ConfigError, match="budget"):
        SequentialConfig(budget=0)
    with pytest.raises(ConfigError, match="prior_rate"):
        SequentialConfig(prior_rate=0.995)


def test_key_order_is_secret_seeded_and_the_ledger_puts_revealed_keys_last():
    a, b = bytes(range(32)), bytes(range(1, 33))
    ids = list(range(32))
    oa = key_order(a, "d1", ids)
    assert sorted(oa) == ids and oa == key_order(a, "d1", ids) and oa != ids
    assert oa != key_order(b, "d1", ids) and oa != key_order(a, "d2", ids)
    revealed = {oa[0]: 2, oa[1]: 1}
    steered = unrevealed_first(oa, revealed)
    assert steered[:30] == oa[2:] and steered[30:] == [oa[1], oa[0]]


def test_a_null_rate_outside_0_1_is_refused():
    with pytest.raises(ConfigError, match=r"p0\[1\]"):
        run_sequential(range(3), {0: 0.3, 1: 0.0, 2: 0.3}, oracle([True] * 3), 1e-3)


def test_a_key_whose_null_turns_out_to_be_1_adds_nothing():
    p0 = {i: 1 / 3 for i in range(20)}

    def ask(batch):  # the verify call reports key 0's null as 1 (dropped there): no bet, no NaN
        p0[0] = 1.0
        return {i: i != 0 for i in batch}, {}
    out = run_sequential(range(20), p0, ask, 1e-3)
    assert out.decision == OWNED and math.isfinite(out.log_e) and out.trajectory[0]["q"] == 1.0
