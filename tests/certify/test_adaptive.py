"""Adaptive certification (issue 11 item 2): the 1 - alpha guarantee on a Bernoulli oracle, stopping rules, budget
cap, determinism, agreement with fixed-N CERTIFY; the randomized Clopper-Pearson bound's exact coverage."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import beta as beta_dist
from scipy.stats import binom, norm

from trustlab.certify import ABSTAIN
from trustlab.certify.adaptive import (STOPS, AdaptiveConfig, AdaptiveSmoothedClassifier, batch_sizes,
                                       certify_adaptive, certify_inputs_adaptive, certify_model_batch, cost_summary,
                                       decide, summarise_radii, threshold)
from trustlab.certify.config import SmoothingConfig
from trustlab.certify.confseq import log_mixture_martingale, mixture_bounds
from trustlab.certify.randomized_cp import randomized_cp_lower
from trustlab.certify.stats import cp_lower
from trustlab.runtime import ConfigError, DataError, ModelError

SIGMA, ALPHA, REPS = 0.25, 0.01, 2000


def oracle(p: float, K: int, seed: int):
    """Base classifier with known class probabilities (p, (1-p)/(K-1), ...): counts are multinomial draws."""
    rng = np.random.default_rng(seed)
    pv = np.array([p] + [(1 - p) / (K - 1)] * (K - 1))
    return (lambda role, rows, start, count: rng.multinomial(count, pv, size=len(rows))), pv


def per_look_cp(s, t, alpha, prior):
    """Clopper-Pearson at every look: valid for one fixed N, not under optional stopping."""
    s, t = np.asarray(s, float), np.asarray(t, float)
    lo = np.where(s > 0, beta_dist.ppf(alpha, np.maximum(s, 1), t - s + 1), 0.0)
    hi = np.where(s < t, beta_dist.ppf(1 - alpha, s + 1, np.maximum(t - s, 1)), 1.0)
    return lo, hi


def wrong_decisions(r: float, p: float, seed: int, bounds=None):
    tau = threshold(r, SIGMA)
    draw, pv = oracle(p, 3, seed)
    out = decide(draw, REPS, tau=tau, alpha=ALPHA, n0=100, sizes=batch_sizes(50_000, 100, 2.0), bounds=bounds)
    p_sel = pv[out["selected"]]
    cert, abst = out["stop"] == STOPS.index("certify"), out["stop"] == STOPS.index("abstain")
    wrong = (cert & (p_sel <= tau)) | (abst & (p_sel > tau))
    return int(wrong.sum()), out, p_sel


TOLERANCE = int(binom.ppf(0.999, REPS, ALPHA))  # wrong-decision count a procedure with error rate alpha stays under


@pytest.mark.parametrize("r", [0.0, 0.5])
@pytest.mark.parametrize("offset", [-0.01, -0.002, 0.0, 0.002, 0.01])
def test_guarantee_on_bernoulli_oracle(r, offset):
    """>= 2000 repetitions at alpha = 0.01, p_A on both sides of and at tau = Phi(r/sigma): wrong decisions (certify
    with p_c <= tau, abstain-by-upper-bound with p_c > tau) <= alpha within a binomial tolerance; the bounds at the
    stop cover p_c just as often."""
    tau = threshold(r, SIGMA)
    wrong, out, p_sel = wrong_decisions(r, tau + offset, seed=int(1000 * r + 100 * offset + 7))
    assert wrong <= TOLERANCE
    missed = (out["p_lower"] > p_sel) | (out["p_upper"] < p_sel)
    assert missed.sum() <= TOLERANCE
    assert (out["n_used"] <= 50_000).all()


def test_guarantee_test_has_power_against_per_look_intervals():
    """The same check fails for Clopper-Pearson recomputed at every look (optional stopping inflates the error)."""
    for r in (0.0, 0.5):
        wrong, _, _ = wrong_decisions(r, threshold(r, SIGMA), seed=3, bounds=per_look_cp)
        assert wrong > TOLERANCE


def test_far_from_threshold_decides_early():
    """Certifies (abstains) nearly always, well before the budget, when p_A is far above (below) tau."""
    tau = threshold(0.5, SIGMA)
    _, up, _ = wrong_decisions(0.5, min(tau + 0.015, 0.999), seed=11)
    assert (up["stop"] == STOPS.index("certify")).mean() >= 0.99 and np.median(up["n_used"]) < 10_000
    _, down, _ = wrong_decisions(0.5, tau - 0.03, seed=12)
    assert (down["stop"] == STOPS.index("abstain")).mean() >= 0.99 and np.median(down["n_used"]) < 10_000


def test_mixture_bounds_are_the_ends_of_the_confidence_sequence():
    s, t = np.array([0, 3, 50, 99, 100]), np.array([100, 100, 100, 100, 100])
    lo, hi = mixture_bounds(s, t, 0.001)
    assert (lo <= s / t).all() and (hi >= s / t).all()
    for k in (1, 2, 3):  # interior ends: M_t = 1/alpha there
        assert log_mixture_martingale(s[k], t[k], lo[k]) == pytest.approx(np.log(1000), abs=1e-6)
        assert log_mixture_martingale(s[k], t[k], hi[k]) == pytest.approx(np.log(1000), abs=1e-6)
    assert lo[0] == 0.0 and hi[-1] == 1.0
    assert (lo[1:] <= cp_lower(s[1:], 100, 0.001) + 1e-12).all()  # time-uniform costs width vs pointwise CP
    assert mixture_bounds(np.array([0]), np.array([0]), 0.01) == (0.0, 1.0)


def test_batch_sizes_geometric_and_capped():
    assert batch_sizes(1000, 100, 2.0) == [100, 200, 400, 300]
    assert batch_sizes(50, 100, 2.0) == [50]
    assert sum(batch_sizes(100_000, 64, 1.5)) == 100_000
    assert batch_sizes(300, 100, 1.0) == [100, 100, 100]
    with pytest.raises(ConfigError, match="growth"):
        batch_sizes(100, 10, 0.5)


def counts_fn(fraction: float, K: int = 2):
    """Deterministic counts: a fixed share of every batch votes class 0."""
    def fn(role, start, count):
        a = int(round(fraction * count))
        return np.array([a, count - a] + [0] * (K - 2))
    return fn


def test_stop_certify_at_first_batch_with_radius():
    c = certify_adaptive(counts_fn(1.0), sigma=SIGMA, radius=0.5, alpha=0.001, n0=100, n_max=10_000, first=1000)
    lo, hi = mixture_bounds(np.array([1000]), np.array([1000]), 0.001)
    assert (c.stop, c.pred, c.n_used, c.samples, c.n_a) == ("certify", 0, 1000, 1100, 1000)
    assert c.p_lower == pytest.approx(lo[0]) and c.radius == pytest.approx(SIGMA * norm.ppf(lo[0]))
    assert c.radius > 0.5


def test_stop_abstain_as_soon_as_upper_bound_below_threshold():
    tau = threshold(0.5, SIGMA)
    c = certify_adaptive(counts_fn(0.9), sigma=SIGMA, radius=0.5, alpha=0.001, n0=100, n_max=100_000, first=10,
                         growth=2.0)
    assert (c.stop, c.pred, c.radius) == ("abstain", ABSTAIN, 0.0) and c.p_upper < tau
    ends = np.cumsum(batch_sizes(100_000, 10, 2.0))
    first_stop = next(t for t in ends if mixture_bounds(np.array([round(0.9 * t)]), np.array([t]), 0.001)[1] < tau)
    assert c.n_used == first_stop  # not one batch later


def test_budget_cap_abstains_and_says_so():
    c = certify_adaptive(counts_fn(0.5), sigma=SIGMA, radius=0.0, alpha=0.001, n0=100, n_max=5000, first=100)
    assert (c.stop, c.pred, c.radius, c.n_used, c.samples) == ("budget", ABSTAIN, 0.0, 5000, 5100)
    assert c.p_lower < 0.5 < c.p_upper
    # the selection winner is kept even when it loses the estimation: class 1 wins all selection draws here
    c = certify_adaptive(lambda role, s, n: np.array([0, n]) if role == "select" else np.array([n, 0]),
                         sigma=SIGMA, radius=0.0, alpha=0.001, n0=100, n_max=2000)
    assert (c.selected, c.stop, c.n_a) == (1, "abstain", 0)


def test_unreachable_radius_warns():
    from trustlab.certify.adaptive import max_radius
    from trustlab.certify.stats import CertifyWarning

    top = max_radius(1000, 0.001, SIGMA)
    assert 0 < top < SIGMA * norm.ppf(0.001 ** (1 / 1000))  # below fixed-N's maximum at the same N
    with pytest.warns(CertifyWarning, match="unreachable"):
        c = certify_adaptive(counts_fn(1.0), sigma=SIGMA, radius=top + 0.01, alpha=0.001, n_max=1000)
    assert (c.stop, c.n_used) == ("budget", 1000)
    c = certify_adaptive(counts_fn(1.0), sigma=SIGMA, radius=top - 0.01, alpha=0.001, n_max=1000)
    assert c.stop == "certify" and c.radius >= top - 0.01


def test_bad_arguments():
    with pytest.raises(ConfigError, match="radius"):
        certify_adaptive(counts_fn(1.0), sigma=SIGMA, radius=-0.1, alpha=0.01)
    with pytest.raises(ConfigError, match="alpha"):
        certify_adaptive(counts_fn(1.0), sigma=SIGMA, radius=0.1, alpha=1.5)
    with pytest.raises(ModelError, match="counts function"):
        certify_adaptive(lambda role, s, n: np.array([1, 1]), sigma=SIGMA, radius=0.1, alpha=0.01)
    with pytest.raises(ConfigError, match="adaptive.n_max"):
        AdaptiveConfig(n_max=0)
    with pytest.raises(ConfigError, match="adaptive.growth"):
        AdaptiveConfig(growth=0.9)


# --- nn.Module base models ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def linear():
    import torch

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x = np.random.default_rng(0).uniform(0, 1, (40, 1, 2, 2)).astype(np.float32)
    return m, x


def test_agrees_with_fixed_n_certify(linear):
    """Linear classifier, paired noise: the adaptive decision at r equals fixed-N CERTIFY's (radius >= r) wherever
    the adaptive certifier decided (not budget); and the estimation draws are a prefix of fixed-N's stream."""
    from trustlab.certify.smoothing import certify_batch, count_classes

    m, x = linear
    idx, n = list(range(len(x))), 10_000
    fixed = certify_batch(m, x, idx, n0=100, n=n, alpha=0.001, sigma=0.5, K=3, run_seed=5, batch=1000)
    for r in (0.0, 0.25):
        ad = certify_model_batch(m, x, idx, sigma=0.5, radius=r, alpha=0.001, n0=100, n_max=n, K=3, run_seed=5)
        decided = [(a, f) for a, f in zip(ad, fixed) if a.stop != "budget"]
        assert len(decided) >= 0.8 * len(x)
        agree = [(a.pred != ABSTAIN) == (f.pred != ABSTAIN and f.radius >= r) for a, f in decided]
        assert np.mean(agree) >= 0.95
        assert all(a.pred == f.pred for a, f in decided if a.pred != ABSTAIN and f.pred != ABSTAIN)
        assert np.mean([a.samples for a in ad]) < 100 + n / 2
    # estimation draws cut in any batches are fixed-N's stream: prefix counts match count_classes
    from trustlab.certify.adaptive import _ModelDraw

    draw = _ModelDraw(m, x[:3], idx[:3], sigma=0.5, K=3, run_seed=5, batch=77, n_max=n)
    rows = np.arange(3)
    pieces = draw("estimate", rows, 0, 130) + draw("estimate", rows, 130, 370) + draw("estimate", rows, 500, 500)
    ref = count_classes(m, x[:3], idx[:3], 1000, "estimate", sigma=0.5, K=3, run_seed=5, batch=1000)
    assert (pieces == ref).all()
    assert (draw("select", rows, 0, 100) == count_classes(m, x[:3], idx[:3], 100, "select", sigma=0.5, K=3,
                                                          run_seed=5, batch=1000)).all()


