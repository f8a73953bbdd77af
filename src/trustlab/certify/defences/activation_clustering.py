"""Activation clustering (Chen et al. 2018): per label, reduce penultimate activations to ``dims`` (PCA or ICA),
KMeans k=2 (seeded); flag the smaller cluster only if its share < ``max_share``; retrain without the flagged rows."""

from __future__ import annotations

import numpy as np


def ac_flag(features: np.ndarray, labels: np.ndarray, dims: int = 10, max_share: float = 0.35, reduce: str = "pca",
            seed: int = 0) -> np.ndarray:
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA, FastICA

    from trustlab.runtime import progress

    flagged = []
    classes = np.unique(labels)
    for c in progress(classes, "activation clustering (per class)", total=len(classes)):
        rows = np.flatnonzero(labels == c)
        if len(rows) < 4:
            continue
        d = max(1, min(dims, len(rows) - 1, features.shape[1]))
        red = (PCA(d, random_state=seed) if reduce == "pca" else FastICA(d, random_state=seed, max_iter=500))
        z = red.fit_transform(features[rows])
        lab = KMeans(2, n_init=10, random_state=seed).fit_predict(z)
        small = int(np.bincount(lab, minlength=2).argmin())
        if np.mean(lab == small) < max_share:
            flagged += list(rows[lab == small])
    return np.sort(np.asarray(flagged, dtype=int))


def apply(ctx):
    from .base import filtered_result, penultimate

    flagged = ac_flag(penultimate(ctx.model, ctx.x_train), np.asarray(ctx.y_train), ctx.cfg.ac_dims,
                      ctx.cfg.ac_max_share, ctx.cfg.ac_reduce, ctx.seed)
    return filtered_result("activation-clustering", ctx, flagged, {})
