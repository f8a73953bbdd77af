import warnings

import numpy as np
import pytest
from scipy.stats import beta, binomtest

from trustlab.certify.stats import (CertifyWarning, binom_pvalue, budget, cp_lower, max_radius, min_n_certify,
                                    min_n_predict)


@pytest.mark.parametrize("k,n,alpha", [(1, 10, 0.001), (7, 10, 0.05), (500, 1000, 0.001), (990, 1000, 0.001),
                                       (99_000, 100_000, 0.001), (3, 3, 0.1)])
def test_cp_lower_equals_beta_and_binomtest_forms(k, n, alpha):
    ours = cp_lower(k, n, alpha)
    assert ours == pytest.approx(beta.ppf(alpha, k, n - k + 1), abs=1e-12)
    assert ours == pytest.approx(binomtest(k, n, alternative="greater").proportion_ci(1 - alpha, "exact").low,
                                 abs=1e-12)


def test_cp_lower_edge_cases_and_vectorised():
    assert cp_lower(0, 100, 0.001) == 0.0
    assert cp_lower(100, 100, 0.001) == pytest.approx(0.001 ** (1 / 100), abs=1e-12)
    v = cp_lower(np.array([0, 5, 10]), 10, 0.05)
    assert v.shape == (3,) and v[0] == 0 and v[2] == pytest.approx(0.05 ** 0.1)


def test_hand_computed_abstain_decisions():
    # N = 10 draws all agreeing: p_lower = 0.001^(1/10) = 0.50119 >= 1/2 -> certify with radius sigma*Phi^-1(.50119)
    assert cp_lower(10, 10, 0.001) == pytest.approx(0.501187, abs=1e-6)
    assert max_radius(10, 0.001, 1.0) == pytest.approx(0.002975, abs=1e-5)
    # N = 9 all agreeing: 0.001^(1/9) = 0.4642 < 1/2 -> abstain (radius 0)
    assert cp_lower(9, 9, 0.001) < 0.5 and max_radius(9, 0.001, 1.0) == 0.0
    # two-sided binomial p-value of 11 vs 0: 2 * 0.5^11 = 0.000977 <= 0.001 -> PREDICT answers
    assert binom_pvalue(11, 11) == pytest.approx(2 * 0.5 ** 11)
    assert binom_pvalue(10, 10) > 0.001


def test_minima_and_radius_table():
    assert min_n_certify(0.001) == 10 and min_n_predict(0.001) == 11
    table = {10: 0.003, 100: 1.50, 1000: 2.46, 10_000: 3.20, 100_000: 3.81}
    for n, r in table.items():
        assert round(max_radius(n, 0.001, 1.0), 2 if n > 10 else 3) == pytest.approx(r, abs=1e-9)
    assert max_radius(1000, 0.001, 0.25) == pytest.approx(0.25 * max_radius(1000, 0.001, 1.0))


def test_budget_warns_when_n_too_small():
    with pytest.warns(CertifyWarning, match="never certify"):
        info = budget(5, 0.001, 0.25)
    assert info["n_too_small"] and info["n_min"] == 10
    with pytest.warns(CertifyWarning, match="exceed"):
        info = budget(1000, 0.001, 0.25, radii=(0.5, 1.0))
    assert info["radii_unreachable"] == [1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not budget(1000, 0.001, 0.25, radii=(0.5,))["n_too_small"]


def test_binom_pvalue_vectorised_equals_scipy_binomtest():
    from scipy.stats import binomtest

    ks, ns = zip(*[(k, n) for n in (1, 2, 3, 10, 11, 57, 1000, 1001) for k in range(0, n + 1, max(1, n // 50))])
    got = binom_pvalue(np.array(ks), np.array(ns))
    want = np.array([binomtest(k, n, 0.5).pvalue for k, n in zip(ks, ns)])
    assert np.allclose(got, want, rtol=1e-12, atol=0)
    assert binom_pvalue(0, 0) == 1.0


@pytest.mark.parametrize("p,n,cp_gap", [(0.9, 100, True), (0.6, 1000, False)])
def test_randomized_cp_bound_of_the_fixed_n_path_has_exact_coverage(p, n, cp_gap):
    """Bernoulli oracle: k ~ Bin(n, p), u = the fixed-N path's per-input uniform; the randomized bound exceeds the
    true p with probability alpha (exact, within 4 SE) and is never below CP, whose rate is <= alpha (well below at
    small n, where its discreteness shows)."""
    from trustlab.certify.smoothing import p_lower_bound

    alpha, reps = 0.05, 20_000
    k = np.random.default_rng(1).binomial(n, p, reps)
    low = p_lower_bound(k, n, alpha, "randomized-cp", run_seed=7, idx=range(reps))
    cp = p_lower_bound(k, n, alpha, "clopper-pearson", run_seed=7, idx=range(reps))
    se = np.sqrt(alpha * (1 - alpha) / reps)
    assert abs(np.mean(low > p) - alpha) <= 4 * se
    assert np.mean(cp > p) <= alpha + 4 * se
    if cp_gap:
        assert np.mean(cp > p) < alpha - 4 * se
    assert (low >= cp - 1e-12).all()
    # the uniforms are a deterministic function of (run seed, idx), and differ across seeds
    again = p_lower_bound(k[:50], n, alpha, "randomized-cp", run_seed=7, idx=range(50))
    other = p_lower_bound(k[:50], n, alpha, "randomized-cp", run_seed=8, idx=range(50))
    assert (again == low[:50]).all() and (other != low[:50]).any()
