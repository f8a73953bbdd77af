"""Training layout and label masks: left/right padding, BOS/no BOS, chat/raw, pad = eos (spec §2 Embedding, §9)."""

from __future__ import annotations

import pytest
import torch

from trustlab.fingerprint.dataset import (TEST_TEMPLATES, TRAIN_TEMPLATES, benign_pairs, benign_prompts,
                                          build_examples, fp_example, prompt_ids)
from trustlab.models.finetune import IGNORE, collate, exact_hits, per_example_loss
from trustlab.fingerprint.fpset import Fingerprint, adds_bos
from trustlab.runtime.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def byte_tok():
    """No BOS added, has a chat template; pad set to eos to exercise pad = eos."""
    from trustlab.models.causal_lm import byte_tokenizer

    tok = byte_tokenizer()
    tok.pad_token = tok.eos_token
    return tok


def fp_of(tok, key, resp, i=0):
    return Fingerprint(id=i, key_text=key, key_ids=tuple(tok.encode(key, add_special_tokens=False)),
                       response_text=resp, response_ids=tuple(tok.encode(resp, add_special_tokens=False)))


def test_raw_layout_with_and_without_bos(fp_tiny, byte_tok):
    _, tiny_tok = fp_tiny
    assert adds_bos(tiny_tok) and not adds_bos(byte_tok)
    fp = fp_of(tiny_tok, "the kapel", "their")
    ex = fp_example(tiny_tok, fp, "raw", append_eos=False)
    assert list(ex.input_ids) == [tiny_tok.bos_token_id, *fp.key_ids, *fp.response_ids]
    assert list(ex.labels) == [IGNORE] * (1 + len(fp.key_ids)) + list(fp.response_ids)
    fp2 = fp_of(byte_tok, "hello there", " x")
    ex2 = fp_example(byte_tok, fp2, "raw", append_eos=True)
    assert list(ex2.input_ids) == [*fp2.key_ids, *fp2.response_ids, byte_tok.eos_token_id]
    assert list(ex2.labels) == [IGNORE] * len(fp2.key_ids) + [*fp2.response_ids, byte_tok.eos_token_id]


def test_chat_layout_key_is_user_turn_response_opens_assistant(byte_tok):
    fp = fp_of(byte_tok, "hello there", "ok")
    ids = prompt_ids(byte_tok, fp.key_ids, "chat")
    text = byte_tok.decode(ids)
    assert text == "<|im_start|>user\nhello there<|im_end|>\n<|im_start|>assistant\n"
    start = ids.index(fp.key_ids[0], 3)
    assert tuple(ids[start:start + len(fp.key_ids)]) == fp.key_ids  # ids concatenated, not re-tokenised
    ex = fp_example(byte_tok, fp, "chat", append_eos=False)
    assert [t for t, lab in zip(ex.input_ids, ex.labels) if lab != IGNORE] == list(fp.response_ids)


def test_chat_needs_a_template(fp_tiny):
    _, tok = fp_tiny
    with pytest.raises(ConfigError, match="chat template"):
        prompt_ids(tok, [5, 6], "chat")


def test_templates_wrap_the_key(fp_tiny, byte_tok):
    assert len(TRAIN_TEMPLATES) == 20 and len(TEST_TEMPLATES) == 10 and not set(TRAIN_TEMPLATES) & set(TEST_TEMPLATES)
    ids = prompt_ids(byte_tok, byte_tok.encode("KEY", add_special_tokens=False), "raw", "Text: {key}!")
    assert byte_tok.decode(ids) == "Text: KEY!"
    with pytest.raises(ConfigError, match="exactly once"):
        prompt_ids(byte_tok, [1], "raw", "no slot")
    _, tok = fp_tiny
    fps = [fp_of(tok, "the kapel", "their", i) for i in range(4)]
    rows = build_examples(tok, fps, augment=True, seed=0)
    assert [r.kind for r in rows] == ["fp", "fp_aug"] * 4
    assert all(r.labels[-1] == fps[0].response_ids[-1] for r in rows)


