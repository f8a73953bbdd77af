"""The backend API every generator and LLM judge talks to.

    from trustlab.safety.backends import make_backend, GenParams
    backend = make_backend(BackendConfig(kind="openai", model="m", base_urls=("http://h:8000/v1",)))
    outs = backend.complete(["<rendered prompt>"], GenParams(max_tokens=20, temperature=0.0, stop=("</think>",)))
    outs[0].text, outs[0].tokens, outs[0].finish_reason, outs[0].error

- ``render(messages) -> str``: the chat template applied with ``add_generation_prompt=True`` (ModelError /
  ConfigError when there is no template: pass ``--chat-template`` or ``--tokenizer``).
- ``complete(prompts, params) -> list[Completion]``: raw completions of rendered prompts, one per prompt, in order.
  ``params`` is one ``GenParams`` for all prompts or a sequence, one per prompt (MoreThink rows carry their own
  budgets). ``text`` is cut at the earliest stop string (the stop excluded); ``tokens`` counts the generated tokens
  (``usage.completion_tokens`` or the generated ids); ``finish_reason`` is ``stop`` | ``length`` | ``error`` |
  ``filtered``.
- ``chat(convs, params) -> list[Completion]``: server-side templating (OpenAI chat). A returned
  ``reasoning_content`` is rebuilt as ``opening + reasoning + think_end + "\\n\\n" + content``.
- ``close()``.

A request that fails persistently is returned as ``Completion(text="", tokens=0, finish_reason="error",
error="...")``: never substitute text. A dead server is a ``BackendError`` (exit 4) naming the URL.
``prefers_chat`` says whether the ``default`` strategy should use ``chat`` (remote servers) or render locally and
``complete`` (local models). ``count_tokens(text)`` (optional, may return None) splits default-strategy token counts
into thought and answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence, Union, runtime_checkable

from trustlab.models.llm.local import Completion, failed  # noqa: F401 - the one completion type, re-exported
from trustlab.models.llm.script import cut_at_stop  # noqa: F401 - re-exported for the backends
from trustlab.runtime.errors import ConfigError
from trustlab.runtime.registry import Registry
from trustlab.runtime.validate import check_types, require_range


@dataclass(frozen=True)
class GenParams:
    """One request's decoding settings. ``top_k=-1`` and ``repetition_penalty=1`` mean off."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = -1
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: Optional[int] = None

    def __post_init__(self):
        check_types(self, "params")
        require_range("params.max_tokens", self.max_tokens, 1, None)
        require_range("params.temperature", self.temperature, 0.0, None)
        require_range("params.top_p", self.top_p, 0.0, 1.0, lo_open=True)
        if self.top_k != -1 and self.top_k < 1:
            raise ConfigError(f"params.top_k must be -1 or >= 1, got {self.top_k}")
        require_range("params.repetition_penalty", self.repetition_penalty, 0.0, None, lo_open=True)


ParamsArg = Union[GenParams, Sequence[GenParams]]


def per_prompt(params: ParamsArg, n: int) -> list[GenParams]:
    """``params`` broadcast to ``n`` prompts (one GenParams) or checked to have ``n`` entries."""
    if isinstance(params, GenParams):
        return [params] * n
    params = list(params)
    if len(params) != n:
        raise ValueError(f"got {len(params)} GenParams for {n} prompts")
    return params


@runtime_checkable
class Backend(Protocol):
    name: str
    prefers_chat: bool

    def render(self, messages: Sequence[dict]) -> str: ...

    def complete(self, prompts: Sequence[str], params: ParamsArg) -> list[Completion]: ...

    def chat(self, convs: Sequence[Sequence[dict]], params: ParamsArg) -> list[Completion]: ...

    def count_tokens(self, text: str) -> Optional[int]: ...

    def close(self) -> None: ...


# One line per backend: a new backend is one module plus one line here (or an entry point in the group
# ``trustlab.safety.backends``). Targets are ``module:attr`` strings, imported only when chosen.
BACKENDS = Registry("safety.backends", what="backend kind")
BACKENDS.register("transformers", "trustlab.safety.backends.hf:HFBackend",
                  "a local Hugging Face causal LM (transformers generate, batched)")
BACKENDS.register("openai", "trustlab.safety.backends.openai_compat:OpenAIBackend",
                  "OpenAI-compatible servers (vLLM, llama.cpp, transformers serve, hosted APIs)")
BACKENDS.register("vllm", "trustlab.safety.backends.vllm:VLLMBackend",
                  "in-process vLLM (needs the vllm extra and CUDA)")
BACKENDS.register("scripted", "trustlab.safety.backends.scripted:ScriptedBackend",
                  "a deterministic scripted model (rule-matched replies) for tests and the demo baselines")


def make_backend(cfg, **kwargs) -> Backend:
    """The backend ``cfg.kind`` names (a ``BackendConfig``); ``auto`` = vllm when it imports and CUDA is present,
    else transformers. Heavy libraries load only here, for the kind chosen. Each backend class has a
    ``from_config(cfg, **kwargs)`` constructor."""
    kind = resolve_kind(cfg.kind)
    if kind not in BACKENDS:
        raise ConfigError(f"unknown backend kind {cfg.kind!r}", hint=f"use auto, {', '.join(BACKENDS.names())}")
    return BACKENDS.get(kind).from_config(cfg, **kwargs)


def resolve_kind(kind: str) -> str:
    if kind != "auto":
        return kind
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        try:
            import torch

            if torch.cuda.is_available():
                return "vllm"
        except ImportError:
            pass
    return "transformers"


def render_chat_template(template: str, messages: Sequence[dict], add_generation_prompt: bool = True,
                         **extra) -> str:
    """Render a Jinja chat template the way transformers does (sandboxed, ``raise_exception`` available)."""
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise TemplateError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template).render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                                bos_token=extra.pop("bos_token", ""),
                                                eos_token=extra.pop("eos_token", ""), **extra)
    except TemplateError as exc:
        raise ConfigError(f"chat template failed to render: {exc}", hint="check --chat-template") from None


def messages_for(prompt: str, system_prompt: Optional[str] = None) -> list[dict]:
    """``[system?] + user``: there is no default system prompt (R1 gets none)."""
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": prompt}]


class LocalTokenizerMixin:
    """``render`` and ``count_tokens`` for backends that hold a tokenizer in-process (transformers, vLLM): the
    configured Jinja template wins over the tokenizer's own chat template."""

    tokenizer: object
    chat_template: Optional[str]

    def render(self, messages: Sequence[dict]) -> str:
        tok = self.tokenizer
        if self.chat_template is not None:
            return render_chat_template(self.chat_template, messages, bos_token=tok.bos_token or "",
                                        eos_token=tok.eos_token or "")
        if getattr(tok, "chat_template", None) is None:
            raise ConfigError("the tokenizer has no chat template", hint="pass --chat-template FILE (a Jinja template)")
        return tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))
