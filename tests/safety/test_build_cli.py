"""`trustlab safety build` / `sft` through the CLI: a scripted build end to end, and the bad inputs of spec §8 on the
builder/trainer side, each a one-line error with a hint and the documented exit code."""

from __future__ import annotations

import json

import pytest
import yaml

RULES = {"rules": [{"match": "weather", "reply": "<think>\nfine\n</think>\n\nI cannot help with that."},
                   {"match": "fairy", "reply": "<think>\nok\n</think>\n\nI'm sorry, no."}],
         "default": "<think>\nsure\n</think>\n\nSure, here you go."}


@pytest.fixture
def script(tmp_path):
    p = tmp_path / "rules.yaml"
    p.write_text(yaml.safe_dump(RULES))
    return str(p)


def _one_error(err: str, *needles: str) -> None:
    lines = [x for x in err.strip().splitlines() if x.startswith(("error:", "hint:"))]
    assert len(lines) == 2 and lines[0].startswith("error:") and lines[1].startswith("hint:"), err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err


def test_build_cli_end_to_end(cli, tmp_path, script):
    out = tmp_path / "b"
    code, stdout, err = cli("safety", "build", "--dataset", "fixture", "--backend", "scripted", "--script", script,
                            "-k", "2", "--judge", "refusal", "--out", str(out))
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    assert res["verb"] == "build" and res["metrics"]["n_pool"] == 12 and res["config"]["sampling"]["k"] == 2
    rows = [json.loads(x) for x in (out / "safechain.jsonl").read_text().splitlines()]
    assert {r["messages"][0]["content"] for r in rows} == {
        r["prompt"] for r in map(json.loads, (out / "prompts.jsonl").read_text().splitlines())
        if "weather" in r["prompt"] or "fairy" in r["prompt"]}
    assert res["metrics"]["n_kept"] == len(rows) and "keep rate" in stdout
    assert res["config"]["sampling"]["temperature"] == 0.6  # the nondet preset is the builder's default


def test_build_keeping_nothing_writes_stats_and_fails(cli, tmp_path, tmp_path_factory):
    p = tmp_path / "comply.yaml"
    p.write_text(yaml.safe_dump({"default": "Sure, here you go."}))
    out = tmp_path / "z"
    code, _, err = cli("safety", "build", "--dataset", "fixture", "--backend", "scripted", "--script", str(p),
                       "-k", "2", "--n", "3", "--out", str(out))
    assert code == 2
    _one_error(err, "kept 0 of 3 prompts", "safe rate 0.000")
    assert json.loads((out / "build_stats.json").read_text())["n_kept"] == 0


@pytest.mark.parametrize("args, needle", [
    (("--n", "0"), "build.n"),
    (("-k", "0"), "sampling.k"),
    (("--temperature", "-1"), "sampling.temperature"),
    (("--part", "everything"), "build.part"),
    (("--format", "xml"), "build.format"),
    (("--judge", "gpt_judge"), "unknown judge"),
    (("--strategy", "default", "--strategy", "zerothink"), "one strategy"),
])
def test_build_bad_values_name_the_field(cli, tmp_path, script, args, needle):
    code, _, err = cli("safety", "build", "--dataset", "fixture", "--backend", "scripted", "--script", script,
                       "--out", str(tmp_path / "x"), *args)
    assert code == 2
    _one_error(err, needle)


def test_build_moderation_without_key_stops_before_generation(cli, tmp_path, script, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    code, _, err = cli("safety", "build", "--dataset", "fixture", "--backend", "scripted", "--script", script,
                       "--judge", "moderation", "--out", str(tmp_path / "m"))
    assert code == 2
    _one_error(err, "API key", "export OPENAI_API_KEY")
    assert not (tmp_path / "m" / "samples" / "generations.jsonl").exists()


def test_sft_bad_inputs(cli, tmp_path):
    code, _, err = cli("safety", "sft", "--model", "tiny-llama", "--out", str(tmp_path / "a"))
    assert code == 2
    _one_error(err, "needs a dataset", "--data")
    bad = tmp_path / "d.jsonl"
    bad.write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n{oops\n")
    code, _, err = cli("safety", "sft", "--data", str(bad), "--model", "tiny-llama", "--out", str(tmp_path / "b"))
    assert code == 2
    _one_error(err, "d.jsonl:2")
    code, _, err = cli("safety", "sft", "--data", str(tmp_path / "missing.jsonl"), "--model", "tiny-llama",
                       "--out", str(tmp_path / "c"))
    assert code == 2
    _one_error(err, "missing.jsonl", "does not exist")
    for args, needle in ((("--lr", "-1"), "sft.lr"), (("--epochs", "0"), "sft.epochs"),
                         (("--schedule", "step"), "sft.schedule"), (("--think-format", "r2"), "think format")):
        code, _, err = cli("safety", "sft", "--data", str(bad), "--model", "tiny-llama", "--out",
                           str(tmp_path / "d"), *args)
        assert code == 2, (args, err)
        _one_error(err, needle)


def test_build_default_relative_run_folder(cli, tmp_path, script, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, err = cli("safety", "build", "--dataset", "fixture", "--backend", "scripted", "--script", script,
                            "-k", "1")
    assert code == 0, err
    (run,) = (tmp_path / "runs" / "safety").iterdir()
    res = json.loads((run / "results.json").read_text())
    assert set(res["artifacts"]) == {"build_stats.json", "safechain.jsonl"}
