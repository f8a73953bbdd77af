"""Response strategies (spec §2): perinucleus (default), english, random_word, english_random.

Perinucleus, on the base model's next-token distribution q after the key:
  1. sort q descending -> tau_0, tau_1, ...; S_i = sum_{j<=i} q(tau_j); boundary b = min{i : S_i >= t};
  2. C = the first k tokens after tau_b (the boundary itself skipped) allowed by ``ok_mask`` (non-special,
     alphanumeric text by default), scanning at most ``max_rank`` ranks past b;
  3. y1 = C[u("pn|" + key_text) mod k].
Since b is where the cumulative mass first reaches t, every rank after it has q <= 1 - t, and y1 is never the
argmax (b >= 0 is skipped): the base model scores 0 greedy hits barring ties, and a forger who knows C but not the
secret hits each key with probability 1/k.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from trustlab.runtime.registry import Registry

from .secret import hmac_choice

ALNUM = re.compile(r"^[A-Za-z0-9]+$")
WORD = re.compile(r"^[a-z]{4,10}$")


class TooFewCandidates(ValueError):
    """Fewer than k allowed tokens after the boundary within ``max_rank`` ranks (the key is resampled)."""


@dataclass(frozen=True)
class Candidates:
    tokens: tuple[int, ...]  # C, in rank order
    boundary_rank: int  # b
    boundary_token: int  # tau_b


def perinucleus_candidates(probs: Any, t: float, k: int, ok_mask: Any = None, max_rank: int = 1000) -> Candidates:
    """The k allowed tokens just outside the top-t nucleus of ``probs`` (a 1-D distribution); see module doc.

    Ties in ``probs`` are broken by token id (stable sort), so the result is a pure function of the inputs."""
    p = np.asarray(probs, dtype=np.float64).ravel()
    if not 0.0 < t < 1.0:
        raise ValueError(f"t must lie in (0, 1), got {t}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    order = np.argsort(-p, kind="stable")
    csum = np.cumsum(p[order])
    b = int(np.searchsorted(csum, t * csum[-1], side="left"))  # first i with S_i >= t (mass normalised)
    b = min(b, len(order) - 1)
    ok = np.ones(len(p), dtype=bool) if ok_mask is None else np.asarray(ok_mask, dtype=bool).ravel()
    window = order[b + 1: b + 1 + max_rank]
    chosen = window[ok[window]][:k]
    if len(chosen) < k:
        raise TooFewCandidates(f"only {len(chosen)} of k={k} allowed tokens within {max_rank} ranks after the "
                               f"boundary (rank {b})")
    return Candidates(tuple(int(x) for x in chosen), b, int(order[b]))


def perinucleus_choice(secret: bytes, key_text: str, cands: Candidates) -> int:
    """y1 = C[u("pn|" + key_text) mod k]."""
    return cands.tokens[hmac_choice(secret, "pn|" + key_text, len(cands.tokens))]


def english_random_choice(secret: bytes, key_text: str, pool: Sequence[int]) -> int:
    """One whole-word token from the pool V_w, chosen by u("er|" + key_text)."""
    return int(pool[hmac_choice(secret, "er|" + key_text, len(pool))])


def random_words(secret: bytes, label: str, pool: Sequence[int], n: int) -> list[int]:
    """``n`` pool tokens chosen by u(label|i): the random_word strategy's keys and responses."""
    return [int(pool[hmac_choice(secret, f"{label}|{i}", len(pool))]) for i in range(n)]


def english_response(other_key_ids: Sequence[int], length: int) -> list[int]:
    """``length`` tokens of another key's generation, starting at token min(10, len - length)."""
    start = max(0, min(10, len(other_key_ids) - length))
    return list(other_key_ids[start:start + length])


def token_masks(tokenizer: Any, alnum_filter: bool = True) -> tuple[np.ndarray, list[int]]:
    """(ok_mask over the vocabulary for perinucleus candidates, word pool V_w).

    ok: not special, and (with ``alnum_filter``) stripped text matching ``^[A-Za-z0-9]+$``. V_w: word-initial
    tokens of 4-10 lowercase letters (``Ġ``/``▁``-prefixed in BPE/SentencePiece vocabularies; every such entry
    in a word-level vocabulary, which has no prefix marker)."""
    vocab = tokenizer.get_vocab()
    size = max(len(tokenizer), max(vocab.values()) + 1)
    special = set(tokenizer.all_special_ids)
    ok = np.zeros(size, dtype=bool)
    marked = [i for s, i in vocab.items() if s[:1] in ("Ġ", "▁") and WORD.match(s[1:])]
    pool = sorted(marked) if marked else sorted(i for s, i in vocab.items() if WORD.match(s) and i not in special)
    for s, i in vocab.items():
        if i in special:
            continue
        if not alnum_filter:
            ok[i] = True
            continue
        text = tokenizer.decode([i]).strip()
        ok[i] = bool(ALNUM.match(text))
    return ok, [i for i in pool if i not in special]


# Response schemes: name -> the function that draws a response, and its one-line summary. The order is the one of
# ``trustlab.fingerprint.STRATEGIES`` (the fingerprint file's schema); the entry-point group is
# ``trustlab.fingerprint.schemes``.
SCHEMES = Registry("fingerprint.schemes", what="scheme")
SCHEMES.register("perinucleus", perinucleus_choice,
                 "one of the k tokens just outside the base model's top-t nucleus (null rate 1/k, proven)")
SCHEMES.register("english", english_response,
                 "a span of another key's own generation (null rate heuristic, 1/3 unless given)")
SCHEMES.register("random_word", random_words, "keys and responses of random whole-word tokens (null |V_w|^-len)")
SCHEMES.register("english_random", english_random_choice,
                 "a natural key answered by one random whole-word token (null 1/|V_w|)")


def null_p(strategy: str, k: int, pool_size: int, length: int, given: float | None) -> tuple[float, bool]:
    """(p0, heuristic): the per-key hit rate of a model that never saw the fingerprints."""
    SCHEMES.entry(strategy)  # an unknown scheme is a ConfigError naming the valid ones
    if strategy == "perinucleus":
        return 1.0 / k, False
    if strategy in ("english_random", "random_word"):
        return float(pool_size) ** (-length), False
    return (given if given is not None else 1.0 / 3.0), True
