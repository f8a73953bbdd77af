"""Fine-pruning (Liu et al. 2018): zero last-hidden units (MLP) / last-conv channels (CNN) in increasing mean clean
activation while defender accuracy drops <= ``max_drop``, then fine-tune on the defender set, masks fixed."""

from __future__ import annotations

import numpy as np


def prune_target(model):
    """(index of the layer whose output units are pruned, is_conv): the last Conv2d, else the last hidden Linear."""
    import torch.nn as nn

    convs = [i for i, m in enumerate(model) if isinstance(m, nn.Conv2d)]
    if convs:
        return convs[-1], True
    lins = [i for i, m in enumerate(model) if isinstance(m, nn.Linear)]
    if len(lins) < 2:
        from trustlab.runtime import ModelError

        raise ModelError("fine-pruning needs a hidden Linear or Conv2d layer")
    return lins[-2], False


def _accuracy(model, x, y) -> float:
    import torch

    with torch.no_grad():
        dev = next(model.parameters()).device
        return float((model(torch.as_tensor(np.asarray(x), device=dev)).argmax(1).cpu().numpy() == y).mean())


def prune(model, x_def, y_def, max_drop: float = 0.04):
    """Prune in increasing mean activation (after the ReLU) while accuracy(defender) >= base - max_drop.

    Returns (mask over units, pruned count, accuracy before, accuracy after). Modifies ``model`` in place."""
    import torch

    layer_i, is_conv = prune_target(model)
    layer = model[layer_i]
    model.eval()
    with torch.no_grad():
        dev = next(model.parameters()).device
        act = model[:layer_i + 2](torch.as_tensor(np.asarray(x_def), device=dev))  # layer + its ReLU
        mean_act = (act.mean((0, 2, 3)) if is_conv else act.mean(0)).cpu().numpy()
    base = _accuracy(model, x_def, y_def)
    mask = np.ones(len(mean_act), bool)
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    acc = base
    from trustlab.runtime import progress

    order = np.argsort(mean_act, kind="stable")[:-1]
    for unit in progress(order, f"fine-pruning ({len(order)} candidate units)", total=len(order)):
        with torch.no_grad():
            layer.weight[unit] = 0
            layer.bias[unit] = 0
        new = _accuracy(model, x_def, y_def)
        if base - new > max_drop:
            with torch.no_grad():
                layer.weight[unit] = w0[unit]
                layer.bias[unit] = b0[unit]
            break
        mask[unit] = False
        acc = new
    return mask, int((~mask).sum()), base, acc


def grad_masks(model, mask) -> dict:
    """{parameter: 0/1 tensor} keeping pruned units at zero during fine-tuning (Adam leaves zero-grad weights at 0)."""
    import torch

    layer = model[prune_target(model)[0]]
    m = torch.as_tensor(mask, dtype=layer.weight.dtype, device=layer.weight.device)
    return {layer.weight: m.view(-1, *([1] * (layer.weight.ndim - 1))).expand_as(layer.weight).clone(),
            layer.bias: m.clone()}


def apply(ctx):
    import copy

    from .base import DefenceResult

    model = copy.deepcopy(ctx.model)
    mask, pruned, before, after = prune(model, ctx.x_def, ctx.y_def, ctx.cfg.fp_max_drop)
    if ctx.cfg.fp_epochs > 0:
        model = ctx.finetune(model, ctx.x_def, ctx.y_def, grad_masks(model, mask))
    return DefenceResult("fine-pruning", True, model, info={"pruned_units": pruned, "units": len(mask),
                                                             "defender_acc_before": before,
                                                             "defender_acc_after_prune": after,
                                                             "defender_acc_final": _accuracy(model, ctx.x_def,
                                                                                             ctx.y_def)})
