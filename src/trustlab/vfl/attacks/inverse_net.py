"""Inverse network (He'19 black-box setting, ResSFL style): learn m -> x on aux pairs, apply to target messages.

Architecture w -> 600 -> 200 -> 100 -> d with LayerNorm + ReLU; Sigmoid output for images, linear for tables.
"""

from __future__ import annotations

import numpy as np


def build_inverse(w: int, d: int, images: bool):
    import torch.nn as nn

    layers, prev = [], w
    for h in (600, 200, 100):
        layers += [nn.Linear(prev, h), nn.LayerNorm(h), nn.ReLU()]
        prev = h
    layers.append(nn.Linear(prev, d))
    if images:
        layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


def fit_inverse(m_aux: np.ndarray, x_aux: np.ndarray, images: bool, epochs: int = 50, lr: float = 1e-3,
                batch: int = 32, seed: int = 0):
    """Adam on MSE(inv(m), x) over the aux pairs; seeded init and shuffling."""
    import torch
    import torch.nn.functional as F

    from ..models import seeded_init

    net = seeded_init(build_inverse(m_aux.shape[1], x_aux.shape[1], images), seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    M, X = torch.from_numpy(m_aux.astype(np.float32)), torch.from_numpy(x_aux.astype(np.float32))
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(M), generator=g)
        for a in range(0, len(M), batch):
            idx = perm[a:a + batch]
            loss = F.mse_loss(net(M[idx]), X[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()


def inverse_attack(m_aux, x_aux, m_target, images: bool, epochs=50, lr=1e-3, batch=32, seed=0) -> np.ndarray:
    """Fit on aux, reconstruct targets; float32 (n, d)."""
    import torch

    net = fit_inverse(m_aux, x_aux, images, epochs, lr, batch, seed)
    with torch.no_grad():
        return net(torch.from_numpy(np.asarray(m_target, np.float32))).numpy()