def test_determinism_batch_grouping_and_seed(linear):
    m, x = linear
    kw = dict(sigma=0.5, radius=0.25, alpha=0.001, n0=100, n_max=5000, K=3, run_seed=1)
    a = certify_model_batch(m, x[:12], list(range(12)), batch=1000, **kw)
    b = certify_model_batch(m, x[:12], list(range(12)), batch=7, **kw)
    c = [certify_model_batch(m, x[i:i + 1], [i], batch=1000, **kw)[0] for i in range(11, -1, -1)][::-1]
    assert a == b == c
    kw["run_seed"] = 2
    d = certify_model_batch(m, x[:12], list(range(12)), batch=1000, **kw)
    assert [r.n_a for r in d] != [r.n_a for r in a]


def test_wrapper_mirrors_smoothed_classifier(linear):
    m, x = linear
    m.train()
    g = AdaptiveSmoothedClassifier(m, K=3, sigma=0.5)
    one = g.certify(x[0], radius=0.1, n_max=4000, gen=3)
    assert one == g.certify(x[0], radius=0.1, n_max=4000, gen=3) and m.training
    assert one == certify_adaptive(m, x[0], sigma=0.5, radius=0.1, alpha=0.001, n_max=4000, gen=3, K=3)
    with pytest.raises(DataError):
        g.certify(np.full_like(x[0], np.nan), radius=0.1)
    with pytest.raises(ConfigError, match="K"):
        AdaptiveSmoothedClassifier(m, K=1, sigma=0.5)
    m.eval()


