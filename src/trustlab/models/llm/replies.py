"""Checks on what an OpenAI-compatible server sent back: every malformed reply is a ``RequestError`` (exit 4)
naming the URL and what was wrong, never an exception from deep inside a parser.

Guarantees: a reply is valid UTF-8 JSON (no NaN/Infinity) of the documented shape; text fields are strings (or
null), counts are non-negative integers, a generation reply has at least the expected number of choices, and a
``usage.completion_tokens`` above the request's ``max_tokens`` budget is refused (the server ignores max_tokens).
Size caps (``reply_cap``) keep an oversized body from ever being stored.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Optional

from .retry import RequestError

BYTES_PER_TOKEN = 64        # generous: a token is rarely over 16 characters, and JSON escapes at most 6x
OVERHEAD_BYTES = 64 * 1024  # ids, usage, headers of the JSON, per reply
PER_CHOICE_BYTES = 1024
HINT = "check that the URL is an OpenAI-compatible /v1 endpoint and that the server is healthy"


def reply_cap(max_tokens: int, choices: int = 1) -> int:
    """The most bytes a reply to ``choices`` generations of at most ``max_tokens`` tokens may take."""
    return OVERHEAD_BYTES + choices * (PER_CHOICE_BYTES + max(1, max_tokens) * BYTES_PER_TOKEN)


def malformed(url: str, route: str, what: str) -> RequestError:
    return RequestError(f"malformed reply from {url} ({route}): {what}", HINT, url=url, kind="malformed")


def decode(body: bytes, url: str, route: str) -> Any:
    """Bytes -> JSON value; invalid UTF-8, non-JSON and NaN/Infinity are malformed."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise malformed(url, route, f"invalid UTF-8 at byte {exc.start}") from None

    def no_constants(name):
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(text, parse_constant=no_constants)
    except (ValueError, RecursionError) as exc:
        head = text[:40].replace("\n", " ")
        raise malformed(url, route, f"not JSON ({str(exc).splitlines()[0][:80]}; body starts {head!r})") from None


def _typename(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _str_or_none(v: Any, url: str, route: str, where: str) -> Optional[str]:
    if v is not None and not isinstance(v, str):
        raise malformed(url, route, f"{where} is {_typename(v)} ({str(v)[:40]}), expected a string")
    return v


def _count(v: Any, url: str, route: str, where: str) -> Optional[int]:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise malformed(url, route, f"{where} is {_typename(v)} ({str(v)[:40]}), expected an integer")
    if v < 0:
        raise malformed(url, route, f"{where} is negative ({v})")
    return v


@dataclass(frozen=True)
class Choice:
    """One generated continuation: ``text`` (completions ``text`` or chat ``message.content``), the separate
    ``reasoning`` some servers return for chat, ``finish_reason`` and ``index`` as sent."""

    index: Optional[int]
    text: str
    reasoning: Optional[str]
    finish_reason: Optional[str]


@dataclass(frozen=True)
class Reply:
    url: str
    choices: tuple[Choice, ...]
    completion_tokens: Optional[int]


def parse_generation(obj: Any, url: str, route: str, *, chat: bool, max_tokens: int, expect: int = 1) -> Reply:
    """A ``/completions`` or ``/chat/completions`` reply, checked against the request (``expect`` choices of at
    most ``max_tokens`` tokens each)."""
    if not isinstance(obj, dict):
        raise malformed(url, route, f"the body is a JSON {_typename(obj)}, expected an object")
    raw = obj.get("choices")
    if not isinstance(raw, list):
        raise malformed(url, route, f"choices is {_typename(raw)}, expected a list")
    if not raw:
        raise malformed(url, route, "choices is empty (no completion)")
    if len(raw) < expect:
        raise malformed(url, route, f"answered {expect} request(s) with only {len(raw)} completion(s)")
    choices = []
    for i, ch in enumerate(raw):
        where = f"choices[{i}]"
        if not isinstance(ch, dict):
            raise malformed(url, route, f"{where} is {_typename(ch)}, expected an object")
        index = _count(ch.get("index"), url, route, f"{where}.index")
        finish = _str_or_none(ch.get("finish_reason"), url, route, f"{where}.finish_reason")
        reasoning = None
        if chat:
            msg = ch.get("message")
            if not isinstance(msg, dict):
                raise malformed(url, route, f"{where}.message is {_typename(msg)}, expected an object")
            text = _str_or_none(msg.get("content"), url, route, f"{where}.message.content")
            for key in ("reasoning_content", "reasoning"):
                reasoning = reasoning or _str_or_none(msg.get(key), url, route, f"{where}.message.{key}")
        else:
            text = _str_or_none(ch.get("text"), url, route, f"{where}.text")
        choices.append(Choice(index, text or "", reasoning, finish))
    tokens = None
    usage = obj.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            raise malformed(url, route, f"usage is {_typename(usage)}, expected an object")
        for key in ("prompt_tokens", "total_tokens"):
            _count(usage.get(key), url, route, f"usage.{key}")
        tokens = _count(usage.get("completion_tokens"), url, route, "usage.completion_tokens")
        budget = max_tokens * len(choices)
        if tokens is not None and tokens > budget:
            raise malformed(url, route, f"usage.completion_tokens is {tokens} for max_tokens={max_tokens} x "
                                        f"{len(choices)} choice(s): the server ignores max_tokens")
    return Reply(url, tuple(choices), tokens)


def parse_models(obj: Any, url: str) -> list[str]:
    """``GET /models`` -> the served model ids."""
    data = obj.get("data") if isinstance(obj, dict) else None
    if not isinstance(data, list):
        raise malformed(url, "/models", f"data is {_typename(data)}, expected a list")
    ids = []
    for i, m in enumerate(data):
        mid = m.get("id") if isinstance(m, dict) else None
        if not isinstance(mid, str):
            raise malformed(url, "/models", f"data[{i}].id is {_typename(mid)}, expected a string")
        ids.append(mid)
    return ids


def parse_moderation(obj: Any, url: str, n_inputs: int) -> list[dict]:
    """``POST /moderations`` -> one ``{flagged, categories, category_scores}`` dict per input."""
    route = "/moderations"
    results = obj.get("results") if isinstance(obj, dict) else None
    if not isinstance(results, list):
        raise malformed(url, route, f"results is {_typename(results)}, expected a list")
    if len(results) != n_inputs:
        raise malformed(url, route, f"{len(results)} result(s) for {n_inputs} input(s)")
    out = []
    for i, r in enumerate(results):
        where = f"results[{i}]"
        if not isinstance(r, dict) or not isinstance(r.get("flagged"), bool):
            raise malformed(url, route, f"{where}.flagged is missing or not a boolean")
        cats, scores = r.get("categories") or {}, r.get("category_scores") or {}
        if not isinstance(cats, dict) or not all(isinstance(v, (bool, type(None))) for v in cats.values()):
            raise malformed(url, route, f"{where}.categories is not a mapping of booleans")
        if not isinstance(scores, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 1
                for v in scores.values()):
            raise malformed(url, route, f"{where}.category_scores is not a mapping of numbers in [0, 1]")
        out.append({"flagged": r["flagged"], "categories": cats, "category_scores": scores})
    return out
