"""Defences against the availability attacks: STRIP (test-time detector), spectral signatures and activation
clustering (training-set filters, attack A only), fine-pruning. ``apply(name, ctx) -> DefenceResult``."""

from __future__ import annotations

from . import activation_clustering, fine_pruning, spectral, strip  # noqa: F401
from .base import FILTERING, DefenceContext, DefenceResult


def apply(name: str, ctx: DefenceContext) -> DefenceResult:
    if name in FILTERING and ctx.attack.kind != "label-noise":
        return DefenceResult(name, False, info={"reason": "not_applicable: attack B leaves the data clean; the "
                                                          "defender gets a model, no poisoned data"})
    if name == "spectral":
        return spectral.apply(ctx)
    if name == "activation-clustering":
        return activation_clustering.apply(ctx)
    if name == "fine-pruning":
        return fine_pruning.apply(ctx)
    if name == "strip":
        return DefenceResult("strip", True)  # a test-time detector: scored by the experiment on test inputs
    from trustlab.runtime import ConfigError

    raise ConfigError(f"unknown defence {name!r}", hint="choose strip, spectral, activation-clustering, fine-pruning")
