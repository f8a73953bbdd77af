import numpy as np
import pytest
import torch
import torch.nn as nn

from trustlab.certify.defences.activation_clustering import ac_flag
from trustlab.certify.defences.fine_pruning import _accuracy, prune
from trustlab.certify.defences.spectral import spectral_flag
from trustlab.certify.defences.strip import strip_entropy, thresholds, flag
from trustlab.certify.defences.base import recall_precision


def _planted(rng, n=600, d=32, rate=0.05):
    """Clean features per class around a centre, poisons shifted along one direction inside class 0."""
    labels = rng.integers(0, 3, n)
    feats = rng.normal(size=(n, d)) + 3 * np.eye(3, d)[labels]
    poison = rng.choice(np.flatnonzero(labels == 0), int(rate * n), replace=False)
    feats[poison] += 6 * np.eye(d)[10]
    return feats, labels, poison


def test_spectral_and_ac_recover_planted_poisons():
    feats, labels, poison = _planted(np.random.default_rng(0))
    rec, _ = recall_precision(spectral_flag(feats, labels, 0.05 * 600 / (labels == 0).sum()), poison)
    assert rec >= 0.9
    rec_ac, prec_ac = recall_precision(ac_flag(feats, labels, seed=0), poison)
    assert rec_ac >= 0.9 and prec_ac >= 0.9


def test_strip_entropy_zero_on_constant_model_and_uniform_is_log2k():
    class Const(nn.Module):
        def __init__(self, big):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))
            self.big = big

        def forward(self, x):
            out = torch.zeros(len(x), 4)
            out[:, 2] = self.big
            return out + 0 * self.w

    x = np.random.default_rng(0).random((5, 1, 3, 3)).astype(np.float32)
    assert np.allclose(strip_entropy(Const(1e4), x, x, n=3), 0.0)
    assert np.allclose(strip_entropy(Const(0.0), x, x, n=3), 2.0)
    h = np.linspace(0, 1, 101)
    lo, hi = thresholds(h, 0.02, "both")
    assert flag(h, (lo, hi)).mean() == pytest.approx(0.02, abs=0.011)
    assert thresholds(h, 0.01, "low")[1] == np.inf


def test_fine_pruning_respects_its_accuracy_budget(digits_split):
    from trustlab.certify.config import TrainConfig
    from trustlab.certify.train import train
    from trustlab.models import mlp

    x, y = digits_split[0][:400], digits_split[1][:400]
    torch.manual_seed(0)
    model = mlp((1, 8, 8), (32, 32), 10)
    train(model, x, y, TrainConfig(epochs=10), seed=0)
    base = _accuracy(model, x[:150], y[:150])
    mask, pruned, before, after = prune(model, x[:150], y[:150], max_drop=0.04)
    assert before == pytest.approx(base) and 0 < pruned < 32
    assert before - after <= 0.04 + 1e-12
    assert before - _accuracy(model, x[:150], y[:150]) <= 0.04 + 1e-12
    w = model[3].weight.detach()
    assert torch.all(w[~torch.as_tensor(mask)] == 0)
