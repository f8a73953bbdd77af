"""The fine-tuning core: masked loss, collator, exact match, one loop step, the divergence stop (embed's dtype:
tests/fingerprint/test_train.py)."""

from __future__ import annotations

import math
import re

import pytest
import torch

from trustlab.models.finetune import (IGNORE, Row, collate, encode, evaluate, exact_hits, fit, masked_loss,
                                      per_example_loss, token_loss)
from trustlab.runtime.errors import ModelError


def test_encode_labels_only_the_target():
    row = encode([5, 6, 7], [8, 9])
    assert row.input_ids == (5, 6, 7, 8, 9) and row.labels == (IGNORE, IGNORE, IGNORE, 8, 9)


def test_masked_loss_ignores_prompt_positions_hand_computed():
    # vocabulary of 3; one row: prompt [0, 1], target [2]; only position 1 (predicting token 2) carries loss
    logits = torch.tensor([[[0.0, 0.0, 0.0],  # predicts token 1 (a prompt token): ignored
                            [1.0, 2.0, 3.0],  # predicts token 2 (the target)
                            [9.0, -9.0, 0.0]]])  # after the last token: nothing to predict
    labels = torch.tensor([list(encode([0, 1], [2]).labels)])
    expected = -(3.0 - math.log(math.exp(1.0) + math.exp(2.0) + math.exp(3.0)))  # -log softmax(z)[2]
    assert per_example_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    assert token_loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    # changing the logits at the prompt position changes nothing
    logits2 = logits.clone()
    logits2[0, 0] = torch.tensor([5.0, -3.0, 7.0])
    assert per_example_loss(logits2, labels).item() == pytest.approx(expected, rel=1e-6)


def test_reductions_sum_mean_and_token_weighting():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[IGNORE, IGNORE, 3, 4, 5], [IGNORE, IGNORE, IGNORE, IGNORE, 6]])
    rows = per_example_loss(logits, labels)
    assert masked_loss(logits, labels, "sum").item() == pytest.approx(rows.sum().item(), rel=1e-6)
    assert masked_loss(logits, labels, "mean").item() == pytest.approx(rows.mean().item(), rel=1e-6)
    # token-weighted: row 0 has 3 labelled tokens, row 1 has 1
    assert masked_loss(logits, labels, "token").item() == pytest.approx((3 * rows[0] + rows[1]).item() / 4, rel=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        masked_loss(logits, labels, "bogus")


@pytest.mark.parametrize("side", ["right", "left"])
def test_collator_pads_masks_and_positions(side):
    a, b = encode([1, 2, 3], [4, 5]), ([7, 8], [IGNORE, 8])  # a Row and an (ids, labels) pair
    batch = collate([a, b], pad_id=0, side=side)
    ids, mask, lab, pos = batch["input_ids"], batch["attention_mask"], batch["labels"], batch["position_ids"]
    assert ids.shape == (2, 5)
    real = slice(0, 2) if side == "right" else slice(3, 5)
    pads = slice(2, 5) if side == "right" else slice(0, 3)
    assert ids[1, real].tolist() == [7, 8] and (ids[1, pads] == 0).all()
    assert (mask[1, pads] == 0).all() and (mask[1, real] == 1).all() and mask[0].sum() == 5
    assert (lab[1, pads] == IGNORE).all() and lab[1, real].tolist() == [IGNORE, 8]
    assert pos[1, real].tolist() == [0, 1] and pos[0].tolist() == [0, 1, 2, 3, 4]
    assert "position_ids" not in collate([a], 0, positions=False)
    with pytest.raises(ValueError, match="side"):
        collate([a], 0, side="middle")


def test_exact_match_is_greedy_argmax_on_every_target_token():
    labels = torch.tensor([[IGNORE, 1, 2], [IGNORE, 1, 2], [IGNORE, IGNORE, IGNORE]])
    logits = torch.zeros(3, 3, 4)
    logits[0, 0, 1] = logits[0, 1, 2] = 1.0  # both target tokens are the argmax
    logits[1, 0, 1] = logits[1, 1, 3] = 1.0  # the second one is not
    logits[2, 0, 1] = 1.0  # no target at all: not a hit
    assert exact_hits(logits, labels).tolist() == [True, False, False]


def _rows(tok, n=4):
    return [encode(tok.encode(f"question {i}", add_special_tokens=False), tok.encode(f" answer {i}",
                                                                                    add_special_tokens=False))
            for i in range(n)]


def test_one_loop_step_reduces_the_loss_on_tiny_llama(tiny_lm):
    import copy

    model, tok = copy.deepcopy(tiny_lm[0]), tiny_lm[1]
    rows = _rows(tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    before, _ = evaluate(model, rows, pad)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    seen = []
    step, loss = fit(model, opt, [[(collate(rows, pad), 1.0)]], lr=1e-2, on_step=lambda s, v: seen.append((s, v)))
    after, acc = evaluate(model, rows, pad)
    assert step == 1 and seen == [(1, loss)] and loss == pytest.approx(before, rel=1e-4)
    assert after < before and 0.0 <= acc <= 1.0


def test_a_nonfinite_step_stops_naming_step_and_lr(tiny_lm):
    import copy

    model, tok = copy.deepcopy(tiny_lm[0]), tiny_lm[1]
    rows = _rows(tok, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1e30)
    logged = []
    with pytest.raises(ModelError, match=r"diverged at step (\d+) with lr 1e\+30") as exc:
        fit(model, opt, [[(collate(rows, 0), 1.0)]] * 5, lr=1e30, on_step=lambda s, v: logged.append(s))
    bad = int(re.search(r"step (\d+)", str(exc.value)).group(1))
    assert logged == list(range(1, bad))  # on_step (logging, checkpoints) never saw the diverged step
    assert "1e+29" in exc.value.hint  # the hint lowers lr tenfold
    assert exc.value.exit_code == 2


def test_rows_with_labels_but_no_target_do_not_crash_evaluate(tiny_lm):
    model, tok = tiny_lm
    loss, acc = evaluate(model, [Row((1, 2, 3), (IGNORE, IGNORE, IGNORE))], 0)
    assert loss == 0.0 and acc == 0.0
