"""White-box inversion (He et al., ACSAC'19): A knows theta_i (incl. BN running stats) and optimises x'.

min_x' match(x', m) + tv TV(x') + l2 mean x'^2 + prior mean (x' - xbar_aux)^2, Adam from the aux mean, clamped to
the data range. match = MSE(f_i(x'), m); for hash the hinge mean relu(1 - m * BN_eval(f_i(x'))), for hash_laplace
the same hinge against sign(m); for gaussian/laplace f_i is followed by the (public) clipping.
"""

from __future__ import annotations

import numpy as np


def tv(x, image_shape) -> "torch.Tensor":  # noqa: F821
    """Anisotropic total variation: mean |dx| + mean |dy| over images."""
    img = x.view(len(x), *image_shape)
    return (img[..., 1:, :] - img[..., :-1, :]).abs().mean() + (img[..., :, 1:] - img[..., :, :-1]).abs().mean()


def whitebox_invert(model, messages: np.ndarray, kind: str, x_aux: np.ndarray, image_shape=None, steps: int = 500,
                    lr: float = 0.01, tv_w: float = 0.01, l2_w: float = 0.0, prior_w: float = 0.01,
                    clip_norm: float = 1.0) -> np.ndarray:
    """Reconstruct each row of ``messages`` (batched); returns x' as float32 (n, d). ``model`` is any party model
    with ``forward`` (and ``pre_sign`` for hashed defences: ours, or a ``make_hashed`` bottom); its mode and
    ``requires_grad`` flags are restored afterwards."""
    from ..models import frozen_eval

    with frozen_eval(model):
        return _invert(model, messages, kind, x_aux, image_shape, steps, lr, tv_w, l2_w, prior_w, clip_norm)


def _invert(model, messages, kind, x_aux, image_shape, steps, lr, tv_w, l2_w, prior_w, clip_norm) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    from ..defences import clip_rows

    m = torch.from_numpy(np.asarray(messages, np.float32))
    mean = torch.from_numpy(x_aux.mean(0, keepdims=True).astype(np.float32))
    if image_shape is not None:
        lo, hi = torch.zeros(1), torch.ones(1)
    else:
        lo = torch.from_numpy(x_aux.min(0, keepdims=True).astype(np.float32))
        hi = torch.from_numpy(x_aux.max(0, keepdims=True).astype(np.float32))
    x = mean.repeat(len(m), 1).clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    target = torch.where(m >= 0, 1.0, -1.0)
    for _ in range(steps):
        if kind in ("hash", "hash_laplace"):
            match = F.relu(1 - target * model.pre_sign(x)).mean()
        else:
            out = model(x)
            if kind in ("gaussian", "laplace"):
                out = clip_rows(out, clip_norm)
            match = F.mse_loss(out, m)
        loss = match + prior_w * ((x - mean) ** 2).mean()
        if l2_w:
            loss = loss + l2_w * (x ** 2).mean()
        if tv_w and image_shape is not None:
            loss = loss + tv_w * tv(x, image_shape)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            x.copy_(torch.maximum(torch.minimum(x, hi), lo))
    return x.detach().numpy().astype(np.float32)
