"""The data of one seed: load the dataset, split it (stratified, seeded), cap the test set, pick the defender's clean
subset, stamp the trigger on the test inputs. Labels and pixels are checked where they enter (DataError)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from trustlab.runtime import ConfigError, DataError, derive_seed

from .config import ExperimentConfig, ceil_count


@dataclass
class SeedData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_trig: np.ndarray
    def_idx: np.ndarray  # defender's clean subset of the training pool
    K: int
    shape: tuple
    trigger: Any


def prepare_data(cfg: ExperimentConfig, seed: int) -> SeedData:
    """Load the dataset, split it (stratified, seeded) unless it has its own test split, cap the test set."""
    from trustlab.data import ImageData, load, stratified_split

    from .triggers import Trigger

    d = load(cfg.data)
    if not isinstance(d, ImageData):
        raise ConfigError(f"dataset {cfg.data!r} is not an image dataset", hint="use digits, mnist-5k, fashion-mnist, "
                                                                                 "idx:DIR or npz:FILE")
    if d.x_test is None:
        tr, te = stratified_split(d.y, cfg.test_frac, seed)
        x_tr, y_tr, x_te, y_te = d.x[tr], d.y[tr], d.x[te], d.y[te]
    else:
        x_tr, y_tr, x_te, y_te = d.x, d.y, d.x_test, d.y_test
    K = d.num_classes
    check_data(x_tr, y_tr, K, "train")
    check_data(x_te, y_te, K, "test")
    rng = np.random.default_rng(derive_seed(seed, "subsets"))
    if cfg.max_test is not None and cfg.max_test < len(x_te):
        keep = np.sort(rng.choice(len(x_te), cfg.max_test, replace=False))
        x_te, y_te = x_te[keep], y_te[keep]
    n_def = max(1, ceil_count(cfg.defences.defender_frac, len(x_tr)))
    def_idx = np.sort(rng.choice(len(x_tr), n_def, replace=False))
    trigger = Trigger.from_config(cfg.trigger, x_tr.shape[1:])
    return SeedData(x_tr, y_tr, x_te, y_te, trigger(x_te), def_idx, K, tuple(x_tr.shape[1:]), trigger)


def check_data(x, y, K, split):
    """DataError naming the first bad index: K < 2, a label outside [0, K), NaN/inf, a pixel outside [0, 1]."""
    if K < 2:
        raise DataError(f"{split} data has K = {K} classes; need at least 2")
    bad = np.flatnonzero((y < 0) | (y >= K))
    if len(bad):
        raise DataError(f"{split} label at index {bad[0]} is {y[bad[0]]}, outside [0, {K})")
    flat = x.reshape(len(x), -1)
    nonfinite = np.flatnonzero(~np.isfinite(flat).all(1))
    if len(nonfinite):
        raise DataError(f"{split} image {nonfinite[0]} holds NaN or inf")
    out = np.flatnonzero(((flat < 0) | (flat > 1)).any(1))
    if len(out):
        raise DataError(f"{split} image {out[0]} has values outside [0, 1]")
