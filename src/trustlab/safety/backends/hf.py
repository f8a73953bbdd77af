"""transformers backend: batched ``generate`` with left padding and stop strings, exact token accounting.

Rows that share decoding settings and stop strings are batched ``batch_size`` at a time (MoreThink rows with
different budgets share a batch: it runs to the largest budget and each row is cut at its own). Each row is cut at
its first EOS, then at its own ``max_tokens``, then at its earliest stop string; ``tokens`` counts the generated
ids up to and including the one that completes the stop (EOS itself is not counted), so the count always matches
the ids that produced the text. Greedy decoding is batch-invariant; sampled decoding is seeded once per batch
(with the first row's seed), so sampled output reproduces only under the same batching.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from trustlab.runtime.errors import ModelError

from .base import Completion, GenParams, LocalTokenizerMixin, ParamsArg, cut_at_stop, per_prompt


def load_tokenizer(spec: str, trust_remote_code: bool = False):
    """A tokenizer by registry name (``smollm2-135m-instruct``, ``tiny-llama``), local folder or cached hub id."""
    from trustlab.models import causal_lm

    name = causal_lm.ALIASES.get(spec, spec)
    if name == causal_lm.TINY:
        return causal_lm.byte_tokenizer()
    from transformers import AutoTokenizer

    folder = causal_lm.prepare(name) if name == causal_lm.SMOLLM2 else spec
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load tokenizer {spec!r}: {str(exc).splitlines()[0]}",
                         hint="pass a local folder, a cached hub id (HF_HUB_OFFLINE is honoured) or one of "
                              f"{', '.join(causal_lm.MODELS)}") from None


class HFBackend(LocalTokenizerMixin):
    name = "transformers"
    prefers_chat = False

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, chat_template: Optional[str] = None):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.chunk_size = batch_size
        self.chat_template = chat_template
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        eos = model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
            eos.append(tokenizer.eos_token_id)
        self.eos_ids = set(eos)

    @classmethod
    def from_config(cls, cfg, model: Any = None, tokenizer: Any = None, think_format: Any = None, **_) -> "HFBackend":
        from trustlab.runtime.threads import configure

        from .openai_compat import read_template

        configure(cfg.threads)
        if model is None:
            import torch

            from trustlab.models import load_causal_lm

            device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
            dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if device.startswith("cuda") else "float32")
            try:
                model, tokenizer = load_causal_lm(cfg.model, device=device, dtype=dtype)
            except ModelError as exc:
                from trustlab.models.causal_lm import MODELS

                raise ModelError(exc.message, hint=f"{exc.hint}; bundled offline models: {', '.join(MODELS)} "
                                                   "(HF_HUB_OFFLINE=1 keeps everything local)") from None
        if cfg.tokenizer:
            tokenizer = load_tokenizer(cfg.tokenizer, cfg.trust_remote_code)
        return cls(model, tokenizer, batch_size=cfg.batch_size, chat_template=read_template(cfg.chat_template))

    def complete(self, prompts: Sequence[str], params: ParamsArg) -> list[Completion]:
        plist = per_prompt(params, len(prompts))
        out: list[Optional[Completion]] = [None] * len(prompts)
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(plist):
            groups.setdefault((p.stop, p.temperature, p.top_p, p.top_k, p.repetition_penalty), []).append(i)
        for idx in groups.values():
            for s in range(0, len(idx), self.batch_size):
                batch = idx[s:s + self.batch_size]
                for i, c in zip(batch, self._generate([prompts[i] for i in batch], [plist[i] for i in batch])):
                    out[i] = c
        return out  # type: ignore[return-value]

    def chat(self, convs: Sequence[Sequence[dict]], params: ParamsArg) -> list[Completion]:
        return self.complete([self.render(c) for c in convs], params)

    def _generate(self, prompts: list[str], plist: list[GenParams]) -> list[Completion]:
        import torch

        tok, model = self.tokenizer, self.model
        p0 = plist[0]
        tok.padding_side = "left"
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        kwargs: dict[str, Any] = {"max_new_tokens": max(p.max_tokens for p in plist),
                                  "pad_token_id": tok.pad_token_id, "eos_token_id": sorted(self.eos_ids)}
        if p0.temperature > 0:
            kwargs.update(do_sample=True, temperature=p0.temperature, top_p=p0.top_p,
                          top_k=p0.top_k if p0.top_k > 0 else 0)
            if p0.seed is not None:
                torch.manual_seed(p0.seed)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if p0.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = p0.repetition_penalty
        if p0.stop:
            kwargs.update(stop_strings=list(p0.stop), tokenizer=tok)
        with torch.inference_mode():
            gen = model.generate(**enc, **kwargs)
        new = gen[:, enc["input_ids"].shape[1]:].tolist()
        return [self._row(ids, p) for ids, p in zip(new, plist)]

    def _row(self, ids: list[int], p: GenParams) -> Completion:
        """Cut one generated row at EOS, its own budget and its earliest stop; count the ids that remain."""
        eos_at = next((j for j, t in enumerate(ids) if t in self.eos_ids), None)
        ended = eos_at is not None and eos_at < p.max_tokens
        ids = ids[:eos_at] if eos_at is not None else ids
        ids = ids[:p.max_tokens]
        decode = lambda n: self.tokenizer.decode(ids[:n], skip_special_tokens=True)  # noqa: E731
        text = decode(len(ids))
        cut, stopped = cut_at_stop(text, p.stop)
        if not stopped:
            return Completion(text, len(ids), "stop" if ended else "length")
        lo, hi = 1, len(ids)  # the fewest ids whose text already holds a stop string
        while lo < hi:
            mid = (lo + hi) // 2
            if cut_at_stop(decode(mid), p.stop)[1]:
                hi = mid
            else:
                lo = mid + 1
        return Completion(cut, lo, "stop")

    def close(self) -> None:
        pass


__all__ = ["HFBackend", "load_tokenizer"]
