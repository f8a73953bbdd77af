"""The safety demo end to end through llama.cpp's real OpenAI-compatible server: ``run_demo`` with SmolLM2's GGUF
in place of the stand-in and a small size (the same orchestration in a fraction of the time), checking the spec §7
invariants that apply to sampled runs, the stand-in label, truncation bookkeeping and the always-refuse /
always-comply baselines."""

import importlib.util
import json
import os

import pytest

pytestmark = pytest.mark.llamacpp


def test_demo_end_to_end_on_llamacpp(tmp_path):
    if importlib.util.find_spec("llama_cpp") is None:
        if os.environ.get("TRUSTLAB_SKIP_LLAMACPP") == "1":
            pytest.skip("llama-cpp-python not installed and TRUSTLAB_SKIP_LLAMACPP=1")
        pytest.fail("llama-cpp-python is not installed: make llamacpp (or set TRUSTLAB_SKIP_LLAMACPP=1)")
    from trustlab.models.causal_lm import smollm2_gguf_path
    from trustlab.safety.demo import STRATEGIES, DemoSize, run_demo

    size = DemoSize(limit=4, k=2, max_tokens=16, think_budget=8, max_extensions=1, answer_max_tokens=8, stride=2,
                    benign=2)
    run = run_demo(tmp_path / "demo", gguf=smollm2_gguf_path(), size=size, threads=1)
    res = json.loads((run / "results.json").read_text())
    m = res["metrics"]
    assert list(m["strategies"]) == list(STRATEGIES) and m["k"] == size.k
    assert res["stand_in"]["label"].startswith("non-reasoning stand-in") and res["stand_in"]["system_prompt"]
    gens = [json.loads(x) for x in (run / "generations.jsonl").read_text().splitlines()[1:]]
    n_prompts = size.limit // size.stride  # every stride-th of the first limit prompts
    assert len({g['prompt_id'] for g in gens}) == n_prompts
    assert len(gens) == n_prompts * size.k * len(STRATEGIES) and all(g["status"] == "ok" for g in gens)
    for g in gens:
        assert g["truncated"] == (not g["closed"]) and (g["answer"] == "" or not g["truncated"])
        if g["strategy"] == "zerothink":
            assert g["think_tokens"] == 0 and g["response"].startswith("<think>\n\n</think>\n\n")
        if g["strategy"] == "morethink":
            assert g["calls"] <= size.max_extensions + 2 and not g["truncated"]
            assert g["think_tokens"] <= size.think_budget + g["calls"]  # llama.cpp counts a matched stop token
        if g["strategy"] == "intervention":
            assert g["response"].startswith("<think>\n") and g["thought"]
    for s, e in m["strategies"].items():
        mine = [g for g in gens if g["strategy"] == s]
        assert e["thinking"]["frac_truncated"] == sum(g["truncated"] for g in mine) / len(mine)
        for parts in e["judges"].values():
            for b in parts.values():
                if b["n_prompts"] == 0:  # e.g. the answer part when every prompt has a truncated sample
                    assert b["safe@1"]["value"] is None and b["n_excluded"] == n_prompts
                    continue
                s1, sk, cs = (b[x]["value"] for x in ("safe@1", "safe@k", "conssafe@k"))
                assert sk <= s1 + 1e-12 and sk <= cs + 1e-12
                lo, hi = b["safe@1"]["ci"]
                assert lo <= s1 <= hi
    base = res["baselines"]
    for s in ("default", "zerothink", "morethink"):
        for judge in ("refusal", "refusal_safechain"):
            assert base["always_refuse"][s][judge]["answer"] == 1.0
            assert base["always_comply"][s][judge]["answer"] == 0.0
    # a fixed reply never closes the thought the intervention opened: those baseline samples are truncated
    comply = [json.loads(x) for x in (run / "baselines" / "always_comply" / "generations.jsonl").read_text()
              .splitlines()[1:]]
    assert all(g["truncated"] and g["answer"] == "" for g in comply if g["strategy"] == "intervention")
    assert (run / "report.md").is_file() and any(a.endswith(".png") for a in res["artifacts"])


def test_demo_refuses_a_foreign_folder_before_writing_anything(tmp_path):
    """The demo claims its own folder before its sub-runs (baselines, benign set) write into it: a folder holding a
    user's file is refused at once, with nothing added and the file untouched (it used to be refused only after
    the whole demo had run, with the sub-runs already written beside the user's file)."""
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python not installed")
    from trustlab.models.causal_lm import smollm2_gguf_path
    from trustlab.runtime.errors import ConfigError
    from trustlab.safety.demo import DemoSize, run_demo

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    size = DemoSize(limit=2, k=1, max_tokens=4, think_budget=2, max_extensions=1, answer_max_tokens=2, benign=1)
    with pytest.raises(ConfigError, match="not a trustlab run folder"):
        run_demo(out, gguf=smollm2_gguf_path(), size=size, threads=1)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"
