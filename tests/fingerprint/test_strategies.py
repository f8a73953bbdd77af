"""Perinucleus selection on known next-token distributions, and the other strategies' choices (spec §2, §9)."""

from __future__ import annotations

import numpy as np
import pytest

from trustlab.fingerprint import strategies as S
from trustlab.fingerprint.secret import hmac_choice

SECRET = bytes(range(32))
Q = np.array([0.40, 0.30, 0.15, 0.05, 0.04, 0.03, 0.02, 0.01])  # S = .40 .70 .85 -> boundary b = 2 at t = 0.8


def test_known_distribution_boundary_skipped():
    c = S.perinucleus_candidates(Q, t=0.8, k=3)
    assert c.boundary_rank == 2 and c.boundary_token == 2
    assert c.tokens == (3, 4, 5)  # the k tokens just after the boundary, boundary itself skipped
    assert all(Q[x] <= 1 - 0.8 for x in c.tokens)


def test_boundary_is_where_mass_first_reaches_t():
    c = S.perinucleus_candidates(Q, t=0.7, k=2)  # S_1 = 0.70 >= 0.7 exactly -> b = 1
    assert c.boundary_rank == 1 and c.tokens == (2, 3)
    c = S.perinucleus_candidates(Q, t=0.41, k=2)  # S_0 = 0.40 < 0.41 <= S_1 -> b = 1
    assert c.boundary_rank == 1
    c = S.perinucleus_candidates(Q, t=0.3, k=1)  # the argmax alone covers t: b = 0, still skipped
    assert c.boundary_rank == 0 and c.tokens == (1,)


def test_order_follows_probability_not_token_id():
    perm = np.random.default_rng(0).permutation(len(Q))
    q = np.empty_like(Q)
    q[perm] = Q  # token perm[i] now has Q[i]
    c = S.perinucleus_candidates(q, t=0.8, k=3)
    assert c.tokens == tuple(int(perm[i]) for i in (3, 4, 5)) and c.boundary_token == int(perm[2])


def test_window_extension_past_filtered_tokens():
    ok = np.ones(len(Q), bool)
    ok[[3, 5]] = False  # not allowed (e.g. punctuation): the window extends to the next allowed ranks
    c = S.perinucleus_candidates(Q, t=0.8, k=3, ok_mask=ok)
    assert c.tokens == (4, 6, 7)
    with pytest.raises(S.TooFewCandidates):  # max_rank bounds the scan
        S.perinucleus_candidates(Q, t=0.8, k=3, ok_mask=ok, max_rank=3)


def test_t_to_one_and_too_few_candidates():
    q = np.full(1000, 1e-4)
    q[:10] = (1 - 990e-4) / 10
    ranks = []
    for t in (0.5, 0.9, 0.95, 0.99):  # as t -> 1 the boundary walks down the tail
        c = S.perinucleus_candidates(q, t=t, k=3)
        mass_before = np.sort(q)[::-1][: c.boundary_rank].sum()
        assert mass_before < t <= mass_before + np.sort(q)[::-1][c.boundary_rank] + 1e-12
        ranks.append(c.boundary_rank)
    assert ranks == sorted(ranks) and ranks[-1] > 800
    with pytest.raises(S.TooFewCandidates):
        S.perinucleus_candidates(q, t=1 - 1e-9, k=3)
    with pytest.raises(S.TooFewCandidates, match="only 0 of k=3"):
        S.perinucleus_candidates(Q, t=0.9999, k=3)  # boundary at the last rank: nothing left
    with pytest.raises(S.TooFewCandidates, match="only 2 of k=3"):
        S.perinucleus_candidates(Q, t=0.95, k=3)  # b = 5: only ranks 6, 7 remain


def test_random_distributions_invariants():
    rng = np.random.default_rng(1)
    for _ in range(200):
        q = rng.dirichlet(np.full(50, 0.3))
        t, k = float(rng.uniform(0.3, 0.95)), int(rng.integers(1, 5))
        try:
            c = S.perinucleus_candidates(q, t, k)
        except S.TooFewCandidates:
            continue
        order = np.argsort(-q, kind="stable")
        ranks = [int(np.where(order == x)[0][0]) for x in c.tokens]
        assert ranks == list(range(c.boundary_rank + 1, c.boundary_rank + 1 + k))  # just outside, width k
        assert q[order[: c.boundary_rank]].sum() < t <= q[order[: c.boundary_rank + 1]].sum() + 1e-12
        assert all(q[x] <= 1 - t + 1e-12 for x in c.tokens)
        assert order[0] not in c.tokens  # never the argmax: the base model scores no greedy hit


def test_choice_deterministic_for_a_secret_and_keyed_by_it():
    c = S.perinucleus_candidates(Q, 0.8, 3)
    picks = [S.perinucleus_choice(SECRET, f"key {i}", c) for i in range(300)]
    assert picks == [S.perinucleus_choice(SECRET, f"key {i}", c) for i in range(300)]
    assert set(picks) == set(c.tokens)
    assert picks[7] == c.tokens[hmac_choice(SECRET, "pn|key 7", 3)]
    other = [S.perinucleus_choice(bytes(32), f"key {i}", c) for i in range(300)]
    assert sum(a == b for a, b in zip(picks, other)) < 150  # another secret agrees ~1/3 of the time


def test_bad_arguments():
    with pytest.raises(ValueError):
        S.perinucleus_candidates(Q, 1.0, 3)
    with pytest.raises(ValueError):
        S.perinucleus_candidates(Q, 0.5, 0)


def test_other_strategies():
    pool = list(range(100, 150))
    y = S.english_random_choice(SECRET, "a key", pool)
    assert y in pool and y == S.english_random_choice(SECRET, "a key", pool)
    words = S.random_words(SECRET, "rw|k", pool, 4)
    assert len(words) == 4 and all(w in pool for w in words)
    assert S.english_response(list(range(16)), 1) == [10]
    assert S.english_response(list(range(11)), 3) == [8, 9, 10]
    assert S.null_p("perinucleus", 3, 50, 1, None) == (1 / 3, False)
    assert S.null_p("english_random", 3, 50, 1, None) == (1 / 50, False)
    assert S.null_p("english", 3, 50, 1, None) == (1 / 3, True)
