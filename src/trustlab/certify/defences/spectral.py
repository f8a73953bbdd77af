"""Spectral signatures (Tran et al. 2018): per label, score = squared projection of the centred penultimate
activation on the top singular vector; drop the top ceil(factor * rho * n_c) and retrain."""

from __future__ import annotations

import math

import numpy as np


def spectral_scores(features: np.ndarray) -> np.ndarray:
    """(r_i - mean) . v, squared, v = top right singular vector of the centred features."""
    centred = features - features.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return (centred @ vt[0]) ** 2


def spectral_flag(features: np.ndarray, labels: np.ndarray, rate: float, factor: float = 1.5) -> np.ndarray:
    """Indices flagged as poisons: per training label c, the ceil(factor * rate * n_c) highest scores."""
    from trustlab.runtime import progress

    flagged = []
    classes = np.unique(labels)
    for c in progress(classes, "spectral signatures (per class)", total=len(classes)):
        rows = np.flatnonzero(labels == c)
        if len(rows) < 2:
            continue
        k = min(len(rows), math.ceil(factor * rate * len(rows)))
        flagged += list(rows[np.argsort(-spectral_scores(features[rows]))[:k]])
    return np.sort(np.asarray(flagged, dtype=int))


def apply(ctx):
    from .base import filtered_result, penultimate

    rate = ctx.cfg.expected_rate if ctx.cfg.expected_rate is not None else ctx.attack.rate
    flagged = spectral_flag(penultimate(ctx.model, ctx.x_train), np.asarray(ctx.y_train), rate,
                            ctx.cfg.spectral_factor)
    return filtered_result("spectral", ctx, flagged, {"expected_rate": rate})
