"""Deterministic L-inf certifiers: IBP, CROWN-IBP, CROWN, best-of, with the margin spec folded into the last layer.

The spec rows e_c - e_j (c = predicted class) are multiplied into the last affine layer (W~ = C W_L, b~ = C b_L), so
every method bounds the margins z_c - z_j directly; input c is certified iff min_{j != c} lb(z_c - z_j) > 0 on the
box [max(x - eps, lo), min(x + eps, hi)]. Every bound is sound; CROWN is *not* always tighter than IBP.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .boundnet import BoundNet


# --- spec folding -------------------------------------------------------------------------------------------------
def spec_matrix(target, K: int, like):
    """C[b, j] = e_c - e_j for c = target[b]: [B, K, K] (row c is zero)."""
    import torch

    eye = torch.eye(K, dtype=like.dtype, device=like.device)
    return eye[target][:, None, :] - eye[None]


def _fold(net: BoundNet, C):
    """(ops before the spec layer, W~ [B, K, d], b~ [B, K]) with C folded into the last linear layer."""
    last = net.ops[-1]
    if last.kind == "linear":
        return net.ops[:-1], C @ last.w, C @ last.b
    return net.ops, C, C.new_zeros(C.shape[:2])


# --- IBP ----------------------------------------------------------------------------------------------------------
def ibp_pass(ops, lo, hi, relu_bounds: list | None = None):
    """Propagate the box [lo, hi] through ``ops``; record pre-activation (l, u) of each ReLU; return (mu, r)."""
    mu, r = (hi + lo) / 2, (hi - lo) / 2
    for op in ops:
        if op.kind == "relu" and relu_bounds is not None:
            relu_bounds.append((mu - r, mu + r))
        mu, r = op.ibp(mu, r)
    return mu, r


def _affine_bound(W, b, mu, r):
    """lb of W.z + b over the box centre mu, radius r (flattened): W.mu - |W|.r + b."""
    mu, r = mu.reshape(mu.shape[0], -1, 1), r.reshape(r.shape[0], -1, 1)
    return (W @ mu).squeeze(-1) - (W.abs() @ r).squeeze(-1) + b


def ibp_margin(net: BoundNet, lo, hi, C):
    ops, W, b = _fold(net, C)
    mu, r = ibp_pass(ops, lo, hi)
    return _affine_bound(W, b, mu, r)


def ibp_logit_bounds(net: BoundNet, lo, hi):
    """Plain IBP interval of the logits (the looser interval-difference comparator, and Gowal's training loss)."""
    mu, r = ibp_pass(net.ops, lo, hi)
    return mu - r, mu + r


# --- CROWN --------------------------------------------------------------------------------------------------------
def _relu_relax(l, u):
    """(lower slope a, upper slope s, upper intercept t) of the CROWN ReLU relaxation, elementwise."""
    import torch

    active, inactive = l >= 0, u <= 0
    unstable = ~(active | inactive)
    denom = torch.where(unstable, u - l, torch.ones_like(u))
    s_un = u / denom
    s = torch.where(active, torch.ones_like(u), torch.where(unstable, s_un, torch.zeros_like(u)))
    t = torch.where(unstable, -s_un * l, torch.zeros_like(u))
    a = torch.where(active, torch.ones_like(u), torch.where(unstable, (u >= -l).to(u.dtype), torch.zeros_like(u)))
    return a, s, t


def backward_bound(ops, lam, nu, relu_bounds, lo, hi):
    """Lower bound of lam . f_ops(x) + nu over the box: substitute back through ``ops`` with CROWN relaxations
    (relu_bounds: the pre-activation (l, u) of each ReLU in ``ops``, in order)."""
    k = sum(op.kind == "relu" for op in ops)
    for op in reversed(ops):
        if op.kind == "relu":
            k -= 1
            l, u = relu_bounds[k]
            a, s, t = _relu_relax(l.unsqueeze(1), u.unsqueeze(1))
            pos, neg = lam.clamp_min(0), lam.clamp_max(0)
            nu = nu + (neg * t).reshape(*lam.shape[:2], -1).sum(-1)
            lam = pos * a + neg * s
        else:
            lam, c = op.back(lam)
            nu = nu + c
    centre, rad = ((hi + lo) / 2).unsqueeze(1), ((hi - lo) / 2).unsqueeze(1)
    B, M = lam.shape[:2]
    return (lam * centre).reshape(B, M, -1).sum(-1) - (lam.abs() * rad).reshape(B, M, -1).sum(-1) + nu


def crown_relu_bounds(ops, lo, hi, max_elems: int = 2_000_000) -> list:
    """Pre-activation bounds of every ReLU by CROWN itself (identity spec per layer; O(depth^2)), in chunks of
    neurons so that one backward pass holds about ``max_elems`` numbers."""
    import torch

    bounds: list = []
    widest = max(int(np.prod(o.in_shape)) for o in ops) if ops else 1
    for p, op in enumerate(ops):
        if op.kind != "relu":
            continue
        shape = op.in_shape
        n = int(np.prod(shape))
        B = lo.shape[0]
        chunk = max(1, max_elems // (B * widest))
        lbs, ubs = [], []
        for s in range(0, n, chunk):
            m = min(chunk, n - s)
            eye = torch.zeros(m, n, dtype=lo.dtype, device=lo.device)
            eye[torch.arange(m), torch.arange(s, s + m)] = 1
            lam = eye.reshape(1, m, *shape).expand(B, m, *shape)
            zero = lo.new_zeros(B, m)
            lbs.append(backward_bound(ops[:p], lam, zero, bounds, lo, hi))
            ubs.append(-backward_bound(ops[:p], -lam, zero, bounds, lo, hi))
        bounds.append((torch.cat(lbs, 1).reshape(B, *shape), torch.cat(ubs, 1).reshape(B, *shape)))
    return bounds


def crown_margin(net: BoundNet, lo, hi, C, intermediate: str = "ibp"):
    ops, W, b = _fold(net, C)
    if intermediate == "ibp":
        relu_bounds: list = []
        ibp_pass(ops, lo, hi, relu_bounds)
    else:
        relu_bounds = crown_relu_bounds(ops, lo, hi)
    shape = ops[-1].out_shape if ops else net.in_shape
    lam = W.reshape(W.shape[0], W.shape[1], *shape)
    return backward_bound(ops, lam, b, relu_bounds, lo, hi)


# --- public API ---------------------------------------------------------------------------------------------------
def margin_lower_bound(net: BoundNet, x, eps: float, target, method: str = "ibp", clip=(0.0, 1.0)):
    """[B, K] sound lower bounds of z_c - z_j (c = target) over the clipped L-inf box; column c is +inf."""
    import torch

    x = torch.as_tensor(x, dtype=net.dtype)
    target = torch.as_tensor(target, dtype=torch.long)
    lo, hi = net.input_box(x, eps, clip)
    C = spec_matrix(target, net.K, x)
    if method == "ibp":
        lb = ibp_margin(net, lo, hi, C)
    elif method == "crown-ibp":
        lb = crown_margin(net, lo, hi, C, "ibp")
    elif method == "crown":
        lb = crown_margin(net, lo, hi, C, "crown")
    elif method == "best":
        lb = torch.maximum(ibp_margin(net, lo, hi, C), crown_margin(net, lo, hi, C, "ibp"))
    else:
        from trustlab.runtime import ConfigError

        raise ConfigError(f"bounds method must be ibp, crown-ibp, crown or best; got {method!r}",
                          hint="set bounds.method (or --certifier) to ibp, crown-ibp, crown or best")
    return lb.masked_fill(torch.nn.functional.one_hot(target, net.K).bool(), float("inf"))


@dataclass(frozen=True)
class BoundsCert:
    pred: np.ndarray
    certified: np.ndarray
    margin_lb: np.ndarray


def certify_bounds(net: BoundNet, x, cfg, method: str | None = None, eps: float | None = None) -> BoundsCert:
    """Certify the predicted class c of each input: certified iff min_{j != c} lb(z_c - z_j) > 0 at ``eps``."""
    import torch

    with torch.no_grad():
        x = torch.as_tensor(np.asarray(x), dtype=net.dtype)
        pred = net.forward(x).argmax(1)
        lb = margin_lower_bound(net, x, cfg.eps if eps is None else eps, pred, method or cfg.method, cfg.clip)
        m = lb.min(1).values
    return BoundsCert(pred.numpy(), (m > 0).numpy(), m.numpy())


def robust_ce(net: BoundNet, x, y, eps: float, kind: str = "margin", clip=(0.0, 1.0)):
    """IBP training loss: CE(z~, y) with z~_y = 0, z~_j = -lb(z_y - z_j) (``margin``) or Gowal's worst-case logits
    (``interval``: lower bound for y, upper bound for the others)."""
    import torch
    import torch.nn.functional as F

    lo, hi = net.input_box(x, eps, clip)
    if kind == "interval":
        l, u = ibp_logit_bounds(net, lo, hi)
        onehot = F.one_hot(y, net.K).bool()
        return F.cross_entropy(torch.where(onehot, l, u), y)
    lb = ibp_margin(net, lo, hi, spec_matrix(y, net.K, x))
    return F.cross_entropy(-lb, y)


def crown_ibp_ce(net: BoundNet, x, y, eps: float, beta: float, clip=(0.0, 1.0)):
    """CROWN-IBP training loss (Zhang et al. 2020): CE(z~, y), z~_j = -lb(z_y - z_j) with the beta-mixed margin bound
    lb = beta * lb_CROWN-IBP + (1 - beta) * lb_IBP (both sound, so the mix is; beta ramps 1 -> 0 in training)."""
    import torch.nn.functional as F

    lo, hi = net.input_box(x, eps, clip)
    C = spec_matrix(y, net.K, x)
    lb = ibp_margin(net, lo, hi, C)
    if beta > 0:
        lb = beta * crown_margin(net, lo, hi, C, "ibp") + (1 - beta) * lb
    return F.cross_entropy(-lb, y)
