"""Sample-budget statistics for randomized smoothing (Clopper-Pearson, binomial tests)."""

from __future__ import annotations

import math
import warnings

import numpy as np


class CertifyWarning(UserWarning):
    """A smoothing budget that can never certify (N too small at alpha) or a radius above the reachable maximum."""


def cp_lower(k, n, alpha: float):
    """One-sided (1-alpha) Clopper-Pearson lower bound on p from k successes in n: Beta.ppf(alpha, k, n-k+1), 0 at k=0.

    Equals ``binomtest(k, n, alternative='greater').proportion_ci(1-alpha, 'exact').low``; vectorised over k."""
    from scipy.special import betaincinv  # Beta.ppf's own routine, without scipy.stats' per-call overhead

    k = np.asarray(k, dtype=float)
    n = np.broadcast_to(np.asarray(n, dtype=float), k.shape)
    safe_k = np.where(k > 0, k, 1.0)
    out = np.where(k > 0, betaincinv(safe_k, n - k + 1, alpha), 0.0)
    return float(out) if out.ndim == 0 else out


def cp_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided exact (Clopper-Pearson) interval for a rate, for reporting abstain rates."""
    from scipy.stats import binomtest

    if n == 0:
        return (0.0, 1.0)
    ci = binomtest(int(k), int(n)).proportion_ci(level, method="exact")
    return (float(ci.low), float(ci.high))


def binom_pvalue(k, n):
    """Two-sided binomial test p-value of k successes in n against p = 1/2 (PREDICT abstains if > alpha):
    min(1, 2 * P(X <= min(k, n - k))), X ~ Bin(n, 1/2) (the symmetric case of scipy's ``binomtest``; 1 at n = 0).
    Vectorised over k and n."""
    from scipy.stats import binom

    k = np.asarray(k, dtype=float)
    n = np.broadcast_to(np.asarray(n, dtype=float), k.shape)
    out = np.where(n > 0, np.minimum(1.0, 2.0 * binom.cdf(np.minimum(k, n - k), np.maximum(n, 1), 0.5)), 1.0)
    return float(out) if out.ndim == 0 else out


def min_n_certify(alpha: float) -> int:
    """Smallest N with alpha^(1/N) >= 1/2: below it CERTIFY abstains even when all N draws agree."""
    return int(math.ceil(math.log(alpha) / math.log(0.5) - 1e-12))


def min_n_predict(alpha: float) -> int:
    """Smallest n with 2 * (1/2)^n <= alpha: below it PREDICT abstains even on n agreeing draws."""
    return int(math.ceil(math.log2(2.0 / alpha) - 1e-12))


def max_radius(n: int, alpha: float, sigma: float) -> float:
    """Largest certifiable radius sigma * Phi^-1(alpha^(1/N)) (all N draws agree); 0 if N is below the minimum."""
    from scipy.stats import norm

    p = alpha ** (1.0 / n)
    return float(sigma * norm.ppf(p)) if p >= 0.5 else 0.0


def budget(n: int, alpha: float, sigma: float, n_predict: int | None = None, radii=()) -> dict:
    """JSON flags for a smoothing budget; warns (CertifyWarning) when N/n is too small or a radius is unreachable."""
    info = {"n_min": min_n_certify(alpha), "n_predict_min": min_n_predict(alpha),
            "max_radius": max_radius(n, alpha, sigma), "n_too_small": n < min_n_certify(alpha),
            "predict_n_too_small": n_predict is not None and n_predict < min_n_predict(alpha)}
    info["radii_unreachable"] = [r for r in radii if r > info["max_radius"]]
    if info["n_too_small"]:
        warnings.warn(f"N={n} < {info['n_min']}: CERTIFY can never certify at alpha={alpha}", CertifyWarning,
                      stacklevel=2)
    if info["predict_n_too_small"]:
        warnings.warn(f"n={n_predict} < {info['n_predict_min']}: PREDICT always abstains at alpha={alpha}",
                      CertifyWarning, stacklevel=2)
    if info["radii_unreachable"]:
        warnings.warn(f"radii {info['radii_unreachable']} exceed the max certifiable radius {info['max_radius']:.3f} "
                      f"at N={n}, alpha={alpha}, sigma={sigma}", CertifyWarning, stacklevel=2)
    return info
