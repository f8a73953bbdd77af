"""HashVFL lab: hashed vertical federated learning, reconstruction and label-leakage attacks, detection.

Qiu et al., *HashVFL*, IEEE TIFS 19 (2024), arXiv 2212.00325. Heavy imports (torch, grpc) stay inside modules:
the names below are loaded on first use, so ``import trustlab.vfl`` stays light.

Drop-in on your own split model: ``make_hashed(bottoms, top, HashConfig(n_classes=...))`` (see ``hashed.py``);
the whole pipeline on a dataset: ``trustlab.vfl.train.train(cfg, dir)`` -> ``TrainResult``, then
``trustlab.vfl.evaluate.evaluate(result)`` -> ``EvalResult`` (``train``/``evaluate`` are submodules, so they are
not re-exported here).
"""

_LAZY = {
    "HashConfig": "hashed", "Hashed": "hashed", "make_hashed": "hashed", "hamming_scores": "hashed",
    "consistency_loss": "hashed", "hashvfl_loss": "hashed",
    "VFLConfig": "config", "load_config": "config",
    "TrainResult": "train", "EvalResult": "evaluate",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
