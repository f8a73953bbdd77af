"""The suppression and detection family, its utility cost, the top-r verifier's null and the experiment registry."""

from __future__ import annotations

import json
import math
from importlib.metadata import EntryPoint
from types import SimpleNamespace

import pytest
import torch

from trustlab.fingerprint.attack_cost import CostBench
from trustlab.fingerprint.attacks import SuppressTopK
from trustlab.fingerprint.config import RobustnessConfig
from trustlab.fingerprint.heldout import heldout_texts, trivia_items
from trustlab.fingerprint.suppression import (Demote, DetectSuppress, LookaheadSuppress, NeighbourSuppress,
                                              PerplexityFilter, calibrate_threshold, normalise, prompt_nll)
from trustlab.fingerprint.topr import key_null, poisson_binomial_tail, topr_verify
from trustlab.fingerprint.utility import perplexity, trivia_mc
from trustlab.runtime.errors import ConfigError


@pytest.fixture(scope="module")
def models(tiny_embedded, fp_tiny_path):
    from trustlab.models import load_causal_lm

    fmodel, tok = load_causal_lm(str(tiny_embedded["model_dir"]))
    base, _ = load_causal_lm(str(fp_tiny_path))
    return tiny_embedded["fps"], fmodel, tok, base


@pytest.fixture(scope="module")
def family(models, tmp_path_factory):
    from trustlab.fingerprint.robustness import run_robustness

    fps, fmodel, tok, base = models
    cfg = RobustnessConfig(fingerprinted="fp", base="fp-tiny", experiments=("suppress_family", "topr"), ppl_docs=10,
                           mc_subset=16, demote_tops=(1,), demote_deltas=(0.5, 5.0))
    out = tmp_path_factory.mktemp("family")
    import dataclasses

    run_robustness(dataclasses.replace(cfg, experiments=("suppress_family",)), out, models=(fmodel, tok, base), fps=fps)
    return out, run_robustness(cfg, out, models=(fmodel, tok, base), fps=fps).results  # extends the run: topr


def test_a_run_is_extended_by_naming_more_experiments(family):
    from trustlab.runtime.records import read_records

    out, r = family
    header, rows = read_records(out / "robustness.jsonl")
    keys = [row["key"] for row in rows]
    assert keys.count("suppress_family") == 1 and keys.count("topr") == 1 and keys.count("clean") == 1
    assert header["experiments"] == [] and {"suppress_family", "topr"} <= set(r)
    assert json.loads((out / "robustness.json").read_text())["topr"] == r["topr"]


def test_cost_bench_matches_the_plain_utility_measures(models):
    fps, fmodel, tok, _ = models
    docs, _ = heldout_texts(12, tok)
    items, _ = trivia_items(12, 0)
    cost = CostBench(fmodel, tok, docs, items)
    assert cost.perplexity() == pytest.approx(perplexity(fmodel, tok, docs), rel=1e-4)
    attack = SuppressTopK(1, 1)
    assert cost.perplexity(attack) == pytest.approx(perplexity(fmodel, tok, docs, attack=attack), rel=1e-4)
    assert cost.trivia() == trivia_mc(fmodel, tok, items)
    with pytest.raises(ConfigError, match="steps"):
        cost.perplexity(SuppressTopK(1, 2))
    idle = DetectSuppress(tok, tau=0.999999)  # never fires: every score is the clean one, exactly
    assert (cost.perplexity(idle), cost.trivia(idle)) == (cost.perplexity(), cost.trivia()) and idle.fired == 0
    assert cost.trivia(SuppressTopK(1, 1)) <= 1.0 and idle.seen > 0


def test_the_family_on_the_fingerprinted_tiny_model(family):
    out, r = family
    rows = {a["attack"]: a for a in r["suppress_family"]["attacks"]}
    assert set(rows) == {"suppress_top1_first1", "neighbour_first1", "lookahead_w4_d3", "detect_tau0.5",
                         "detect_tau0.5_ref2.3", "ppl_filter_q0.5", "ppl_filter_q0.9"}
    for name in ("suppress_top1_first1", "neighbour_first1", "lookahead_w4_d3"):  # every key loses its argmax
        assert rows[name]["attack_success"] == 1.0 and rows[name]["decision"] == "not owned", name
    for a in rows.values():
        assert a["ppl_ratio"] > 0 and -1 <= a["mc_delta"] <= 1 and 0 <= a["attack_success"] <= 1
    # gated attacks never remove more than the ungated one, and act on fewer positions
    for name in ("detect_tau0.5", "detect_tau0.5_ref2.3", "ppl_filter_q0.5", "ppl_filter_q0.9"):
        assert rows[name]["attack_success"] <= 1.0 and rows[name]["ppl_ratio"] <= rows["suppress_top1_first1"][
            "ppl_ratio"] + 1e-9, name
    f5, f9 = rows["ppl_filter_q0.5"], rows["ppl_filter_q0.9"]
    assert f9["keys_flagged"] <= f5["keys_flagged"] and f5["benign_flagged"] == pytest.approx(0.5)
    assert f5["attack_success"] == pytest.approx(f5["keys_flagged"])  # a flagged key loses its hit, others keep it
    assert (out / "plots" / "suppression_tradeoff.png").is_file()


