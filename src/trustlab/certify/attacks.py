"""Availability attacks on certifiers, *reconstructed from the paper's abstract and threat model*
(Lorenz, Kwiatkowska, Fritz, arXiv:2108.11299; full text unavailable, names are descriptive and ours).

A "trigger + label-noise data poisoning": controls data only; adds ceil(rho*n) triggered copies with noisy labels.
B "max-entropy objective poisoning": controls training; adds lam * [CE(draw-averaged softmax of f(T(x) + delta), uniform)
+ gamma * mean per-draw entropy] on a batch share (smoothing victims; gamma = 0 and one draw for deterministic ones).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from trustlab.runtime import ConfigError, require_choice, require_range

from .config import AttackConfig, ceil_count

_B = AttackConfig(kind="max-entropy")  # attack B's defaults, defined once in the config


@dataclass(frozen=True)
class Poisoned:
    x: np.ndarray
    y: np.ndarray  # int labels [n], or soft labels [n, K] for label_mode="soft"
    poison_idx: np.ndarray  # rows of (x, y) that are poisons


def poison_label_noise(x, y, K: int, trigger, rate: float, label_mode: str = "uniform", mode: str = "add",
                       seed: int = 0) -> Poisoned:
    """Attack A (reconstructed): stamp T on ceil(rate * n) random training images and label them uniformly at random
    (``uniform``), uniformly among the wrong classes (``not-true``), with the soft label 1/K (``soft``), or with every
    label (``all-labels``: ceil(rate*n/K) images x K labels). ``add`` appends them; ``replace`` writes each poison over
    a distinct training row, so the set keeps n rows (all-labels: an image's K copies overwrite the image itself and
    K-1 other random rows)."""
    n = len(x)
    require_range("attack.rate", rate, 0.0, 1.0, lo_open=True, hi_open=True)
    require_choice("attack.label_mode", label_mode, ("uniform", "not-true", "soft", "all-labels"))
    require_choice("attack.mode", mode, ("add", "replace"))
    rng = np.random.default_rng(seed)
    if label_mode == "all-labels":
        n_src = ceil_count(rate / K, n)
        images = rng.choice(n, n_src, replace=False)
        src = np.repeat(images, K)  # the image each poison row is made from
        labels = np.tile(np.arange(K), n_src)
    else:
        n_p = ceil_count(rate, n)
        src = rng.choice(n, n_p, replace=False)
        if label_mode == "uniform":
            labels = rng.integers(0, K, n_p)
        elif label_mode == "not-true":
            labels = (y[src] + rng.integers(1, K, n_p)) % K
        else:
            labels = None
    if mode == "replace" and len(src) > n:
        raise ConfigError(f"attack.mode replace needs at most n = {n} poisons, got {len(src)} "
                          f"(rate {rate}, label_mode {label_mode})", hint="lower attack.rate or use attack.mode add")
    xp = trigger(x[src])
    if label_mode == "soft":
        yp = np.full((len(src), K), 1.0 / K, np.float32)
        y_all = np.eye(K, dtype=np.float32)[y]
    else:
        yp, y_all = labels.astype(np.int64), y
    if mode == "add":
        return Poisoned(np.concatenate([x, xp]), np.concatenate([y_all, yp]), np.arange(n, n + len(src)))
    slots = src.copy()
    if label_mode == "all-labels":  # copy 0 of each image overwrites the image, copies 1..K-1 other rows
        others = rng.choice(np.setdiff1d(np.arange(n), images), len(src) - len(images), replace=False)
        spare = np.arange(len(src)) % K != 0
        slots[spare] = others
    x2, y2 = x.copy(), y_all.copy()
    x2[slots] = xp
    y2[slots] = yp
    return Poisoned(x2, y2, np.sort(slots))


class MaxEntropyHook:
    """Attack B (reconstructed): extra loss lam * mean_{x in S} smoothed_vote_loss(f(T(x) + delta_1..M), gamma), S = the
    first ceil(beta * B) rows of the shuffled batch, delta_m ~ N(0, sigma^2 I) fresh per row and draw.

    For smoothing victims (sigma > 0) the loss is CE(p_bar, u) + gamma * mean_m H(p_m) over M = ``draws`` draws
    (p_m = softmax f(T(x) + delta_m), p_bar = mean_m p_m, u = 1/K): the draw-averaged prediction is pushed to uniform
    while each draw is pushed to be confident, so the draws *vote* for every class equally often and smoothing's
    top-class share falls to about 1/K. With gamma = 0 (the earlier objective) a net that outputs one near-uniform
    logit vector on every draw minimises the loss to 1e-4, yet its fixed tie-break keeps the same argmax on ~100% of
    the draws and CERTIFY certifies (MNIST-5k CNN: 0.01 triggered abstain). ``draws=1`` is the spec's per-draw
    CE(f(T(x) + delta), u) (gamma then 0). Deterministic victims (sigma = 0) get CE(f(T(x)), u) plus, when training
    hands the hook ``bounds`` (ibp / crown-ibp victims), ``margin_hinge`` at the victim's eps (``mu=0``: the spec's).
    """

    uses_bounds = True  # train() passes bounds=(BoundNet, eps) for ibp / crown-ibp victims

    def __init__(self, trigger, K: int, lam: float = _B.lam, beta: float = _B.beta, sigma: float = 0.0,
                 draws: int = _B.draws, gamma: float = _B.gamma, mu: float = _B.mu):
        require_range("attack.lam", lam, 0.0)
        require_range("attack.beta", beta, 0.0, 1.0, lo_open=True)
        require_range("attack.draws", draws, 1)
        require_range("attack.gamma", gamma, 0.0, 1.0, hi_open=True)
        require_range("attack.mu", mu, 0.0)
        require_range("attack sigma", sigma, 0.0)
        self.trigger, self.K, self.lam, self.beta, self.sigma = trigger, K, lam, beta, sigma
        self.draws = draws if sigma > 0 else 1
        self.gamma = gamma if sigma > 0 and draws > 1 else 0.0  # one draw: p_bar = p, the spec's CE(f(T(x)+delta), u)
        self.mu = mu if sigma == 0 else 0.0

    @property
    def stamp(self) -> dict:
        """The settings this hook's loss depends on (part of a training checkpoint's stamp)."""
        from .records import array_digest

        out = {"hook": "max-entropy", "K": self.K, "lam": self.lam, "beta": self.beta, "sigma": self.sigma,
               "draws": self.draws, "gamma": self.gamma,
               "trigger": array_digest(self.trigger.mask, self.trigger.pattern)}
        return out if self.sigma > 0 else {**out, "mu": self.mu}

    def __call__(self, model, xb, gen=None, bounds=None):
        import torch

        s = ceil_count(self.beta, len(xb))
        xt = self.trigger(xb[:s])
        if self.sigma > 0:
            xt = xt.repeat(self.draws, *([1] * (xt.ndim - 1)))
            xt = xt + self.sigma * torch.randn(xt.shape, generator=gen, device=xt.device, dtype=xt.dtype)
        z = model(xt).view(self.draws, s, -1)
        loss = smoothed_vote_loss(z, self.gamma)
        if bounds is not None and self.mu > 0:
            net, eps = bounds
            loss = loss + margin_hinge(net, xt, z[0].argmax(dim=1).detach(), eps, self.mu)
        return self.lam * loss.mean()


def margin_hinge(net, x, c, eps: float, mu: float = 1.0):
    """Per input: relu(min_{j != c} lb(z_c - z_j) + mu), lb the IBP margin lower bound over the L-inf box of radius eps
    around x (``bounds.ibp_margin``), c the predicted class. Zero iff the bound misses class c's robustness by >= mu,
    so a bound certifier (certified iff min_j lb > 0) abstains. It rules out the net's shortcut against the
    uniform-output term alone: switch every hidden ReLU off on T(x), so the output is the last bias, uniform to 1e-4
    but constant, and IBP certifies its argmax (MNIST-5k CNN: 0.13 triggered abstain)."""
    import torch

    from .bounds import ibp_margin, spec_matrix

    lo, hi = net.input_box(x, eps)
    lb = ibp_margin(net, lo, hi, spec_matrix(c, net.K, x))
    lb = lb.masked_fill(torch.nn.functional.one_hot(c, net.K).bool(), float("inf"))
    return torch.relu(lb.min(dim=1).values + mu)


def smoothed_vote_loss(z, gamma: float):
    """Per input, from logits z [M, S, K] of M noise draws of S inputs: CE(p_bar, u) + gamma * mean_m H(p_m).

    = log K + KL(u || p_bar) + gamma * mean_m H(p_m) >= log K, with equality iff p_bar = u and every p_m is one-hot,
    i.e. the M draws vote for each class equally often. Near uniform outputs it is, to second order,
    (1 + gamma) log K + K/2 * [(1 - gamma) |p_bar - u|^2 - gamma * mean_m |p_m - p_bar|^2]: a bias shared by every draw
    (which fixes the smoothed argmax) costs, spread across draws is rewarded; gamma in [0, 1), 0 = CE(p_bar, u) alone.
    """
    import torch

    logq = torch.log_softmax(z, dim=2)
    log_pbar = torch.logsumexp(logq, dim=0) - math.log(z.shape[0])  # log of the draw-averaged softmax, stably
    loss = -log_pbar.mean(dim=1)
    if gamma > 0:
        loss = loss + gamma * (-(logq.exp() * logq).sum(dim=2)).mean(dim=0)
    return loss
