"""One fine-tuning core for masked causal-LM loss, used by fingerprint embedding, fingerprint's SFT attack and
safety's SFT: encode prompt + target, collate, masked cross-entropy, exact match, and one training loop.

Layout: a row is ``input_ids`` = prompt + target and ``labels`` = -100 on every prompt position and the target ids
after it, so only the target carries loss. Logits at position t predict token t + 1 (the shift happens here, once).

The loop (``fit``) is nanoGPT-shaped: for each optimizer step, forward and backward over its micro-batches (each
weighted), one optimizer step, one scheduler step, then the divergence guard of ``trustlab.runtime.finite`` before
the caller sees the loss (a NaN / inf loss or weight is a ModelError, exit 2, naming the step and the learning rate;
nothing is logged or saved). With an ``accelerate.Accelerator`` it syncs gradients only on the last micro-batch and
autocasts, so the same loop runs under ``accelerate launch``; without one it is a plain PyTorch loop. What is
method-specific (weight averaging, stop rules, checkpoints, evaluation) stays with the caller, in ``on_step``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Sequence

IGNORE = -100  # label of a position that carries no loss (prompt, pad)
Reduction = Literal["sum", "mean", "token"]


@dataclass(frozen=True)
class Row:
    """One training row: ``input_ids`` and ``labels`` of equal length (-100 = not trained)."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]


def encode(prompt_ids: Sequence[int], target_ids: Sequence[int]) -> Row:
    """prompt + target as one row; the prompt positions are labelled -100, so the loss falls on the target alone."""
    return Row(tuple(prompt_ids) + tuple(target_ids), (IGNORE,) * len(prompt_ids) + tuple(target_ids))


def _ids_labels(row: Any) -> tuple[Sequence[int], Sequence[int]]:
    return (row.input_ids, row.labels) if hasattr(row, "input_ids") else (row[0], row[1])


def collate(rows: Sequence[Any], pad_id: int, side: str = "right", positions: bool = True) -> dict[str, Any]:
    """Pad rows (``Row``-like objects or ``(input_ids, labels)`` pairs) to the longest: ``input_ids``,
    ``attention_mask``, ``labels`` (-100 on pads) and, with ``positions``, ``position_ids`` (count of real tokens
    before each position, so left and right padding give the same logits). Pads are masked by position, never by
    id, so pad = eos is safe."""
    import torch

    if side not in ("right", "left"):
        raise ValueError(f"padding side must be right or left, got {side!r}")
    pairs = [_ids_labels(r) for r in rows]
    width = max(len(ids) for ids, _ in pairs)
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(pairs), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for i, (x, y) in enumerate(pairs):
        n = len(x)
        sl = slice(0, n) if side == "right" else slice(width - n, width)
        ids[i, sl] = torch.tensor(list(x), dtype=torch.long)
        labels[i, sl] = torch.tensor(list(y), dtype=torch.long)
        mask[i, sl] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if positions:
        batch["position_ids"] = (mask.cumsum(1) - 1).clamp(min=0)
    return batch


def per_example_loss(logits, labels):
    """Mean cross-entropy over each row's labelled tokens (shifted by one): a tensor [batch]."""
    import torch.nn.functional as F

    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    tok = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE,
                          reduction="none").view(labels.shape)
    keep = (labels != IGNORE).float()
    return (tok * keep).sum(1) / keep.sum(1).clamp(min=1.0)


def token_loss(logits, labels):
    """Mean cross-entropy over all labelled tokens of the batch (token-weighted; what ``model(labels=...).loss`` of
    a transformers causal LM computes, in the same order of operations)."""
    import torch.nn.functional as F

    shifted = F.pad(labels, (0, 1), value=IGNORE)[..., 1:]
    logits = logits.float()
    return F.cross_entropy(logits.view(-1, logits.size(-1)), shifted.reshape(-1).to(logits.device),
                           ignore_index=IGNORE, reduction="mean")