def test_topr_against_demotion(family):
    t = family[1]["topr"]
    assert t["raw"]["1"]["decision"] == "OWNED" and t["raw"]["2"]["m"] == t["raw"]["2"]["M"]
    rows = {a["attack"]: a for a in t["attacks"]}
    assert set(rows) == {"demote_top1_by0.5", "demote_top1_by5", "demote_top1_byinf"}
    ban = rows["demote_top1_byinf"]
    assert ban["decision"] == "not owned" and all(v["m"] == 0 for v in ban["topr"].values())  # banned: absent
    soft = rows["demote_top1_by0.5"]  # half a nat off the top-1 leaves the response within the top 2
    assert soft["topr"]["2"]["m"] >= soft["topr"]["1"]["m"] and soft["topr"]["2"]["m"] >= soft["m"]
    assert set(t["cheapest_win"]) == {"1", "2"} and t["k"] == [3]


def test_neighbours_share_the_normalised_prefix(models):
    tok = models[2]
    att = NeighbourSuppress(tok)
    for t in range(min(len(tok), 200)):
        n = normalise(tok.decode([t]))
        got = att.neighbours(t)
        assert t in got
        if n:
            want = {i for i in range(len(tok)) if normalise(tok.decode([i])).startswith(n)}
            assert set(got) == want | {t}
    scores = torch.randn(2, len(tok))
    att.begin(3)
    out = att(torch.ones(2, 3, dtype=torch.long), scores)
    for i in range(2):
        assert set(torch.isinf(out[i]).nonzero()[:, 0].tolist()) == set(att.neighbours(int(scores[i].argmax())))
    assert torch.equal(att(torch.ones(2, 4, dtype=torch.long), scores), scores)  # step 2: untouched


def test_lookahead_bans_the_argmax_and_only_permutes_the_candidates(models):
    _, fmodel, tok, _ = models
    att = LookaheadSuppress(fmodel, tok, width=4, depth=3)
    ids = torch.tensor([[5, 6, 7, 8]])
    scores = fmodel(input_ids=ids).logits[:, -1].detach()
    att.begin(4)
    out = att(ids, scores)[0]
    top = scores[0].topk(5).indices
    assert math.isinf(out[top[0]]) and out[top[0]] < 0
    assert sorted(out[top[1:]].tolist()) == sorted(scores[0, top[1:]].tolist())
    rest = torch.ones_like(out, dtype=torch.bool)
    rest[top] = False
    assert torch.equal(out[rest], scores[0][rest])


def test_detect_gate_and_reference(models):
    _, fmodel, tok, base = models
    scores = torch.tensor([[4.0, 0.0, 0.0, 0.0]])
    ids = torch.tensor([[5, 6]])
    det = DetectSuppress(tok, tau=0.99)
    det.begin(2)
    assert torch.equal(det(ids, scores), scores) and det.fired == 0  # p(top) = 0.95 < tau
    det = DetectSuppress(tok, tau=0.5)
    det.begin(2)
    assert math.isinf(det(ids, scores)[0, 0]) and det.fired == 1
    same = DetectSuppress(tok, tau=0.0, reference=fmodel, margin=0.1)  # the model is its own reference: no gap
    logits = fmodel(input_ids=ids).logits[:, -1].detach()
    same.begin(2)
    assert torch.equal(same(ids, logits), logits) and same.fired == 0
    with pytest.raises(ConfigError, match="tau"):
        DetectSuppress(tok, tau=1.0)


def test_perplexity_filter_calibration(models):
    _, fmodel, tok, _ = models
    docs, _ = heldout_texts(30, tok)
    prompts = [tok.encode(d, add_special_tokens=False)[:12] for d in docs]
    thr = calibrate_threshold(fmodel, prompts, 0.7)
    f = PerplexityFilter(fmodel, tok, thr)
    flags = [f.flagged(p) for p in prompts]
    assert sum(flags) == sum(prompt_nll(fmodel, p) > thr for p in prompts)
    assert abs(sum(flags) / len(flags) - 0.3) <= 1 / len(flags) + 1e-9 and f.flag_rate == sum(flags) / len(flags)
    with pytest.raises(ConfigError, match="quantile"):
        calibrate_threshold(fmodel, prompts, 1.0)


