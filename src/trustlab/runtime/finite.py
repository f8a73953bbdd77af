"""Divergence guard for training loops: a loss or a weight that is NaN or +-inf stops the run before anything is
saved, naming the step and the learning rate (a diverged model must never be shipped as a result)."""

from __future__ import annotations

import math
from typing import Any, Iterable

from .errors import ModelError


def first_nonfinite(named_params: Iterable[tuple[str, Any]]) -> str | None:
    """Name of the first tensor holding NaN or +-inf, else None (one reduction per tensor, no copies)."""
    import torch

    with torch.no_grad():
        for name, p in named_params:
            if p.is_floating_point() and not bool(torch.isfinite(p).all()):
                return name
    return None


def require_finite_step(loss: float | None, named_params: Iterable[tuple[str, Any]] | None, *, step: str,
                        lr: float, what: str = "training", lr_name: str = "lr") -> None:
    """ModelError (exit 2) when ``loss`` or any of ``named_params`` is non-finite after ``step`` (e.g. "epoch 3").

    Call it after each optimizer step and before logging or checkpointing, so that nothing of a diverged run is
    written; the hint suggests a learning rate ten times lower."""
    bad = None
    if loss is not None and not math.isfinite(loss):
        bad = f"the loss is {loss}"
    elif named_params is not None:
        name = first_nonfinite(named_params)
        if name is not None:
            bad = f"weight {name!r} holds NaN or inf"
    if bad is not None:
        raise ModelError(f"{what} diverged at {step} with {lr_name} {lr:g}: {bad}; no model was saved",
                         hint=f"lower {lr_name} (e.g. {lr / 10:g}) and run again")
