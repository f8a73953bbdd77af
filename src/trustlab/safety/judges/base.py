"""The judge API: ``Judge.judge(items) -> list[Verdict]`` and ``make_judge(spec, backend_factory)``.

A verdict's ``status`` is ``ok`` (a parsed verdict), ``empty`` (nothing to judge: counts as safe), ``unparsed``
(the judge answered outside its format: the raw text is kept, ``unsafe`` is None, never safe or unsafe) or
``error`` (the request failed for good: excluded from metrics, never counted safe).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

from trustlab.runtime.errors import ConfigError
from trustlab.runtime.registry import Registry

from ..config import BackendConfig, JudgeSpec  # noqa: F401  (JudgeSpec is re-exported here)

STATUSES = ("ok", "empty", "unparsed", "error")
RAW_MAX = 2000  # characters of raw judge output kept in labels.jsonl


@dataclass(frozen=True)
class JudgeItem:
    """One thing to judge: the user's ``prompt``, the ``text`` under judgement (a response, thought or answer) and,
    for HarmBench contextual behaviours, the ``context``."""

    prompt: str
    text: str
    context: Optional[str] = None


@dataclass(frozen=True)
class Verdict:
    unsafe: Optional[bool]
    score: Optional[float] = None
    categories: tuple[str, ...] = ()
    status: str = "ok"
    raw: str = ""
    truncated_input: bool = False

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"verdict status must be one of {STATUSES}, got {self.status!r}")
        if self.status in ("unparsed", "error") and self.unsafe is not None:
            raise ValueError("an unparsed or failed verdict carries no safe/unsafe decision")

    def to_label(self) -> dict[str, Any]:
        """The labels.jsonl fields (raw clipped to 2000 characters)."""
        d = asdict(self)
        d["categories"] = list(self.categories)
        d["raw"] = self.raw[:RAW_MAX]
        return d


EMPTY = Verdict(unsafe=False, status="empty")


def unparsed(raw: str, truncated: bool = False) -> Verdict:
    return Verdict(unsafe=None, status="unparsed", raw=raw, truncated_input=truncated)


def failed(message: str, truncated: bool = False) -> Verdict:
    return Verdict(unsafe=None, status="error", raw=message or "request failed", truncated_input=truncated)


class Judge:
    """Base class. Subclasses set ``name`` and implement ``_judge`` for non-empty items; ``judge`` files empty (or
    whitespace-only) texts as ``empty`` without a request."""

    name = "judge"
    options_allowed: Mapping[str, Any] = {}

    def judge(self, items: Iterable[JudgeItem]) -> list[Verdict]:
        items = list(items)
        out: list[Optional[Verdict]] = [None] * len(items)
        todo = [i for i, it in enumerate(items) if it.text and it.text.strip()]
        for i in set(range(len(items))) - set(todo):
            out[i] = EMPTY
        if todo:
            verdicts = self._judge([items[i] for i in todo])
            if len(verdicts) != len(todo):
                raise RuntimeError(f"judge {self.name} returned {len(verdicts)} verdicts for {len(todo)} items")
            for i, v in zip(todo, verdicts):
                out[i] = v
        return out  # type: ignore[return-value]

    def _judge(self, items: Sequence[JudgeItem]) -> list[Verdict]:
        raise NotImplementedError

    def check(self) -> None:
        """Pre-flight before any generation (API key present, server reachable); raises a TrustlabError."""

    def close(self) -> None:
        pass


class BackendJudge(Judge):
    """A judge that runs on a generation backend (``self.backend``). ``needs_completions`` says whether it sends
    raw completions (a locally rendered or fixed prompt) rather than chat requests."""

    backend: Any
    needs_completions = False

    def check(self) -> None:
        """The judge's server answers (and serves /v1/completions when needed); a local render works."""
        if getattr(self, "render_locally", False):
            self.backend.render([{"role": "user", "content": "ping"}, {"role": "assistant", "content": "pong"}])
        probe = getattr(self.backend, "probe", None)
        if probe is not None:
            probe(completions=self.needs_completions)

    def close(self) -> None:
        self.backend.close()


