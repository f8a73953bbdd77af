"""Utility of a (possibly attacked) model: held-out perplexity, optionally under a decoding-time suppression
attack, and a 4-option trivia multiple-choice score (mean answer log-likelihood). Batches are padded by the
fine-tuning core's collator (right padding, no position ids: the tensors these measures always used)."""

from __future__ import annotations

import math
from typing import Any, Sequence

from trustlab.models.finetune import collate, encode
from trustlab.runtime.errors import DataError

from .attacks import SuppressTopK, suppress

NLL_CAP = -math.log(1e-6)  # a true token that an attack banned is scored at p = 1e-6, not infinity
PPL_PROMPT = 16  # held-out text: the first 16 tokens play the prompt; decoding-time attacks act after them


def _pad_id(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def perplexity(model, tok, texts: Sequence[str], *, max_tokens: int = 128, batch_size: int = 8,
               attack: SuppressTopK | None = None) -> float:
    """exp(mean token NLL) over ``texts`` (each cut to ``max_tokens``). With ``attack``, the predictions of tokens
    PPL_PROMPT .. PPL_PROMPT + steps - 1 of each text use the suppressed distribution (renormalised; a banned true
    token is scored at p = 1e-6), i.e. the utility cost of the attack on text a user would get."""
    import torch

    ids = [tok(t, add_special_tokens=True)["input_ids"][:max_tokens] for t in texts]
    ids = [x for x in ids if len(x) > PPL_PROMPT + 1]
    if not ids:
        raise DataError("no held-out text is long enough for perplexity", hint="give longer documents")
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for s in range(0, len(ids), batch_size):
        batch = collate([(row, row) for row in ids[s:s + batch_size]], _pad_id(tok), positions=False)
        x, mask = batch["input_ids"], batch["attention_mask"]
        with torch.no_grad():
            logits = model(input_ids=x.to(device), attention_mask=mask.to(device)).logits[:, :-1].float()
        if attack is not None:
            a, b = PPL_PROMPT - 1, PPL_PROMPT - 1 + attack.steps
            logits[:, a:b] = suppress(logits[:, a:b], attack.k, attack.tau)
        logp = logits.log_softmax(-1)
        target = x[:, 1:].to(device)
        nll = -logp.gather(-1, target[..., None])[..., 0]
        nll = torch.nan_to_num(nll, posinf=NLL_CAP).clamp(max=NLL_CAP)
        keep = mask[:, 1:].to(device).bool()
        total += float(nll[keep].sum())
        count += int(keep.sum())
    return math.exp(total / count)


def trivia_mc(model, tok, items: Sequence[dict[str, Any]], *, batch_size: int = 16) -> float:
    """Share of items whose correct option has the highest mean log-likelihood after "Question: q\\nAnswer:"."""
    import torch

    device = next(model.parameters()).device
    rows = []
    for it in items:
        prompt = tok(f"Question: {it['question']}\nAnswer:", add_special_tokens=True)["input_ids"]
        for opt in it["options"]:
            rows.append((prompt, tok.encode(" " + opt, add_special_tokens=False)))
    scores = []
    for s in range(0, len(rows), batch_size):
        chunk = rows[s:s + batch_size]
        batch = collate([encode(p, o) for p, o in chunk], _pad_id(tok), positions=False)
        x, mask = batch["input_ids"], batch["attention_mask"]
        with torch.no_grad():
            logp = model(input_ids=x.to(device), attention_mask=mask.to(device)).logits.float().log_softmax(-1)
        for i, (p, o) in enumerate(chunk):
            pos = torch.arange(len(p) - 1, len(p) + len(o) - 1)
            scores.append(float(logp[i, pos, torch.tensor(o)].mean()) if o else float("-inf"))
    correct = 0
    for j, it in enumerate(items):
        opts = scores[4 * j:4 * j + 4]
        correct += int(max(range(4), key=lambda i: opts[i]) == it["answer"])
    return correct / len(items)
