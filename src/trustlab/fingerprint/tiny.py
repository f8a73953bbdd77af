"""``fp-tiny``, the fingerprint lab's test model, now lives in the model registry (``trustlab.models.fp_tiny``):
``load_causal_lm("fp-tiny")`` loads it. This module keeps the lab's spellings of it."""

from __future__ import annotations

from trustlab.models.fp_tiny import NAME, SETTINGS, build, cache_folder, corpus, grammar, heldout_texts, \
    prepare_tiny, tokenizer

__all__ = ["NAME", "SETTINGS", "build", "cache_folder", "corpus", "grammar", "heldout_texts", "prepare_tiny",
           "tokenizer", "resolve_model_ref", "is_tiny"]


def resolve_model_ref(ref: str) -> str:
    """``fp-tiny`` -> its cached folder; every other reference unchanged (for ``load_causal_lm``)."""
    return str(prepare_tiny()) if ref in (NAME, "fp_tiny") else ref


def is_tiny(model) -> bool:
    """True for small models (< 5M parameters), which take the tiny preset."""
    from trustlab.models.identity import model_identity

    return model_identity(model).family == "tiny"
