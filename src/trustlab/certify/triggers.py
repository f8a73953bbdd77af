"""Triggers T(x) = clamp((1 - m) * x + m * p, 0, 1) on NCHW inputs in [0, 1]."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trustlab.runtime import ConfigError


@dataclass(frozen=True)
class Trigger:
    mask: np.ndarray  # [C, H, W] in [0, 1]
    pattern: np.ndarray  # [C, H, W] in [0, 1]

    @classmethod
    def from_config(cls, cfg, shape) -> "Trigger":
        """``patch``: a size x size square at br|bl|tr|tl|(row, col) with ``margin`` pixels from the edge, all
        channels, pattern solid ``value`` | checker (value / 0) | seeded random; ``blend``: m = blend_alpha everywhere,
        p = seeded uniform noise."""
        C, H, W = (int(s) for s in shape)
        rng = np.random.default_rng(cfg.seed)
        mask = np.zeros((C, H, W), np.float32)
        if cfg.kind == "blend":
            return cls(np.full((C, H, W), cfg.blend_alpha, np.float32), rng.random((C, H, W)).astype(np.float32))
        s, mg = cfg.size, cfg.margin
        if isinstance(cfg.position, str):
            r0 = mg if cfg.position[0] == "t" else H - mg - s
            c0 = mg if cfg.position[1] == "l" else W - mg - s
        else:
            r0, c0 = (int(v) for v in cfg.position)
        if r0 < 0 or c0 < 0 or r0 + s > H or c0 + s > W:
            raise ConfigError(f"trigger.size {s} at position {cfg.position!r} (margin {mg}) does not fit in a "
                              f"{H}x{W} image", hint=f"choose trigger.size + margin <= {min(H, W)} and a position "
                                                    "inside the image")
        mask[:, r0:r0 + s, c0:c0 + s] = 1.0
        if cfg.pattern == "solid":
            pattern = np.full((C, H, W), cfg.value, np.float32)
        elif cfg.pattern == "checker":
            rows, cols = np.indices((H, W))
            pattern = np.broadcast_to(np.where((rows + cols) % 2 == 0, cfg.value, 0.0), (C, H, W)).astype(np.float32)
        else:
            pattern = rng.random((C, H, W)).astype(np.float32)
        return cls(mask, pattern)

    def __call__(self, x):
        """Stamp the trigger on a batch (numpy or torch, NCHW); output clamped to [0, 1]."""
        if x.shape[1:] != self.mask.shape:
            raise ConfigError(f"trigger made for inputs {self.mask.shape} applied to inputs {tuple(x.shape[1:])} "
                              "(wrong channels or size)", hint="build the trigger for the shape of the images it stamps")
        if isinstance(x, np.ndarray):
            return np.clip((1 - self.mask) * x + self.mask * self.pattern, 0, 1).astype(x.dtype)
        import torch

        m = torch.as_tensor(self.mask, dtype=x.dtype, device=x.device)
        p = torch.as_tensor(self.pattern, dtype=x.dtype, device=x.device)
        return ((1 - m) * x + m * p).clamp(0, 1)
