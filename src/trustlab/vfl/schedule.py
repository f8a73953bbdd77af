"""Pure learning-rate schedule: no scheduler state needs syncing between parties."""

from __future__ import annotations


def lr_at(epoch: int, lr0: float, milestones: tuple[int, ...], gamma: float) -> float:
    """lr(e) = lr0 * gamma^|{m in milestones : m <= e}|."""
    return lr0 * gamma ** sum(1 for m in milestones if m <= epoch)
