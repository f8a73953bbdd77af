"""The drop-in API on a user's own split model: make_hashed, the consistency loss as a function, hamming_scores."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from trustlab.runtime import ConfigError
from trustlab.vfl import HashConfig, consistency_loss, hamming_scores, make_hashed

DOC = Path(__file__).resolve().parents[2] / "docs" / "vfl.md"


class UserBottom(nn.Module):
    """Not one of ours: a user's own bottom with a residual-ish tanh block."""

    def __init__(self, d):
        super().__init__()
        self.a, self.b = nn.Linear(d, 48), nn.Linear(48, 8)

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return self.b(h + 0.5 * h ** 2)


def test_user_split_model_trains_with_make_hashed():
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True)
    X, y = torch.tensor(StandardScaler().fit_transform(X), dtype=torch.float32), torch.tensor(y)
    blocks = [X[:, :10], X[:, 10:]]
    torch.manual_seed(1)
    hv = make_hashed([UserBottom(10), UserBottom(20)], nn.Linear(16, 2), HashConfig(n_classes=2, code_len=8))
    opt = torch.optim.Adam(hv.model.parameters(), lr=1e-2)
    for _ in range(20):
        for idx in torch.randperm(400).split(50):
            logits, msgs = hv.model([b[idx] for b in blocks])
            opt.zero_grad()
            hv.loss(logits, msgs, y[idx]).backward()
            opt.step()
    hv.model.eval()
    with torch.no_grad():
        logits, msgs = hv.model([b[400:] for b in blocks])
    assert (logits.argmax(1) == y[400:]).float().mean() >= 0.9
    assert all(set(m.unique().tolist()) <= {-1.0, 1.0} and m.shape == (169, 8) for m in msgs)
    # the user's own modules are trained in place, not copies
    assert hv.model.bottoms[0].bottom.a.weight.grad is not None
    # the consistency term pulled codes onto their class code: most test codes decode to the true class
    decoded = np.argmin([[int((m[i] != hv.codes[c]).sum()) for c in range(2)] for m in msgs[:1]
                         for i in range(len(m))], axis=1)
    assert (decoded == y[400:].numpy()).mean() >= 0.85


def test_docs_example_runs_and_detects_noise(capsys):
    text = DOC.read_text()
    block = re.search(r"## Your own split model.*?```python\n(.*?)```", text, re.S).group(1)
    ns: dict = {}
    exec(compile(block, str(DOC), "exec"), ns)
    assert "test accuracy" in capsys.readouterr().out
    assert ns["acc"] >= 0.85
    assert ns["abnormal"].mean() > ns["clean"].mean() + 1.0  # noise at party 0 lands far from o_yhat


def test_consistency_loss_hand_value():
    # codes o_0 = (+,+,+,+), o_1 = (+,-,+,-); L = 4, two parties, batch of two with labels (0, 1)
    codes = torch.tensor([[1., 1, 1, 1], [1, -1, 1, -1]])
    y = torch.tensor([0, 1])
    m0 = torch.tensor([[1., 1, 1, -1], [1, -1, 1, -1]])    # d_H to o_y: 1, 0 -> 1 - cos = 2d/L: 0.5, 0
    m1 = torch.tensor([[-1., -1, 1, 1], [-1, 1, -1, 1]])   # d_H: 2, 4          -> 1.0, 2.0
    # (1/N) sum_i mean_b: ((0.5 + 0) / 2 + (1 + 2) / 2) / 2 = (0.25 + 1.5) / 2
    assert consistency_loss([m0, m1], codes, y).item() == pytest.approx(0.875)
    # non-binary (noisy) messages use the norms: cos((3,4,0,0), o_0) = 7 / (5 * 2)
    m = torch.tensor([[3., 4, 0, 0]])
    assert consistency_loss([m], codes, torch.tensor([0])).item() == pytest.approx(1 - 0.7)
    hv = make_hashed([nn.Linear(3, 4)], nn.Linear(4, 2), HashConfig(n_classes=2, code_len=4, consistency_weight=2))
    hv.codes = codes
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    ce = torch.nn.functional.cross_entropy(logits, y).item()
    assert hv.loss(logits, [m0, m1], y).item() == pytest.approx(ce + 2 * 0.875)


