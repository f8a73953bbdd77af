"""What hosts do to a fingerprinted model (spec section 2): benign SFT (on the fine-tuning core), linear merging,
int8 quantization, a seeded foreign model, and the decoding-time top-k suppression of arXiv 2509.26598."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

from trustlab.runtime.errors import ConfigError, ModelError


def suppress(scores, k: int, tau: float | None = None):
    """Ban (set to -inf) the top-k tokens of each row; with ``tau``, only rows whose top probability > tau."""
    import torch

    top = scores.topk(k, dim=-1).indices
    banned = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, top, True)
    if tau is not None:
        confident = scores.float().softmax(-1).max(-1).values > tau
        banned &= confident[..., None]
    return scores.masked_fill(banned, float("-inf"))


class FirstSteps:
    """What every decoding-time attack shares: it acts during the first ``steps`` decode steps after the prompt only.
    ``begin(prompt_len)`` is called by the backend before each batch; the class defines ``steps`` and ``_start``."""

    steps: int
    _start: int

    def begin(self, prompt_len: int) -> None:
        self._start = prompt_len

    def acting(self, input_ids) -> bool:
        return 0 <= input_ids.shape[1] - self._start < self.steps


@dataclass
class SuppressTopK(FirstSteps):
    """A host's logits processor: suppress the top-k tokens during the first ``steps`` decode steps (``tau``:
    only when the top probability exceeds it)."""

    k: int = 1
    steps: int = 1
    tau: float | None = None
    _start: int = 0

    def __call__(self, input_ids, scores):
        return suppress(scores, self.k, self.tau) if self.acting(input_ids) else scores

    @property
    def name(self) -> str:
        return f"suppress_top{self.k}_first{self.steps}" + ("" if self.tau is None else f"_gated{self.tau:g}")


def sft_pairs(tok, n: int | None = None, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids + EOS) from chatterbot-corpus dialogues (trivia excluded), seeded order; chat
    layout when the tokenizer has a chat template."""
    import numpy as np

    from trustlab import data

    from .dataset import prompt_ids

    corpus = data.load("chat-corpus")
    fmt = "chat" if getattr(tok, "chat_template", None) else "raw"
    pairs = []
    for d, c in zip(corpus.dialogues, corpus.categories):
        if c == "trivia":
            continue
        for q, a in zip(d[0::2], d[1::2]):
            p = prompt_ids(tok, tok.encode(q, add_special_tokens=False)[:48], fmt)
            r = tok.encode(a, add_special_tokens=False)[:48] + [tok.eos_token_id]
            pairs.append((p, r))
    order = np.random.default_rng(seed).permutation(len(pairs))
    pairs = [pairs[i] for i in order]
    return pairs if n is None else pairs[:n]


def sft_attack(model, tok, *, lr: float = 1e-5, epochs: int = 2, batch_size: int = 8, max_steps: int | None = None,
               seed: int = 0, pairs: list | None = None,
               on_epoch: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    """Benign SFT of ``model`` in place: AdamW(lr), mean CE over response tokens (the fine-tuning core's per-example
    masked loss, averaged over the batch), ``epochs`` seeded passes of ``batch_size`` pairs (at most ``max_steps``
    steps in all). ``on_epoch(epoch, steps, loss)`` after each pass."""
    import torch

    from trustlab.models.finetune import collate, encode, fit
    from trustlab.runtime.workload import require_time

    pairs = sft_pairs(tok, seed=seed) if pairs is None else pairs
    examples = [encode(p, r) for p, r in pairs]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    steps, loss_v, t0 = 0, float("nan"), time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(examples), generator=gen).tolist()
        starts = range(0, len(order), batch_size)
        if max_steps is not None:
            starts = starts[:max(0, max_steps - steps)]
        # one micro-batch per step; its loss is the batch mean of the per-example losses.
        # a diverged attack (lr too high) is an error, not a model whose fingerprints "did not survive"
        batches = ([(collate([examples[i] for i in order[s:s + batch_size]], pad), 1.0)] for s in starts)
        steps, last = fit(model, opt, batches, lr=lr, start=steps, what="the fine-tune attack", lr_name="sft_lr",
                          step_name=lambda n, epoch=epoch: f"step {n} (epoch {epoch})")
        loss_v = last if len(starts) else loss_v
        model.eval()
        if epoch == 1 and epochs > 1:  # priced on the first pass: every later pass costs about the same
            left = (epochs - 1) * math.ceil(len(order) / batch_size)
            left = min(left, max_steps - steps) if max_steps is not None else left
            require_time(f"the fine-tune attack (sft_epochs {epochs:,}: {left:,} more steps at the "
                         f"{(time.perf_counter() - t0) / max(1, steps):.2g} s a step measured)",
                         left * (time.perf_counter() - t0) / max(1, steps),
                         hint="lower sft_epochs or set sft_max_steps")
        if on_epoch is not None:
            on_epoch(epoch, steps, loss_v)
        if max_steps is not None and steps >= max_steps:
            break
    return {"steps": steps, "last_loss": loss_v if steps else None, "seconds": round(time.perf_counter() - t0, 2),
            "examples": len(examples)}


