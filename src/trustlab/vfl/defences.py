"""Defences on one harness: ``.party(v, key)`` at the data owner, ``.grad(g, party)`` at the label party.

none: raw f_i(x). hash: Sign(BN(f_i(x))) (the sign sits in the party model's HashHead). gaussian/laplace: clip each
sample to ||v||_2 <= clip_norm, add N(0, s^2) / Laplace(0, s). gsparse: at A, zero |G| below its ``sparsity``
quantile, carry the zeroed part (error feedback). hash_laplace: h + Laplace(0, 2/eps) per bit, sent as float32
(eps per coordinate per release; the L1 sensitivity of a code is 2L and epochs compose: no end-to-end eps).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from trustlab.runtime import derive_seed


def noise_generator(seed: int, party: int, phase: str, epoch: int, step: int) -> torch.Generator:
    """Noise is seeded by (seed, party, phase, epoch, step): inproc and gRPC runs draw the same noise."""
    return torch.Generator().manual_seed(derive_seed(seed, party, phase, epoch, step))


def laplace(shape, scale: float, g: torch.Generator) -> torch.Tensor:
    """Laplace(0, scale) as the difference of two Exp(1) draws times ``scale``."""
    e1 = -torch.log1p(-torch.rand(shape, generator=g))
    e2 = -torch.log1p(-torch.rand(shape, generator=g))
    return scale * (e1 - e2)


def clip_rows(v: torch.Tensor, c: float) -> torch.Tensor:
    """v * min(1, c / ||v||_2) per row."""
    norm = v.norm(dim=1, keepdim=True)
    return v * torch.clamp(c / norm.clamp_min(1e-12), max=1.0)


def sparsify(g: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep entries with |g| >= the ``sparsity`` quantile of |g|; zero the rest."""
    if sparsity <= 0:
        return g
    thr = torch.quantile(g.abs().flatten(), sparsity)
    return torch.where(g.abs() >= thr, g, torch.zeros_like(g))


@dataclass
class Defence:
    kind: str
    width: int
    seed: int
    noise_scale: float = 0.1
    clip_norm: float = 1.0
    epsilon: float = 2.0
    sparsity: float = 0.99
    error_feedback: bool = True
    residual: dict[int, torch.Tensor] = field(default_factory=dict)

    @property
    def wire(self) -> str:
        """'bits' (packed +-1 codes) or 'float32'."""
        return "bits" if self.kind == "hash" else "float32"

    @property
    def hashed(self) -> bool:
        return self.kind in ("hash", "hash_laplace")

    def party(self, v: torch.Tensor, key: tuple[int, str, int, int]) -> torch.Tensor:
        """The message a party sends for model output ``v``; ``key`` = (party, phase, epoch, step) seeds noise."""
        if self.kind in ("none", "hash", "gsparse"):
            return v
        g = noise_generator(self.seed, *key)
        if self.kind == "hash_laplace":
            return v + laplace(v.shape, 2.0 / self.epsilon, g)
        v = clip_rows(v, self.clip_norm)
        if self.kind == "gaussian":
            return v + self.noise_scale * torch.randn(v.shape, generator=g)
        return v + laplace(v.shape, self.noise_scale, g)

    def grad(self, g: torch.Tensor, party: int) -> torch.Tensor:
        """The gradient A returns to ``party``; only gsparse changes it (with the residual carried over)."""
        if self.kind != "gsparse":
            return g
        acc = g + self.residual[party] if (self.error_feedback and party in self.residual
                                            and self.residual[party].shape == g.shape) else g
        kept = sparsify(acc, self.sparsity)
        if self.error_feedback:
            self.residual[party] = (acc - kept).detach()
        return kept

    def state_dict(self) -> dict:
        return {"residual": {k: v.clone() for k, v in self.residual.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.residual = {int(k): v.clone() for k, v in state.get("residual", {}).items()}


def build_defence(cfg, seed: int) -> Defence:
    """From a DefenceConfig (ranges were checked by ``config.validate``)."""
    return Defence(cfg.kind, cfg.width, seed, cfg.noise_scale, cfg.clip_norm, cfg.epsilon, cfg.sparsity,
                   cfg.error_feedback)
