"""Small torch helpers shared by the certify lab (one copy each)."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def eval_mode(model):
    """Run the block with ``model`` in eval mode (BatchNorm running stats, Dropout off); restore its mode after."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


def model_device(model):
    """The device of a module's first parameter (cpu for a parameter-free module)."""
    import torch

    return next((p.device for p in model.parameters()), torch.device("cpu"))


def model_dtype(model):
    """The floating dtype of a module's first parameter or buffer (float32 for a parameter-free module)."""
    import torch

    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32
