import numpy as np
import pytest
import torch
import torch.nn as nn

from trustlab.certify import ABSTAIN
from trustlab.certify.config import SmoothingConfig
from trustlab.certify.smoothing import SmoothedClassifier, certify_inputs
from trustlab.certify.stats import CertifyWarning, max_radius
from trustlab.runtime import ModelError


class Const(nn.Module):
    def forward(self, x):
        out = torch.zeros(len(x), 3)
        out[:, 1] = 1.0
        return out


class Sign(nn.Module):
    """Class 0 if x[0] < 0 else class 1."""

    def forward(self, x):
        v = x.reshape(len(x), -1)[:, :1]
        return torch.cat([-v, v], 1)


def test_constant_model_certifies_at_max_radius():
    cert = SmoothedClassifier(Const(), 3, 0.5).certify(np.zeros((1, 2, 2), np.float32), 100, 1000, 0.001)
    assert cert.pred == 1 and cert.n_a == 1000
    assert cert.radius == pytest.approx(max_radius(1000, 0.001, 0.5), abs=1e-9)


def test_sign_model_abstains_on_the_boundary():
    sc = SmoothedClassifier(Sign(), 2, 0.25)
    assert sc.certify(np.zeros((1, 1, 1), np.float32), 100, 1000, 0.001).pred == ABSTAIN
    assert sc.certify(np.full((1, 1, 1), 2.0, np.float32), 100, 1000, 0.001).pred == 1


def test_predict_with_n_10_abstains_and_warns():
    with pytest.warns(CertifyWarning):
        assert SmoothedClassifier(Const(), 3, 0.25).predict(np.zeros((1, 2, 2), np.float32), 10, 0.001) == ABSTAIN
    assert SmoothedClassifier(Const(), 3, 0.25).predict(np.zeros((1, 2, 2), np.float32), 11, 0.001) == 1


@pytest.fixture(scope="module")
def net_and_x():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    x = np.random.default_rng(0).random((12, 1, 4, 4)).astype(np.float32)
    return m, x


def test_same_seed_identical_across_batch_shard_and_resume(net_and_x, tmp_path):
    m, x = net_and_x
    base = certify_inputs(m, x, SmoothingConfig(n=700, n0=50, batch_size=1000, predict=True), seed=3, K=4)
    abst = [r["pred"] == ABSTAIN for r in base]
    assert 0 < sum(abst) < len(base)  # a mix of decisions, so the comparison means something
    for b in (1, 7):
        assert certify_inputs(m, x, SmoothingConfig(n=700, n0=50, batch_size=b, predict=True), seed=3, K=4) == base
    shards = [certify_inputs(m, x, SmoothingConfig(n=700, n0=50, predict=True), seed=3, K=4, shard=(r, 3))
              for r in range(3)]
    assert sorted(sum(shards, []), key=lambda r: r["idx"]) == base
    # an interrupted run: 5 finished records and a truncated 6th line, then resume
    path = tmp_path / "rs.jsonl"
    certify_inputs(m, x[:6], SmoothingConfig(n=700, n0=50, predict=True), seed=3, K=4, records=path)
    text = path.read_text().splitlines(keepends=True)
    path.write_text("".join(text[:5]) + text[5][:17])
    resumed = certify_inputs(m, x, SmoothingConfig(n=700, n0=50, predict=True), seed=3, K=4, records=path)
    assert resumed == base
    assert len(path.read_text().splitlines()) == len(x)
    other = certify_inputs(m, x, SmoothingConfig(n=700, n0=50, predict=True), seed=4, K=4)
    assert other != base


def test_bad_logits_raise_model_error_with_idx(net_and_x):
    _, x = net_and_x

    class Bad(nn.Module):
        def forward(self, z):
            out = torch.zeros(len(z), 4)
            out[:, 0] = float("nan")
            return out

    with pytest.raises(ModelError, match="idx 0"):
        certify_inputs(Bad(), x[:2], SmoothingConfig(n=20, n0=10), seed=0, K=4)
    with pytest.raises(ModelError, match=r"expected \("):
        certify_inputs(Const(), x[:2], SmoothingConfig(n=20, n0=10), seed=0, K=4)


def test_train_mode_is_restored(net_and_x):
    m, x = net_and_x
    m.train()
    certify_inputs(m, x[:1], SmoothingConfig(n=20, n0=10), seed=0, K=4)
    assert m.training