def test_hamming_scores_hand_values():
    codes = np.array([[1, 1, 1, 1], [1, -1, 1, -1]])
    m0 = np.array([[1, 1, 1, -1], [-1, -1, -1, -1]])
    m1 = np.array([[1, 1, 1, 1], [1, -1, 1, 1]])
    # against labels (0, 1): row 0: 1 + 0; row 1: d((-,-,-,-),(+,-,+,-)) = 2, d((+,-,+,+),(+,-,+,-)) = 1
    assert hamming_scores([m0, m1], codes, np.array([0, 1])).tolist() == [1.0, 3.0]
    # default labels: the jointly nearest class; row 1 scores 3 vs class 1 and 4 + 1 = 5 vs class 0 -> 3
    assert hamming_scores([m0, m1], codes).tolist() == [1.0, 3.0]
    # tensors and any sign (0 counts as +1) work the same
    t = [torch.tensor(m0 * 0.3), torch.tensor(np.where(m1 > 0, 0.0, -2.0))]
    assert hamming_scores(t, torch.tensor(codes), torch.tensor([0, 1])).tolist() == [1.0, 3.0]
    hv = make_hashed([nn.Linear(3, 4), nn.Linear(3, 4)], nn.Linear(8, 2), HashConfig(n_classes=2, code_len=4))
    hv.codes = torch.tensor(codes, dtype=torch.float32)
    assert hv.scores([m0, m1]).tolist() == [1.0, 3.0]


def test_make_hashed_refuses_bad_models_and_widths():
    with pytest.raises(ConfigError, match="list of bottom models"):
        make_hashed(nn.Linear(3, 4), nn.Linear(4, 2), HashConfig(n_classes=2, code_len=4))
    with pytest.raises(ConfigError, match="not a torch.nn.Module"):
        make_hashed([lambda x: x], nn.Linear(4, 2), HashConfig(n_classes=2, code_len=4))
    hv = make_hashed([nn.Linear(3, 5)], nn.Linear(4, 2), HashConfig(n_classes=2, code_len=4))
    with pytest.raises(ConfigError, match="code_len=4"):
        hv.model([torch.zeros(2, 3)])
    with pytest.raises(ConfigError, match="n_classes"):
        HashConfig(n_classes=1)
    with pytest.raises(ConfigError, match="at least 4"):
        make_hashed([nn.Linear(3, 3)], nn.Linear(3, 10), HashConfig(n_classes=10, code_len=3))


def test_whitebox_attack_on_a_make_hashed_bottom_leaves_the_model_as_it_was():
    """The attacks take the user's objects too; the bottom keeps its training mode and trainable weights."""
    from trustlab.vfl.attacks.whitebox import whitebox_invert

    torch.manual_seed(0)
    hv = make_hashed([nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8))], nn.Linear(8, 2),
                     HashConfig(n_classes=2, code_len=8))
    bottom = hv.model.bottoms[0]
    x = torch.rand(64, 6)
    bottom(x)  # one train-mode batch sets BN's running stats
    bottom.eval()
    with torch.no_grad():
        msgs = bottom(x[:8]).numpy()
    bottom.train()
    xr = whitebox_invert(bottom, msgs, "hash", x.numpy(), None, steps=200, lr=0.05, tv_w=0, prior_w=0)
    assert xr.shape == (8, 6) and np.isfinite(xr).all()
    assert bottom.training and bottom.hash.bn.training  # restored after the attack
    assert all(p.requires_grad for p in hv.model.parameters())
    with torch.no_grad():
        bottom.eval()
        agree = (bottom(torch.from_numpy(xr)).numpy() == msgs).mean()
    assert agree >= 0.9  # the inversion found inputs whose codes match the observed ones
