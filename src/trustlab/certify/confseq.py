"""Time-uniform confidence sequence for a Bernoulli mean: Robbins' beta-binomial mixture martingale.

After t draws with S successes, for every candidate mean p the mixture likelihood ratio

    M_t(p) = B(a + S, b + t - S) / B(a, b)  /  ( p^S (1 - p)^(t - S) )

(a Beta(a, b) mixture over alternatives theta, divided by the likelihood at p) is a non-negative martingale with
M_0 = 1 when the draws are i.i.d. Bernoulli(p). Ville's inequality gives P(exists t: M_t(p) >= 1/alpha) <= alpha, so

    C_t = { p : M_t(p) < 1/alpha }

holds the true p at *every* t simultaneously with probability >= 1 - alpha: it may be checked after every draw or
batch and stopped at any data-dependent time. log M_t is convex in p (the log-likelihood is concave), so C_t is an
interval (L_t, U_t) around S / t; running max / min of the bounds keep the same guarantee. Batching is free: M_t
depends on the draws only through (t, S), and looking at batch ends only is a subsequence of every time.
The prior Beta(a, b) may depend on anything observed before the first draw (never on the draws themselves).
"""

from __future__ import annotations

import numpy as np

BISECT_STEPS = 60  # interval width 2^-60 of [0, 1]: below float64 resolution near the bounds


def _log_margin(p, s, t, log_mix_plus):
    """g(p) = log L_t(p) - log mixture + log(1/alpha); p is inside C_t iff g(p) > 0 (``log_mix_plus`` holds the
    last two terms)."""
    from scipy.special import xlog1py, xlogy

    with np.errstate(divide="ignore", invalid="ignore"):
        return xlogy(s, p) + xlog1py(t - s, -p) + log_mix_plus


def log_mixture_martingale(s, t, p, prior: tuple[float, float] = (0.5, 0.5)):
    """log M_t(p), vectorised; p is rejected (left out of C_t) once log M_t(p) >= log(1/alpha)."""
    from scipy.special import betaln, xlog1py, xlogy

    a, b = prior
    s, t, p = np.asarray(s, float), np.asarray(t, float), np.asarray(p, float)
    return betaln(a + s, b + t - s) - betaln(a, b) - xlogy(s, p) - xlog1py(t - s, -p)


def mixture_bounds(s, t, alpha: float, prior: tuple[float, float] = (0.5, 0.5)) -> tuple[np.ndarray, np.ndarray]:
    """(L_t, U_t): the ends of C_t = {p : M_t(p) < 1/alpha} for arrays of successes ``s`` out of ``t`` draws.

    Found by bisection on each side of S/t; L is rounded down and U up, so the reported interval contains C_t.
    t = 0 gives (0, 1)."""
    from scipy.special import betaln

    a, b = prior
    s = np.asarray(s, dtype=float)
    t = np.broadcast_to(np.asarray(t, dtype=float), s.shape)
    empty = t <= 0
    t_safe = np.where(empty, 1.0, t)
    s_safe = np.where(empty, 0.0, s)
    const = -(betaln(a + s_safe, b + t_safe - s_safe) - betaln(a, b)) + np.log(1.0 / alpha)
    phat = s_safe / t_safe
    # lower end: g(0) = -inf unless S = 0; g(phat) > 0 always (the mixture never beats the maximum likelihood)
    lo, hi = np.zeros_like(phat), phat.copy()
    for _ in range(BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        inside = _log_margin(mid, s_safe, t_safe, const) > 0
        hi, lo = np.where(inside, mid, hi), np.where(inside, lo, mid)
    lower = np.where(_log_margin(0.0, s_safe, t_safe, const) > 0, 0.0, lo)
    lo, hi = phat.copy(), np.ones_like(phat)
    for _ in range(BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        inside = _log_margin(mid, s_safe, t_safe, const) > 0
        lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
    upper = np.where(_log_margin(1.0, s_safe, t_safe, const) > 0, 1.0, hi)
    return np.where(empty, 0.0, lower), np.where(empty, 1.0, upper)
