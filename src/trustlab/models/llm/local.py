"""The one local transformers generation backend, and the one completion type every LLM backend returns.

    from trustlab.models.llm.local import Decoding, LocalLM
    lm = LocalLM(model, tokenizer, batch_size=8)
    [[c]] = lm.generate(["Once upon"], Decoding(max_new_tokens=20, temperature=0.7, stop=("\\n",)), seed=0)
    c.text, c.token_ids, c.tokens, c.finish_reason

- **Batches**: prompts whose decodings differ only in ``max_new_tokens`` share a batch of ``batch_size`` (the batch
  runs to the largest budget and each row is cut at its own); prompts are left-padded, so every prompt ends where
  generation starts. Greedy decoding is batch-invariant.
- **Rows** are cut at their first EOS (of the model's generation config or the tokenizer), then at their own
  budget, then at their earliest stop string. ``tokens`` counts the generated ids kept (EOS not counted; up to and
  including the id that completes a stop string), so it always matches the ids that produced ``text``;
  ``token_ids`` holds those ids plus the EOS that ended the row. ``finish_reason`` is ``stop`` (EOS or a stop
  string) or ``length``.
- **Seeds**: ``seed`` is one int (row ``i`` gets ``seed + i``) or one seed per prompt; each sampled batch draws
  from a generator seeded with its first row's seed, so sampled output reproduces under the same batching. An
  unseeded sampled batch draws fresh entropy.
- **The caller's objects are left alone**: the tokenizer is never written to (the pad id is chosen per call: its
  pad token, else EOS) and the global torch RNG is never read or advanced (``model.generate`` samples from it, so
  each call runs inside ``torch.random.fork_rng`` with its own seed).
- ``logits_processor``: callables ``(input_ids, scores) -> scores`` applied at every step; one with a
  ``begin(prompt_len)`` method learns where decoding starts before each batch (fingerprint robustness attacks).

torch and transformers are imported inside the calls: importing this module is cheap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional, Sequence, Union

from trustlab.runtime.errors import ConfigError, ModelError

from .script import cut_at_stop


@dataclass(frozen=True)
class Completion:
    """One generated continuation, from any backend (local, OpenAI-compatible, vLLM, scripted).

    ``tokens`` counts the generated tokens that produced ``text`` (a server's ``usage.completion_tokens``);
    ``token_ids`` holds them where the backend knows them (local models), else None; ``error`` is set (and
    ``text`` empty) when the request failed for good."""

    text: str
    tokens: int = 0
    finish_reason: str = "stop"
    error: Optional[str] = None
    token_ids: Optional[tuple[int, ...]] = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.finish_reason not in ("error", "filtered")


@dataclass(frozen=True)
class Decoding:
    """How one prompt is continued. ``temperature=0`` is greedy; ``top_k=0``, ``top_p=1`` and
    ``repetition_penalty=1`` mean off; ``n`` samples per prompt; ``min_new_tokens`` holds EOS back."""

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    min_new_tokens: int = 0
    stop: tuple[str, ...] = ()
    n: int = 1

    def __post_init__(self):
        for name in ("max_new_tokens", "n"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"decoding.{name} must be an integer >= 1, got {v!r}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ConfigError(f"decoding.min_new_tokens must lie in [0, max_new_tokens], got {self.min_new_tokens}")
        if not self.temperature >= 0:
            raise ConfigError(f"decoding.temperature must be >= 0, got {self.temperature!r}")

    def batch_key(self) -> tuple:
        """Everything but the budget: rows with equal keys can share one ``generate`` call."""
        return (self.temperature, self.top_p, self.top_k, self.repetition_penalty, self.min_new_tokens, self.stop,
                self.n)

    @property
    def sampled(self) -> bool:
        return self.temperature > 0

    def kwargs(self) -> dict[str, Any]:
        """The ``model.generate`` settings of this decoding (unset ones fall back to the model's generation config)."""
        out: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "min_new_tokens": self.min_new_tokens,
                               "num_return_sequences": self.n}
        if self.sampled:
            out.update(do_sample=True, temperature=float(self.temperature), top_p=float(self.top_p),
                       top_k=max(0, int(self.top_k)))
        else:
            out.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if self.repetition_penalty != 1.0:
            out["repetition_penalty"] = float(self.repetition_penalty)
        return out


Prompt = Union[str, Sequence[int]]
Seeds = Union[None, int, Sequence[Optional[int]]]


def per_row(decoding: Union[Decoding, Sequence[Decoding]], seed: Seeds,
            m: int) -> tuple[list[Decoding], list[Optional[int]]]:
    """One decoding and one seed per prompt: a single decoding is broadcast, an int seed gives row i ``seed + i``."""
    decs = [decoding] * m if isinstance(decoding, Decoding) else list(decoding)
    if isinstance(seed, int) and not isinstance(seed, bool):
        seeds: list[Optional[int]] = [seed + i for i in range(m)]
    else:
        seeds = [None] * m if seed is None else list(seed)
    if len(decs) != m or len(seeds) != m:
        raise ValueError(f"got {len(decs)} decodings and {len(seeds)} seeds for {m} prompts")
    return decs, seeds


class LocalLM:
    """A local causal LM (any transformers ``generate`` model) behind one batched, seeded, side-effect-free call."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, logits_processor: Sequence[Callable] = ()):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.logits_processor = list(logits_processor)
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
            eos.append(tokenizer.eos_token_id)
        self.eos_ids = frozenset(int(e) for e in eos)

    @property
    def pad_id(self) -> int:
        """The tokenizer's pad token, else its EOS: read per call, never written to the tokenizer."""
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        if pad is None:
            pad = min(self.eos_ids) if self.eos_ids else None
        if pad is None:
            raise ModelError("the tokenizer has neither a pad nor an eos token", hint="set tokenizer.pad_token")
        return int(pad)

    @property
    def device(self):
        dev = getattr(self.model, "device", None)
        return dev if dev is not None else next(self.model.parameters()).device

    def encode(self, prompt: Prompt, add_special_tokens: bool = True) -> list[int]:
        if isinstance(prompt, str):
            return list(self.tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"])
        return [int(t) for t in prompt]

    def generate(self, prompts: Sequence[Prompt], decoding: Union[Decoding, Sequence[Decoding]], seed: Seeds = None,
                 *, add_special_tokens: bool = True) -> list[list[Completion]]:
        """``n`` completions per prompt, in prompt order (see the module doc for batching, cutting and seeds)."""
        m = len(prompts)
        decs, seeds = per_row(decoding, seed, m)
        ids = [self.encode(p, add_special_tokens) for p in prompts]
        if any(len(x) == 0 for x in ids):
            raise ConfigError("an empty prompt was given to the local model", hint="every prompt needs tokens")
        out: list[Optional[list[Completion]]] = [None] * m
        groups: dict[tuple, list[int]] = {}
        for i, d in enumerate(decs):  # rows that differ only in their budget share a batch
            groups.setdefault(d.batch_key(), []).append(i)
        for idx in groups.values():
            for s in range(0, len(idx), self.batch_size):
                batch = idx[s:s + self.batch_size]
                got = self.generate_batch([ids[i] for i in batch], [decs[i] for i in batch], seeds[batch[0]])
                for i, comps in zip(batch, got):
                    out[i] = comps
        return out  # type: ignore[return-value]

    def generate_batch(self, ids: Sequence[Sequence[int]], decs: Sequence[Decoding],
                       seed: Optional[int]) -> list[list[Completion]]:
        """One ``model.generate`` call over left-padded ``ids``; ``decs`` differ at most in their budgets."""
        import torch

        d0 = decs[0]
        width, pad = max(map(len, ids)), self.pad_id
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, x in enumerate(ids):  # left padding: every prompt ends where generation starts
            input_ids[i, width - len(x):] = torch.tensor(list(x), dtype=torch.long)
            mask[i, width - len(x):] = 1
        kwargs = replace(d0, max_new_tokens=max(d.max_new_tokens for d in decs)).kwargs()
        kwargs.update(pad_token_id=pad, eos_token_id=sorted(self.eos_ids) or None)
        if d0.stop:
            kwargs.update(stop_strings=list(d0.stop), tokenizer=self.tokenizer)
        extra: dict[str, Any] = {}
        if self.logits_processor:
            from transformers import LogitsProcessorList

            for proc in self.logits_processor:  # position-aware processors learn where decoding starts
                if hasattr(proc, "begin"):
                    proc.begin(width)
            extra["logits_processor"] = LogitsProcessorList(self.logits_processor)
        device = self.device
        with torch.random.fork_rng(devices=_cuda_devices()), torch.inference_mode():
            if d0.sampled:
                s = int(seed) if seed is not None else int.from_bytes(os.urandom(7), "little")
                # a CPU model seeds only the CPU generator (torch.manual_seed would also queue a seed for a CUDA
                # that is not yet initialised, outside the fork); a CUDA model's devices are all forked
                if device.type == "cuda":
                    torch.manual_seed(s)
                else:
                    torch.default_generator.manual_seed(s)
            seqs = self.model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), **kwargs,
                                       **extra)
        new = seqs[:, width:].tolist()
        n = d0.n
        return [[self._row(new[i * n + j], decs[i]) for j in range(n)] for i in range(len(ids))]

    def _row(self, ids: list[int], d: Decoding) -> Completion:
        """Cut one generated row at EOS, its own budget and its earliest stop; count the ids that remain."""
        eos_at = next((j for j, t in enumerate(ids) if t in self.eos_ids), None)
        ended = eos_at is not None and eos_at < d.max_new_tokens
        kept = (ids[:eos_at] if eos_at is not None else ids)[:d.max_new_tokens]
        decode = lambda k: self.tokenizer.decode(kept[:k], skip_special_tokens=True)  # noqa: E731
        text = decode(len(kept))
        cut, stopped = cut_at_stop(text, d.stop)
        if not stopped:
            with_eos = kept + [ids[eos_at]] if ended else kept
            return Completion(text, len(kept), "stop" if ended else "length", token_ids=tuple(with_eos))
        lo, hi = 1, len(kept)  # the fewest ids whose text already holds a stop string
        while lo < hi:
            mid = (lo + hi) // 2
            if cut_at_stop(decode(mid), d.stop)[1]:
                hi = mid
            else:
                lo = mid + 1
        return Completion(cut, lo, "stop", token_ids=tuple(kept[:lo]))


def _cuda_devices() -> list[int]:
    """The CUDA devices whose RNG ``fork_rng`` must save and restore (none until CUDA is in use)."""
    import torch

    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() else []


def failed(message: str, finish_reason: str = "error") -> Completion:
    """A persistent failure: no text, no tokens, the reason kept."""
    return Completion("", 0, finish_reason, message)


__all__ = ["Completion", "Decoding", "LocalLM", "failed"]
