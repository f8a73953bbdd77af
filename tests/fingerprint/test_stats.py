"""Ownership-test statistics: the golden values of spec section 9 and the edge cases around them."""

import math

import pytest
from scipy.stats import binomtest

from trustlab.fingerprint.stats import (binom_tail, hoeffding_bound, log10_binom_tail, min_matches,
                                        ownership_test)
from trustlab.runtime.errors import ConfigError

P0 = 1 / 3  # k = 3


@pytest.mark.parametrize("M,m,exact,hoeff", [(5, 5, 4.12e-3, 1.17e-2), (10, 10, 1.69e-5, 1.38e-4),
                                             (10, 8, 3.40e-3, 1.28e-2)])
def test_golden_values(M, m, exact, hoeff):
    assert binom_tail(m, M, P0) == pytest.approx(exact, rel=5e-3)
    assert hoeffding_bound(m, M, P0) == pytest.approx(hoeff, rel=5e-3)
    # the bound is never tighter than the exact tail
    assert binom_tail(m, M, P0) <= hoeffding_bound(m, M, P0)


@pytest.mark.parametrize("M,m_min", [(10, 9), (20, 14), (64, 34)])
def test_smallest_m_at_alpha(M, m_min):
    assert min_matches(M, P0, 1e-3) == m_min
    assert binom_tail(m_min, M, P0) <= 1e-3 < binom_tail(m_min - 1, M, P0)
    assert ownership_test(m_min, M, P0).owned and not ownership_test(m_min - 1, M, P0).owned


def test_matches_scipy_binomtest_and_edges():
    for M, m in [(7, 3), (32, 31), (64, 20)]:
        assert binom_tail(m, M, P0) == pytest.approx(binomtest(m, M, P0, alternative="greater").pvalue, rel=1e-9)
    assert binom_tail(0, 10, P0) == 1.0
    assert hoeffding_bound(2, 10, P0) == 1.0  # at or below the null rate the bound says nothing
    assert min_matches(2, 0.5, 1e-3) is None  # two keys can never reach alpha at p0 = 1/2


def test_log_fallback_where_the_tail_underflows():
    M = 5000
    assert binom_tail(M, M, P0) == 0.0 or binom_tail(M, M, P0) < 1e-300
    assert log10_binom_tail(M, M, P0) == pytest.approx(M * math.log10(P0), rel=1e-9)
    d = ownership_test(M, M, P0)
    assert d.owned and "p=1e-2386" in d.line
    assert log10_binom_tail(40, 64, P0) == pytest.approx(math.log10(binom_tail(40, 64, P0)), rel=1e-9)


def test_verdict_line_and_caveat():
    d = ownership_test(31, 32, P0)
    assert d.line == "OWNED 31/32 matched p=3.5e-14 (binomial, p0=1/3) Hoeffding<=6e-12 alpha=0.001"
    assert "2509.26598" in d.caveat and d.to_dict()["decision"] == "OWNED"
    assert ownership_test(0, 32, P0).decision == "not owned"


@pytest.mark.parametrize("args", [(3, 2, P0), (-1, 5, P0), (1, 0, P0), (1, 5, 0.0), (1, 5, 1.0), (1.5, 5, P0),
                                  (1, 5, float("nan"))])
def test_bad_arguments_name_the_value(args):
    with pytest.raises(ConfigError) as exc:
        binom_tail(*args)
    assert exc.value.hint


def test_bad_alpha():
    with pytest.raises(ConfigError, match="alpha"):
        ownership_test(3, 5, P0, alpha=1.5)


# --- issue 18 §1: per-key nulls, the exact Poisson-binomial tail -------------------------------------------
def _brute_tail(m, ps):
    import itertools

    total = 0.0
    for bits in itertools.product((0, 1), repeat=len(ps)):
        if sum(bits) >= m:
            prob = 1.0
            for b, p in zip(bits, ps):
                prob *= p if b else 1 - p
            total += prob
    return total


def test_poisson_binomial_tail_is_exact():
    from trustlab.fingerprint.stats import log10_poisson_binomial_tail, poisson_binomial_tail

    ps = [0.1, 1 / 3, 1 / 3, 2 / 3, 0.05, 0.5, 1 / 3, 0.2, 0.9, 0.01]
    for m in range(0, 12):
        assert poisson_binomial_tail(m, ps) == pytest.approx(_brute_tail(m, ps), rel=1e-9, abs=1e-300)
    for M, m in [(7, 3), (32, 31), (64, 20)]:  # one rate: the binomial
        assert poisson_binomial_tail(m, [P0] * M) == pytest.approx(binom_tail(m, M, P0), rel=1e-9)
    # far tails stay finite in log10: 3000 keys at 1/3 and 2000 at 2/3, every one hit
    assert log10_poisson_binomial_tail(5000, [P0] * 3000 + [2 * P0] * 2000) == pytest.approx(
        3000 * math.log10(P0) + 2000 * math.log10(2 * P0), rel=1e-9)


def test_keys_test_verdicts_and_inconclusive():
    from trustlab.fingerprint.stats import ownership_test_keys

    d = ownership_test_keys(10, [P0] * 8 + [2 * P0] * 4)
    assert d.p_value == pytest.approx(_brute_tail(10, [P0] * 8 + [2 * P0] * 4), rel=1e-9)
    assert "Poisson-binomial, p0=1/3..0.667" in d.line and d.p0 == pytest.approx(2 * P0)
    assert ownership_test_keys(31, [P0] * 32).line == ownership_test(31, 32, P0).line
    # five keys at 1/3 can never reach 1e-3 (0.0041 at 5/5): the verdict says so instead of "not owned"
    d = ownership_test_keys(5, [P0] * 5)
    assert d.decision == "INCONCLUSIVE" and not d.owned and "insufficient evidence" in d.line
    assert ownership_test_keys(2, [P0] * 40).decision == "not owned"
    with pytest.raises(ConfigError, match="p0_i"):
        ownership_test_keys(1, [0.5, 1.0])


def test_key_nulls_on_generated_fingerprints(tiny_fps, fp_tiny):
    """fp-tiny's own candidates: token ids keep 1/k; text rules count the candidates one output can match."""
    import numpy as np

    from trustlab.fingerprint.matching import joint_matches
    from trustlab.fingerprint.stats import candidate_texts, key_nulls

    k = tiny_fps.params["nucleus_k"]
    assert np.allclose(key_nulls(tiny_fps, "token"), 1 / k)
    texts = candidate_texts(tiny_fps, fp_tiny[1])
    for rule in ("exact", "lenient"):
        got = key_nulls(tiny_fps, rule, fp_tiny[1])
        want = [joint_matches(t, rule, whole_word=tiny_fps.response_length == 1) / k for t in texts]
        assert np.allclose(got, want) and (got >= 1 / k).all()
    # without a tokenizer the file's one is loaded offline (fp-tiny's cache folder)
    assert np.allclose(key_nulls(tiny_fps, "exact"), key_nulls(tiny_fps, "exact", fp_tiny[1]))