def masked_loss(logits, labels, reduction: Reduction = "mean"):
    """Masked CE of a batch as one scalar: ``sum`` = Σ_i CE_i, ``mean`` = (1/b) Σ_i CE_i (CE_i: row i's mean over
    its labelled tokens), ``token`` = the token-weighted mean over every labelled token of the batch."""
    if reduction == "token":
        return token_loss(logits, labels)
    rows = per_example_loss(logits, labels)
    if reduction == "sum":
        return rows.sum()
    if reduction == "mean":
        return rows.mean()
    raise ValueError(f"reduction must be sum, mean or token, got {reduction!r}")


def exact_hits(logits, labels):
    """Per row: every labelled token is the argmax after its prefix, i.e. greedy decoding reproduces the target."""
    pred, labels = logits[:, :-1].argmax(-1), labels[:, 1:]
    keep = labels != IGNORE
    return ((pred == labels) | ~keep).all(1) & keep.any(1)


def forward(model, batch: dict[str, Any], device=None):
    """(logits, labels) of a collated batch, moved to ``device`` (default: the model's)."""
    if device is None:
        device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
    return model(**inputs).logits, batch["labels"].to(device)


# --- the loop -----------------------------------------------------------------------------------------------
MicroBatch = tuple[dict[str, Any], float]  # (collated batch, weight of its loss in the step's objective)


def fit(model, optimizer, steps: Iterable[Sequence[MicroBatch]], *, lr: float, accelerator=None, scheduler=None,
        reduction: Reduction = "mean", start: int = 0, step_name: Callable[[int], str] = "step {}".format,
        what: str = "training", lr_name: str = "lr", check_loss: bool = True, check_weights: bool = True,
        on_step: Callable[[int, float], bool | None] | None = None) -> tuple[int, float]:
    """Train ``model`` over ``steps`` (each: the micro-batches of one optimizer step). Returns (last step, its loss).

    A micro-batch's objective is ``weight * masked_loss(reduction)``; the gradients of a step's micro-batches add
    up before its optimizer step, and the loss reported for the step is the same weighted sum, as a float. After
    each optimizer (and scheduler) step the loss and the weights are checked (``require_finite_step``, named by
    ``step_name(step)``), then ``on_step(step, loss)`` runs; it returns True to stop."""
    from trustlab.runtime.finite import require_finite_step

    step, loss_v = start, float("nan")
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    optimizer.zero_grad()
    for micro in steps:
        model.train()
        loss_v = 0.0
        for j, (batch, weight) in enumerate(micro):
            last = j == len(micro) - 1
            sync = accelerator.no_sync(model) if accelerator is not None and not last else contextlib.nullcontext()
            autocast = accelerator.autocast() if accelerator is not None else contextlib.nullcontext()
            with sync, autocast:
                logits, labels = forward(model, batch, device)
                loss = masked_loss(logits, labels, reduction)
                scaled = loss * weight
                if accelerator is not None:
                    accelerator.backward(scaled)
                else:
                    scaled.backward()
            loss_v += float(loss.detach()) * weight
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad()
        step += 1
        if accelerator is not None and accelerator.num_processes > 1:  # the mean over processes, as each sees it
            import torch

            loss_v = float(accelerator.gather(torch.tensor([loss_v], device=device)).mean())
        # a diverged step (lr too high) stops here: nothing is logged, checkpointed or saved as a model
        params = None
        if check_weights:
            params = (accelerator.unwrap_model(model) if accelerator is not None else model).named_parameters()
        require_finite_step(loss_v if check_loss else None, params, step=step_name(step), lr=lr, what=what,
                            lr_name=lr_name)
        if on_step is not None and on_step(step, loss_v):
            break
    return step, loss_v


def evaluate(model, rows: Sequence[Any], pad_id: int, batch_size: int = 16, accelerator=None) -> tuple[float, float]:
    """(mean per-row loss, exact-match accuracy) of ``rows`` in eval mode, without gradients; exact match is the
    teacher-forced greedy argmax on every target token."""
    import torch

    model.eval()
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    autocast = accelerator.autocast() if accelerator is not None else contextlib.nullcontext()
    losses, hits = [], []
    with torch.no_grad(), autocast:
        for s in range(0, len(rows), batch_size):
            logits, labels = forward(model, collate(rows[s:s + batch_size], pad_id), device)
            losses += per_example_loss(logits, labels).tolist()
            hits += exact_hits(logits, labels).tolist()
    return float(sum(losses) / len(losses)), float(sum(hits) / len(hits))