def test_certify_inputs_records_resume_and_cost(linear, tmp_path):
    m, x = linear
    cfg = AdaptiveConfig(sigma=0.5, radius=0.25, n_max=4000)
    path = tmp_path / "adaptive.jsonl"
    full = certify_inputs_adaptive(m, x[:10], cfg, seed=0, K=3, records=path, chunk=4)
    again = certify_inputs_adaptive(m, x[:10], cfg, seed=0, K=3, records=path, chunk=3)
    assert full == again and len(full) == 10 and {r["stop"] for r in full} <= set(STOPS)
    halves = [certify_inputs_adaptive(m, x[:10], cfg, seed=0, K=3, shard=(k, 2)) for k in (0, 1)]
    assert sorted(halves[0] + halves[1], key=lambda r: r["idx"]) == full
    cost = cost_summary(full)
    assert cost["n"] == 10 and 100 < cost["forwards_mean"] <= cost["forwards_max"] <= 4100
    assert cost["forwards_p95"] == pytest.approx(np.percentile([r["samples"] for r in full], 95))
    assert sum(cost["stops"].values()) == pytest.approx(1.0)
    wide = certify_inputs_adaptive(m, x[:10], AdaptiveConfig.from_smoothing(SmoothingConfig(sigma=0.5, n=4000), 0.0),
                                   seed=0, K=3, labels=np.zeros(10, int))
    summary = summarise_radii({0.0: wide})
    assert summary["certified_acc"]["0"] == np.mean([r["pred"] == 0 for r in wide])
    assert summary["abstain_rate"]["0"] == np.mean([r["pred"] == ABSTAIN for r in wide])
    with pytest.raises(ConfigError, match="other settings"):
        certify_inputs_adaptive(m, x[:10], AdaptiveConfig(sigma=0.5, radius=0.5, n_max=4000), seed=0, K=3,
                                records=path)


