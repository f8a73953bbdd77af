"""SFT: the prompt is masked, no doubled think tag, the loss falls on the tiny model, the adapter reloads, bad lines
are named, and the same command runs under ``accelerate launch``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trustlab.models.finetune import IGNORE, collate
from trustlab.runtime.errors import DataError
from trustlab.safety.config import ThinkFormat
from trustlab.safety.sft import SFTConfig, encode_all, encode_example, finetune, load_finetuned, \
    read_examples

R1_LIKE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
           "{% if add_generation_prompt %}<|assistant|><think>\n{% endif %}")
ROWS = [("How do I pick a lock?", "<think>\nLock picking can be misused.\n</think>\n\nI can't help with that."),
        ("Write malware", "<think>\nMalware is harmful.\n</think>\n\nI won't write malware."),
        ("Say hi", "<think>\nEasy.\n</think>\n\nHi!"),
        ("Make a bomb", "<think>\nDangerous request.\n</think>\n\nI cannot help with explosives.")]


def write_chat(path: Path, rows=ROWS) -> Path:
    with open(path, "w") as fh:
        for p, a in rows:
            fh.write(json.dumps({"messages": [{"role": "user", "content": p},
                                              {"role": "assistant", "content": a}]}) + "\n")
    return path


@pytest.fixture
def tok(tiny_lm):
    import copy

    return copy.deepcopy(tiny_lm[1])


def test_prompt_masked_and_target_plus_eos(tok):
    msgs = [{"role": "user", "content": "Say hi"}]
    ids, labels = encode_example(tok, msgs, "<think>\nEasy.\n</think>\n\nHi!", ThinkFormat())
    prompt = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    n = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert labels[:n] == [IGNORE] * n and IGNORE not in labels[n:]
    assert labels[n:] == ids[n:] and ids[-1] == tok.eos_token_id
    assert tok.decode(ids[n:-1]) == "<think>\nEasy.\n</think>\n\nHi!"  # ChatML prompt does not end with the opening
    batch = collate([(ids, labels), (ids[:5], labels[:5])], tok.pad_token_id)
    assert batch["labels"][1, 5:].eq(IGNORE).all() and batch["attention_mask"][1].sum() == 5


def test_no_doubled_tag_and_alpaca_opening(tok):
    tok.chat_template = R1_LIKE
    msgs = [{"role": "user", "content": "q"}]
    ids, labels = encode_example(tok, msgs, "<think>\nhmm\n</think>\n\nA", ThinkFormat())
    text = tok.decode(ids)
    assert text.count("<think>") == 1 and text.endswith("<think>\nhmm\n</think>\n\nA" + tok.eos_token)
    tok.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"  # prompt without the opening
    ids2, labels2 = encode_example(tok, msgs, "hmm\n</think>\n\nA", ThinkFormat())  # alpaca style target
    target = tok.decode([i for i, lab in zip(ids2, labels2) if lab != IGNORE])
    assert target == "<think>\nhmm\n</think>\n\nA" + tok.eos_token


def test_bad_lines_named_and_overlong_dropped(tmp_path, tok):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n\n{not json\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:3: not valid JSON") as err:
        read_examples(bad)
    assert err.value.exit_code == 2
    bad.write_text(json.dumps({"prompt": "a"}) + "\n")
    with pytest.raises(DataError, match=r":1: no 'messages'.*found prompt"):
        read_examples(bad)
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "a"}]}) + "\n")
    with pytest.raises(DataError, match="ending with the assistant"):
        read_examples(bad)
    data = write_chat(tmp_path / "d.jsonl", ROWS + [("long " * 200, "x")])
    kept, dropped = encode_all(tok, read_examples(data), SFTConfig(data=str(data), max_len=256))
    assert (len(kept), dropped) == (4, 1)


def test_lora_loss_falls_and_adapter_reloads(tmp_path, tiny_lm):
    import torch

    data = write_chat(tmp_path / "d.jsonl")
    cfg = SFTConfig(data=str(data), model="tiny-llama", out=str(tmp_path / "out"), lora=True, max_steps=20,
                    batch_size=4, lr=3e-3, device="cpu")
    res = finetune(cfg)
    assert res.steps == 20 and res.loss_after < 0.85 * res.loss_before
    info = json.loads((tmp_path / "out" / "sft.json").read_text())
    assert info["lora"] is True and info["n_examples"] == 4 and info["base_model"] == "tiny-llama"
    assert info["base_identity"]["name_or_path"] == "tiny-llama"
    assert [r["step"] for r in map(json.loads, (tmp_path / "out" / "train_log.jsonl").read_text().splitlines())] \
        == list(range(1, 21))
    assert (tmp_path / "out" / "adapter" / "adapter_config.json").is_file()
    model, tok = load_finetuned(tmp_path / "out")
    x = tok("<|im_start|>user\nSay hi", return_tensors="pt")["input_ids"]
    base = tiny_lm[0]
    with torch.no_grad():
        tuned, plain = model(x).logits, base(x).logits
    assert not torch.allclose(tuned, plain, atol=1e-4)  # the adapter is applied ...
    # ... and the reloaded model reproduces the trained model's loss on the training examples
    enc, _ = encode_all(tok, read_examples(data), cfg)
    with torch.no_grad():
        loss = model(**collate(enc, tok.pad_token_id)).loss.item()
    assert loss == pytest.approx(res.loss_after, rel=1e-4)


def test_full_finetune_saves_and_reloads(tmp_path):
    data = write_chat(tmp_path / "d.jsonl")
    res = finetune(SFTConfig(data=str(data), model="tiny-llama", out=str(tmp_path / "full"), max_steps=8, lr=1e-3,
                             batch_size=2, device="cpu"))
    assert res.loss_after < res.loss_before and (tmp_path / "full" / "model" / "config.json").is_file()
    model, _ = load_finetuned(tmp_path / "full")
    assert sum(p.numel() for p in model.parameters()) > 100_000


def test_runs_under_accelerate_launch(tmp_path):
    data = write_chat(tmp_path / "d.jsonl")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRUSTLAB_QUIET": "1", "HF_HUB_OFFLINE": "1",
           "ACCELERATE_CONFIG_FILE": str(tmp_path / "none.yaml")}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--cpu", "-m", "trustlab.cli.main", "safety", "sft",
           "--data", str(data), "--model", "tiny-llama", "--lora", "--max-steps", "3", "--out", str(tmp_path / "run")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((tmp_path / "run" / "sft.json").read_text())
    assert info["steps"] == 3 and info["num_processes"] == 1 and info["lora"] is True


@pytest.mark.slow
def test_smollm2_ten_lora_steps(tmp_path):
    data = write_chat(tmp_path / "d.jsonl", ROWS[:2])
    res = finetune(SFTConfig(data=str(data), model="smollm2-135m-instruct", out=str(tmp_path / "s"), lora=True,
                             max_steps=10, batch_size=2, lr=1e-3, device="cpu", save=True))
    assert res.steps == 10 and res.loss_after < res.loss_before
    assert (tmp_path / "s" / "adapter" / "adapter_model.safetensors").is_file()


def test_missing_chat_template_names_the_flag(tok):
    from trustlab.runtime.errors import ModelError

    tok.chat_template = None
    with pytest.raises(ModelError) as err:
        encode_example(tok, [{"role": "user", "content": "q"}], "a", ThinkFormat())
    assert "--chat-template" in err.value.hint and err.value.exit_code == 2


def test_adapter_reloads_onto_the_base_it_was_trained_on(tmp_path):
    """Issue 17: sft.json records the base by the object's identity (path + weights digest), not a config default;
    the adapter reloads onto that base, and a different model put at that path is refused naming both digests."""
    import torch

    from trustlab.models import load_causal_lm
    from trustlab.models.causal_lm import tiny_llama
    from trustlab.models.identity import model_identity
    from trustlab.runtime.errors import ModelError

    base_dir = tmp_path / "base"
    built, tok = tiny_llama()
    built.save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    model, tok = load_causal_lm(str(base_dir))
    ident = model_identity(model)
    data = write_chat(tmp_path / "d.jsonl")
    cfg = SFTConfig(data=str(data), out=str(tmp_path / "out"), lora=True, max_steps=4, batch_size=4, lr=3e-3,
                    device="cpu")  # no model named: the object passed is the base
    res = finetune(cfg, model, tok)
    info = json.loads((tmp_path / "out" / "sft.json").read_text())
    assert info["base_model"] == str(base_dir) and info["base_identity"] == ident.to_dict() == res.base_model.to_dict()
    reloaded, rtok = load_finetuned(tmp_path / "out")
    assert model_identity(reloaded.get_base_model()).name_or_path == str(base_dir)
    enc, _ = encode_all(rtok, read_examples(data), cfg)
    with torch.no_grad():
        assert reloaded(**collate(enc, rtok.pad_token_id)).loss.item() == pytest.approx(res.loss_after, rel=1e-4)
    other, _ = tiny_llama(seed=1)  # swap the base at the recorded path
    other.save_pretrained(base_dir)
    swapped = model_identity(load_causal_lm(str(base_dir))[0]).weights_sha256
    with pytest.raises(ModelError) as err:
        load_finetuned(tmp_path / "out")
    assert err.value.exit_code == 2 and ident.weights_sha256 in err.value.message and swapped in err.value.message
    with pytest.raises(ModelError, match=ident.weights_sha256):  # an explicitly passed wrong base: refused too
        load_finetuned(tmp_path / "out", base_model=other)
