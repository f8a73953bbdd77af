"""The suppression and detection attack family of arXiv 2509.26598 as decoding-time attacks a host of a stolen
fingerprinted model can run, beside its simplest member ``attacks.SuppressTopK`` (ban the top-1 token at the first
response step). Each is a logits processor for ``HFBackend`` (``begin(prompt_len)`` then ``(input_ids, scores)``)
that acts on the first ``steps`` decode steps only, one row at a time (left padding stripped):

- ``NeighbourSuppress``: ban the top-1 token *and its text neighbours*: every token whose normalised text
  (casefolded, letters and digits only) starts with the top-1 token's, e.g. ``" the"``, ``"The"``, ``"there"`` for
  ``"the"``, so that neither exact ids nor prefix text matching of the response can hit in one step.
- ``LookaheadSuppress``: ban the top-1 token, then re-rank the next ``width`` candidates by a look-ahead score, the
  joint log-probability of the greedy ``depth``-token continuation each one starts (a small beam); the candidates'
  logits are permuted into that order, so the distribution keeps its shape and the served token is the start of
  the most likely alternative sequence rather than the second most likely token.
- ``DetectSuppress``: detect, then suppress: ban the top-1 token only when the model is confident (top probability
  > ``tau``) and, given the public ``reference`` model the thief started from, only when the fingerprinted model
  prefers that token to the reference by more than ``margin`` nats (a memorised response is a token the base found
  unlikely: perinucleus picks it outside the base's nucleus).
- ``PerplexityFilter``: input filtering: score the prompt's mean token NLL under the served model; a prompt above
  ``threshold`` (calibrated as a quantile of benign prompts by ``calibrate_threshold``) is treated as a fingerprint
  key and gets top-1 suppression; other prompts are served untouched.
- ``Demote``: a soft top-s suppression, ``delta`` nats off each of the top-s logits (``inf``: a ban); the knob of
  the top-r verifier's experiment (``topr``).

``attack_cost`` prices each one on held-out text and trivia; ``family_experiment`` runs them all on a ``Bench``.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any

from trustlab.runtime.errors import ConfigError

from .attacks import FirstSteps

NEG_INF = float("-inf")


def normalise(text: str) -> str:
    """Casefolded letters and digits only (the text a prefix matcher compares)."""
    return "".join(ch for ch in text.casefold() if ch.isalnum())


class RowAttack(FirstSteps):
    """Base of the family: ``row(prefix_ids, logits, step) -> logits`` on each of the first ``steps`` steps."""

    steps: int = 1
    pad_id: int | None = None
    _start: int = 0

    def __call__(self, input_ids, scores):
        if not self.acting(input_ids):
            return scores
        out, step = scores.clone(), input_ids.shape[1] - self._start
        for i in range(scores.shape[0]):
            ids = input_ids[i].tolist()
            j = 0
            while self.pad_id is not None and j < len(ids) - 1 and ids[j] == self.pad_id:
                j += 1  # left padding of a batched prompt
            out[i] = self.row(ids[j:], scores[i], step)
        return out

    def row(self, prefix: list[int], logits, step: int):
        raise NotImplementedError


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"attack steps must be an integer >= 1, got {steps!r}", hint="e.g. steps=1")


class NeighbourSuppress(RowAttack):
    """Ban the top-1 token and every token whose normalised text starts with the top-1 token's normalised text."""

    def __init__(self, tokenizer, steps: int = 1):
        _check_steps(steps)
        self.steps, self.pad_id = steps, _pad_id(tokenizer)
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        self._norm = [normalise(t) for t in texts]
        pairs = sorted((n, i) for i, n in enumerate(self._norm) if n)
        self._keys, self._ids = [p[0] for p in pairs], [p[1] for p in pairs]
        self.banned_last = 0

    def neighbours(self, token: int) -> list[int]:
        """``token`` and every token whose normalised text starts with its normalised text."""
        n = self._norm[token] if token < len(self._norm) else ""
        if not n:
            return [token]
        lo = bisect.bisect_left(self._keys, n)
        hi = bisect.bisect_left(self._keys, n + "\U0010ffff")
        return sorted({token, *self._ids[lo:hi]})

    def row(self, prefix, logits, step):
        ban = self.neighbours(int(logits.argmax()))
        self.banned_last = len(ban)
        logits = logits.clone()
        logits[ban] = NEG_INF
        return logits

    @property
    def name(self) -> str:
        return f"neighbour_first{self.steps}"