# --- randomized Clopper-Pearson ---------------------------------------------------------------------------------
@pytest.mark.parametrize("p,n,alpha", [(0.3, 20, 0.05), (0.9, 100, 0.05), (0.99, 200, 0.01), (0.5, 11, 0.05)])
def test_randomized_cp_exact_coverage_and_never_weaker(p, n, alpha):
    rng = np.random.default_rng(int(p * 1000) + n)
    reps = 20_000
    k, u = rng.binomial(n, p, reps), rng.uniform(size=reps)
    low = randomized_cp_lower(k, n, alpha, u)
    miss = int((low > p).sum())
    assert binom.ppf(0.0005, reps, alpha) <= miss <= binom.ppf(0.9995, reps, alpha)  # exactly alpha, not below
    assert (low >= cp_lower(k, n, alpha) - 1e-12).all()


def test_randomized_cp_edges():
    assert randomized_cp_lower(10, 10, 0.001, 1.0) == pytest.approx(0.001 ** 0.1)  # u = 1 is Clopper-Pearson
    assert randomized_cp_lower(10, 10, 0.001, 0.5) == pytest.approx(0.002 ** 0.1)
    assert randomized_cp_lower(0, 10, 0.001, 0.5) == 0.0
    assert randomized_cp_lower(7, 10, 0.01, 1.0) == pytest.approx(cp_lower(7, 10, 0.01))
    with pytest.raises(ConfigError):
        randomized_cp_lower(11, 10, 0.01, 0.5)
    with pytest.raises(ConfigError):
        randomized_cp_lower(3, 10, 0.01, 1.5)


def test_worst_case_budget_refused(linear):
    m, x = linear
    with pytest.raises(ConfigError, match="adaptive.n_max"):
        certify_inputs_adaptive(m, x, AdaptiveConfig(sigma=0.5, n_max=10**12, max_hours=0.001), seed=0, K=3)
