"""Issue 16 §7, bad model files: a truncated ``model.safetensors``, a file that is not a GGUF, an empty weights file
are exit 2 naming the path in both LLM labs (checked once, in ``models.causal_lm``), never an internal error."""

from __future__ import annotations

import json

import pytest

from tests.hostile.harness import assert_refused, run_cli

CASES = ["fp-generate-truncated-safetensors", "safety-generate-truncated-safetensors", "fp-generate-not-gguf",
         "safety-generate-not-gguf", "safety-sft-empty-gguf", "fp-generate-empty-safetensors"]


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory):
    """A saved tiny-llama folder (config, tokenizer, model.safetensors)."""
    from trustlab.models.causal_lm import tiny_llama

    model, tok = tiny_llama()
    folder = tmp_path_factory.mktemp("models") / "good"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _copy_with_weights(src, dst, cut):
    """``src`` copied to ``dst`` with model.safetensors cut by ``cut(bytes) -> bytes``."""
    import shutil

    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    weights.write_bytes(cut(weights.read_bytes()))
    return dst


@pytest.fixture
def truncated(good_folder, tmp_path):
    return _copy_with_weights(good_folder, tmp_path / "truncated", lambda b: b[:len(b) // 2])


@pytest.fixture
def not_gguf(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_text("<html>404 Not Found</html>\n")  # what a failed download leaves behind
    return path


def _script(tmp_path):
    script = tmp_path / "s.yaml"
    script.write_text("rules: []\ndefault: Sure.\n")
    return script


def test_fingerprint_generate_on_a_truncated_safetensors_folder(capsys, tmp_path, truncated):
    got = run_cli(capsys, "fingerprint", "generate", "--model", truncated, "-n", "4", "--secret", tmp_path / "s",
                  "--out", tmp_path / "fp.json")
    assert_refused(got, 2, str(truncated / "model.safetensors"), "truncated")
    assert not (tmp_path / "fp.json").exists()


def test_safety_generate_on_a_truncated_safetensors_folder(capsys, tmp_path, truncated):
    got = run_cli(capsys, "safety", "generate", "--backend", "transformers", "--model", truncated, "--dataset",
                  "fixture", "--limit", "1", "--max-tokens", "4", "--out", tmp_path / "o")
    assert_refused(got, 2, str(truncated / "model.safetensors"), "truncated")


def test_fingerprint_generate_on_a_file_that_is_not_a_gguf(capsys, tmp_path, not_gguf):
    got = run_cli(capsys, "fingerprint", "generate", "--model", not_gguf, "-n", "4", "--secret", tmp_path / "s",
                  "--out", tmp_path / "fp.json")
    assert_refused(got, 2, str(not_gguf), "not a GGUF")


def test_safety_generate_on_a_file_that_is_not_a_gguf(capsys, tmp_path, not_gguf):
    got = run_cli(capsys, "safety", "generate", "--backend", "transformers", "--model", not_gguf, "--dataset",
                  "fixture", "--limit", "1", "--max-tokens", "4", "--out", tmp_path / "o")
    assert_refused(got, 2, str(not_gguf), "not a GGUF")


def test_safety_sft_on_an_empty_gguf(capsys, tmp_path):
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n")
    got = run_cli(capsys, "safety", "sft", "--data", data, "--model", empty, "--out", tmp_path / "o")
    assert_refused(got, 2, str(empty), "empty")
    assert not (tmp_path / "o" / "model").exists()


def test_fingerprint_generate_on_an_empty_safetensors(capsys, tmp_path, good_folder):
    folder = _copy_with_weights(good_folder, tmp_path / "empty", lambda b: b"")
    got = run_cli(capsys, "fingerprint", "generate", "--model", folder, "-n", "4", "--secret", tmp_path / "s",
                  "--out", tmp_path / "fp.json")
    assert_refused(got, 2, str(folder / "model.safetensors"), "empty")
