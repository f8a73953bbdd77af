"""The one local transformers backend (``trustlab.models.llm.local``) on the ``tiny-llama`` registry model: the caller's
tokenizer and the global torch RNG are untouched by every lab's entry point, seeded sampling reproduces, stop
strings and EOS end a row with the right reason and token count, and greedy batches equal one prompt at a time."""

import pytest
import torch

from trustlab.models.causal_lm import byte_tokenizer
from trustlab.models.llm.local import Completion, Decoding, LocalLM

PROMPTS = ["hello there", "a", "the quick brown fox jumps", "zz top", "x y z"]


@pytest.fixture(scope="module")
def model(tiny_lm):
    return tiny_lm[0]


def caller_tokenizer():
    """A tokenizer as a user may hand it over: no pad token, right padding."""
    tok = byte_tokenizer()
    tok.pad_token = None
    tok.padding_side = "right"
    return tok


def _snapshot(tok):
    return tok.pad_token, tok.pad_token_id, tok.padding_side, torch.random.get_rng_state().clone()


def _entry_points(model, tok):
    from trustlab.fingerprint import dataset, keys
    from trustlab.fingerprint.backends import HFBackend as FingerprintHF
    from trustlab.fingerprint.config import GenerateConfig
    from trustlab.safety.backends.base import GenParams
    from trustlab.safety.backends.hf import HFBackend as SafetyHF

    safety = SafetyHF(model, tok, batch_size=2)
    fingerprint = FingerprintHF(model, tok, batch_size=2)
    return {
        "safety greedy": lambda: safety.complete(PROMPTS, GenParams(max_tokens=6, stop=("e",))),
        "safety seeded": lambda: safety.complete(PROMPTS, GenParams(max_tokens=6, temperature=0.8, seed=3)),
        "safety unseeded": lambda: safety.complete(PROMPTS, GenParams(max_tokens=6, temperature=0.8)),
        "safety chat": lambda: safety.chat([[{"role": "user", "content": "hi"}]], GenParams(max_tokens=4)),
        "fingerprint greedy": lambda: fingerprint.generate(PROMPTS, 5),
        "fingerprint sampled": lambda: fingerprint.generate(PROMPTS, 5, temperature=0.7, n=2, seed=1),
        "fingerprint keys": lambda: keys.sample_key_texts(model, tok, ["cat", "dog"], GenerateConfig(key_length=8), 5),
        "fingerprint greedy_continue": lambda: keys.greedy_continue(model, tok, [1, 2, 3], 70, 5),
        "fingerprint benign_pairs": lambda: dataset.benign_pairs(model, tok, 3, response_length=4, batch_size=2),
        "LocalLM": lambda: LocalLM(model, tok).generate(PROMPTS, Decoding(6, temperature=1.0), seed=0),
    }


def test_caller_tokenizer_and_global_rng_unchanged_after_generation(model):
    tok = caller_tokenizer()
    torch.manual_seed(1234)
    for name, call in _entry_points(model, tok).items():
        before = _snapshot(tok)
        call()
        after = _snapshot(tok)
        assert after[:3] == before[:3], f"{name} changed the tokenizer: {before[:3]} -> {after[:3]}"
        assert torch.equal(after[3], before[3]), f"{name} changed the global torch RNG"


def test_seeded_sampling_reproduces_and_seeds_matter(model):
    lm = LocalLM(model, byte_tokenizer(), batch_size=2)
    dec = Decoding(max_new_tokens=16, temperature=1.0, n=2)
    a, b = lm.generate(PROMPTS, dec, seed=7), lm.generate(PROMPTS, dec, seed=7)
    assert a == b
    assert lm.generate(PROMPTS, dec, seed=8) != a
    assert all(len(cs) == 2 for cs in a)
    # the documented per-batch rule: row i gets seed + i, a batch draws under its first row's seed
    per_row = lm.generate(PROMPTS, dec, seed=[7, None, 9, None, 11])
    assert per_row == a


def _greedy_texts(lm, max_new_tokens=24):
    return lm.generate(PROMPTS, Decoding(max_new_tokens))


def test_stop_strings_cut_the_text_and_count_the_ids_that_made_it(model):
    tok = byte_tokenizer()
    lm = LocalLM(model, tok, batch_size=3)
    plain = _greedy_texts(lm)
    checked = 0
    for prompt, [c] in zip(PROMPTS, plain):
        text = c.text
        k = next((k for k in range(1, len(text)) if text[k] not in text[:k] and text[k].strip()), None)
        if k is None:
            continue
        [[cut]] = lm.generate([prompt], Decoding(24, stop=(text[k],)))
        assert cut.text == text[:k] and cut.finish_reason == "stop"
        assert cut.tokens == len(cut.token_ids) and text[k] in tok.decode(list(cut.token_ids))
        assert text[k] not in tok.decode(list(cut.token_ids[:-1]))  # the fewest ids that complete the stop
        checked += 1
    assert checked >= 2


class _EosAt:
    """Forces EOS as the ``at``-th generated token (a LogitsProcessor with the ``begin`` hook)."""

    def __init__(self, eos: int, at: int):
        self.eos, self.at, self.width = eos, at, None

    def begin(self, width: int) -> None:
        self.width = width

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] - self.width == self.at:
            scores = torch.full_like(scores, float("-inf"))
            scores[:, self.eos] = 0.0
        return scores


def test_finish_reason_is_length_at_the_budget_and_stop_at_eos(model):
    tok = byte_tokenizer()
    [[c]] = LocalLM(model, tok).generate(["hello"], Decoding(5, min_new_tokens=5))
    assert (c.finish_reason, c.tokens, len(c.token_ids)) == ("length", 5, 5)
    [[e]] = LocalLM(model, tok, logits_processor=[_EosAt(tok.eos_token_id, 2)]).generate(["hello"], Decoding(8))
    assert (e.finish_reason, e.tokens) == ("stop", 2)
    assert e.token_ids[-1] == tok.eos_token_id and len(e.token_ids) == 3  # EOS kept in the ids, not counted
    # a row whose own budget ends before a batch-mate's: cut at its own budget, reason length
    short, long_ = LocalLM(model, tok, batch_size=2).generate(["hello", "world"], [Decoding(3), Decoding(9)])
    assert (short[0].tokens, short[0].finish_reason) == (3, "length") and long_[0].tokens == 9


def test_batched_greedy_equals_one_prompt_at_a_time(model):
    tok = byte_tokenizer()
    one = LocalLM(model, tok, batch_size=1).generate(PROMPTS, Decoding(12))
    for bs in (2, 8):
        assert LocalLM(model, tok, batch_size=bs).generate(PROMPTS, Decoding(12)) == one
    assert all(isinstance(c, Completion) and c.ok for [c] in one)
