"""Matching rules, and how many of a key's candidates one output can match under each (the per-key null count).

Three rules decide whether a suspect's output is a hit on a fingerprint's response:

- ``token``: the first L generated token ids equal ``response_ids`` (a local model with the file's tokenizer);
- ``exact``: the output text starts with ``response_text`` at a word boundary (``exact_text_hit``; a server's
  leading whitespace is ignored when the response has none);
- ``lenient``: NFKC, casefold, whitespace and punctuation removed, then a prefix test (``lenient_hit``).

Under H0 the suspect never saw the fingerprints, so its output o is independent of the secret; perinucleus chose the
response's first token uniformly (HMAC of the secret) among the k stored candidates, so
P[hit] = E_o[#{j : o matches the response that candidate j would have started} / k] <= c / k, where c is the
largest number of candidates that ONE output can match under the rule (``joint_matches``). A token id equals at most
one candidate (c = 1); ``exact`` text can match " the" and "the" at once (c = 2); ``lenient`` matches every candidate
whose normalised text is a prefix of another's ("in" and "interest").
"""

from __future__ import annotations

import unicodedata
from typing import Sequence

RULES = ("token", "exact", "lenient")


def normalize(text: str) -> str:
    """Lenient form: NFKC, casefold, every whitespace and punctuation character removed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in text if not ch.isspace() and not unicodedata.category(ch).startswith("P"))


def lenient_hit(output: str, response: str) -> bool:
    """The normalised output starts with the normalised response; an empty normalised response never hits."""
    want = normalize(response)
    return bool(want) and normalize(output).startswith(want)


def exact_text_hit(output: str, response: str, whole_word: bool = True) -> bool:
    """``output`` starts with ``response`` at a word boundary: a longer word ("their" for "the") is another token,
    so it does not count. Leading whitespace that a server puts before the completion is ignored when the
    response has none; a whitespace-only response never hits (it would match almost any completion).
    ``whole_word=False`` is the relaxed rule a multi-token response implies for its first token: no boundary test
    (an output that starts with "the cat" starts with "the", whatever follows) and no whitespace-only exclusion (a
    response " r0" whose first token is " " is only hit by outputs that start with " ")."""
    if not isinstance(output, str) or (whole_word and not response.strip()):
        return False
    for text in (output, output.lstrip()) if not response[:1].isspace() else (output,):
        if text.startswith(response):
            rest = text[len(response):]
            if not whole_word or not (rest[:1].isalnum() and response[-1:].isalnum()):
                return True
    return False


def text_hit(rule: str, output: str, response: str, whole_word: bool = True) -> bool:
    """The ``exact`` or ``lenient`` text rule; ``whole_word=False`` is its first-token relaxation (see
    ``exact_text_hit``; for ``lenient``: a first token that normalises to nothing matches every output)."""
    if rule == "lenient":
        if not isinstance(output, str):
            return False
        return lenient_hit(output, response) if whole_word else normalize(output).startswith(normalize(response))
    return exact_text_hit(output, response, whole_word)


def _witnesses(texts: Sequence[str], rule: str) -> list[str]:
    """Outputs among which the one matching the most ``texts`` lies.

    For ``lenient`` the texts an output matches are those whose normalised form is a prefix of its normalised form:
    a chain, whose longest member (as an output) matches all of them. For ``exact`` the matched texts are prefixes of
    the output (those with leading whitespace) or of its stripped form (those without); the shortest prefix of the
    output that still holds all of them keeps every boundary character and ends at one of them, so it is a text
    itself, or the output's leading whitespace (which must equal a matched text's) followed by a text."""
    out = list(texts)
    if rule == "exact":
        spaces = {t[:len(t) - len(t.lstrip())] for t in texts if t[:1].isspace()} | {" "}
        out += [ws + t for t in texts if not t[:1].isspace() for ws in spaces]
    return out


def joint_matches(texts: Sequence[str], rule: str, whole_word: bool = True) -> int:
    """The largest number of ``texts`` (a key's candidate texts) that one output can match under ``rule``
    (``token``: 1, since one token id equals one candidate). Exact: the maximum is attained at one of
    ``_witnesses`` (see there); ``tests/fingerprint/test_matching.py`` checks it against random outputs."""
    if rule == "token":
        return 1
    if rule not in RULES:
        from trustlab.runtime.errors import ConfigError

        raise ConfigError(f"matching rule must be one of {', '.join(RULES)}; got {rule!r}",
                          hint="exact (text or token ids) or lenient")
    best = 0
    for w in _witnesses(texts, rule):
        best = max(best, sum(text_hit(rule, w, t, whole_word) for t in texts))
    return best
