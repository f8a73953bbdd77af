"""Generation backends: transformers (``hf``), OpenAI-compatible servers, vLLM, and a scripted fake."""

from .base import Backend, Completion, GenParams, make_backend, messages_for, render_chat_template

__all__ = ["Backend", "Completion", "GenParams", "make_backend", "messages_for", "render_chat_template"]
