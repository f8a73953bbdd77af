"""A deterministic scripted model for tests; its rules (``Script``, ``Rule``, ``apply_limits``) live in the ground
(``trustlab.models.llm.script``) and are shared with the one fake OpenAI server."""

from __future__ import annotations

import threading
from typing import Any, Optional, Sequence

from trustlab.models.llm.script import Rule, Script, apply_limits, count_words, parse_rules
from trustlab.runtime.errors import ConfigError

from .base import Completion, GenParams, ParamsArg, messages_for, per_prompt, render_chat_template

SIMPLE_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
                   "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


class ScriptedBackend:
    """A Backend that answers from a Script: deterministic, offline, with a call log (``calls``) for tests."""

    name = "scripted"

    def __init__(self, script: Any, template: str = SIMPLE_TEMPLATE, system_prompt: Optional[str] = None,
                 prefers_chat: bool = False, opening: str = ""):
        self.script = Script.from_data(script)
        self.template = template
        self.system_prompt = system_prompt
        self.prefers_chat = prefers_chat
        self.opening = opening  # appended to every rendered prompt (an R1-style template that prefills <think>\n)
        self.calls: list[tuple[str, str, GenParams]] = []
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg, script: Any = None, think_format: Any = None, **kwargs) -> "ScriptedBackend":
        if script is None:
            if cfg.script is None:
                raise ConfigError("backend 'scripted' needs a script", hint="set backend.script to a rules YAML file")
            script = Script.load(cfg.script)
        template = cfg.chat_template or SIMPLE_TEMPLATE
        return cls(script, template=template, system_prompt=cfg.system_prompt, **kwargs)

    def render(self, messages: Sequence[dict]) -> str:
        return render_chat_template(self.template, messages) + self.opening

    def _one(self, kind: str, text: str, p: GenParams) -> Completion:
        with self._lock:
            self.calls.append((kind, text, p))
        reply, rule = self.script.reply(text, kind, p.seed)
        if rule is not None and rule.status is not None:
            return Completion("", 0, "error", f"scripted status {rule.status}")
        out, tokens, finish = apply_limits(reply, p.stop, p.max_tokens)
        return Completion(out, tokens, finish)

    def complete(self, prompts: Sequence[str], params: ParamsArg) -> list[Completion]:
        return [self._one("completions", t, p) for t, p in zip(prompts, per_prompt(params, len(prompts)))]

    def chat(self, convs: Sequence[Sequence[dict]], params: ParamsArg) -> list[Completion]:
        return [self._one("chat", str(c[-1]["content"]), p) for c, p in zip(convs, per_prompt(params, len(convs)))]

    def count_tokens(self, text: str) -> int:
        return count_words(text)

    def close(self) -> None:
        pass


def always(reply: str) -> ScriptedBackend:
    """A model that gives the same reply to everything (the always-refuse / always-comply baselines)."""
    return ScriptedBackend(Script([], default=reply))


__all__ = ["Rule", "Script", "ScriptedBackend", "SIMPLE_TEMPLATE", "always", "apply_limits", "count_words",
           "messages_for", "parse_rules"]
