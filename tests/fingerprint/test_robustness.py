"""Robustness experiments on the fingerprinted fp-tiny: every experiment, resume, the transforms' contracts."""

from __future__ import annotations

import json

import pytest
import torch

from trustlab.fingerprint.config import RobustnessConfig
from trustlab.fingerprint.attacks import SuppressTopK, merge_linear, quantize_int8, suppress
from trustlab.fingerprint.heldout import heldout_texts, trivia_items
from trustlab.fingerprint.robustness import run_robustness
from trustlab.fingerprint.utility import perplexity, trivia_mc
from trustlab.runtime.errors import ModelError


@pytest.fixture(scope="module")
def models(tiny_embedded, fp_tiny_path):
    from trustlab.models import load_causal_lm

    fmodel, tok = load_causal_lm(str(tiny_embedded["model_dir"]))
    base, _ = load_causal_lm(str(fp_tiny_path))
    return tiny_embedded["fps"], fmodel, tok, base


@pytest.fixture(scope="module")
def robust(models, tmp_path_factory):
    fps, fmodel, tok, base = models
    cfg = RobustnessConfig(fingerprinted="fp", base="fp-tiny", sft_max_steps=6, sft_lr=1e-3, temperatures=(0.0, 1.0),
                           samples=3, ppl_docs=20, mc_subset=40, merge_alphas=(0.9, 0.7, 0.5, 0.2))
    out = tmp_path_factory.mktemp("robust")
    res = run_robustness(cfg, out, models=(fmodel, tok, base), fps=fps)
    return cfg, out, res


def test_every_experiment_is_recorded(robust):
    cfg, out, res = robust
    r = json.loads((out / "robustness.json").read_text())
    assert set(cfg.experiments) <= set(r) and r == json.loads(json.dumps(res.results))
    assert r["clean"]["decision"] == "OWNED" and r["clean"]["exact"] >= 0.9
    # false positives: the base and an unrelated model are never judged owned
    assert r["fpr"]["base"]["decision"] == "not owned" and r["fpr"]["base"]["m"] == 0
    assert r["fpr"]["foreign"]["decision"] == "not owned"
    # utility is reported as ratios with their sources
    assert r["utility"]["ppl_ratio"] > 0 and 0 <= r["utility"]["mc_fp"] <= 1 and r["utility"]["mc_items"] == 40
    assert "trivia.yml" in r["sources"]["trivia_mc"] and r["sources"]["perplexity"]
    assert [e["epoch"] for e in r["sft"]["epochs"]] == [1] and r["sft"]["steps"] == 6
    e = r["sft"]["epochs"][0]
    assert e["ppl_ratio_base"] == pytest.approx(e["ppl"] / r["ppl"]["base"]) and e["ppl"] != r["ppl"]["fp"]
    assert len(r["wrappers"]["templates"]) == 10
    assert [t["samples"] for t in r["temperature"]["temperatures"]] == [1, 3]
    assert [q["method"] for q in r["quant"]["methods"]] == ["dynamic", "weight_only"]
    assert all(q["after"]["decision"] in ("OWNED", "not owned") and q["ppl_ratio"] > 0 for q in r["quant"]["methods"])
    assert (out / "results.json").is_file() and (out / "plots" / "merge_alpha.png").is_file()


def test_merge_accuracy_does_not_rise_as_alpha_falls(robust):
    rows = robust[2].results["merge"]["alphas"]
    n = rows[0]["M"]
    for hi, lo in zip(rows, rows[1:]):
        assert lo["exact"] <= hi["exact"] + 1 / n + 1e-9  # one fingerprint of jitter allowed (spec check 6)


def test_suppressing_the_argmax_defeats_greedy_fingerprints(robust):
    attacks = {a["attack"]: a for a in robust[2].results["suppress"]["attacks"]}
    top1 = attacks["suppress_top1_first1"]
    # the embedded response is the greedy argmax, so banning the top-1 token at step 1 removes (almost) all hits
    assert top1["attack_success"] >= 0.9 and top1["decision"] == "not owned"
    assert top1["ppl_ratio"] > 0  # its utility cost is measured (it may fall below 1: see the hand check below)
    gated = attacks["suppress_top1_first1_gated0.9"]
    assert 0.0 <= gated["attack_success"] <= top1["attack_success"] + 1e-9


def test_resume_skips_finished_experiments(robust, models, monkeypatch):
    cfg, out, res = robust
    fps, fmodel, tok, base = models
    import trustlab.fingerprint.robustness as R

    def boom(*a, **k):
        raise AssertionError("an experiment was re-run")

    monkeypatch.setattr(R, "measure", boom)
    monkeypatch.setattr(R, "perplexity", boom)
    again = run_robustness(cfg, out, models=(fmodel, tok, base), fps=fps)
    assert again.results["merge"] == res.results["merge"]


