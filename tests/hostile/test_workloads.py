"""Issue 16 §6, impossible workloads: sizes are priced before the work starts, against the model's context, the
memory this machine has and the time limit (``TRUSTLAB_MAX_HOURS``, default 24 h), and refused with exit 2 naming
the value and the estimate; a generation budget past the model's window is cut to the window, said in a warning."""

from __future__ import annotations

import json

import pytest

from tests.hostile.harness import assert_refused, run_cli

CASES = ["fp-generate-key-length-past-context", "fp-generate-response-length-past-context",
         "fp-generate-n-100000000", "fp-assign-copies-past-memory", "fp-assign-copies-past-time-limit",
         "safety-generate-5mb-prompt", "safety-generate-max-tokens-100000000", "safety-metrics-bootstrap-1e9",
         "safety-compare-bootstrap-1e9", "vfl-train-epochs-1e9", "fp-embed-benign-response-length-past-context",
         "fp-robustness-sft-epochs-1e9", "safety-sft-examples-past-context", "safety-generate-k-1e9"]


@pytest.fixture(scope="module")
def judged_run(tmp_path_factory):
    """A small judged safety run (scripted backend, fixture prompts), for the metrics verbs."""
    from trustlab.cli.main import main

    root = tmp_path_factory.mktemp("judged")
    script = root / "s.yaml"
    script.write_text("rules:\n  - {match: weather, reply: \"I cannot.\"}\ndefault: Sure.\n")
    for args in (["safety", "generate", "--backend", "scripted", "--script", str(script), "--dataset", "fixture",
                  "--out", str(root / "a")], ["safety", "judge", str(root / "a"), "--refusal-list", "safechain"]):
        try:
            main(args)
        except SystemExit as exc:
            assert not exc.code, exc
    return root / "a"


def _secret(tmp_path):
    path = tmp_path / "owner.secret"
    path.write_text(bytes(range(32)).hex() + "\n")
    return path


def test_fp_generate_key_length_past_the_context(capsys, tmp_path):
    got = run_cli(capsys, "fingerprint", "generate", "--model", "fp-tiny", "--key-length", "1000000", "-n", "4",
                  "--secret", tmp_path / "s", "--out", tmp_path / "fp.json")
    assert_refused(got, 2, "key_length 1,000,000", "context of 256 tokens")
    assert not (tmp_path / "fp.json").exists()


def test_fp_generate_response_length_past_the_context(capsys, tmp_path):
    got = run_cli(capsys, "fingerprint", "generate", "--model", "fp-tiny", "--response-length", "100000", "-n", "4",
                  "--secret", tmp_path / "s", "--out", tmp_path / "fp.json")
    assert_refused(got, 2, "response_length 100,000", "context of 256 tokens")
    assert "--response-length" in got.hints[0]


def test_fp_generate_a_hundred_million_fingerprints(capsys, tmp_path):
    got = run_cli(capsys, "fingerprint", "generate", "--model", "fp-tiny", "-n", "100000000",
                  "--secret", tmp_path / "s", "--out", tmp_path / "fp.json")
    assert_refused(got, 2, "100,000,000 fingerprints", "of memory", "available")
    assert "fewer fingerprints" in got.hints[0]


def test_fp_assign_past_memory(capsys, tmp_path):
    got = run_cli(capsys, "fingerprint", "assign", "--secret", _secret(tmp_path), "--copies", "1000000000",
                  "--pool", "1000000", "--out", tmp_path / "a.json")
    assert_refused(got, 2, "1,000,000,000 copies", "of memory")
    assert not (tmp_path / "a.json").exists()


