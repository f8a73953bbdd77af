"""Builder: keeps exactly the prompts judged safe in all K samples (keep rate == Safe@K), picks deterministically,
restores the think tags, counts what it drops."""

from __future__ import annotations

import json

import pytest

from trustlab.safety.backends.scripted import ScriptedBackend
from trustlab.safety.build import BuildConfig, build_safechain, restore, select_examples
from trustlab.safety.config import BackendConfig, JudgeSpec, Sampling, ThinkFormat, think_format
from trustlab.safety.summary import summarize

SCRIPT = {"rules": [
    {"match": "alpha", "reply": ["<think>\nthink one\n</think>\n\nI cannot do that.",
                                 "<think>\nthink two\n</think>\n\nI won't help.",
                                 "<think>\nthink three\n</think>\n\nI'm sorry, no."]},
    {"match": "beta", "reply": "<think>\nok\n</think>\n\nSure, here it is."},
    {"match": "gamma", "reply": "<think>\nI cannot stop thinking and"},
    {"match": "delta", "reply": ["<think>\nx\n</think>\n\nI cannot.", "<think>\ny\n</think>\n\nSure."]},
    {"match": "omega", "reply": "x", "status": 500}]}
PROMPTS = ["alpha one", "beta two", "gamma three", "delta four", "omega five", "alpha six", "delta seven"]


def _cfg(tmp_path, **kw):
    f = tmp_path / "pool.jsonl"
    f.write_text("".join(json.dumps({"prompt": p, "category": "Test"}) + "\n" for p in PROMPTS))
    base = dict(backend=BackendConfig(kind="scripted", model="fake"), dataset=f"file:{f}",
                sampling=Sampling(temperature=0.6, top_p=0.95, k=5, max_tokens=64), judge=JudgeSpec("refusal"))
    return BuildConfig(**{**base, **kw})


def _run(tmp_path, name, **kw):
    cfg = _cfg(tmp_path, **kw)
    stats = build_safechain(cfg, tmp_path / name, backend=ScriptedBackend(SCRIPT))
    rows = [json.loads(x) for x in (tmp_path / name / "safechain.jsonl").read_text().splitlines()]
    return cfg, stats, rows


def test_keeps_exactly_all_safe_prompts_keep_rate_is_safe_at_k(tmp_path):
    cfg, stats, rows = _run(tmp_path, "a")
    gens = [json.loads(x) for x in (tmp_path / "a" / "samples" / "generations.jsonl").read_text().splitlines()[1:]]
    labels = [json.loads(x) for x in (tmp_path / "a" / "samples" / "labels.jsonl").read_text().splitlines()[1:]]
    safe = {}
    for lab in labels:
        safe.setdefault(lab["prompt_id"], []).append(lab["unsafe"] is False)
    all_safe = {pid for pid, v in safe.items() if len(v) == 5 and all(v)}
    closed = {g["prompt_id"] for g in gens if g["closed"]}
    kept = {r["prompt_id"] for r in rows}
    assert kept == all_safe & closed and kept  # both alpha prompts at least
    prompts = {r["messages"][0]["content"] for r in rows}
    assert {"alpha one", "alpha six"} <= prompts and not prompts & {"beta two", "gamma three", "omega five"}
    summary = summarize(gens, labels, k=5, n_boot=0)
    assert stats.keep_rate == summary["strategies"]["default"]["judges"]["refusal"]["response"]["safe@k"]["value"]
    assert (stats.n_pool, stats.n_sampled, stats.k) == (7, 7, 5)
    assert stats.n_dropped_incomplete == 1 and stats.n_dropped_unclosed == 1  # omega (errors), gamma (unclosed)
    assert stats.n_kept + stats.n_dropped_unsafe + stats.n_dropped_incomplete + stats.n_dropped_unclosed == 7
    disk = json.loads((tmp_path / "a" / "build_stats.json").read_text())
    assert disk["keep_rate"] == stats.keep_rate and disk["n_kept"] == len(rows)
    for r in rows:  # tags restored, exactly once
        text = r["messages"][1]["content"]
        assert text.startswith("<think>\n") and text.count("<think>") == 1 and "</think>\n\n" in text


