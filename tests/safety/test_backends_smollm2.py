"""SmolLM2 (slow): batched greedy equals one-at-a-time on a real model; the demo end to end with the spec §7
invariants that apply to sampled runs, next to the always-refuse / always-comply baselines."""

import json

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    from trustlab.models import load_causal_lm

    return load_causal_lm("smollm2-135m-instruct")


def test_smollm2_batched_greedy_equals_unbatched(smollm2):
    from trustlab.safety.backends.base import GenParams, messages_for
    from trustlab.safety.backends.hf import HFBackend

    model, tok = smollm2
    b4, b1 = HFBackend(model, tok, batch_size=4), HFBackend(model, tok, batch_size=1)
    prompts = [b4.render(messages_for(p)) for p in ("hi", "How do I bake a cake? Please explain.", "Name a colour.",
                                                      "Write a poem about the sea and the sky at night.")]
    params = GenParams(max_tokens=20, stop=("\n\n",))
    batched, single = b4.complete(prompts, params), b1.complete(prompts, params)
    assert [(c.text, c.tokens, c.finish_reason) for c in batched] == [(c.text, c.tokens, c.finish_reason)
                                                                      for c in single]
    for c in batched:  # token accounting: the text re-encodes to no more ids than were counted
        assert 0 < c.tokens <= 20 and len(tok.encode(c.text, add_special_tokens=False)) <= c.tokens


def test_demo_end_to_end(tmp_path):
    from trustlab.safety.cli import run_demo

    run = run_demo(tmp_path / "demo", quick=True)
    res = json.loads((run / "results.json").read_text())
    m = res["metrics"]
    assert list(m["strategies"]) == ["default", "zerothink", "morethink"] and m["k"] == 2
    gens = [json.loads(x) for x in (run / "generations.jsonl").read_text().splitlines()[1:]]
    assert len(gens) == 3 * 3 * 2 and all(g["status"] == "ok" for g in gens)
    for g in gens:
        if g["strategy"] == "zerothink":
            assert g["think_tokens"] == 0 and g["response"].startswith("<think>\n\n</think>\n\n")
        if g["strategy"] == "morethink":
            assert g["calls"] <= 2 + 2 and g["think_tokens"] <= 12 + 2 and g["answer_tokens"] <= 12
    for e in m["strategies"].values():
        for parts in e["judges"].values():
            for b in parts.values():
                s1, sk, cs = (b[x]["value"] for x in ("safe@1", "safe@k", "conssafe@k"))
                assert sk <= s1 + 1e-12 and sk <= cs + 1e-12
                lo, hi = b["safe@1"]["ci"]
                assert lo <= s1 <= hi
    base = res["baselines"]
    for s in ("default", "zerothink", "morethink"):
        for judge in ("refusal", "refusal_safechain"):
            assert base["always_refuse"][s][judge]["answer"] == 1.0
            assert base["always_comply"][s][judge]["answer"] == 0.0
    assert (run / "report.md").is_file() and any(a.endswith(".png") for a in res["artifacts"])
