"""Collusion-resistant assignment and host identification (spec section 2, paper section 5)."""

import numpy as np
import pytest

from trustlab.fingerprint.collusion import (assign, coalition_hits, default_p, identify_host,
                                            simulate_collusion)
from trustlab.fingerprint.secret import hmac_uniform
from trustlab.runtime.errors import ConfigError, DataError

SECRET = bytes(range(32))


def test_assign_follows_the_hmac_rule_and_rate_is_p():
    p = default_p(2)  # 1/4
    a = assign(SECRET, 64, 200, p)
    assert a.shape == (200, 64) and a.dtype == bool
    assert a[7, 5] == (hmac_uniform(SECRET, "assign|7|5") < p * 2 ** 64)
    # rate ~ p: 12,800 Bernoulli(1/4) draws, 5 sigma = 0.019
    assert abs(a.mean() - p) < 5 * np.sqrt(p * (1 - p) / a.size)
    assert np.array_equal(a, assign(SECRET, 64, 200, p))  # deterministic in the secret
    assert not np.array_equal(a, assign(bytes(32), 64, 200, p))


def test_identify_host_finds_the_planted_copy():
    a = assign(SECRET, 64, 256, default_p(2))
    rng = np.random.default_rng(0)
    planted = 37
    hits = a[:, planted] & (rng.random(256) < 0.8)  # 80 % of its fingerprints survive
    ident = identify_host(hits, a)
    assert ident.best == (planted,) and ident.accused == (planted,)
    assert ident.adjusted[planted] < 1e-6
    others = np.delete(ident.adjusted, planted)
    assert others.min() > 1e-3  # no innocent copy is accused at alpha = 1e-3
    assert ident.fractions[planted] == pytest.approx(hits.sum() / a[:, planted].sum())
    assert ident.to_dict()["top"][0]["copy"] == planted


def test_identify_a_coalition_member_k2():
    a = assign(SECRET, 64, 256, default_p(2))
    rng = np.random.default_rng(1)
    for strategy in ("majority", "unanimous"):
        hits = coalition_hits(a, (3, 50), strategy, 1.0, rng)
        ident = identify_host(hits, a)
        assert set(ident.best) <= {3, 50} and ident.best


def test_no_hits_names_no_one():
    a = assign(SECRET, 8, 32, 0.25)
    ident = identify_host(np.zeros(32, bool), a)
    assert ident.best == () and (ident.p_values == 1).all() and (ident.adjusted == 1).all()


def test_simulation_catch_rate():
    res = simulate_collusion(SECRET, 32, 256, 2, default_p(2), persistence=0.9, strategy="unanimous", trials=10)
    assert res["catch_rate"] >= 0.9 and res["mean_fp_per_copy"] == pytest.approx(64, rel=0.2)


@pytest.mark.parametrize("args,err", [((SECRET, 0, 10, 0.2), ConfigError), ((SECRET, 4, 10, 1.0), ConfigError),
                                      ((b"", 4, 10, 0.2), ConfigError)])
def test_bad_assign_arguments(args, err):
    with pytest.raises(err):
        assign(*args)


def test_bad_hits():
    a = assign(SECRET, 4, 10, 0.3)
    with pytest.raises(DataError, match="one entry per pool"):
        identify_host(np.zeros(9, bool), a)
    with pytest.raises(DataError, match="0/1"):
        identify_host(np.full(10, 2), a)
    with pytest.raises(ConfigError, match="strategy"):
        coalition_hits(a, (0, 1), "bribe", 1.0, np.random.default_rng(0))


# --- issue 18 §1: exact hypergeometric p-values, Holm across the copies ------------------------------------
def _pool(hit_ids, subset, pool=100):
    a = np.zeros((pool, 2), bool)
    a[subset, 0] = True
    a[50:70, 1] = True
    h = np.zeros(pool, bool)
    h[list(hit_ids)] = True
    return h, a


def test_the_issue_figures():
    """One stray hit in a 17-key subset of a 100-key pool: p = 17/100 (the plug-in rate gave 0); 20 hits with 6 in
    the subset: 0.085 (the plug-in binomial gave 0.053)."""
    h, a = _pool([3], list(range(17)))
    ident = identify_host(h, a)
    assert ident.p_values[0] == pytest.approx(0.17, abs=1e-12) and ident.best == ()
    h, a = _pool(list(range(6)) + list(range(20, 34)), list(range(17)))
    assert identify_host(h, a).p_values[0] == pytest.approx(0.0855, abs=5e-4)


def test_holm_adjustment():
    from trustlab.fingerprint.collusion import holm

    assert np.allclose(holm([0.01, 0.04, 0.03, 0.5]), [0.04, 0.09, 0.09, 0.5])
    assert np.allclose(holm([0.9, 0.9]), [1.0, 1.0])


@pytest.fixture(scope="module")
def thousand():
    return assign(SECRET, 1000, 200, default_p(3))  # 1000 copies: the case the issue names


def test_a_single_stray_hit_never_names_a_host(thousand):
    a = thousand
    for f in range(0, 200, 7):
        h = np.zeros(200, bool)
        h[f] = True
        ident = identify_host(h, a)
        assert ident.best == () and ident.accused == () and ident.adjusted.min() >= ident.p_values.min()


def test_innocent_copies_are_calibrated_under_the_null():
    """Hosts whose hits ignore the assignment (H0 for every copy): raw p-values are super-uniform and the
    Holm-adjusted family-wise error stays at alpha within a binomial tolerance (400 pools of 120 copies)."""
    rng = np.random.default_rng(7)
    trials, copies, pool, alpha = 400, 120, 150, 0.05
    raw = []
    wrong = 0
    for _ in range(trials):
        a = rng.random((pool, copies)) < 1 / 6
        hits = rng.random(pool) < rng.uniform(0.02, 0.3)
        ident = identify_host(hits, a, alpha=alpha)
        raw.append(ident.p_values)
        wrong += bool(ident.accused)
    raw = np.concatenate(raw)
    tol = 3 * np.sqrt(alpha * (1 - alpha) / trials)
    assert wrong / trials <= alpha + tol
    for t in (0.01, 0.05, 0.2):
        assert (raw <= t).mean() <= t + 3 * np.sqrt(t * (1 - t) / raw.size)


def test_a_planted_copy_is_still_found_among_many(thousand):
    a = thousand
    rng = np.random.default_rng(3)
    found = 0
    for planted in rng.choice(1000, size=10, replace=False):
        hits = (a[:, planted] & (rng.random(200) < 0.7)) | (rng.random(200) < 0.02)  # 70 % survive, plus noise
        found += identify_host(hits, a).best == (int(planted),)
    assert found >= 9
