"""The ownership test: an exact one-sided test on fingerprint hits, with a Hoeffding bound beside it.

Under H0 (the suspect was not derived from the fingerprinted model) key i is matched with probability at most p0_i,
independently across keys (each key's response was chosen by its own HMAC draw of the secret, which the suspect's
outputs cannot depend on). p0_i = c_i / k_i, with c_i the largest number of the key's stored candidates that ONE
output can match under the matching rule (``key_nulls``; token ids: c_i = 1, so p0_i = 1/k, paper Prop. 3.1). The
number of hits S is then stochastically below the Poisson-binomial PB(p0_1, ..., p0_M) (a coupling: hit_i <= U_i with
U_i ~ Bernoulli(p0_i) independent), so

    p = P[PB(p0_1..p0_M) >= m]   (``poisson_binomial_tail``; = P[Bin(M, p0) >= m] when every p0_i is p0)

is a valid p-value. The distribution-free Hoeffding bound P[S/M - mean(p0) >= d] <= exp(-2 M d^2) is printed
alongside. The verdict is ``OWNED`` iff p <= alpha; ``INCONCLUSIVE`` when even M hits out of M could not reach alpha
(too few keys, or keys whose null is large), so "not owned" is never claimed on evidence that could not decide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from trustlab.runtime.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

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


def _check_p0s(p0s) -> "np.ndarray":
    import numpy as np

    arr = np.asarray(p0s, dtype=float).ravel()
    if arr.size == 0:
        raise ConfigError("the Poisson-binomial test needs at least one key null rate (got none)",
                          hint="query at least one fingerprint whose null rate is below 1")
    if not np.all(np.isfinite(arr)) or not np.all((arr > 0.0) & (arr < 1.0)):
        bad = arr[~(np.isfinite(arr) & (arr > 0.0) & (arr < 1.0))][0]
        raise ConfigError(f"every per-key null rate p0_i must lie in (0, 1), got {bad!r}",
                          hint="drop keys whose null reaches 1 (they are not evidence)")
    return arr


def poisson_binomial_log_pmf(p0s) -> "np.ndarray":
    """log P[S = j], j = 0..M, for S the sum of independent Bernoulli(p0_i): the exact convolution of the per-key
    laws, kept in log space so tails far below 1e-308 stay finite. Keys sharing a rate are first combined into one
    binomial (``scipy.stats.binom.logpmf``), then the groups are convolved by a log-sum-exp product (O(M^2) at worst,
    O(M) for one rate)."""
    import numpy as np
    from scipy.special import logsumexp
    from scipy.stats import binom

    arr = _check_p0s(p0s)
    values, counts = np.unique(arr, return_counts=True)
    out = np.array([0.0])
    for p, n in zip(values, counts):
        g = binom.logpmf(np.arange(n + 1), int(n), float(p))
        # conv[j] = logsumexp_i a[i] + b[j - i], looping over the shorter of the two
        a, b = (out, g) if len(out) >= len(g) else (g, out)
        conv = np.full(len(a) + len(b) - 1, -np.inf)
        for i in range(len(b)):
            conv[i:i + len(a)] = np.logaddexp(conv[i:i + len(a)], a + b[i])
        out = conv
    return out - logsumexp(out)  # renormalise away rounding (the mass is 1 by construction)


def log10_poisson_binomial_tail(m: int, p0s) -> float:
    """log10 P[PB(p0s) >= m] (0 for m <= 0, -inf for m > M)."""
    from scipy.special import logsumexp

    lp = poisson_binomial_log_pmf(p0s)
    if isinstance(m, bool) or not isinstance(m, (int,)) and not hasattr(m, "__index__"):
        raise ConfigError(f"m (matches) must be an integer, got {m!r}", hint="count matches among the keys")
    m = int(m)
    if m <= 0:
        return 0.0
    if m >= len(lp):
        return -math.inf
    return min(0.0, float(logsumexp(lp[m:])) / math.log(10))


def poisson_binomial_tail(m: int, p0s) -> float:
    """P[S >= m] for S a sum of independent Bernoulli(p0_i): the exact upper tail of the Poisson-binomial law (the
    ownership p-value of m hits on keys with null rates ``p0s``). Equals ``binom_tail(m, M, p)`` when every rate is
    p. May underflow to 0.0; ``log10_poisson_binomial_tail`` stays finite."""
    return 10.0 ** log10_poisson_binomial_tail(m, p0s)


def key_nulls(fps, rule: str = "token", tokenizer=None, notes: list | None = None):
    """numpy array of p0_i, one per fingerprint of ``fps`` in order: the largest chance that one key is hit by a
    suspect that never saw the fingerprints, under matching ``rule`` (``token``, ``exact`` text or ``lenient``).

    - perinucleus, ``token``: 1/k (one token id equals one candidate; the HMAC chose the response uniformly);
    - perinucleus, text rules: c_i/k with c_i = ``matching.joint_matches`` of the key's stored candidates decoded by
      the file's tokenizer (``tokenizer``, or loaded offline from the file's tokenizer name / base model; it must
      have the file's vocabulary digest). With a response of one token the full rule applies; with longer responses
      its first-token relaxation (a text match of the response implies a prefix match of its first token's text).
      A key whose response text does not begin with its first token's text, or whose candidates cannot be decoded
      (no tokenizer), gets p0_i = 1 (no bound: the caller drops it) and a note. A hand-built set without stored
      candidates keeps the file's 1/k (noted: the bound then assumes one candidate per output).
    - english_random / random_word: |V_w|^-L for ``token`` and ``exact`` (pool entries are whole words of 4-10
      letters with a leading space, so one output matches at most one at a word boundary); ``lenient`` multiplies by
      7^L (normalised words of 4-10 letters that prefix one output have distinct lengths: at most 7 per word).
    - english: the file's null_p (heuristic, flagged by the caller) or 1/3.
    ``notes`` (a list) receives one line per reason a key's null was raised."""
    import numpy as np

    from .fpset import proven_null_p
    from .matching import RULES, joint_matches, normalize

    if rule not in RULES:
        raise ConfigError(f"matching rule must be one of {', '.join(RULES)}; got {rule!r}",
                          hint="exact (text or token ids) or lenient")
    notes = notes if notes is not None else []
    n = len(fps.fingerprints)
    base = proven_null_p(fps)
    if base is None:
        base = float(fps.null_p) if fps.null_p is not None else 1.0 / 3.0
    if fps.strategy != "perinucleus":
        if fps.strategy in ("english_random", "random_word") and rule == "lenient":
            return np.full(n, min(1.0, base * 7.0 ** fps.response_length))
        return np.full(n, float(base))
    out = np.full(n, float(base))
    if rule == "token":
        return out
    texts = candidate_texts(fps, tokenizer) if any(fp.candidates for fp in fps.fingerprints) else None
    undecoded, stated, broken = [], [], []
    for i, fp in enumerate(fps.fingerprints):
        if fp.candidates is None:
            stated.append(fp.id)
            continue
        if texts is None:
            out[i] = 1.0
            undecoded.append(fp.id)
            continue
        cand = texts[i]
        first = cand[fp.candidates.index(fp.response_ids[0])]
        starts = (normalize(fp.response_text).startswith(normalize(first)) if rule == "lenient"
                  else fp.response_text.startswith(first))
        if not starts:
            out[i] = 1.0
            broken.append(fp.id)
            continue
        whole = len(fp.response_ids) == 1 and fp.response_text == first
        out[i] = joint_matches(cand, rule, whole_word=whole) / len(fp.candidates)
    if stated:
        notes.append(f"{len(stated)} key(s) store no candidates (hand-built set): their {rule} text null keeps the "
                     f"file's p0 and assumes one candidate per output")
    if undecoded:
        notes.append(f"{len(undecoded)} key(s) dropped: the file's tokenizer "
                     f"{fps.tokenizer.get('name', '?')!r} is not available offline to decode their candidates, so "
                     f"{rule} text matching has no null bound (verify with the base tokenizer cached, or on token ids)")
    if broken:
        notes.append(f"{len(broken)} key(s) dropped: their response text does not begin with their first token's "
                     f"text, so the {rule} text null cannot be bounded (ids {broken[:10]})")
    return out


def candidate_texts(fps, tokenizer=None) -> list[tuple[str, ...]] | None:
    """Each fingerprint's candidates decoded one token at a time by the file's tokenizer, or None when no tokenizer
    with the file's vocabulary digest is at hand (``tokenizer`` when its digest matches, else loaded offline from
    the file's tokenizer name or base model reference)."""

    want = fps.tokenizer.get("vocab_sha256")
    tok = None
    if tokenizer is not None and (not want or _vocab_digest(tokenizer) == want):
        tok = tokenizer
    if tok is None:
        tok = _load_file_tokenizer(fps, want)
    if tok is None:
        return None
    return [tuple(tok.decode([c]) for c in fp.candidates) if fp.candidates is not None else ()
            for fp in fps.fingerprints]


_DIGESTS: dict[int, tuple[object, int, str]] = {}  # id(tokenizer) -> (tokenizer, vocab size, vocab digest)


def _vocab_digest(tokenizer) -> str:
    """``tokenizer_info(tokenizer)["vocab_sha256"]``, remembered per tokenizer object and vocabulary size (hashing a
    50k vocabulary costs 0.3 s, and a verification loop asks once per call)."""
    from .fpset import tokenizer_info

    hit = _DIGESTS.get(id(tokenizer))
    if hit is not None and hit[0] is tokenizer and hit[1] == len(tokenizer):
        return hit[2]
    digest = tokenizer_info(tokenizer)["vocab_sha256"]
    if len(_DIGESTS) > 16:
        _DIGESTS.clear()
    _DIGESTS[id(tokenizer)] = (tokenizer, len(tokenizer), digest)
    return digest


def _load_file_tokenizer(fps, want: str | None):
    """The file's tokenizer from the offline cache, or None: by its recorded name, the base model's reference, then
    the registry's small models already at hand (``tiny-llama``; ``fp-tiny`` when built), kept only when the
    vocabulary digest is the file's."""
    from trustlab.models.fp_tiny import cache_folder
    from trustlab.runtime.errors import TrustlabError

    refs = [fps.tokenizer.get("name"), (fps.base_model or {}).get("ref"), (fps.base_model or {}).get("name_or_path"),
            "tiny-llama", str(cache_folder()) if cache_folder().is_dir() else None]
    for ref in dict.fromkeys(r for r in refs if isinstance(r, str) and r):
        try:
            from trustlab.models.causal_lm import load_tokenizer

            from .tiny import resolve_model_ref

            tok = load_tokenizer(resolve_model_ref(ref))
        except (TrustlabError, OSError, ValueError):
            continue
        if not want or _vocab_digest(tok) == want:
            return tok
    return None


@dataclass(frozen=True)
class OwnershipDecision:
    """One ownership test: ``owned`` iff ``p_value <= alpha``; ``inconclusive`` when even a hit on every answered key
    could not reach alpha; ``line`` is the verdict as printed. ``p0`` is the largest per-key null rate (the single
    rate of the binomial case); ``p0s`` every key's, when they differ."""

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
    p0s: tuple[float, ...] = ()
    dropped: int = 0  # keys answered but not counted: their null reached 1

    @property
    def inconclusive(self) -> bool:
        return not self.owned and self.min_matches is None

    @property
    def decision(self) -> str:
        return "OWNED" if self.owned else ("INCONCLUSIVE" if self.inconclusive else "not owned")

    @property
    def null_name(self) -> str:
        if len(set(self.p0s)) > 1:
            return f"Poisson-binomial, p0={format_p0(min(self.p0s))}..{format_p0(max(self.p0s))}"
        return f"binomial, p0={format_p0(self.p0)}"

    @property
    def line(self) -> str:
        p = f"{self.p_value:.2g}" if self.p_value > 0 else f"1e{self.log10_p_value:.0f}"
        line = (f"{self.decision} {self.m}/{self.M} matched p={p} ({self.null_name}) "
                f"Hoeffding<={self.hoeffding_bound:.2g} alpha={self.alpha:g}")
        if self.inconclusive:
            line += f" (insufficient evidence: even {self.M}/{self.M} hits could not reach alpha)"
        return line

    def to_dict(self) -> dict:
        return {"m": self.m, "M": self.M, "p0": self.p0, "alpha": self.alpha, "p_value": self.p_value,
                "log10_p_value": self.log10_p_value, "hoeffding_bound": self.hoeffding_bound,
                "decision": self.decision, "min_matches": self.min_matches, "line": self.line,
                "caveat": self.caveat, "p0s": list(self.p0s), "dropped": self.dropped}


def _check_alpha(alpha: float) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < float(alpha) < 1.0:
        raise ConfigError(f"alpha must lie in (0, 1), got {alpha!r}", hint="the default is alpha = 1e-3")


def ownership_test(m: int, M: int, p0: float, alpha: float = DEFAULT_ALPHA) -> OwnershipDecision:
    """Binomial test of m matches out of M against the null rate p0; ``OWNED`` iff p <= alpha."""
    _check(m, M, p0)
    _check_alpha(alpha)
    p = binom_tail(m, M, p0)
    return OwnershipDecision(m=m, M=M, p0=float(p0), alpha=float(alpha), p_value=p,
                             log10_p_value=log10_binom_tail(m, M, p0), hoeffding_bound=hoeffding_bound(m, M, p0),
                             owned=p <= alpha, min_matches=min_matches(M, p0, alpha), p0s=(float(p0),) * M)


def ownership_test_keys(m: int, p0s, alpha: float = DEFAULT_ALPHA, dropped: int = 0) -> OwnershipDecision:
    """The Poisson-binomial test of m hits on keys with null rates ``p0s`` (see the module docstring for H0 and
    why the tail is a valid p-value); ``OWNED`` iff P[PB(p0s) >= m] <= alpha."""
    import numpy as np

    arr = _check_p0s(p0s)
    M = len(arr)
    _check(m, M, 0.5)
    _check_alpha(alpha)
    lp = poisson_binomial_log_pmf(arr)
    log_tails = np.logaddexp.accumulate(lp[::-1])[::-1] / math.log(10)  # log10 P[S >= j], j = 0..M
    log_tails = np.minimum(log_tails, 0.0)
    log_tails[0] = 0.0
    reach = np.flatnonzero(log_tails <= math.log10(alpha))
    log10_p = float(log_tails[m])
    d = m / M - float(arr.mean())
    return OwnershipDecision(m=m, M=M, p0=float(arr.max()), alpha=float(alpha), p_value=10.0 ** log10_p,
                             log10_p_value=log10_p, hoeffding_bound=math.exp(-2.0 * M * d * d) if d > 0 else 1.0,
                             owned=log10_p <= math.log10(alpha), min_matches=int(reach[0]) if reach.size else None,
                             p0s=tuple(float(x) for x in arr), dropped=int(dropped))