def test_pick_is_deterministic_and_unclosed_allowed_without_require_closed(tmp_path):
    _, s1, r1 = _run(tmp_path, "a")
    _, s2, r2 = _run(tmp_path, "b")
    assert r1 == r2 and s1.n_kept == s2.n_kept
    _, s3, r3 = _run(tmp_path, "c", require_closed=False)
    assert s3.n_dropped_unclosed == 0 and any(r["messages"][0]["content"] == "gamma three" for r in r3)
    _, s4, r4 = _run(tmp_path, "d", n=3, seed=5)
    assert s4.n_sampled == 3 and s4.n_pool == 7


def test_alpaca_drops_opening_and_restore_rules():
    fmt = ThinkFormat()
    assert restore("t", "a", fmt) == "<think>\nt</think>\n\na"
    assert restore("t", "a", fmt, "alpaca") == "t</think>\n\na"
    sky = think_format("skyt1")
    assert restore("t", "a", sky) == "<|begin_of_thought|>\nt<|end_of_thought|>\n\n<|begin_of_solution|>a" \
                                     "<|end_of_solution|>"
    assert restore("", "a", think_format("none")) == "a"
    gens = [{"key": f"p#{j}", "prompt_id": "p", "sample": j, "prompt": "q", "thought": "t", "answer": "a",
             "closed": True, "status": "ok"} for j in range(2)]
    labels = [{"key": f"p#{j}", "judge": "refusal", "part": "response", "status": "ok", "unsafe": False}
              for j in range(2)]
    ex, n = select_examples(gens, labels, 2, "refusal", "response", 0, fmt, style="alpaca")
    assert ex[0]["instruction"] == "q" and ex[0]["output"] == "t</think>\n\na" and n["all_safe"] == 1
    labels[1] = dict(labels[1], status="unparsed", unsafe=None)  # an unparsed label is never safe
    ex, n = select_examples(gens, labels, 2, "refusal", "response", 0, fmt)
    assert ex == [] and n["incomplete"] == 1


def test_zero_kept_still_writes_stats(tmp_path):
    f = tmp_path / "pool.jsonl"
    f.write_text(json.dumps({"prompt": "beta only"}) + "\n")
    cfg = BuildConfig(backend=BackendConfig(kind="scripted", model="fake"), dataset=f"file:{f}",
                      sampling=Sampling(k=2, max_tokens=16))
    stats = build_safechain(cfg, tmp_path / "z", backend=ScriptedBackend(SCRIPT))
    assert stats.n_kept == 0 and stats.keep_rate == 0 and stats.safe_rate == 0
    assert json.loads((tmp_path / "z" / "build_stats.json").read_text())["n_kept"] == 0


def test_bad_build_config_names_field():
    from trustlab.runtime.errors import ConfigError

    with pytest.raises(ConfigError, match="build.n"):
        BuildConfig(n=0)
    with pytest.raises(ConfigError, match="build.part"):
        BuildConfig(part="thoughts")
    with pytest.raises(ConfigError, match="sampling.k"):
        BuildConfig(sampling=Sampling(k=0))


def test_built_dataset_trains(tmp_path):
    """The builder's output is the trainer's input: chat JSONL with the restored tags, every kept row encoded."""
    from trustlab.safety.sft import SFTConfig, finetune

    _, stats, rows = _run(tmp_path, "a")
    res = finetune(SFTConfig(data=stats.output, model="tiny-llama", out=str(tmp_path / "sft"), lora=True,
                             max_steps=2, device="cpu", save=False))
    assert res.n_examples == stats.n_kept == len(rows) and res.steps == 2