def test_demote_is_a_soft_ban():
    s = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    d = Demote(2, 1.5)
    d.begin(1)
    assert torch.equal(d(torch.ones(1, 1, dtype=torch.long), s), torch.tensor([[1.5, 0.5, 1.0, 0.0]]))
    ban = Demote(1)
    ban.begin(1)
    assert math.isinf(ban(torch.ones(1, 1, dtype=torch.long), s)[0, 0])
    assert torch.equal(ban(torch.ones(1, 2, dtype=torch.long), s), s)


def test_poisson_binomial_tail_is_exact():
    from scipy.stats import binom

    for M, p, m in ((10, 1 / 3, 4), (64, 2 / 3, 60), (5, 0.5, 0)):
        assert poisson_binomial_tail(m, [p] * M) == pytest.approx(binom.sf(m - 1, M, p), rel=1e-9, abs=1e-300)
    # unequal rates, by enumeration
    import itertools

    ps = [0.2, 0.5, 0.9]
    want = sum(math.prod(q if b else 1 - q for q, b in zip(ps, bits))
               for bits in itertools.product((0, 1), repeat=3) if sum(bits) >= 2)
    assert poisson_binomial_tail(2, ps) == pytest.approx(want)


def _fake_set(cands, response):
    fp = SimpleNamespace(candidates=tuple(cands), response_ids=(response,))
    return SimpleNamespace(fingerprints=[fp], strategy="perinucleus", check_tokenizer=lambda tok: None)


@pytest.mark.parametrize("r", [1, 2, 3, 5])
def test_topr_null_is_r_over_k_under_the_keyed_choice(r):
    """Under H0 the suspect's scores do not depend on which candidate the secret chose: averaged over the k equally
    likely choices, the hit rate is |top-r cap C| / k <= min(r, k) / k, with equality when C holds the top r."""
    k, V = 4, 12
    gen = torch.Generator().manual_seed(r)
    for trial in range(30):
        row = torch.randn(V, generator=gen)
        cands = torch.randperm(V, generator=gen)[:k].tolist()
        if trial % 3 == 0:  # the worst case: the suspect ranks the candidates first
            cands = row.topk(k).indices.tolist()
        rate = sum(topr_verify(_fake_set(cands, y), None, None, r, logits=[row]).m if r < k else
                   int(y in row.topk(r).indices.tolist()) for y in cands) / k
        assert rate <= key_null(SimpleNamespace(candidates=cands), r) + 1e-12
        if trial % 3 == 0:
            assert rate == pytest.approx(min(r, k) / k)
    res = topr_verify(_fake_set(range(4), 0), None, None, 4, logits=[torch.randn(V)])
    assert res.M == 0 and res.dropped == 1 and res.decision == "not owned"  # r >= k: no evidence


def test_topr_refuses_sets_without_candidates():
    fps = _fake_set([1, 2, 3], 1)
    fps.fingerprints[0].candidates = None
    fps.strategy = "english_random"
    with pytest.raises(ConfigError, match="candidates"):
        topr_verify(fps, None, None, 2, logits=[torch.zeros(4)])
    with pytest.raises(ConfigError, match="r >= 1"):
        topr_verify(_fake_set([1, 2, 3], 1), None, None, 0, logits=[torch.zeros(4)])


def test_a_third_party_experiment_registers_through_an_entry_point(models, tmp_path, monkeypatch):
    import trustlab.runtime.registry as reg
    from trustlab.fingerprint.experiments import EXPERIMENTS
    from trustlab.fingerprint.robustness import run_robustness

    monkeypatch.setattr(reg, "_entry_points", lambda group: [EntryPoint(
        "probe", "tests.fingerprint.test_suppression:_probe_experiment", group)] if group == EXPERIMENTS.group else [])
    monkeypatch.setattr(EXPERIMENTS, "_plugins_loaded", False)
    monkeypatch.setattr(EXPERIMENTS, "_entries", dict(EXPERIMENTS._entries))
    cfg = RobustnessConfig(fingerprinted="fp", base="fp-tiny", experiments=("probe",), ppl_docs=5)
    fps, fmodel, tok, base = models
    r = run_robustness(cfg, tmp_path / "probe", models=(fmodel, tok, base), fps=fps).results
    assert r["probe"]["keys"] == len(fps) and r["probe"]["clean_exact"] == r["clean"]["exact"]
    assert json.loads((tmp_path / "probe" / "robustness.json").read_text())["probe"]["keys"] == len(fps)
    with pytest.raises(ConfigError, match="probe"):  # an unknown name lists the entry-point one too
        RobustnessConfig(experiments=("nope",))


def _probe_experiment(bench):
    """A third party's experiment: reads the Bench."""
    return {"keys": len(bench.fps), "clean_exact": bench.results["clean"]["exact"]}