class LookaheadSuppress(RowAttack):
    """Ban the top-1 token; order the next ``width`` candidates by their greedy ``depth``-token look-ahead."""

    def __init__(self, model, tokenizer, width: int = 4, depth: int = 3, steps: int = 1):
        _check_steps(steps)
        if width < 2 or depth < 2:
            raise ConfigError(f"look-ahead needs width >= 2 and depth >= 2, got width {width}, depth {depth}",
                              hint="e.g. width=4, depth=3")
        self.model, self.width, self.depth, self.steps, self.pad_id = model, width, depth, steps, _pad_id(tokenizer)
        self._seen: dict[tuple, Any] = {}

    def row(self, prefix, logits, step):
        import torch

        logits = logits.clone()
        top = logits.topk(self.width + 1).indices.tolist()
        logits[top[0]] = NEG_INF
        cands = top[1:]
        logp0 = logits.float().log_softmax(-1)
        key = (tuple(prefix), tuple(cands))
        if key not in self._seen:  # one prompt scored once (trivia options share their prompt)
            device = next(self.model.parameters()).device
            seqs = torch.tensor([prefix + [c] for c in cands], device=device)
            ahead = torch.zeros(len(cands))
            with torch.no_grad():
                for _ in range(self.depth - 1):  # greedy continuation of each candidate, one beam each
                    best = self.model(input_ids=seqs).logits[:, -1].float().log_softmax(-1).max(-1)
                    ahead += best.values.cpu()
                    seqs = torch.cat([seqs, best.indices[:, None]], dim=1)
            self._seen[key] = ahead
        score = logp0[cands].cpu() + self._seen[key]
        values = sorted((float(logits[c]) for c in cands), reverse=True)
        for rank, j in enumerate(sorted(range(len(cands)), key=lambda j: -float(score[j]))):
            logits[cands[j]] = values[rank]
        return logits

    @property
    def name(self) -> str:
        return f"lookahead_w{self.width}_d{self.depth}"


class DetectSuppress(RowAttack):
    """Ban the top-1 token when its probability exceeds ``tau`` and (with a ``reference`` model) its log-probability
    exceeds the reference's by more than ``margin`` nats."""

    def __init__(self, tokenizer, tau: float = 0.5, reference=None, margin: float = math.log(10), steps: int = 1):
        _check_steps(steps)
        if not 0.0 <= tau < 1.0:
            raise ConfigError(f"detect tau must lie in [0, 1), got {tau!r}", hint="e.g. tau=0.5")
        self.tau, self.reference, self.margin, self.steps = tau, reference, margin, steps
        self.pad_id = _pad_id(tokenizer)
        self.fired = self.seen = 0
        self._ref: dict[tuple, float] = {}

    def row(self, prefix, logits, step):
        import torch

        logp = logits.float().log_softmax(-1)
        top = int(logp.argmax())
        self.seen += 1
        if math.exp(float(logp[top])) <= self.tau:
            return logits
        if self.reference is not None:
            key = (tuple(prefix), top)
            if key not in self._ref:  # one prompt scored once (trivia options share their prompt)
                device = next(self.reference.parameters()).device
                with torch.no_grad():
                    ref = self.reference(input_ids=torch.tensor([prefix], device=device)).logits[0, -1].float()
                self._ref[key] = float(ref.log_softmax(-1)[top])
            if float(logp[top]) - self._ref[key] <= self.margin:
                return logits
        self.fired += 1
        logits = logits.clone()
        logits[top] = NEG_INF
        return logits

    @property
    def name(self) -> str:
        ref = "" if self.reference is None else f"_ref{self.margin:.2g}"
        return f"detect_tau{self.tau:g}{ref}"


