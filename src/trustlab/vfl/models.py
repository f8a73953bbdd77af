"""Bottom and top models, the sign layer with a straight-through estimator, and HashVFL's hash head."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn


class SignSTE(torch.autograd.Function):
    """Forward: sign with Sign(0) = +1. Backward: identity STE, or ``clipped`` (zero where |v| > 1)."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, clipped: bool = False) -> torch.Tensor:
        ctx.save_for_backward(v)
        ctx.clipped = clipped
        return torch.where(v >= 0, torch.ones_like(v), -torch.ones_like(v))

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (v,) = ctx.saved_tensors
        if ctx.clipped:
            g = g * (v.abs() <= 1).to(g.dtype)
        return g, None


def sign_ste(v: torch.Tensor, ste: str = "identity") -> torch.Tensor:
    return SignSTE.apply(v, ste == "clipped")


class HashHead(nn.Module):
    """h = Sign(BN(v)): affine BatchNorm1d(L) (batch stats in train mode, running stats in eval), then SignSTE.

    ``pre_sign`` returns BN(v), which the white-box attacker with the party's weights uses."""

    def __init__(self, L: int, ste: str = "identity"):
        super().__init__()
        self.bn = nn.BatchNorm1d(L, affine=True)
        self.ste = ste

    def pre_sign(self, v: torch.Tensor) -> torch.Tensor:
        return self.bn(v)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return sign_ste(self.bn(v), self.ste)


class BottomMLP(nn.Sequential):
    """d -> hidden -> ReLU -> w."""

    def __init__(self, d: int, hidden: int, w: int):
        super().__init__(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, w))


class BottomCNN(nn.Module):
    """Conv(1->16, 3x3, pad 1) -> ReLU -> Conv(16->16, 3x3, stride 2, pad 1) -> ReLU -> Linear(hidden) -> ReLU -> Linear(w).

    Takes flat rows and reshapes them to ``image_shape``."""

    def __init__(self, image_shape: tuple[int, int, int], hidden: int, w: int):
        super().__init__()
        c, h, wd = image_shape
        self.image_shape = tuple(image_shape)
        self.conv = nn.Sequential(nn.Conv2d(c, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, stride=2, padding=1),
                                  nn.ReLU(), nn.Flatten())
        n = 16 * ((h + 1) // 2) * ((wd + 1) // 2)
        self.head = nn.Sequential(nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x.view(len(x), *self.image_shape)))


class TopMLP(nn.Sequential):
    """Linear(N*w -> hidden) -> ReLU -> Linear(hidden -> C), as in the original."""

    def __init__(self, d_in: int, hidden: int, C: int):
        super().__init__(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, C))


class PartyModel(nn.Module):
    """A feature party's network: bottom f_i, plus the hash head for hashed defences (message pre-noise)."""

    def __init__(self, bottom: nn.Module, hash_head: HashHead | None):
        super().__init__()
        self.bottom = bottom
        self.hash = hash_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.bottom(x)
        return v if self.hash is None else self.hash(v)

    def pre_sign(self, x: torch.Tensor) -> torch.Tensor:
        """BN(f(x)) for hashed models, else f(x)."""
        v = self.bottom(x)
        return v if self.hash is None else self.hash.pre_sign(v)


@contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode with gradients off for its parameters, both restored on exit (so an attack on a
    user's own model leaves it as it was: training mode, trainable weights)."""
    modes = {m: m.training for m in model.modules()}
    grads = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in grads:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.train(mode)
        for p, g in grads:
            p.requires_grad_(g)


def seeded_init(module: nn.Module, seed: int) -> nn.Module:
    """Re-initialise Linear/Conv layers as PyTorch does by default, from a private generator seeded by ``seed``,
    so a party built in any process gets the same weights (the global RNG is never touched)."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=g)
            if m.bias is not None:
                fan_in = m.weight[0].numel()
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                nn.init.uniform_(m.bias, -bound, bound, generator=g)
    return module


def build_party_model(d: int, model_cfg, defence_cfg, image_shape, seed: int) -> PartyModel:
    """Bottom (mlp or cnn) of width ``defence_cfg.width``, plus the hash head for hash/hash_laplace."""
    from .config import HASHED

    w = defence_cfg.width
    if model_cfg.bottom == "cnn":
        if not image_shape:
            from trustlab.runtime import ConfigError

            raise ConfigError("model.bottom=cnn needs image data", hint="use model.bottom: mlp for tables")
        bottom = BottomCNN(tuple(image_shape), model_cfg.bottom_hidden, w)
    else:
        bottom = BottomMLP(d, model_cfg.bottom_hidden, w)
    head = HashHead(w, defence_cfg.ste) if defence_cfg.kind in HASHED else None
    return seeded_init(PartyModel(bottom, head), seed)