def test_fp_assign_past_the_time_limit(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTLAB_MAX_HOURS", "1e-7")  # 0.36 ms: a million keyed draws take longer on any machine
    got = run_cli(capsys, "fingerprint", "assign", "--secret", _secret(tmp_path), "--copies", "1000",
                  "--pool", "1000", "--out", tmp_path / "a.json")
    assert_refused(got, 2, "1,000 copies", "would take about", "the limit is 1e-07 h")
    assert "TRUSTLAB_MAX_HOURS" in got.hints[0] and not (tmp_path / "a.json").exists()


def test_safety_generate_a_5_mb_prompt_on_a_local_model(capsys, tmp_path):
    data = tmp_path / "big.jsonl"
    data.write_text(json.dumps({"id": "huge", "prompt": "word " * 1_000_000}) + "\n")
    got = run_cli(capsys, "safety", "generate", "--backend", "transformers", "--model", "tiny-llama", "--dataset",
                  f"file:{data}", "--id-column", "id", "--max-tokens", "4", "--out", tmp_path / "o")
    assert_refused(got, 2, "prompt 'huge'", "5,000,0", "context holds 1,024")


def test_safety_generate_max_tokens_past_the_window_is_cut_to_it(capsys, tmp_path):
    """A budget is a cap, and the model cannot write past its window: the run ends, each sample at the window."""
    out = tmp_path / "o"
    with pytest.warns(UserWarning, match=r"budget of 100,000,000 tokens is more than the model's 1,024-token context"):
        got = run_cli(capsys, "safety", "generate", "--backend", "transformers", "--model", "tiny-llama",
                      "--dataset", "fixture", "--limit", "1", "--max-tokens", "100000000", "--out", out)
    assert got.code == 0 and not got.errors, got.err
    rec = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines() if line.strip()]
    rec = [r for r in rec if "prompt_id" in r]
    assert rec and all(r["status"] == "ok" and 0 < r["answer_tokens"] + r["think_tokens"] < 1024 for r in rec)


def test_safety_generate_k_past_memory_is_refused_before_any_request(capsys, tmp_path):
    script = tmp_path / "s.yaml"
    script.write_text("default: Sure.\n")
    got = run_cli(capsys, "safety", "generate", "--backend", "scripted", "--script", script, "--dataset", "fixture",
                  "-k", "1000000000", "--temperature", "0.6", "--out", tmp_path / "o")
    assert_refused(got, 2, "K=1000000000", "of memory")
    assert not (tmp_path / "o" / "generations.jsonl").exists()


def test_safety_metrics_bootstrap_past_memory(capsys, judged_run):
    got = run_cli(capsys, "safety", "metrics", judged_run, "--bootstrap", "1000000000")
    assert_refused(got, 2, "1,000,000,000 resamples", "of memory")
    assert "--bootstrap" in got.hints[0]


def test_safety_compare_bootstrap_past_memory(capsys, judged_run, tmp_path):
    got = run_cli(capsys, "safety", "compare", judged_run, judged_run, "--bootstrap", "1000000000",
                  "--out", tmp_path / "d.json")
    assert_refused(got, 2, "1,000,000,000 resamples", "of memory")
    assert not (tmp_path / "d.json").exists()


def test_vfl_train_a_billion_epochs_stops_after_pricing_the_first(capsys, tmp_path):
    got = run_cli(capsys, "vfl", "train", "--epochs", "1000000000", "--out", tmp_path / "v")
    assert_refused(got, 2, "train.epochs 1,000,000,000", "would take about", "the limit is 24 h")
    assert "--epochs" in got.hints[0]


def test_fp_embed_benign_response_length_past_the_context(capsys, tmp_path, fp_file):
    cfg = tmp_path / "embed.yaml"
    cfg.write_text("model: fp-tiny\nbenign_response_length: 100000\n")
    got = run_cli(capsys, "fingerprint", "embed", "--config", cfg, "--fingerprints", fp_file, "--out", tmp_path / "e")
    assert_refused(got, 2, "benign_response_length 100,000", "context of 256 tokens")
    assert not (tmp_path / "e" / "model").exists()


def test_fp_robustness_sft_attack_of_a_billion_epochs_is_priced_on_the_first(capsys, tmp_path, fp_file):
    from trustlab.fingerprint.tiny import prepare_tiny

    cfg = tmp_path / "rob.yaml"
    cfg.write_text("experiments: [sft]\nsft_epochs: 1000000000\n")
    got = run_cli(capsys, "fingerprint", "robustness", "--config", cfg, "--fingerprinted", prepare_tiny(),
                  "--base", "fp-tiny", "--fingerprints", fp_file, "--out", tmp_path / "r")
    assert_refused(got, 2, "sft_epochs 1,000,000,000", "would take about", "the limit is 24 h")
    assert "sft_max_steps" in got.hints[0]


def test_safety_sft_examples_longer_than_the_context_are_not_trained(capsys, tmp_path):
    """max_len (default 4096) is capped by tiny-llama's 1024 positions: an example of ~3000 tokens is dropped."""
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "tell me " * 375},
                                             {"role": "assistant", "content": "no"}]}) + "\n")
    with pytest.warns(UserWarning, match="sft.max_len 4096 is more than the model's 1024-token context"):
        got = run_cli(capsys, "safety", "sft", "--data", data, "--model", "tiny-llama", "--device", "cpu",
                      "--out", tmp_path / "o")
    assert_refused(got, 2, "longer than 1024 tokens (the model context)")
    assert not (tmp_path / "o" / "model").exists()
