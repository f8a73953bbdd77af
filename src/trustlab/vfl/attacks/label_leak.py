"""Passive label leakage (simplified model completion, Fu et al. USENIX Sec'22): a feature party fits logistic
regression on its own messages with k labelled aux samples per class. Baselines: the majority class, and the same
classifier on the party's raw features."""

from __future__ import annotations

import warnings

import numpy as np


def k_shot(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k indices per class (all of a class with fewer, with a warning)."""
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if len(idx) < k:
            warnings.warn(f"class {c} has only {len(idx)} aux samples (< k={k})", stacklevel=2)
        out.append(rng.choice(idx, size=min(k, len(idx)), replace=False))
    return np.sort(np.concatenate(out))


def _fit_predict(x_tr, y_tr, x_te):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from sklearn.pipeline import make_pipeline

    if len(np.unique(y_tr)) < 2:
        return np.full(len(x_te), y_tr[0])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(x_tr, y_tr)
    return clf.predict(x_te)


def label_leak(m_aux, x_aux, y_aux, m_test, x_test, y_test, k: int = 4, seed: int = 0) -> dict:
    """Accuracy of labels guessed from the party's messages, vs the majority class and raw features."""
    idx = k_shot(y_aux, k, seed)
    acc = float(np.mean(_fit_predict(m_aux[idx], y_aux[idx], m_test) == y_test))
    raw = float(np.mean(_fit_predict(x_aux[idx], y_aux[idx], x_test) == y_test))
    majority = float(np.bincount(y_test).max() / len(y_test))
    return {"k": k, "acc": acc, "majority": majority, "raw_features": raw, "n": int(len(y_test))}