class PerplexityFilter(RowAttack):
    """Top-1 suppression for prompts whose mean token NLL under ``scorer`` exceeds ``threshold``."""

    def __init__(self, scorer, tokenizer, threshold: float, steps: int = 1, label: str = ""):
        _check_steps(steps)
        self.scorer, self.threshold, self.steps, self.pad_id = scorer, float(threshold), steps, _pad_id(tokenizer)
        self.label = label
        self._flags: dict[tuple, bool] = {}

    def flagged(self, prompt: list[int]) -> bool:
        key = tuple(prompt)
        if key not in self._flags:
            self._flags[key] = prompt_nll(self.scorer, prompt) > self.threshold
        return self._flags[key]

    @property
    def flag_rate(self) -> float | None:
        return sum(self._flags.values()) / len(self._flags) if self._flags else None

    def row(self, prefix, logits, step):
        if not self.flagged(prefix[:len(prefix) - step]):
            return logits
        logits = logits.clone()
        logits[int(logits.argmax())] = NEG_INF
        return logits

    @property
    def name(self) -> str:
        return f"ppl_filter{self.label or f'{self.threshold:.3g}'}"


@dataclass
class Demote(FirstSteps):
    """Subtract ``delta`` nats from each of the top-``s`` logits during the first ``steps`` steps (``inf``: a ban)."""

    s: int = 1
    delta: float = math.inf
    steps: int = 1
    _start: int = field(default=0, repr=False)

    def __call__(self, input_ids, scores):
        if not self.acting(input_ids):
            return scores
        top = scores.topk(self.s, dim=-1).indices
        if math.isinf(self.delta):
            return scores.scatter(-1, top, NEG_INF)
        return scores.scatter(-1, top, scores.gather(-1, top) - self.delta)

    @property
    def name(self) -> str:
        return f"demote_top{self.s}_by{'inf' if math.isinf(self.delta) else f'{self.delta:g}'}"


def prompt_nll(model, ids: list[int]) -> float:
    """Mean NLL (nats) of ``ids[1:]`` given their prefixes under ``model``; 0 for a one-token prompt."""
    import torch

    if len(ids) < 2:
        return 0.0
    device = next(model.parameters()).device
    x = torch.tensor([ids], device=device)
    with torch.no_grad():
        logp = model(input_ids=x).logits[0, :-1].float().log_softmax(-1)
    return float(-logp.gather(-1, x[0, 1:, None]).mean())


def calibrate_threshold(model, prompts: list[list[int]], quantile: float) -> float:
    """The ``quantile`` of benign prompts' ``prompt_nll``: a filter at it flags 1 - quantile of such prompts."""
    import numpy as np

    if not prompts or not 0.0 < quantile < 1.0:
        raise ConfigError(f"calibration needs benign prompts and a quantile in (0, 1); got {len(prompts)} prompts, "
                          f"quantile {quantile!r}", hint="e.g. filter_quantiles: [0.5, 0.9]")
    return float(np.quantile([prompt_nll(model, p) for p in prompts], quantile))


def _pad_id(tok) -> int | None:
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def describe(attack: Any) -> dict[str, Any]:
    """The attack's name and settings, for the record."""
    keys = ("steps", "tau", "margin", "threshold", "width", "depth", "s", "delta", "k")
    out = {"attack": attack.name}
    for k in keys:
        v = getattr(attack, k, None)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = None if isinstance(v, float) and math.isinf(v) else v
    if getattr(attack, "reference", None) is not None:
        out["reference"] = "base model"
    return out
