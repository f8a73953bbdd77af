"""Model registry: small vision/tabular nets and causal LMs (bundled SmolLM2, ``tiny-llama``, ``fp-tiny``, local dir,
hub name), and a causal LM's identity (``model_identity``: name_or_path plus a weights digest, read from the object).

Nothing heavy is imported here; torch and transformers load inside the functions.
"""

from .nets import mlp, small_cnn

__all__ = ["mlp", "small_cnn", "load_causal_lm", "prepare", "listing", "model_identity", "ModelIdentity"]


def __getattr__(name):
    if name in ("load_causal_lm", "prepare", "listing", "MODELS"):
        from . import causal_lm

        return getattr(causal_lm, name)
    if name in ("model_identity", "ModelIdentity"):
        from . import identity

        return getattr(identity, name)
    raise AttributeError(name)
