"""vLLM offline engine (``pip install 'trustlab[vllm]'``), imported only when this backend is chosen.

The same protocol as the local transformers backend (``trustlab.models.llm.local``): a request's ``GenParams``
becomes the shared ``Decoding`` (``hf.decoding``), a ``Decoding`` becomes one vLLM ``SamplingParams``
(``sampling_kwargs``), and each vLLM ``RequestOutput`` becomes the shared ``Completion``s (``completions_of``).
``LLM(model, tensor_parallel_size, gpu_memory_utilization, seed)``; one ``SamplingParams`` per prompt, so each
MoreThink row keeps its own budget and every row its own seed (an int ``seed`` gives row ``i`` ``seed + i``, as
``LocalLM`` does; unlike ``LocalLM`` a sampled row draws under its own seed, not its batch's first). Text is cut at
the earliest stop string; ``tokens`` counts the generated ids vLLM reports (as a server's ``usage`` does) and
``token_ids`` holds them; ``finish_reason`` is ``length`` when the budget ran out, else ``stop``.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

from trustlab.models.llm.local import Completion, Decoding, per_row
from trustlab.runtime.errors import MissingDependencyError

from .base import LocalTokenizerMixin, ParamsArg, cut_at_stop, per_prompt
from .hf import decoding

INSTALL = "pip install 'trustlab[vllm]'"


def import_vllm():
    try:
        import vllm
    except ImportError as exc:
        raise MissingDependencyError(f"the vllm backend needs the vllm package ({exc})", hint=INSTALL) from None
    return vllm


def sampling_kwargs(d: Decoding, seed: Optional[int] = None) -> dict[str, Any]:
    """The ``vllm.SamplingParams`` keywords of one decoding (vLLM's ``top_k=-1`` is off, as ``Decoding``'s 0 is)."""
    kw: dict[str, Any] = {"n": d.n, "max_tokens": d.max_new_tokens, "temperature": float(d.temperature),
                          "top_p": float(d.top_p), "top_k": int(d.top_k) if d.top_k > 0 else -1,
                          "repetition_penalty": float(d.repetition_penalty), "stop": list(d.stop) or None,
                          "seed": seed}
    if d.min_new_tokens:
        kw["min_tokens"] = d.min_new_tokens
    return kw


def completions_of(output: Any, d: Decoding) -> list[Completion]:
    """The shared ``Completion`` of each sample in one vLLM ``RequestOutput`` (``.outputs[i]``: ``text``,
    ``token_ids``, ``finish_reason``)."""
    out = []
    for c in output.outputs:
        text, _ = cut_at_stop(c.text, d.stop)
        ids = tuple(int(t) for t in c.token_ids)
        out.append(Completion(text, len(ids), "length" if c.finish_reason == "length" else "stop", token_ids=ids))
    return out


class VLLMBackend(LocalTokenizerMixin):
    name = "vllm"
    prefers_chat = False

    def __init__(self, llm: Any, chat_template: Optional[str] = None, batch_size: int = 256):
        self.vllm = import_vllm()
        self.llm = llm
        self.tokenizer = llm.get_tokenizer()
        self.chat_template = chat_template
        self.chunk_size = batch_size

    @classmethod
    def from_config(cls, cfg, **_) -> "VLLMBackend":
        from .openai_compat import read_template

        vllm = import_vllm()
        llm = vllm.LLM(model=cfg.model, tokenizer=cfg.tokenizer or None, tensor_parallel_size=cfg.tensor_parallel_size,
                       gpu_memory_utilization=cfg.gpu_memory_utilization, trust_remote_code=cfg.trust_remote_code,
                       dtype=cfg.dtype, seed=0)
        return cls(llm, chat_template=read_template(cfg.chat_template), batch_size=max(cfg.batch_size, 64))

    def generate(self, prompts: Sequence[str], decodings: Union[Decoding, Sequence[Decoding]],
                 seed: Union[None, int, Sequence[Optional[int]]] = None) -> list[list[Completion]]:
        """``LocalLM.generate``'s protocol: ``n`` completions per prompt, in prompt order."""
        decs, seeds = per_row(decodings, seed, len(prompts))
        sp = [self.vllm.SamplingParams(**sampling_kwargs(d, s)) for d, s in zip(decs, seeds)]
        outs = self.llm.generate(list(prompts), sp, use_tqdm=False)
        return [completions_of(o, d) for o, d in zip(outs, decs)]

    def complete(self, prompts: Sequence[str], params: ParamsArg) -> list[Completion]:
        plist = per_prompt(params, len(prompts))
        return [c[0] for c in self.generate(prompts, [decoding(p) for p in plist], [p.seed for p in plist])]

    def chat(self, convs: Sequence[Sequence[dict]], params: ParamsArg) -> list[Completion]:
        return self.complete([self.render(c) for c in convs], params)

    def close(self) -> None:
        pass
