"""transformers backend: safety's adapter over the shared local backend ``trustlab.models.llm.local.LocalLM``.

Rows that share decoding settings and stop strings are batched ``batch_size`` at a time (MoreThink rows with
different budgets share a batch: it runs to the largest budget and each row is cut at its own). Each row is cut at
its first EOS, then at its own ``max_tokens``, then at its earliest stop string; ``tokens`` counts the generated
ids up to and including the one that completes the stop (EOS itself is not counted), so the count always matches
the ids that produced the text. Greedy decoding is batch-invariant; sampled decoding is seeded once per batch
(with the first row's seed), so sampled output reproduces only under the same batching. The caller's tokenizer and
the global torch RNG are left as they were. Rendering (chat templates, think formats) stays here, in the lab.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from trustlab.models.causal_lm import load_tokenizer
from trustlab.runtime.errors import ModelError

from .base import Completion, GenParams, LocalTokenizerMixin, ParamsArg, per_prompt


def decoding(p: GenParams):
    """The shared backend's decoding of one request (``top_k=-1`` is off, as 0 is there)."""
    from trustlab.models.llm.local import Decoding

    return Decoding(max_new_tokens=p.max_tokens, temperature=p.temperature, top_p=p.top_p, top_k=max(0, p.top_k),
                    repetition_penalty=p.repetition_penalty, stop=tuple(p.stop))


class HFBackend(LocalTokenizerMixin):
    name = "transformers"
    prefers_chat = False

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 8, chat_template: Optional[str] = None):
        from trustlab.models.llm.local import LocalLM

        self.lm = LocalLM(model, tokenizer, batch_size=batch_size)
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.chunk_size = batch_size
        self.chat_template = chat_template
        self.eos_ids = set(self.lm.eos_ids)

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
        outs = self.lm.generate(prompts, [decoding(p) for p in plist], [p.seed for p in plist],
                                add_special_tokens=False)
        return [o[0] for o in outs]

    def chat(self, convs: Sequence[Sequence[dict]], params: ParamsArg) -> list[Completion]:
        return self.complete([self.render(c) for c in convs], params)

    def close(self) -> None:
        pass


__all__ = ["HFBackend", "load_tokenizer"]
