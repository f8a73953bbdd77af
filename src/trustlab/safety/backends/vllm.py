"""vLLM offline engine (``pip install 'trustlab[vllm]'``), imported only when this backend is chosen.

``LLM(model, tensor_parallel_size, gpu_memory_utilization, seed)``; one ``SamplingParams`` per prompt, so each
MoreThink row keeps its own budget and every sample its own seed. Tokens are the generated ids vLLM reports.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from trustlab.runtime.errors import MissingDependencyError

from .base import Completion, LocalTokenizerMixin, ParamsArg, cut_at_stop, per_prompt

INSTALL = "pip install 'trustlab[vllm]'"


def import_vllm():
    try:
        import vllm
    except ImportError as exc:
        raise MissingDependencyError(f"the vllm backend needs the vllm package ({exc})", hint=INSTALL) from None
    return vllm


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

    def complete(self, prompts: Sequence[str], params: ParamsArg) -> list[Completion]:
        sp = [self.vllm.SamplingParams(max_tokens=p.max_tokens, temperature=p.temperature, top_p=p.top_p,
                                       top_k=p.top_k, repetition_penalty=p.repetition_penalty,
                                       stop=list(p.stop) or None, seed=p.seed)
              for p in per_prompt(params, len(prompts))]
        outs = self.llm.generate(list(prompts), sp, use_tqdm=False)
        result = []
        for o, p in zip(outs, sp):
            c = o.outputs[0]
            text, _ = cut_at_stop(c.text, p.stop or ())
            result.append(Completion(text, len(c.token_ids), "length" if c.finish_reason == "length" else "stop"))
        return result

    def chat(self, convs: Sequence[Sequence[dict]], params: ParamsArg) -> list[Completion]:
        return self.complete([self.render(c) for c in convs], params)

    def close(self) -> None:
        pass
