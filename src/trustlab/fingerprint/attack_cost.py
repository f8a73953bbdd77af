"""What a decoding-time attack costs a host's users: held-out perplexity and the trivia multiple-choice score with
the attack acting where it would act in generation.

Any logits processor with ``begin(prompt_len)`` and ``steps`` works (``attacks.SuppressTopK``, the ``suppression``
family): the text's first ``PPL_PROMPT`` tokens (held-out text) or ``"Question: q\\nAnswer:"`` (trivia) play the
prompt, and the predictions of the next ``attack.steps`` tokens use the processed distribution, renormalised; a
true token the attack banned is scored at p = 1e-6 (``utility.NLL_CAP``; held-out text caps every token, as
``utility.perplexity`` does, trivia only the attacked ones). Every other position keeps the model's
own prediction, so ``CostBench`` runs the model once and stores only the logits of the attacked positions; each of
them reaches the attack as its own unpadded row, so prompt-reading attacks (the perplexity filter, the reference
detector) see the exact prompt.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from trustlab.models.finetune import collate
from trustlab.runtime.errors import ConfigError, DataError

from .utility import NLL_CAP, PPL_PROMPT, _pad_id


def _nll(logits, target: int, cap_all: bool) -> float:
    """The target's NLL: a banned (infinite) one at NLL_CAP; every one capped for text (as the clean scores)."""
    v = -float(logits.float().log_softmax(-1)[target])
    return NLL_CAP if not math.isfinite(v) else min(v, NLL_CAP) if cap_all else v


class CostBench:
    """Held-out ``texts`` and trivia ``items`` scored once by ``model`` (in the batches of ``utility.perplexity`` and
    ``utility.trivia_mc``, so the unattacked scores equal theirs); ``perplexity(attack)`` and ``trivia(attack)``
    then re-score only the positions an attack of at most ``max_steps`` steps touches."""

    def __init__(self, model, tok, texts: Sequence[str], items: Sequence[dict[str, Any]] = (), *,
                 max_steps: int = 1, max_tokens: int = 128, batch_size: int = 8, mc_batch_size: int = 16):
        self.max_steps = max_steps
        ids = [tok(t, add_special_tokens=True)["input_ids"][:max_tokens] for t in texts]
        ids = [x for x in ids if len(x) > PPL_PROMPT + 1]
        if not ids:
            raise DataError("no held-out text is long enough for perplexity", hint="give longer documents")
        self._doc_total, self._doc_count, self._doc_win = self._score(
            model, tok, [(x, "text", PPL_PROMPT) for x in ids], batch_size)
        rows = []
        for it in items:
            prompt = tok(f"Question: {it['question']}\nAnswer:", add_special_tokens=True)["input_ids"]
            for opt in it["options"]:
                o = tok.encode(" " + opt, add_special_tokens=False)
                rows.append((prompt + o, "answer", len(prompt)))
        self.items = list(items)
        self._opt = self._score(model, tok, rows, mc_batch_size, per_row=True) if rows else None

    def _score(self, model, tok, rows, batch_size: int, per_row: bool = False):
        """Clean NLL of each row's tokens after ``start - 1`` (texts: all after the first; options: the answer)
        and the logits of the window positions start - 1 .. start - 2 + max_steps."""
        import torch

        device = next(model.parameters()).device
        totals, counts, windows = [], [], []
        for s in range(0, len(rows), batch_size):
            chunk = rows[s:s + batch_size]
            batch = collate([(r[0], r[0]) for r in chunk], _pad_id(tok), positions=False)
            x, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            with torch.no_grad():
                logits = model(input_ids=x, attention_mask=mask).logits.float()
            logp = logits[:, :-1].log_softmax(-1)
            raw = -logp.gather(-1, x[:, 1:, None])[..., 0].cpu()
            capped = torch.nan_to_num(raw, posinf=NLL_CAP).clamp(max=NLL_CAP)
            for i, (seq, kind, start) in enumerate(chunk):
                nll = capped if kind == "text" else raw  # as utility.perplexity / utility.trivia_mc score them
                first = 0 if kind == "text" else start - 1  # texts: every token; options: the answer only
                totals.append(float(nll[i, first:len(seq) - 1].sum()))
                counts.append(len(seq) - 1 - first)
                win = []
                for pos in range(start - 1, min(start - 1 + self.max_steps, len(seq) - 1)):
                    win.append((pos, torch.tensor(seq[:pos + 1]), logits[i, pos].cpu(), seq[pos + 1],
                                float(nll[i, pos])))
                windows.append((start, win, kind == "text"))
        if per_row:
            return totals, counts, windows
        return sum(totals), sum(counts), windows

    def _check(self, attack) -> None:
        if attack is not None and attack.steps > self.max_steps:
            raise ConfigError(f"attack {getattr(attack, 'name', attack)!r} acts on {attack.steps} steps but the "
                              f"cost bench stored {self.max_steps}", hint="build CostBench(max_steps=...) larger")

    @staticmethod
    def _delta(attack, start: int, win, cap_all: bool) -> float:
        """Attacked minus clean NLL summed over one row's window (scored as the clean row was)."""
        import torch

        attack.begin(start)
        d = 0.0
        for pos, prefix, logits, target, clean in win:
            if pos - (start - 1) >= attack.steps:
                break
            out = attack(prefix[None], logits[None].clone())[0]
            if not torch.equal(out, logits):  # untouched positions keep their clean score exactly
                d += _nll(out, target, cap_all) - clean
        return d

    def perplexity(self, attack=None) -> float:
        """exp(mean token NLL) of the held-out texts, the attack on tokens PPL_PROMPT + 1 .. + steps."""
        self._check(attack)
        total = self._doc_total
        if attack is not None:
            total += sum(self._delta(attack, *w) for w in self._doc_win)
        return math.exp(total / self._doc_count)

    def trivia(self, attack=None) -> float:
        """Share of items whose correct option has the highest mean answer log-likelihood (``utility.trivia_mc``),
        the attack on the first ``steps`` answer tokens."""
        if self._opt is None:
            raise DataError("the cost bench has no trivia items", hint="pass items to CostBench")
        self._check(attack)
        totals, counts, windows = self._opt
        correct = 0
        for j, it in enumerate(self.items):
            scores = []
            for r in range(4 * j, 4 * j + 4):
                t = totals[r] + (self._delta(attack, *windows[r]) if attack is not None else 0.0)
                scores.append(-t / counts[r] if counts[r] else float("-inf"))
            correct += int(max(range(4), key=lambda i: scores[i]) == it["answer"])
        return correct / len(self.items)
