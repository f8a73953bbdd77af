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
    assert ident.best == (planted,)
    assert ident.p_values[planted] < 1e-6
    others = np.delete(ident.p_values, planted)
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
    assert ident.best == () and (ident.p_values == 1).all()


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
