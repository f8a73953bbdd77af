"""Issue 16 §5, infinite floats: ``inf`` is refused where it enters (flags, YAML), and a training run whose loss or
weights turn non-finite stops with exit 2 naming the step and the learning rate, shipping no model."""

from __future__ import annotations

import json

from tests.hostile.harness import assert_refused, run_cli

CASES = ["embed-lr-inf", "embed-lr-diverges", "generate-key-temperature-inf", "safety-generate-temperature-inf",
         "robustness-sft-lr-yaml-inf", "safety-generate-timeout-inf", "safety-sft-nan-model", "certify-train-lr-inf",
         "vfl-train-lr-yaml-inf"]

CHAT = [("How do I pick a lock?", "I can't help with that."), ("Say hi", "Hi!")]


def _chat_file(path):
    with open(path, "w") as fh:
        for q, a in CHAT:
            fh.write(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
                     + "\n")
    return path


def test_embed_lr_inf_is_refused_before_training(capsys, tmp_path, fp_file):
    out = tmp_path / "emb"
    got = run_cli(capsys, "fingerprint", "embed", "--model", "fp-tiny", "--fingerprints", fp_file, "--lr", "inf",
                  "--out", out)
    assert_refused(got, 2, "lr", "inf")
    assert not (out / "model").exists()


def test_embed_that_diverges_stops_with_exit_2_and_ships_no_model(capsys, tmp_path, fp_file):
    out = tmp_path / "emb"
    got = run_cli(capsys, "fingerprint", "embed", "--model", "fp-tiny", "--fingerprints", fp_file, "--lr", "1e30",
                  "--max-epochs", "3", "--save-every", "1", "--out", out)
    assert_refused(got, 2, "diverged at epoch", "lr 1e+30", "nan")
    assert "lower lr" in got.hints[0]
    assert not (out / "model").exists() and not (out / "embed_result.json").exists()


def test_generate_key_temperature_inf_is_refused_and_writes_no_file(capsys, tmp_path):
    got = run_cli(capsys, "fingerprint", "generate", "--model", "fp-tiny", "-n", "4", "--key-temperature", "inf",
                  "--secret", tmp_path / "s", "--out", tmp_path / "fp.json")
    assert_refused(got, 2, "key_temperature", "inf")
    assert not (tmp_path / "fp.json").exists()


def test_safety_generate_temperature_inf_is_refused(capsys, tmp_path):
    script = tmp_path / "s.yaml"
    script.write_text("rules: []\ndefault: Sure.\n")
    got = run_cli(capsys, "safety", "generate", "--backend", "scripted", "--script", script, "--dataset", "fixture",
                  "--temperature", "inf", "--out", tmp_path / "o")
    assert_refused(got, 2, "temperature", "inf")
    assert not (tmp_path / "o" / "generations.jsonl").exists()


def test_robustness_yaml_inf_is_refused(capsys, tmp_path, fp_file):
    cfg = tmp_path / "rob.yaml"
    cfg.write_text("experiments: [sft]\nsft_lr: .inf\n")  # YAML's spelling of infinity
    got = run_cli(capsys, "fingerprint", "robustness", "--config", cfg, "--fingerprinted", tmp_path,
                  "--base", "fp-tiny", "--fingerprints", fp_file, "--out", tmp_path / "r")
    assert_refused(got, 2, "sft_lr", "inf")


def test_safety_generate_timeout_inf_is_refused(capsys, tmp_path):
    """An infinite per-request timeout would let a silent server hold the run forever."""
    script = tmp_path / "s.yaml"
    script.write_text("rules: []\ndefault: Sure.\n")
    got = run_cli(capsys, "safety", "generate", "--backend", "scripted", "--script", script, "--dataset", "fixture",
                  "--timeout", "inf", "--out", tmp_path / "o")
    assert_refused(got, 2, "timeout", "inf")


def test_safety_sft_of_a_nan_model_stops_with_exit_2_and_ships_no_model(capsys, tmp_path):
    """A model folder whose weights hold NaN: the first step's loss is NaN; nothing is saved as a tuned model."""
    import torch

    from trustlab.models.causal_lm import tiny_llama

    model, tok = tiny_llama()
    with torch.no_grad():
        model.model.norm.weight.fill_(float("nan"))
    model.save_pretrained(tmp_path / "nanmodel")
    tok.save_pretrained(tmp_path / "nanmodel")
    out = tmp_path / "o"
    got = run_cli(capsys, "safety", "sft", "--data", _chat_file(tmp_path / "d.jsonl"), "--model", tmp_path / "nanmodel",
                  "--full", "--max-steps", "2", "--device", "cpu", "--out", out)
    assert_refused(got, 2, "diverged", "step 1", "sft.lr")
    assert not (out / "model").exists() and not (out / "sft.json").exists()


def test_certify_train_lr_inf_is_refused(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\ntracks:\n  - name: rs\n    train: {procedure: gaussian, lr: .inf}\n")
    got = run_cli(capsys, "certify", "run", cfg, "--out", tmp_path / "o")
    assert_refused(got, 2, "lr", "inf")


def test_vfl_train_lr_inf_is_refused(capsys, tmp_path):
    cfg = tmp_path / "v.yaml"
    cfg.write_text("train:\n  lr: .inf\n")
    got = run_cli(capsys, "vfl", "train", "--config", cfg, "--out", tmp_path / "o")
    assert_refused(got, 2, "lr", "inf")