def check_options(name: str, options: Mapping[str, Any], allowed: Mapping[str, Any]) -> dict[str, Any]:
    """``allowed`` defaults updated by ``options``; an unknown option is a ConfigError naming the valid ones."""
    unknown = sorted(set(options) - set(allowed) - {"label"})
    if unknown:
        raise ConfigError(f"judge {name!r} has unknown option(s) {', '.join(unknown)}",
                          hint=f"valid options: {', '.join(sorted(allowed)) or 'none'}")
    return {**allowed, **{k: v for k, v in options.items() if k != "label"}}


def text_of(completion) -> Optional[str]:
    """The text of a backend Completion, or None when the request failed (error / content filter). A reasoning
    grader's leading ``<think>...</think>`` block (rebuilt by the openai backend) is dropped: the verdict is the
    answer."""
    if not completion.ok:
        return None
    text = completion.text
    if text.lstrip().startswith("<think>") and "</think>" in text:
        text = text.split("</think>", 1)[1]
    return text


# --------------------------------------------------------------------------------------------- registry
DEFAULT_MODELS = {"llama_guard": "meta-llama/Llama-Guard-3-8B", "harmbench": "cais/HarmBench-Llama-2-13b-cls",
                  "strongreject": "gpt-4o-mini", "moderation": "omni-moderation-latest"}
ALIASES = {"llamaguard": "llama_guard", "llama-guard": "llama_guard", "lg3": "llama_guard",
           "harmbench_cls": "harmbench", "openai_moderation": "moderation", "strong_reject": "strongreject",
           "strongreject_rubric": "strongreject", "rs_match": "refusal", "refusal_strings": "refusal"}
# One line per judge: a new judge is one module plus one line here (or an entry point in the group
# ``trustlab.safety.judges``). Targets are ``module:attr`` strings, imported only when chosen.
REGISTRY = Registry("safety.judges", what="judge")
REGISTRY.register("refusal", "trustlab.safety.judges.refusal:RefusalJudge",
                  "refusal-string match (curated list by default); needs no model")
REGISTRY.register("llama_guard", "trustlab.safety.judges.llama_guard:LlamaGuardJudge",
                  "Llama-Guard-3 safe/unsafe classifier on a model server or local model")
REGISTRY.register("harmbench", "trustlab.safety.judges.harmbench:HarmBenchJudge",
                  "HarmBench Llama-2-13b classifier (yes/no) on a model server or local model")
REGISTRY.register("moderation", "trustlab.safety.judges.moderation:ModerationJudge",
                  "OpenAI moderation endpoint (omni-moderation-latest)")
REGISTRY.register("strongreject", "trustlab.safety.judges.strongreject:StrongRejectJudge",
                  "StrongREJECT rubric graded by an LLM (score in [0, 1], unsafe above a threshold)")
JUDGES = tuple(REGISTRY.builtins())  # the built-in judges (entry points join when REGISTRY is read)


def canonical_judge(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in REGISTRY:
        raise ConfigError(f"unknown judge {name!r}", hint=f"use one of {', '.join(REGISTRY.names())}")
    return key


def make_judge(spec: JudgeSpec, backend_factory: Optional[Callable[[BackendConfig], Any]] = None) -> Judge:
    """The judge ``spec.name`` names, built from its registered class: a ``BackendJudge`` (llama_guard, harmbench,
    strongreject) runs on ``backend_factory(spec.backend)`` (default ``make_backend``); another ``Judge`` whose
    ``__init__`` takes ``backend`` (moderation, through its own endpoint client) gets the ``BackendConfig`` itself;
    any other (refusal) gets its options only."""
    import inspect

    name = canonical_judge(spec.name)
    cls = REGISTRY.get(name)
    if not (isinstance(cls, type) and issubclass(cls, BackendJudge)):
        opts = check_options(name, spec.options, getattr(cls, "options_allowed", {}))
        if "backend" in inspect.signature(cls).parameters:
            return cls(spec.backend, **opts)
        return cls(**opts)
    if spec.backend is None:
        model = DEFAULT_MODELS.get(name, "MODEL")
        raise ConfigError(f"judge {name!r} needs a model server or local model",
                          hint=f"pass --judge-backend openai --judge-base-url http://HOST:PORT/v1 --judge-model "
                               f"{model} (or --judge-backend transformers --judge-model PATH)")
    opts = check_options(name, spec.options, cls.options_allowed)
    if backend_factory is None:
        from ..backends.base import make_backend as backend_factory
    return cls(backend_factory(spec.backend), **opts)