def merge_linear(model_f, model_other, alpha: float):
    """A new model with alpha * theta_F + (1 - alpha) * theta_other for every parameter and buffer of F.

    ModelError naming the first parameter that is missing from the other model or has another shape."""
    import torch

    if not isinstance(alpha, (int, float)) or not 0.0 <= float(alpha) <= 1.0:
        raise ConfigError(f"merge alpha must lie in [0, 1], got {alpha!r}", hint="e.g. merge_alphas: [0.9, 0.5]")
    sf, so = model_f.state_dict(), model_other.state_dict()
    for name, t in sf.items():
        if name not in so:
            raise ModelError(f"cannot merge: parameter {name!r} of the fingerprinted model is missing from the other "
                             "model", hint="merge models of the same architecture (merge_with)")
        if tuple(so[name].shape) != tuple(t.shape):
            raise ModelError(f"cannot merge: parameter {name!r} has shape {tuple(t.shape)} in the fingerprinted "
                             f"model but {tuple(so[name].shape)} in the other", hint="merge models of the same "
                                                                                   "architecture (merge_with)")
    merged = copy.deepcopy(model_f)
    with torch.no_grad():
        state = {n: (alpha * t.float() + (1 - alpha) * so[n].float()).to(t.dtype) if t.is_floating_point() else t
                 for n, t in sf.items()}
        merged.load_state_dict(state)
    return merged.eval()


QUANT_METHODS = {
    "dynamic": "torch.ao.quantization.quantize_dynamic(nn.Linear, qint8): int8 weights and dynamically "
               "quantized int8 activations (per tensor)",
    "weight_only": "int8 weight-only: per-output-channel symmetric round-to-nearest int8 weights, dequantized for "
                   "the matmul (what int8 weight-only serving computes)",
}


def quantize_int8(model, method: str = "dynamic"):
    """A copy of ``model`` with every nn.Linear quantized to int8, as a host serving cheaply would.

    ``dynamic``: torch's dynamic quantization (int8 weights, int8 activations quantized per tensor on the fly);
    ``weight_only``: W -> s * clamp(round(W / s), -127, 127) with s = max|W_row| / 127 per output channel."""
    import warnings

    import torch

    if method not in QUANT_METHODS:
        raise ConfigError(f"quantization method must be one of {', '.join(QUANT_METHODS)}; got {method!r}",
                          hint="use dynamic or weight_only")
    q = copy.deepcopy(model).float().cpu()
    if method == "dynamic":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
            return torch.ao.quantization.quantize_dynamic(q, {torch.nn.Linear}, dtype=torch.qint8).eval()
    with torch.no_grad():
        for mod in q.modules():
            if isinstance(mod, torch.nn.Linear):
                w = mod.weight
                scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
                w.copy_((w / scale).round().clamp(-127, 127) * scale)
    return q.eval()


def foreign_model(base, seed: int = 0):
    """An unrelated model: a seeded random init of the base model's config (same tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(copy.deepcopy(base.config)).eval()
