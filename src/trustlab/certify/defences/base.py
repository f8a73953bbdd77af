"""What every defence shares: the defender's context, the result, penultimate activations, filtering + retrain."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

FILTERING = ("spectral", "activation-clustering")


@dataclass
class DefenceContext:
    """What a defender holds: the attacked model, (for filters) the poisoned training set, a clean defender set."""

    cfg: Any  # DefenceConfig
    attack: Any  # AttackConfig
    model: Any
    x_train: Any
    y_train: Any
    poison_idx: Any
    x_def: Any
    y_def: Any
    retrain: Callable[[Any, Any], Any]  # (x, y) -> freshly trained model with the victim's procedure
    finetune: Callable[[Any, Any, Any, Any], Any]  # (model, x, y, grad_masks) -> model
    seed: int = 0
    K: int = 10


@dataclass
class DefenceResult:
    name: str
    applicable: bool
    model: Any = None  # the defended model (filters, fine-pruning); None for STRIP
    removed: int = 0
    poison_recall: float | None = None
    poison_precision: float | None = None
    info: dict = field(default_factory=dict)


def penultimate(model, x, batch: int = 1024):
    """Activations feeding the last Linear layer (numpy [n, d])."""
    import numpy as np
    import torch

    from ..torchutil import eval_mode, model_device

    body = model[:-1]
    out = []
    dev = model_device(model)
    with eval_mode(model), torch.no_grad():
        for s in range(0, len(x), batch):
            out.append(body(torch.as_tensor(np.asarray(x[s:s + batch]), device=dev)).reshape(
                min(batch, len(x) - s), -1).cpu().numpy())
    return np.concatenate(out)


def recall_precision(flagged, poison_idx) -> tuple[float | None, float | None]:
    flagged, poison = set(map(int, flagged)), set(map(int, poison_idx))
    hit = len(flagged & poison)
    return (hit / len(poison) if poison else None, hit / len(flagged) if flagged else None)


def filtered_result(name: str, ctx: DefenceContext, flagged, info: dict) -> DefenceResult:
    import numpy as np

    keep = np.setdiff1d(np.arange(len(ctx.x_train)), np.asarray(flagged, dtype=int))
    model = ctx.retrain(ctx.x_train[keep], ctx.y_train[keep])
    rec, prec = recall_precision(flagged, ctx.poison_idx)
    return DefenceResult(name, True, model, len(flagged), rec, prec, info)
