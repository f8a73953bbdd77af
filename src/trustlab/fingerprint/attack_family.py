"""The robustness experiments ``suppress_family`` and ``topr`` (registered in ``fingerprint.experiments``).

``suppress_family``: each member of the suppression and detection family (``suppression``) beside today's top-1
suppression, as attack success (the share of the clean exact hits the attack removes; the verdict after it; the
lenient text hit rate after it) against its utility cost (held-out perplexity and trivia multiple choice, each as
a ratio to the unattacked model, through ``attack_cost.CostBench``). The perplexity filter is calibrated on benign
prompts that the utility measure does not use (the next ``ppl_docs`` held-out documents' first PPL_PROMPT tokens,
in the fingerprints' prompt layout) and reports the share of keys and of benign prompts it flags.

``topr``: the top-r verifier (``topr``) against soft and hard top-s suppression (``suppression.Demote``), with the
reported distribution processed by the host; and once on the raw distribution (a host that suppresses the emitted
token only). Every row carries the greedy verdict beside the top-r ones, and the utility cost of the attack.
"""

from __future__ import annotations

import math
from typing import Any

from .attacks import SuppressTopK
from .suppression import (Demote, DetectSuppress, LookaheadSuppress, NeighbourSuppress, PerplexityFilter,
                          calibrate_threshold, describe)


def cost_bench(b) -> Any:
    """The run's CostBench (built once per run; stored on the Bench)."""
    from .attack_cost import CostBench
    from .heldout import trivia_items

    if getattr(b, "_cost", None) is None:
        items, source = trivia_items(b.cfg.mc_subset, b.cfg.seed)
        b.results.setdefault("sources", {})["trivia_mc"] = source
        b._cost = CostBench(b.fmodel, b.tok, b.docs, items)
        b._cost_clean = (b._cost.perplexity(), b._cost.trivia())
    return b._cost


def _calibration_prompts(b) -> list[list[int]]:
    from .dataset import prompt_ids
    from .heldout import heldout_texts
    from .utility import PPL_PROMPT

    docs, _ = heldout_texts(2 * b.cfg.ppl_docs, b.tok)
    docs = docs[b.cfg.ppl_docs:] or docs  # documents the utility measure does not use, where there are any
    out = []
    for d in docs:
        ids = b.tok.encode(d, add_special_tokens=False)[:PPL_PROMPT]
        if len(ids) >= 2:
            out.append(prompt_ids(b.tok, ids, b.fps.prompt_format))
    return out


def priced(b, attack, clean_hits: list[bool]) -> dict[str, Any]:
    """Attack success, verdict and utility cost of one attack on the Bench's model."""
    cost = cost_bench(b)
    ppl0, mc0 = b._cost_clean
    after = b.meas(b.fmodel, attack.name, processors=[attack])
    kept = sum(x and y for x, y in zip(clean_hits, after["hits"]))
    ppl, mc = cost.perplexity(attack), cost.trivia(attack)
    return {**describe(attack), "attack_success": 1 - kept / sum(clean_hits) if sum(clean_hits) else None,
            "exact": after["exact"], "lenient": after["lenient"], "m": after["m"], "M": after["M"],
            "p_value": after["p_value"], "decision": after["decision"], "line": after["line"],
            "ppl": ppl, "ppl_ratio": ppl / ppl0, "mc": mc, "mc_delta": mc - mc0}


def family_attacks(b) -> list:
    """Today's top-1 suppression and the family members at the run's settings."""
    cfg, tok = b.cfg, b.tok
    out: list = [SuppressTopK(1, 1), NeighbourSuppress(tok), LookaheadSuppress(b.fmodel, tok, cfg.lookahead_width,
                                                                               cfg.lookahead_depth),
                 DetectSuppress(tok, cfg.detect_tau), DetectSuppress(tok, cfg.detect_tau, b.base, cfg.detect_margin)]
    if cfg.filter_quantiles:
        prompts = _calibration_prompts(b)
        for q in cfg.filter_quantiles:
            thr = calibrate_threshold(b.fmodel, prompts, q)
            f = PerplexityFilter(b.fmodel, tok, thr, label=f"_q{q:g}")
            f.quantile, f.calibration = q, len(prompts)
            out.append(f)
    return out


def family_experiment(b) -> dict[str, Any]:
    cost_bench(b)
    clean = b.results["clean"]["hits"]
    rows = []
    for attack in family_attacks(b):
        row = priced(b, attack, clean)
        if isinstance(attack, PerplexityFilter):
            from .verify import local_prompt

            keys = [attack.flagged(local_prompt(b.tok, fp, b.fps.prompt_format, None)) for fp in b.fps.fingerprints]
            row.update(quantile=attack.quantile, calibration_prompts=attack.calibration,
                       keys_flagged=sum(keys) / len(keys), benign_flagged=1 - attack.quantile)
        if isinstance(attack, DetectSuppress):
            row["fired"] = attack.fired
        rows.append(row)
    ppl0, mc0 = b._cost_clean
    return {"attacks": rows, "ppl_clean": ppl0, "mc_clean": mc0, "mc_items": len(b._cost.items),
            "clean_exact": b.results["clean"]["exact"],
            "paper": "arXiv 2509.26598: 94-100 % success at < 10 % utility loss"}


def topr_experiment(b) -> dict[str, Any]:
    from .topr import first_position_logits, topr_verify

    cost_bench(b)
    cfg, clean = b.cfg, b.results["clean"]["hits"]
    raw_logits = first_position_logits(b.fmodel, b.tok, b.fps)
    raw = {str(r): topr_verify(b.fps, b.fmodel, b.tok, r, alpha=cfg.alpha, logits=raw_logits,
                               reported="raw").to_dict()
           for r in cfg.topr_ranks}
    rows = []
    for s in cfg.demote_tops:
        for delta in (*cfg.demote_deltas, math.inf):
            attack = Demote(s, delta)
            row = priced(b, attack, clean)
            logits = first_position_logits(b.fmodel, b.tok, b.fps, [attack])
            row["topr"] = {str(r): topr_verify(b.fps, b.fmodel, b.tok, r, alpha=cfg.alpha, logits=logits).to_dict()
                           for r in cfg.topr_ranks}
            rows.append(row)
    beaten = {}
    for r in cfg.topr_ranks:  # the cheapest attack (in perplexity) that leaves top-r without a verdict
        wins = [x for x in rows if x["topr"][str(r)]["decision"] != "OWNED"]
        beaten[str(r)] = min(wins, key=lambda x: x["ppl_ratio"])["attack"] if wins else None
    greedy = [x for x in rows if x["decision"] != "OWNED"]
    return {"raw": raw, "attacks": rows, "cheapest_win": beaten,
            "cheapest_greedy_win": min(greedy, key=lambda x: x["ppl_ratio"])["attack"] if greedy else None,
            "ppl_clean": b._cost_clean[0], "mc_clean": b._cost_clean[1],
            "k": sorted({len(fp.candidates) for fp in b.fps.fingerprints if fp.candidates})}
