"""Seeded stratified splits shared by the labs."""

from __future__ import annotations

import numpy as np


def stratified_split(y: np.ndarray, test_frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices), stratified by label, deterministic in ``seed``; both sorted."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    train, test = train_test_split(idx, test_size=test_frac, random_state=seed, stratify=y)
    return np.sort(train), np.sort(test)
