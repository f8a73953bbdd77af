"""Safety-lab fixtures: a tiny R1-like model (character tokens + <think>/</think>, a template that prefills the
opening), scripted backends and in-process fake OpenAI servers on 127.0.0.1."""

from __future__ import annotations

import pytest

R1_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}\n{% else %}"
               "<|{{ m['role'] }}|>{{ m['content'] }}\n{% endif %}{% endfor %}"
               "{% if add_generation_prompt %}<|assistant|><think>\n{% endif %}")
PLAIN_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                  "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def char_tokenizer(template: str = R1_TEMPLATE):
    """About 100 printable characters as tokens, plus <think>, </think> and chat specials."""
    import string

    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    chars = list(dict.fromkeys(string.printable))
    vocab = {"<unk>": 0, "<pad>": 1, "<eos>": 2}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")
    tok.add_tokens(["<think>", "</think>", "<|user|>", "<|assistant|>"])
    tok.chat_template = template
    return tok


def tiny_r1_model(seed: int = 0, template: str = R1_TEMPLATE):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = char_tokenizer(template)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model.eval(), tok


@pytest.fixture(scope="session")
def tiny_r1():
    return tiny_r1_model()


@pytest.fixture
def fake_server():
    """Factory: ``fake_server(rules, **faults)`` -> a started FakeServer, stopped after the test."""
    from trustlab.models.llm.fake_server import FakeServer

    started = []

    def make(rules=None, **kw):
        srv = FakeServer(rules, **kw).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


class Rec:
    """A minimal prompt record."""

    def __init__(self, prompt_id: str, prompt: str, category: str = "c"):
        self.prompt_id, self.prompt, self.category = prompt_id, prompt, category