def test_merge_shape_mismatch_names_the_first_parameter(models):
    from transformers import LlamaConfig, LlamaForCausalLM

    fps, fmodel, tok, base = models
    cfg = LlamaConfig(**{**fmodel.config.to_dict(), "intermediate_size": fmodel.config.intermediate_size + 8})
    other = LlamaForCausalLM(cfg)
    with pytest.raises(ModelError, match=r"model\.layers\.0\.mlp\.gate_proj\.weight.*shape") as exc:
        merge_linear(fmodel, other, 0.5)
    assert exc.value.hint
    half = merge_linear(fmodel, base, 0.5)
    w = "model.layers.0.mlp.up_proj.weight"
    assert torch.allclose(half.state_dict()[w], 0.5 * fmodel.state_dict()[w] + 0.5 * base.state_dict()[w])


def test_suppress_processor_acts_only_where_told():
    scores = torch.tensor([[5.0, 1.0, 0.0], [0.4, 0.3, 0.2]])
    banned = suppress(scores, 1)
    assert torch.isinf(banned[0, 0]) and torch.isinf(banned[1, 0]) and banned[0, 1] == 1.0
    gated = suppress(scores, 1, tau=0.9)  # row 0 is confident (p = 0.98), row 1 is not
    assert torch.isinf(gated[0, 0]) and gated[1, 0] == 0.4
    proc = SuppressTopK(k=1, steps=2)
    proc.begin(4)
    assert torch.isinf(proc(torch.zeros(2, 5), scores)[0, 0])  # decode step 1 of 2
    assert not torch.isinf(proc(torch.zeros(2, 6), scores)).any()  # step 3: left alone


def test_int8_quantization_keeps_outputs_close(models):
    fps, fmodel, tok, base = models
    q = quantize_int8(fmodel)
    assert "quantized" in type(q.model.layers[0].mlp.up_proj).__module__
    x = torch.tensor([[1, 5, 9, 12]])
    with torch.no_grad():
        assert (q(x).logits - fmodel(x).logits).abs().max() < 1.0
    w = quantize_int8(fmodel, "weight_only")
    orig, new = fmodel.model.layers[0].mlp.up_proj.weight, w.model.layers[0].mlp.up_proj.weight
    scale = orig.abs().amax(dim=1, keepdim=True) / 127
    levels = new / scale  # every weight sits on one of 255 int8 levels of its row, within half a step
    assert torch.allclose(levels, levels.round(), atol=1e-3) and ((new - orig).abs() <= scale / 2 + 1e-7).all()
    assert not torch.equal(new, orig) and torch.equal(fmodel.model.layers[0].mlp.up_proj.weight, orig)


def test_utility_measures(models):
    fps, fmodel, tok, base = models
    docs, src = heldout_texts(10, tok)
    assert len(docs) == 10 and src.startswith("fp-tiny grammar")
    news, src = heldout_texts(5)
    assert len(news) == 5 and src
    clean = perplexity(base, tok, docs)
    assert 1.0 < clean < len(tok) * 2
    # hand check of the attacked perplexity on one document: only the prediction of token PPL_PROMPT changes, to
    # the renormalised distribution without the top-1 token (a banned true token scored at p = 1e-6)
    import math

    from trustlab.fingerprint.utility import NLL_CAP, PPL_PROMPT

    ids = tok(docs[0], add_special_tokens=True)["input_ids"][:128]
    with torch.no_grad():
        logits = base(torch.tensor([ids])).logits[0, :-1].float()
    nll = -logits.log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0]
    row = logits[PPL_PROMPT - 1].clone()
    row[row.argmax()] = float("-inf")
    nll[PPL_PROMPT - 1] = min(float(-row.log_softmax(-1)[ids[PPL_PROMPT]]), NLL_CAP)
    want = math.exp(float(nll.mean()))
    assert perplexity(base, tok, docs[:1], attack=SuppressTopK(k=1, steps=1)) == pytest.approx(want, rel=1e-5)
    items, src = trivia_items(None, seed=0)
    assert len(items) == 261 and all(len(set(it["options"])) == 4 for it in items)
    assert trivia_items(20, seed=1)[0] == trivia_items(20, seed=1)[0]
    assert 0.0 <= trivia_mc(base, tok, items[:8]) <= 1.0


def test_report_section_renders_robustness(robust):
    from trustlab.fingerprint.report import report_section
    from trustlab.report import render, to_markdown

    cfg, out, res = robust
    results = json.loads((out / "results.json").read_text())
    md = to_markdown("t", report_section(results, out))
    for want in ("linear merge alpha 0.5", "suppress_top1_first1", "int8 quantization (weight-only)", "False positives",
                 "held-out perplexity", "trivia MC accuracy", "**Caveat:**", "2509.26598", "plots/merge_alpha.png"):
        assert want in md, want
    page_md, page_html = render(out, sections={"fingerprint": report_section})
    assert page_html.is_file() and "not owned" in page_md.read_text()
