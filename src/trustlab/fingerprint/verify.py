"""Ownership verification: query a suspect with the fingerprint keys, count matches, test against the null rate.

``verify(fps, backend, cfg)`` sends every key (or a recorded seeded subset of ``num_queries``) in the layout it was
trained in, counts a hit when the suspect's answer is the response, and runs ``stats.ownership_test`` on the
answered keys: OWNED iff P[Bin(M, p0) >= m] <= alpha. Matching:

- ``exact`` on a local model: the first L generated token ids equal ``response_ids`` (the tokenizer must be the
  fingerprint file's: otherwise exact matching is refused with a hint to use ``--match lenient``);
- ``exact`` on an endpoint: the completion text (L tokens) starts with ``response_text`` at a word boundary (a
  longer word is another token; leading whitespace that a server puts before the completion is ignored when the
  response has none: a decoding artefact);
- ``lenient``: NFKC, casefold, whitespace and punctuation removed, then a prefix test; the bound then assumes a
  text-level null rate (``bound_assumes_exact: false``).

Text matching reads ``key_text`` and ``response_text``; they are trusted only because the file's ``set_digest``
covers them (``FingerprintSet.load`` refuses an edited file). Each key has its own null rate p0_i
(``stats.key_nulls``: 1/k on token ids; c_i/k for text rules, c_i the largest number of the key's candidates one
output can match), and the p-value is the exact Poisson-binomial tail over the answered keys. A key whose null
reaches 1 is no evidence and is dropped with a note; when even all remaining keys hitting could not reach alpha the
verdict is INCONCLUSIVE. ``null_p`` in the config may only raise the nulls (p0_i = max(p0_i, null_p): a more
conservative test, marked ``p0 overridden by user``) or supply one where the strategy proves none (``english``); a
value below the proven null is refused, because it would turn chance matches into OWNED.

The suspect is hostile: the shared client bounds every reply's size and time; an output is kept in the results cut
to ``OUTPUT_CHARS`` characters with invalid code points replaced; identical answers, unanswered keys (with their
reasons) and invalid text are named in ``notes``. Nothing answered at all is a BackendError (exit 4).

Every verdict carries the attack caveat: a host controlling decoding can suppress memorised answers.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from trustlab.runtime.errors import ConfigError, ModelError

from .backends import Backend, Completion, HFBackend
from .fpset import proven_null_p
from .matching import exact_text_hit, lenient_hit, normalize  # the rules' home is matching.py
from .stats import OwnershipDecision, format_p0, key_nulls, ownership_test_keys

__all__ = ["verify", "VerifyResult", "backend_for", "describe", "null_override", "null_rate", "local_prompt",
           "remote_prompt", "check_suspect_tokenizer", "normalize", "lenient_hit", "exact_text_hit"]
log = logging.getLogger(__name__)
TEXT_MARGIN = 2  # extra tokens generated when matching text, so a re-tokenised response still fits
OUTPUT_CHARS = 200  # an output is kept in the results up to this many characters


@dataclass(frozen=True)
class VerifyResult:
    """The verdict and everything needed to re-derive it (no secret: only the set's digest and commitment)."""

    target: str
    backend: str
    match: str
    decision: OwnershipDecision
    queried: int
    answered: int
    unanswered: tuple[int, ...]
    unanswered_reasons: dict[int, str]
    per_fingerprint: tuple[dict, ...]
    mean_hit_rate: float
    any_hit_rate: float
    bound_assumes_exact: bool
    heuristic_null: bool
    temperature: float
    samples: int
    wrapper: int | None
    set_digest: str
    secret_commitment: str
    subset_ids: tuple[int, ...] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    p0_override: str | None = None  # "p0 overridden by user: 0.5 (proven 1/3)" when the config set null_p
    p0_proven: float | None = None  # the strategy's proven null rate (None for english)
    rule: str = "token"  # the matching rule the nulls were computed for: token, exact (text) or lenient
    key_hits: dict[int, bool] = field(default_factory=dict)  # fingerprint id -> hit, answered keys only
    key_p0: dict[int, float] = field(default_factory=dict)  # fingerprint id -> p0_i, answered keys only
    dropped: tuple[int, ...] = ()  # answered keys whose null reached 1 (no evidence, not counted)

    @property
    def owned(self) -> bool:
        return self.decision.owned

    @property
    def line(self) -> str:
        line = self.decision.line
        if self.unanswered:
            line += f" ({self.answered} of {self.queried} keys answered; the verdict covers those only)"
        if self.heuristic_null:
            line += " [heuristic p0]"
        if not self.bound_assumes_exact:
            line += " [lenient match]"
        if self.p0_override:
            line += f" [{self.p0_override}]"
        return line

    def to_dict(self) -> dict[str, Any]:
        d = self.decision
        return {"target": self.target, "backend": self.backend, "match": self.match, "M": d.M, "m": d.m,
                "p0": d.p0, "p_value": d.p_value, "log10_p_value": d.log10_p_value,
                "hoeffding_bound": d.hoeffding_bound, "alpha": d.alpha, "decision": d.decision,
                "min_matches": d.min_matches, "line": self.line, "caveat": d.caveat,
                "queried": self.queried, "answered": self.answered, "unanswered": list(self.unanswered),
                "unanswered_reasons": {str(k): v for k, v in self.unanswered_reasons.items()},
                "mean_hit_rate": self.mean_hit_rate, "any_hit_rate": self.any_hit_rate,
                "bound_assumes_exact": self.bound_assumes_exact, "heuristic_null": self.heuristic_null,
                "temperature": self.temperature, "samples": self.samples, "wrapper": self.wrapper,
                "set_digest": self.set_digest, "secret_commitment": self.secret_commitment,
                "subset_ids": None if self.subset_ids is None else list(self.subset_ids), "notes": list(self.notes),
                "p0_override": self.p0_override, "p0_proven": self.p0_proven, "rule": self.rule,
                "null": d.null_name, "key_p0": {str(k): v for k, v in self.key_p0.items()},
                "dropped": list(self.dropped), "fingerprints": list(self.per_fingerprint)}


def null_override(fps, cfg) -> str | None:
    """The mark a user-set ``cfg.null_p`` puts on the verdict, None when there is none; ConfigError (exit 2) when
    it lies below the strategy's proven null rate.

    p0 bounds the per-key hit rate under H0 (the suspect never saw the fingerprints). Where the strategy proves it
    (perinucleus 1/k, english_random and random_word |V_w|^-L), a smaller p0 makes chance matches look like
    ownership (p0 = 1e-6 turns 1 hit in 16 into p = 1.6e-5), so it is refused; a larger one only makes the test more
    conservative, so it is accepted and marked. Strategy ``english`` proves no null: a given p0 is the user's."""
    if cfg.null_p is None:
        return None
    given = float(cfg.null_p)
    proven = proven_null_p(fps)
    if proven is None:
        return f"p0 set by user: {given:.3g} (strategy {fps.strategy} has no proven null rate)"
    if math.isclose(given, proven, rel_tol=1e-9):
        return None
    if given < proven:
        raise ConfigError(f"null_p {given:g} is below the proven null hit rate p0 = {format_p0(proven)} of strategy "
                          f"{fps.strategy!r}: chance matches would be counted as ownership evidence",
                          hint="drop --null-p (the proven p0 is used); only a larger, more conservative p0 is allowed")
    return f"p0 overridden by user: {given:.3g} (proven {format_p0(proven)})"


def null_rate(fps, cfg) -> tuple[float, bool]:
    """(p0, heuristic): the config's ``null_p`` (checked by ``null_override``), else the file's (which the load
    checked against the strategy's proven rate); ``english`` without one is 1/3, flagged heuristic."""
    null_override(fps, cfg)
    if cfg.null_p is not None:
        return float(cfg.null_p), False
    if fps.null_p is not None:
        return float(fps.null_p), bool(getattr(fps, "null_p_heuristic", False))
    proven = proven_null_p(fps)
    if proven is not None:
        return proven, False
    if fps.strategy == "english":
        log.warning("strategy 'english' has no principled null rate; using p0 = 1/3 (heuristic verdict)")
        return 1 / 3, True
    raise ConfigError(f"the fingerprint file gives no null_p for strategy {fps.strategy!r}",
                      hint="set null_p in the verify config (the per-key hit rate of an unrelated model)")


def _templates() -> Sequence[str]:
    from .dataset import TEST_TEMPLATES

    return TEST_TEMPLATES


def _wrapped(key_text: str, wrapper: int | None) -> str:
    return key_text if wrapper is None else _templates()[wrapper].format(key=key_text)


def local_prompt(tokenizer, fp, prompt_format: str, wrapper: int | None) -> list[int]:
    """The training layout up to the response: [BOS if added] + wrapped key ids (raw) or the chat turn."""
    from .dataset import prompt_ids

    return prompt_ids(tokenizer, fp.key_ids, prompt_format, None if wrapper is None else _templates()[wrapper])


def remote_prompt(fp, prompt_format: str, wrapper: int | None) -> str | list[dict]:
    """What an endpoint receives: the wrapped key text (completions) or one user turn (chat)."""
    text = _wrapped(fp.key_text, wrapper)
    return [{"role": "user", "content": text}] if prompt_format == "chat" else text


def verify(fps, backend: Backend, cfg, keys: Sequence[int] | None = None, *,
           base_tokenizer: Any = None) -> VerifyResult:
    """Query ``backend`` with the keys of ``fps`` and return the ownership verdict (see module docstring).

    ``keys``: the fingerprint ids to query (in that order; ids equal positions in a generated file), recorded as
    ``subset_ids``; None queries the configured set (all keys, or the seeded ``num_queries`` subset).
    ``base_tokenizer``: the file's tokenizer, to decode candidates for the text nulls (loaded offline when not
    given and the local suspect's tokenizer is not the file's)."""
    fps.check_integrity()  # empty, edited (digest) or inconsistent null settings: DataError, exit 2
    full_digest = fps.set_digest
    subset_ids = None
    if keys is not None:
        keys = [int(k) for k in keys]
        if not keys:
            raise ConfigError("verify was given an empty list of keys", hint="pass at least one fingerprint id")
        if len(set(keys)) != len(keys):
            raise ConfigError("verify was given a key id twice", hint="pass each fingerprint id once")
        fps = fps.subset(keys)
        subset_ids = tuple(fps.ids)
    elif cfg.num_queries is not None and cfg.num_queries < len(fps):
        fps = fps.sample(cfg.num_queries, seed=cfg.seed)
        subset_ids = tuple(fps.ids)
    heuristic = null_rate(fps, cfg)[1]  # also the ConfigError when a strategy without a proven null has none
    override = null_override(fps, cfg)
    L = fps.response_length
    local = isinstance(backend, HFBackend)
    token_match = local and cfg.match == "exact"
    rule = "token" if token_match else cfg.match
    notes: list[str] = []
    tok_for_nulls = base_tokenizer if base_tokenizer is not None else (backend.tokenizer if local else None)
    p0s = key_nulls(fps, rule, tok_for_nulls, notes)
    if cfg.null_p is not None:
        p0s = [max(float(x), float(cfg.null_p)) for x in p0s]
    if local:
        if token_match:
            fps.check_tokenizer(backend.tokenizer)  # ModelError with the --match lenient hint
            prompts: list[Any] = [local_prompt(backend.tokenizer, fp, fps.prompt_format, cfg.wrapper)
                                  for fp in fps.fingerprints]
        else:
            prompts = [_local_text_prompt(backend.tokenizer, fp, fps.prompt_format, cfg.wrapper)
                       for fp in fps.fingerprints]
    else:
        if getattr(backend, "api", "completions") == "completions" and fps.prompt_format == "chat":
            notes.append("fingerprints were embedded in chat format but queried through the completions API; "
                         "use --api chat")
        prompts = [remote_prompt(fp, fps.prompt_format if getattr(backend, "api", "") == "chat" else "raw",
                                 cfg.wrapper) for fp in fps.fingerprints]
    # exact matching asks for L tokens (the spec's max_tokens=L), so a longer word cannot pass for the response;
    # lenient matching allows a few more for a re-tokenised response
    max_new = L if cfg.match == "exact" else L + TEXT_MARGIN
    outs = backend.generate(prompts, max_new, temperature=cfg.temperature, n=cfg.samples,
                            seed=cfg.seed if cfg.temperature > 0 else None)
    failures = dict(getattr(backend, "failures", {}) or {})
    rows, mean_hits, any_hits = [], 0.0, 0
    key_hits: dict[int, bool] = {}
    key_p0: dict[int, float] = {}
    dropped: list[int] = []
    for i, (fp, comps) in enumerate(zip(fps.fingerprints, outs)):
        if not comps:
            rows.append({"id": fp.id, "answered": False, "reason": failures.get(i, "no completion"), "hit": None})
            continue
        hits = [_hit(c, fp, L, cfg.match, token_match) for c in comps]
        # the test uses one (the first) answer per key: independent keys, rate <= p0_i under H0
        key_hits[fp.id], key_p0[fp.id] = bool(hits[0]), float(p0s[i])
        if p0s[i] >= 1.0:
            dropped.append(fp.id)
        mean_hits += sum(hits) / len(hits)
        any_hits += int(any(hits))
        rows.append({"id": fp.id, "answered": True, "hit": hits[0], "sample_hits": hits, "p0": float(p0s[i]),
                     "output": _kept(comps[0].text), "invalid_text": _invalid(comps[0].text),
                     "output_ids": list(comps[0].token_ids[:L]) if comps[0].token_ids is not None else None})
    answered = len(key_hits)
    if answered == 0:
        from trustlab.runtime.errors import BackendError

        raise BackendError("the suspect answered none of the fingerprint keys", hint="check the backend")
    notes += _hostility_notes(rows, failures, fps)
    used = [k for k in key_hits if k not in set(dropped)]
    if dropped:
        notes.append(f"{len(dropped)} answered key(s) dropped: their null hit rate reaches 1 under {rule} matching, "
                     f"so a hit there is no evidence")
    decision = _decide([key_hits[k] for k in used], [key_p0[k] for k in used], cfg.alpha, len(dropped))
    unanswered = tuple(r["id"] for r in rows if not r["answered"])
    return VerifyResult(
        target=describe(backend, cfg), backend=type(backend).__name__, match=cfg.match, decision=decision,
        queried=len(fps), answered=answered, unanswered=unanswered,
        unanswered_reasons={r["id"]: r["reason"] for r in rows if not r["answered"]},
        per_fingerprint=tuple(rows), mean_hit_rate=mean_hits / answered, any_hit_rate=any_hits / answered,
        bound_assumes_exact=cfg.match == "exact", heuristic_null=heuristic, temperature=cfg.temperature,
        samples=cfg.samples, wrapper=cfg.wrapper, set_digest=full_digest, secret_commitment=fps.secret_commitment,
        subset_ids=subset_ids, notes=tuple(notes), p0_override=override, p0_proven=proven_null_p(fps), rule=rule,
        key_hits=key_hits, key_p0=key_p0, dropped=tuple(dropped))


def _decide(hits: Sequence[bool], p0s: Sequence[float], alpha: float, dropped: int) -> OwnershipDecision:
    """The Poisson-binomial test on the counted keys; INCONCLUSIVE (M = 0) when no key is evidence."""
    if not hits:
        return OwnershipDecision(m=0, M=0, p0=1.0, alpha=float(alpha), p_value=1.0, log10_p_value=0.0,
                                 hoeffding_bound=1.0, owned=False, min_matches=None, dropped=dropped)
    return ownership_test_keys(int(sum(hits)), p0s, alpha, dropped=dropped)


def _kept(text: Any) -> str:
    """An output as the results keep it: a string of at most OUTPUT_CHARS characters, valid UTF-8."""
    text = text if isinstance(text, str) else str(text)
    return text[:OUTPUT_CHARS].encode("utf-8", "replace").decode("utf-8")


def _invalid(text: Any) -> bool:
    """True for an answer that is not clean text: not a string, lone surrogates, or U+FFFD (decoded bad bytes)."""
    if not isinstance(text, str):
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return "\ufffd" in text


def _hostility_notes(rows: list[dict], failures: dict, fps) -> list[str]:
    """Lines naming what a hostile or broken suspect did: unanswered keys by reason, one text for many keys,
    answers holding invalid or replacement characters."""
    from collections import Counter

    notes = []
    reasons = Counter(r["reason"].split(":")[0][:80] for r in rows if not r["answered"])
    for reason, n in reasons.most_common(3):
        notes.append(f"{n} key(s) unanswered: {reason}")
    texts = Counter(r["output"] for r in rows if r["answered"])
    if texts and len(rows) >= 4:
        text, n = texts.most_common(1)[0]
        if n >= max(3, len(rows) // 2):
            notes.append(f"the suspect gave the same answer to {n} of {len(rows)} keys ({text[:40]!r})")
    bad = sum(1 for r in rows if r["answered"] and r["invalid_text"])
    if bad:
        notes.append(f"{bad} answer(s) held invalid or replacement characters")
    return notes


def _local_text_prompt(tokenizer, fp, prompt_format: str, wrapper: int | None) -> list[int]:
    """A key re-encoded from its text by the suspect's own tokenizer (lenient matching of a foreign model)."""
    text = _wrapped(fp.key_text, wrapper)
    if prompt_format == "chat" and getattr(tokenizer, "chat_template", None):
        out = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                            tokenize=True)
        return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def _hit(c: Completion, fp, L: int, match: str, token_match: bool) -> bool:
    if token_match:
        return c.token_ids is not None and tuple(c.token_ids[:L]) == tuple(fp.response_ids)
    if match == "lenient":
        return lenient_hit(c.text, fp.response_text)
    return exact_text_hit(c.text, fp.response_text)


def describe(backend: Backend, cfg) -> str:
    if isinstance(backend, HFBackend):
        return cfg.model or getattr(getattr(backend.model, "config", None), "_name_or_path", "") or "local model"
    return f"{getattr(backend, 'base_url', '?')} (model {getattr(backend, 'model', '?')})"


def backend_for(cfg, *, max_retries: int = 5, concurrency: int = 4) -> Backend:
    """The backend a VerifyConfig names: a local model (loaded with ``load_causal_lm``) or an endpoint."""
    import os

    if cfg.endpoint is not None:
        from .backends import OpenAIBackend

        return OpenAIBackend(cfg.endpoint, cfg.served_model, api=cfg.api, api_key=os.environ.get(cfg.api_key_env),
                             batch_size=cfg.batch_size, max_retries=max_retries, concurrency=concurrency)
    if cfg.model is None:
        raise ConfigError("verify needs a suspect: a local model or an endpoint",
                          hint="pass --model DIR_OR_NAME, or --endpoint URL --served-model NAME")
    from trustlab.models import load_causal_lm

    from .tiny import resolve_model_ref

    model, tok = load_causal_lm(resolve_model_ref(cfg.model))
    return HFBackend(model, tok, batch_size=cfg.batch_size)


def check_suspect_tokenizer(fps, tokenizer) -> str | None:
    """None when exact matching is possible, else the reason (for messages that suggest --match lenient)."""
    try:
        fps.check_tokenizer(tokenizer)
    except ModelError as exc:
        return exc.message
    return None
