"""Randomized Clopper-Pearson lower bound (Voráček 2024, arXiv:2406.17830): exact 1 - alpha coverage for fixed N.

With k successes in n draws and an independent U ~ Uniform(0, 1), the randomized p-value of H0: "mean = p",

    pi(p) = P_p(X > k) + U * P_p(X = k) = (1 - U) * I_p(k + 1, n - k) + U * I_p(k, n - k + 1),

is exactly Uniform(0, 1) at the true p and increasing in p, so L = inf{p : pi(p) > alpha} satisfies
P(L > p) = alpha exactly (Clopper-Pearson is U = 1, so L >= the CP bound always: certificates are never weaker).
Edge cases: k = 0 and U > alpha gives L = 0; k = n gives L = (alpha / U)^(1/n), and L = 1 when U <= alpha (an event
of probability alpha; callers turning L into a radius should cap it). ``u`` must come from a seeded generator that
is independent of the draws.
"""

from __future__ import annotations

import numpy as np

BISECT_STEPS = 60


def _pvalue(p, k, n, u):
    from scipy.special import betainc

    with np.errstate(invalid="ignore", divide="ignore"):
        above = np.where(k < n, betainc(np.minimum(k + 1, n), np.maximum(n - k, 1), p), 0.0)  # P(X > k)
        at_least = np.where(k > 0, betainc(np.maximum(k, 1), n - k + 1, p), 1.0)  # P(X >= k)
    return (1 - u) * above + u * at_least


def randomized_cp_lower(k, n, alpha: float, u):
    """Lower (1 - alpha) randomized Clopper-Pearson bound on p from ``k`` of ``n`` and uniform ``u`` (vectorised)."""
    from trustlab.runtime import ConfigError, require_range

    require_range("alpha", alpha, 0.0, 1.0, lo_open=True, hi_open=True)
    k = np.asarray(k, dtype=float)
    n = np.broadcast_to(np.asarray(n, dtype=float), k.shape)
    u = np.broadcast_to(np.asarray(u, dtype=float), k.shape)
    if (n < 1).any() or (k < 0).any() or (k > n).any() or (k != np.round(k)).any():
        raise ConfigError("randomized_cp_lower needs integers 0 <= k <= n with n >= 1", hint="check k and n")
    if ((u < 0) | (u > 1)).any() or not np.isfinite(u).all():
        raise ConfigError("randomized_cp_lower needs u in [0, 1]", hint="draw u from a Uniform(0, 1) generator")
    lo, hi = np.zeros(k.shape), np.ones(k.shape)
    for _ in range(BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        above = _pvalue(mid, k, n, u) > alpha
        hi, lo = np.where(above, mid, hi), np.where(above, lo, mid)
    out = np.where(_pvalue(0.0, k, n, u) > alpha, 0.0, np.where(_pvalue(1.0, k, n, u) <= alpha, 1.0, lo))
    return float(out) if out.ndim == 0 else out
