"""Small nets for the vision and tabular labs: plain ``nn.Sequential`` so certifiers can walk the layers."""

from __future__ import annotations

from typing import Sequence

from trustlab.runtime.errors import ConfigError


def mlp(shape: Sequence[int] | int, hidden: Sequence[int], num_classes: int):
    """Flatten -> [Linear -> ReLU] per hidden width -> Linear(num_classes)."""
    import math

    import torch.nn as nn

    d_in = shape if isinstance(shape, int) else math.prod(shape)
    _check(num_classes, hidden)
    layers: list[nn.Module] = [nn.Flatten()]
    for width in hidden:
        layers += [nn.Linear(d_in, width), nn.ReLU()]
        d_in = width
    layers.append(nn.Linear(d_in, num_classes))
    return nn.Sequential(*layers)


def small_cnn(shape: Sequence[int], num_classes: int, channels: Sequence[int] = (16, 32), hidden: int = 100,
              kernel: int = 4, stride: int = 2, padding: int = 1):
    """Conv(c1,k4,s2,p1)-ReLU-Conv(c2,k4,s2,p1)-ReLU-Flatten-Linear(hidden)-ReLU-Linear(K) (Wong & Kolter's small net)."""
    import torch
    import torch.nn as nn

    _check(num_classes, channels)
    c_in = shape[0]
    layers: list[nn.Module] = []
    for c in channels:
        layers += [nn.Conv2d(c_in, c, kernel, stride=stride, padding=padding), nn.ReLU()]
        c_in = c
    features = nn.Sequential(*layers)
    with torch.no_grad():
        n_flat = features(torch.zeros(1, *shape)).numel()
    if n_flat == 0:
        raise ConfigError(f"small_cnn: input shape {tuple(shape)} is too small for {len(channels)} stride-{stride} convs")
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(n_flat, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def _check(num_classes: int, widths: Sequence[int]) -> None:
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
    if any(w < 1 for w in widths):
        raise ConfigError(f"layer widths must be >= 1, got {tuple(widths)}")
