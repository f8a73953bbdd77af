"""The ownership test: a one-sided binomial test on fingerprint hits, with a Hoeffding bound beside it.

Under H0 (the suspect was not derived from the fingerprinted model) each of the M queried keys is matched
independently with probability at most p0 (1/k for perinucleus: a forger without the secret must guess which of
the k candidates the HMAC chose; paper Prop. 3.1). The p-value is the chance of at least m matches under H0:

    p = P[Bin(M, p0) >= m] = sum_{j >= m} C(M, j) p0^j (1 - p0)^(M - j)

and the distribution-free Hoeffding bound P[hits/M - p0 >= d] <= exp(-2 M d^2), d = m/M - p0 > 0, is printed
alongside. The verdict is ``OWNED`` iff p <= alpha.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from trustlab.runtime.errors import ConfigError

DEFAULT_ALPHA = 1e-3

ATTACK_CAVEAT = ("a host that controls decoding can suppress memorised answers: arXiv 2509.26598 reports 94-100 % "
                 "attack success at < 10 % utility loss on memorisation fingerprints, Perinucleus included; "
                 "'not owned' therefore does not prove the model is not a copy")


def _check(m: int, M: int, p0: float) -> None:
    if isinstance(M, bool) or not isinstance(M, int) or M < 1:
        raise ConfigError(f"M (fingerprints queried) must be an integer >= 1, got {M!r}",
                          hint="query at least one fingerprint")
    if isinstance(m, bool) or not isinstance(m, int) or not 0 <= m <= M:
        raise ConfigError(f"m (matches) must be an integer in [0, M={M}], got {m!r}", hint="count matches among M")
    if not isinstance(p0, (int, float)) or isinstance(p0, bool) or not 0.0 < float(p0) < 1.0:
        raise ConfigError(f"p0 (null hit rate) must lie in (0, 1), got {p0!r}",
                          hint="p0 = 1/k for perinucleus; set null_p for other strategies")


def _log_tail(m: int, M: int, p0: float) -> float:
    """log P[Bin(M, p0) >= m] summed term by term in log space (the log-comb fallback)."""
    from scipy.special import gammaln, logsumexp
    import numpy as np

    j = np.arange(m, M + 1, dtype=float)
    terms = gammaln(M + 1) - gammaln(j + 1) - gammaln(M - j + 1) + j * math.log(p0) + (M - j) * math.log1p(-p0)
    return float(logsumexp(terms))


def binom_tail(m: int, M: int, p0: float) -> float:
    """P[Bin(M, p0) >= m] via ``scipy.stats.binom.sf(m - 1, M, p0)``; exact sums in log space where that
    underflows to 0 (very large M). ``m = 0`` gives 1."""
    _check(m, M, p0)
    if m == 0:
        return 1.0
    from scipy.stats import binom

    p = float(binom.sf(m - 1, M, p0))
    if p > 0.0 and math.isfinite(p):
        return min(p, 1.0)
    return math.exp(_log_tail(m, M, p0))


def log10_binom_tail(m: int, M: int, p0: float) -> float:
    """log10 of ``binom_tail``, finite even where the p-value itself underflows a double."""
    _check(m, M, p0)
    return 0.0 if m == 0 else _log_tail(m, M, p0) / math.log(10)


def hoeffding_bound(m: int, M: int, p0: float) -> float:
    """exp(-2 M (m/M - p0)^2) for m/M > p0, else 1 (the bound says nothing there)."""
    _check(m, M, p0)
    d = m / M - p0
    return math.exp(-2.0 * M * d * d) if d > 0 else 1.0


def min_matches(M: int, p0: float, alpha: float = DEFAULT_ALPHA) -> int | None:
    """The smallest m with P[Bin(M, p0) >= m] <= alpha, or None when even m = M is not enough."""
    _check(0, M, p0)
    for m in range(M + 1):
        if binom_tail(m, M, p0) <= alpha:
            return m
    return None


def format_p0(p0: float) -> str:
    """``1/3`` where p0 is (close to) a unit fraction, else 3 significant digits."""
    frac = Fraction(p0).limit_denominator(100_000)
    if frac.numerator == 1 and abs(float(frac) - p0) < 1e-12:
        return f"1/{frac.denominator}"
    return f"{p0:.3g}"


@dataclass(frozen=True)
class OwnershipDecision:
    """One ownership test: ``owned`` iff ``p_value <= alpha``; ``line`` is the verdict as printed."""

    m: int
    M: int
    p0: float
    alpha: float
    p_value: float
    log10_p_value: float
    hoeffding_bound: float
    owned: bool
    min_matches: int | None
    caveat: str = ATTACK_CAVEAT

    @property
    def decision(self) -> str:
        return "OWNED" if self.owned else "not owned"

    @property
    def line(self) -> str:
        p = f"{self.p_value:.2g}" if self.p_value > 0 else f"1e{self.log10_p_value:.0f}"
        return (f"{self.decision} {self.m}/{self.M} matched p={p} (binomial, p0={format_p0(self.p0)}) "
                f"Hoeffding<={self.hoeffding_bound:.2g} alpha={self.alpha:g}")

    def to_dict(self) -> dict:
        return {"m": self.m, "M": self.M, "p0": self.p0, "alpha": self.alpha, "p_value": self.p_value,
                "log10_p_value": self.log10_p_value, "hoeffding_bound": self.hoeffding_bound,
                "decision": self.decision, "min_matches": self.min_matches, "line": self.line,
                "caveat": self.caveat}


def ownership_test(m: int, M: int, p0: float, alpha: float = DEFAULT_ALPHA) -> OwnershipDecision:
    """Binomial test of m matches out of M against the null rate p0; ``OWNED`` iff p <= alpha."""
    _check(m, M, p0)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < float(alpha) < 1.0:
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha!r}", hint="the default is alpha = 1e-3")
    p = binom_tail(m, M, p0)
    return OwnershipDecision(m=m, M=M, p0=float(p0), alpha=float(alpha), p_value=p,
                             log10_p_value=log10_binom_tail(m, M, p0), hoeffding_bound=hoeffding_bound(m, M, p0),
                             owned=p <= alpha, min_matches=min_matches(M, p0, alpha))
