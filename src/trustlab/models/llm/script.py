"""Scripted replies shared by the fake OpenAI server and safety's scripted backend.

A script is a list of rules tried in order; the first whose ``match`` occurs in the prompt (and, if given, whose
``endswith`` the prompt ends with) answers. ``reply`` is a string or a list, a list picks ``reply[seed % len]``
(``seed`` None counts as 0), so K samples with their own seeds can differ. Tokens are whitespace-separated words.
Limits: the text is cut at the earliest stop (``finish_reason="stop"``, the stop excluded), then at ``max_tokens``
words (``"length"``); a reply that ends by itself is an end-of-sequence ``"stop"``.

Rule keys: ``match`` (substring; ``regex: true`` for a regular expression), ``endswith``, ``reply``,
``reasoning`` (chat only: returned as ``reasoning_content``), ``status`` (an HTTP error status to answer with, fake
server only), ``flagged`` / ``categories`` (moderation), ``kind`` (completions | chat | moderations).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from trustlab.runtime.errors import ConfigError

_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Rule:
    match: str = ""
    reply: Any = ""
    endswith: Optional[str] = None
    regex: bool = False
    reasoning: Optional[str] = None
    status: Optional[int] = None
    flagged: bool = False
    categories: tuple[str, ...] = ()
    kind: Optional[str] = None

    def applies(self, text: str, kind: str) -> bool:
        if self.kind is not None and self.kind != kind:
            return False
        if self.endswith is not None and not text.endswith(self.endswith):
            return False
        if self.regex:
            return re.search(self.match, text) is not None
        return self.match in text

    def pick(self, seed: Optional[int]) -> str:
        if isinstance(self.reply, (list, tuple)):
            return str(self.reply[(seed or 0) % len(self.reply)]) if self.reply else ""
        return str(self.reply)


def parse_rules(rules: Sequence[Any]) -> list[Rule]:
    """Rules from dicts (YAML) or Rule objects; unknown keys are a ConfigError naming them."""
    out = []
    valid = set(Rule.__dataclass_fields__)
    for i, r in enumerate(rules):
        if isinstance(r, Rule):
            out.append(r)
            continue
        if not isinstance(r, dict):
            raise ConfigError(f"script rule {i} must be a mapping, got {r!r}", hint="e.g. - {match: bomb, reply: No.}")
        unknown = sorted(set(r) - valid)
        if unknown:
            raise ConfigError(f"script rule {i} has unknown key(s) {', '.join(unknown)}",
                              hint=f"valid keys: {', '.join(sorted(valid))}")
        r = dict(r)
        if "categories" in r:
            r["categories"] = tuple(r["categories"])
        out.append(Rule(**r))
    return out


@dataclass
class Script:
    rules: list[Rule] = field(default_factory=list)
    default: str = ""

    @classmethod
    def from_data(cls, data: Any) -> "Script":
        if isinstance(data, Script):
            return data
        if isinstance(data, dict):
            unknown = sorted(set(data) - {"rules", "default"})
            if unknown:
                raise ConfigError(f"script has unknown key(s) {', '.join(unknown)}", hint="valid keys: rules, default")
            return cls(parse_rules(data.get("rules") or []), str(data.get("default", "")))
        return cls(parse_rules(data or []))

    @classmethod
    def load(cls, path: str) -> "Script":
        from trustlab.runtime.config import load_yaml

        return cls.from_data(load_yaml(path))

    def rule_for(self, text: str, kind: str) -> Optional[Rule]:
        return next((r for r in self.rules if r.applies(text, kind)), None)

    def reply(self, text: str, kind: str, seed: Optional[int]) -> tuple[str, Optional[Rule]]:
        rule = self.rule_for(text, kind)
        return (rule.pick(seed), rule) if rule is not None else (self.default, None)


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` cut at the earliest occurrence of any stop string (the stop excluded), and whether one occurred."""
    best = -1
    for s in stops:
        if s:
            i = text.find(s)
            if i >= 0 and (best < 0 or i < best):
                best = i
    return (text, False) if best < 0 else (text[:best], True)


def apply_limits(text: str, stop: Sequence[str], max_tokens: int) -> tuple[str, int, str]:
    """(text, tokens, finish_reason) after the stop strings and the token budget, as a server would."""
    cut, stopped = cut_at_stop(text, stop)
    words = list(_WORD.finditer(cut))
    if len(words) > max_tokens:
        return cut[:words[max_tokens - 1].end()], max_tokens, "length"
    return cut, len(words), "stop"
