"""The model's context window for local backends (transformers, vLLM): a rendered prompt must fit, and no request
asks for tokens past the window. Remote servers report their own overflow as a per-record error."""

from __future__ import annotations

from typing import Optional, Sequence


def backend_context(backend) -> Optional[int]:
    """Positions a local backend's model attends to (``runtime.workload.model_context``); None for remote ones."""
    from trustlab.runtime.workload import model_context

    explicit = getattr(backend, "context_length", None)
    if isinstance(explicit, int) and explicit > 0:
        return explicit
    if getattr(backend, "count_tokens", None) is None:
        return None
    try:  # vLLM: the engine's own window
        return int(backend.llm.llm_engine.model_config.max_model_len)
    except (AttributeError, TypeError, ValueError):
        pass
    model = getattr(backend, "model", None)
    return model_context(model, getattr(backend, "tokenizer", None)) if model is not None else None


class Windowed:
    """``backend`` with every request's ``max_tokens`` cut to the positions its prompt leaves in the window.

    The budgets (``max_tokens``, ``think_budget``, ``answer_max_tokens``) are caps: a model cannot write past its
    context, so a cap beyond it (``--max-tokens 100000000``) is the window, said once in a warning."""

    def __init__(self, backend, context: int):
        self._backend, self.context, self._warned = backend, context, False

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def complete(self, prompts: Sequence[str], params):
        import dataclasses
        import warnings

        plist = list(params) if isinstance(params, (list, tuple)) else [params] * len(prompts)
        fitted = []
        for prompt, p in zip(prompts, plist):
            room = max(1, self.context - self._backend.count_tokens(prompt))
            if p.max_tokens > room:
                if not self._warned and p.max_tokens > self.context:
                    warnings.warn(f"a generation budget of {p.max_tokens:,} tokens is more than the model's "
                                  f"{self.context:,}-token context: each sample stops where the context ends",
                                  stacklevel=2)
                    self._warned = True
                p = dataclasses.replace(p, max_tokens=room)
            fitted.append(p)
        return self._backend.complete(prompts, fitted)


def require_prompt_fits(backend, context: Optional[int], prompt_id: str, text: str) -> None:
    """ConfigError naming the prompt when its rendered tokens leave no room in the model's context."""
    if context is None:
        return
    if len(text) <= context:  # a token holds at least one character: it fits without counting
        return
    n = backend.count_tokens(text)
    if n >= context:
        from trustlab.runtime.errors import ConfigError

        raise ConfigError(f"prompt {prompt_id!r} is {n:,} tokens ({len(text):,} characters) once rendered, but the "
                          f"model's context holds {context:,}: nothing could be generated",
                          hint="shorten or drop that prompt (--limit / --start select prompts), or use a model with "
                               "a longer context")