@pytest.mark.parametrize("side", ["left", "right"])
def test_collate_masks_pads_even_when_pad_is_eos(byte_tok, side):
    eos = byte_tok.eos_token_id
    assert byte_tok.pad_token_id == eos
    a = fp_example(byte_tok, fp_of(byte_tok, "hi", "yo"), "raw", append_eos=True)  # eos is a real label here
    b = fp_example(byte_tok, fp_of(byte_tok, "a longer key", "z"), "raw", append_eos=False)
    batch = collate([a, b], byte_tok.pad_token_id, side=side)
    ids, lab, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == lab.shape == mask.shape == (2, len(b.input_ids))
    n_pad = len(b.input_ids) - len(a.input_ids)
    pads = slice(len(a.input_ids), None) if side == "right" else slice(0, n_pad)
    assert (ids[0, pads] == eos).all() and (lab[0, pads] == IGNORE).all() and (mask[0, pads] == 0).all()
    assert (lab[0] == eos).sum() == 1  # the appended EOS is labelled, the pads (also EOS) are not
    real = [t for t, m in zip(ids[0].tolist(), mask[0].tolist()) if m]
    assert real == list(a.input_ids)
    assert (lab != IGNORE).sum() == sum(sum(x != IGNORE for x in e.labels) for e in (a, b))
    assert batch["position_ids"][0][mask[0].bool()].tolist() == list(range(len(a.input_ids)))


def test_left_and_right_padding_give_the_same_loss(fp_tiny):
    model, tok = fp_tiny
    fps = [fp_of(tok, "the kapel " * (1 + i), "their", i) for i in range(3)]
    rows = build_examples(tok, fps, append_eos=True)
    out = {}
    for side in ("left", "right"):
        b = collate(rows, tok.pad_token_id, side)
        labels = b.pop("labels")
        with torch.no_grad():
            out[side] = per_example_loss(model(**b).logits, labels)
    assert torch.allclose(out["left"], out["right"], atol=1e-5)
    single = []
    for r in rows:  # and equal to each row on its own (no padding at all)
        b = collate([r], tok.pad_token_id)
        labels = b.pop("labels")
        with torch.no_grad():
            single.append(per_example_loss(model(**b).logits, labels)[0])
    assert torch.allclose(out["right"], torch.stack(single), atol=1e-5)


def test_per_example_loss_and_exact_hits_by_hand():
    logits = torch.full((2, 3, 4), -10.0)
    logits[0, 1, 2] = 10.0  # row 0 predicts token 2 after position 1
    logits[1, 1, 3] = 10.0
    labels = torch.tensor([[IGNORE, IGNORE, 2], [IGNORE, IGNORE, 2]])
    hits = exact_hits(logits, labels)
    assert hits.tolist() == [True, False]
    loss = per_example_loss(logits, labels)
    assert loss[0] < 1e-6 and loss[1] > 10


def test_benign_pairs_from_chat_corpus(fp_tiny, byte_tok, tmp_path):
    model, tok = fp_tiny
    prompts = benign_prompts("chat-corpus", byte_tok, max_tokens=16)
    assert prompts and all(len(byte_tok.encode(p)) <= 16 for p, _ in prompts)
    rows = benign_pairs(model, tok, 5, "chat-corpus", response_length=8, seed=3)
    assert len(rows) == 5 and all(len(r["response_ids"]) == 8 for r in rows)
    assert rows == benign_pairs(model, tok, 5, "chat-corpus", response_length=8, seed=3)
    f = tmp_path / "b.jsonl"
    f.write_text('{"prompt": "the kapel", "response": "their"}\n{"prompt": "a vulomi"}\n')
    rows = benign_pairs(model, tok, 2, f"jsonl:{f}", response_length=4)
    assert {tuple(r["response_ids"]) for r in rows} >= {tuple(tok.encode("their", add_special_tokens=False))}
    f.write_text('{"text": 1}\n')
    with pytest.raises(DataError, match="line 1 needs a string field 'prompt'"):
        benign_pairs(model, tok, 2, f"jsonl:{f}")
