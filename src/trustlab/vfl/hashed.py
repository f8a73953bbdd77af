"""HashVFL as a drop-in, Opacus-style: ``make_hashed(bottoms, top, cfg)`` wraps a user's own split model.

Each bottom f_i (any ``nn.Module`` whose output has ``code_len`` features) gets HashVFL's hash layer
h_i = Sign(BN(f_i(x_i))) in {+-1}^L (straight-through backward); the top g reads [h_0 .. h_{N-1}]. The loss is
CE(g([h_i]), y) + w_c (1/N) sum_i mean_b (1 - cos(h_i, o_y)) with class codes O in {+-1}^{C x L}, and the
detection score of a sample is s = sum_i d_H(h_i, o_yhat). Nothing here touches files, parties or the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from trustlab.runtime import ConfigError, check_types, derive_seed, require_choice, require_range

from .models import HashHead


@dataclass(frozen=True)
class HashConfig:
    """HashVFL's knobs (the paper's defaults): L-bit codes, consistency weight w_c = 1, Bernoulli class codes."""

    n_classes: int
    code_len: int = 16
    consistency_weight: float = 1.0
    class_codes: str = "bernoulli"
    ste: str = "identity"
    seed: int = 0

    def __post_init__(self):
        check_types(self, "hash")
        require_range("hash.n_classes", self.n_classes, 2)
        require_range("hash.code_len", self.code_len, 1)
        require_range("hash.consistency_weight", self.consistency_weight, 0)
        require_choice("hash.class_codes", self.class_codes, ("bernoulli", "hadamard"))
        require_choice("hash.ste", self.ste, ("identity", "clipped"))
        require_range("hash.seed", self.seed, 0)


class HashedBottom(nn.Module):
    """A user's bottom f followed by the hash head: x -> Sign(BN(f(x)))."""

    def __init__(self, bottom: nn.Module, code_len: int, ste: str = "identity", index: int = 0):
        super().__init__()
        self.bottom, self.hash, self.index = bottom, HashHead(code_len, ste), index

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        v = self.bottom(x)
        if v.ndim != 2 or v.shape[1] != self.hash.bn.num_features:
            raise ConfigError(f"bottom {self.index} outputs shape {tuple(v.shape)}, but HashVFL needs "
                              f"(batch, code_len={self.hash.bn.num_features})",
                              hint=f"end bottom {self.index} with nn.Linear(..., {self.hash.bn.num_features}), "
                                   "or set code_len to its output width")
        return v

    def pre_sign(self, x: torch.Tensor) -> torch.Tensor:
        """BN(f(x)), what a white-box attacker holding the party's weights matches."""
        return self.hash.pre_sign(self._features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hash(self._features(x))


class HashedSplitModel(nn.Module):
    """``model([x_0, .., x_{N-1}]) -> (logits, [h_0, .., h_{N-1}])``: hashed bottoms, then the user's top on the
    concatenated codes."""

    def __init__(self, bottoms: Sequence[HashedBottom], top: nn.Module):
        super().__init__()
        self.bottoms, self.top = nn.ModuleList(bottoms), top

    def messages(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(xs) != len(self.bottoms):
            raise ConfigError(f"got {len(xs)} feature blocks for {len(self.bottoms)} bottoms",
                              hint="pass one input tensor per bottom, in the same order")
        return [b(x) for b, x in zip(self.bottoms, xs)]

    def forward(self, xs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        msgs = self.messages(xs)
        return self.top(torch.cat(msgs, dim=1)), msgs


def consistency_loss(messages: Sequence[torch.Tensor], codes: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(1/N) sum_i mean_b (1 - cos(m_i, o_y)). For +-1 vectors 1 - cos = 2 d_H(m_i, o_y) / L, so the term is the
    mean fraction of bits, times 2, on which a party's code disagrees with its class code."""
    o = codes[y].to(messages[0].dtype)
    return torch.stack([(1 - F.cosine_similarity(m, o, dim=1)).mean() for m in messages]).mean()


def hashvfl_loss(logits: torch.Tensor, messages: Sequence[torch.Tensor], y: torch.Tensor, codes: torch.Tensor,
                 consistency_weight: float = 1.0) -> torch.Tensor:
    """CE(logits, y) + w_c * consistency_loss(messages, codes, y)."""
    loss = F.cross_entropy(logits, y)
    if consistency_weight > 0:
        loss = loss + consistency_weight * consistency_loss(messages, codes, y)
    return loss


def _np(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def hamming_scores(messages: Sequence, codes, labels=None) -> np.ndarray:
    """Detection score s = sum_i d_H(h_i, o_yhat) per sample (XOR + popcount on the packed codes).

    ``messages``: one (n, L) array or tensor per party (its sign is the code). ``codes``: (C, L) in {+-1}.
    ``labels``: the class yhat each sample is scored against (e.g. the top model's prediction); by default the
    jointly nearest class, argmin_c sum_i d_H(h_i, o_c). High scores flag abnormal inputs."""
    from .codes import hamming_packed, pack_bits

    codes = _np(codes)
    packed = [pack_bits(_np(m) >= 0) for m in messages]
    pc = pack_bits(codes > 0)
    if labels is None:
        d = sum(hamming_packed(p[:, None, :], pc[None, :, :]) for p in packed)  # (n, C)
        labels = np.argmin(d, axis=1)
    labels = _np(labels).astype(np.int64)
    return sum(hamming_packed(p, pc[labels]) for p in packed).astype(np.float64)


@dataclass
class Hashed:
    """What ``make_hashed`` returns: train ``model`` with ``loss`` and any optimizer; ``codes`` stay with the label
    party."""

    model: HashedSplitModel
    codes: torch.Tensor
    cfg: HashConfig

    def loss(self, logits: torch.Tensor, messages: Sequence[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        """The HashVFL objective, CE + w_c * consistency (see ``hashvfl_loss``)."""
        return hashvfl_loss(logits, messages, y, self.codes, self.cfg.consistency_weight)

    def scores(self, messages: Sequence, labels=None) -> np.ndarray:
        """``hamming_scores`` against this model's class codes."""
        return hamming_scores(messages, self.codes, labels)


def make_hashed(bottoms: Sequence[nn.Module], top: nn.Module, cfg: HashConfig) -> Hashed:
    """Wrap the user's bottoms (one per party) and top into HashVFL; the modules are used as they are (not copied),
    and each bottom's output must have ``cfg.code_len`` features. Class codes are seeded by ``cfg.seed``."""
    from .codes import class_codes

    if isinstance(bottoms, nn.Module) or not len(bottoms):
        raise ConfigError("make_hashed needs a list of bottom models, one per party",
                          hint="make_hashed([bottom_0, bottom_1], top, HashConfig(n_classes=...))")
    for i, b in enumerate([*bottoms, top]):
        if not isinstance(b, nn.Module):
            what = "top" if i == len(bottoms) else f"bottom {i}"
            raise ConfigError(f"{what} is a {type(b).__name__}, not a torch.nn.Module",
                              hint="pass torch.nn.Module objects")
    hashed = [HashedBottom(b, cfg.code_len, cfg.ste, i) for i, b in enumerate(bottoms)]
    for h in hashed:  # each hash head sits on its own bottom's device; the codes on the top's (the label party's)
        p = next(h.bottom.parameters(), None)
        if p is not None:
            h.hash.to(p.device)
    codes_t = torch.from_numpy(class_codes(cfg.n_classes, cfg.code_len, cfg.class_codes,
                                           derive_seed(cfg.seed, "codes")).astype(np.float32))
    ref = next(top.parameters(), None)
    if ref is not None:
        codes_t = codes_t.to(ref.device)
    return Hashed(HashedSplitModel(hashed, top), codes_t, cfg)
