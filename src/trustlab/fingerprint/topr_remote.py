"""The top-r verifier through an OpenAI-compatible endpoint that reports token log-probabilities (``logprobs`` on
``/completions``, ``logprobs`` + ``top_logprobs`` on ``/chat/completions``; llama.cpp's and vLLM's servers offer
both), over the shared client ``trustlab.models.llm.OpenAIClient`` (its retry policy, deadline and byte cap).

The server names tokens by their text, so a key is a hit when the text of its response's first token is among the
r most probable token texts reported for the first response position. Ties count against the response, each text
counts once (its highest reported log-probability), and entries beyond the first r distinct texts are ignored, so
at most r texts can ever hit, whatever the server sends.

Null hypothesis (H0): the suspect never saw the fingerprints, so the r texts it reports do not depend on which of
the key's k candidates the secret chose (uniformly). Several candidate ids can decode to one text; one reported
text then matches all of them. With the candidates grouped by decoded text, at most the r largest groups can match,
so P(hit_i) <= p0_i = (sum of the r largest group sizes) / k, attained when the server reports those r texts: the
exact worst case per key, which is r/k when the k candidates decode to k distinct texts. The p-value is the exact
Poisson-binomial tail over the keys answered (``topr.poisson_binomial_tail``); a key with p0_i = 1 is dropped.

A reply that is not a well-formed log-probability list (not an object, a non-string token, a non-finite or
positive log-probability, more than ``MAX_ENTRIES`` entries) leaves its key unanswered, named in ``failures``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from trustlab.runtime.errors import BackendError, ConfigError

from .topr import TopRResult, poisson_binomial_tail

MAX_ENTRIES = 64  # reported alternatives per position we read at most (OpenAI allows 20)


def text_null(candidates, tok, r: int) -> float:
    """p0_i = (sum of the r largest groups of candidates sharing a decoded text) / k (module docstring)."""
    groups: dict[str, int] = {}
    for c in candidates:
        t = tok.decode([c])
        groups[t] = groups.get(t, 0) + 1
    return min(1.0, sum(sorted(groups.values(), reverse=True)[:r]) / len(candidates))


def _entries(choice: Any, chat: bool) -> dict[str, float]:
    """{token text: log-probability} at the first position of one reply choice; ValueError naming what is wrong."""
    if not isinstance(choice, dict):
        raise ValueError("the choice is not an object")
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        raise ValueError("no logprobs object in the reply (does the server report log-probabilities?)")
    if chat:
        content = lp.get("content")
        if not isinstance(content, list) or not content or not isinstance(content[0], dict):
            raise ValueError("logprobs.content is not a non-empty list of objects")
        raw = content[0].get("top_logprobs")
        if not isinstance(raw, list):
            raise ValueError("logprobs.content[0].top_logprobs is not a list")
        pairs = [(e.get("token"), e.get("logprob")) if isinstance(e, dict) else (None, None) for e in raw]
    else:
        top = lp.get("top_logprobs")
        if not isinstance(top, list) or not top or not isinstance(top[0], dict):
            raise ValueError("logprobs.top_logprobs is not a non-empty list of objects")
        pairs = list(top[0].items())
    if len(pairs) > MAX_ENTRIES:
        raise ValueError(f"{len(pairs)} alternatives reported for one position (more than {MAX_ENTRIES})")
    out: dict[str, float] = {}
    for tok, v in pairs:
        if not isinstance(tok, str):
            raise ValueError("a reported token is not a string")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v > 1e-6:
            raise ValueError(f"token {tok[:20]!r} has log-probability {str(v)[:20]}, expected a finite number <= 0")
        out[tok] = max(float(v), out.get(tok, -math.inf))
    return out


def reported_hit(entries: dict[str, float], response: str, r: int) -> bool:
    """``response`` is among the first r distinct texts, ties counted against it."""
    if response not in entries:
        return False
    return sum(v >= entries[response] for v in entries.values()) <= r


@dataclass
class RemoteTopR:
    """Top-r verification of ``served_model`` at ``client`` (an ``OpenAIClient``); ``tok`` decodes candidates."""

    client: Any
    served_model: str
    tok: Any
    api: Literal["completions", "chat"] = "completions"
    failures: dict[str, str] = field(default_factory=dict)

    def payload(self, fp, prompt_format: str, r: int) -> dict:
        from .verify import remote_prompt

        base = {"model": self.served_model, "max_tokens": 1, "temperature": 0.0}
        if self.api == "chat":
            return {**base, "messages": remote_prompt(fp, "chat", None), "logprobs": True, "top_logprobs": r}
        return {**base, "prompt": remote_prompt(fp, "raw", None), "logprobs": r}

    def entries(self, fp, prompt_format: str, r: int) -> dict[str, float] | None:
        from trustlab.models.llm.retry import RequestError

        route = "/chat/completions" if self.api == "chat" else "/completions"
        payload = self.payload(fp, prompt_format, r)
        try:
            obj = self.client.run(lambda _: self.client.once(route, payload, 16384 + 512 * r))
        except RequestError as exc:
            self.failures[fp.id] = str(exc.message)
            return None
        choices = obj.get("choices") if isinstance(obj, dict) else None
        try:
            if not isinstance(choices, list) or not choices:
                raise ValueError("no choices in the reply")
            return _entries(choices[0], self.api == "chat")
        except ValueError as exc:
            self.failures[fp.id] = str(exc)
            return None

    def verify(self, fps, r: int, *, alpha: float = 1e-3) -> TopRResult:
        """The top-r verdict (module docstring); BackendError when no key could be verified."""
        if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= 20:
            raise ConfigError(f"top-r through an endpoint needs an integer r in 1..20, got {r!r}",
                              hint="e.g. r=2 (OpenAI-compatible servers report at most 20 alternatives)")
        if any(fp.candidates is None for fp in fps.fingerprints):
            raise ConfigError(f"top-r verification needs the perinucleus candidates of every key; strategy "
                              f"{fps.strategy!r} records none", hint="use plain verify for this fingerprint set")
        hits, p0, ranks, dropped, m = [], [], [], 0, 0
        for fp in fps.fingerprints:
            q = text_null(fp.candidates, self.tok, r)
            if q >= 1.0:
                dropped += 1
                continue
            got = self.entries(fp, fps.prompt_format, r)
            if got is None:
                continue
            response = self.tok.decode([fp.response_ids[0]])
            hit = reported_hit(got, response, r)
            ranks.append(sum(v >= got[response] for v in got.values()) if response in got else 0)
            hits.append(hit)
            p0.append(q)
            m += int(hit)
        if not p0 and self.failures:
            first = next(iter(self.failures.items()))
            raise BackendError(f"the endpoint answered none of the {len(self.failures)} keys with usable "
                               f"log-probabilities (key {first[0]}: {first[1]})",
                               hint="check that the server reports logprobs (llama.cpp, vLLM do)")
        p = poisson_binomial_tail(m, p0) if p0 else 1.0
        return TopRResult(r=r, reported="endpoint", hits=tuple(hits), ranks=tuple(ranks), p0=tuple(p0), m=m,
                          M=len(p0), dropped=dropped, p_value=p, alpha=alpha)
