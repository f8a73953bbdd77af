"""Generation backends: transformers (``hf``), OpenAI-compatible servers, vLLM, and a scripted fake."""

from .base import BACKENDS, Backend, Completion, GenParams, make_backend, messages_for, render_chat_template

__all__ = ["BACKENDS", "Backend", "Completion", "GenParams", "make_backend", "messages_for", "render_chat_template"]
