"""Model registry: small vision/tabular nets and causal LMs (bundled SmolLM2, local dir, hub name, tiny random).

Nothing heavy is imported here; torch and transformers load inside the functions.
"""

from .nets import mlp, small_cnn

__all__ = ["mlp", "small_cnn", "load_causal_lm", "prepare", "listing"]


def __getattr__(name):
    if name in ("load_causal_lm", "prepare", "listing", "MODELS"):
        from . import causal_lm

        return getattr(causal_lm, name)
    raise AttributeError(name)
