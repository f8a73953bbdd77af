"""Robustness of fingerprints to what hosts do to models, and what it costs in utility (spec section 2).

Each experiment measures the fingerprinted model F (or a transform of it) with ``verify``: exact and lenient
accuracy, persistence (the first response token is the greedy argmax, the paper's metric) and the ownership
p-value. Attacks and transforms:

- ``sft_attack``: benign supervised fine-tuning on chat dialogues (AdamW, response tokens only).
- ``merge_linear``: alpha * theta_F + (1 - alpha) * theta_other, per parameter (shape mismatch is an error).
- wrappers: the 10 disjoint TEST_TEMPLATES around each key; temperatures with several samples.
- ``quantize_int8``: torch dynamic int8 quantization of every nn.Linear, as a host serving cheaply would.
- ``SuppressTopK``: the decoding-time suppression attacks of arXiv 2509.26598 as a logits processor: ban the
  top-k tokens for the first n decode steps, or (``tau``) only where the top probability exceeds tau; the rest
  of that family (neighbour, look-ahead, detect-then-suppress, perplexity filter) and the top-r logprob verifier
  are the experiments ``suppress_family`` and ``topr`` (``attack_family``, ``suppression``, ``topr``).
- utility: held-out perplexity ratio F/B and a 4-option trivia multiple-choice score (mean answer
  log-likelihood); false positives: B and an unrelated model (a seeded random init of B's config) must be
  ``not owned``.

This module is the experiment runner and its record: each experiment is a function ``Bench -> record`` in the
``experiments.EXPERIMENTS`` registry (entry-point group ``trustlab.fingerprint.experiments``; ``trustlab
fingerprint ls`` lists them); ``run_robustness(cfg, out_dir)`` runs those ``cfg.experiments`` names, appends each
result to the stamped record store ``robustness.jsonl`` (``robustness.json`` is the combined view) and skips, on
resume, those already recorded under the same settings. The parts live in one module per job: ``attacks`` (the transforms), ``utility``
(perplexity, trivia-MC), ``heldout`` (their data, with provenance) and ``measure`` (verify on a model); the names
the runner composes are importable from here too.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustlab.runtime.errors import ConfigError
from trustlab.runtime.files import read_text

from .attacks import QUANT_METHODS, SuppressTopK, foreign_model, merge_linear, quantize_int8, sft_attack
from .experiments import EXPERIMENTS
from .heldout import heldout_texts, trivia_items
from .measure import _fpr_foreign, _short, measure
from .utility import perplexity, trivia_mc

# what the runner composes
__all__ = ["EXPERIMENTS", "QUANT_METHODS", "Bench", "RobustnessResult", "SuppressTopK", "foreign_model", "heldout_texts", "measure",
           "merge_linear", "perplexity", "quantize_int8", "run_robustness", "sft_attack", "trivia_items",
           "trivia_mc"]


@dataclass
class RobustnessResult:
    run_dir: Path
    results: dict[str, Any] = field(default_factory=dict)

    def summary_lines(self) -> list[str]:
        r, out = self.results, []
        if "clean" in r:
            out.append(f"clean: {r['clean']['line']}")
        u = r.get("utility")
        if u:
            out.append(f"utility: perplexity ratio F/B {u['ppl_ratio']:.3f}, trivia-MC {u['mc_fp']:.3f} vs "
                       f"{u['mc_base']:.3f}")
        for e in r.get("sft", {}).get("epochs", []):
            out.append(f"sft epoch {e['epoch']} ({e['steps']} steps): exact {e['exact']:.2f} -> {e['decision']}, "
                       f"perplexity x{e['ppl_ratio_base']:.3f} of the base")
        for a in r.get("merge", {}).get("alphas", []):
            out.append(f"merge alpha {a['alpha']:g}: exact {a['exact']:.2f} -> {a['decision']}")
        if "wrappers" in r:
            out.append(f"wrappers: mean exact {r['wrappers']['mean_exact']:.2f}")
        for t in r.get("temperature", {}).get("temperatures", []):
            out.append(f"T={t['temperature']:g}: mean {t['mean_hit_rate']:.2f} any-of-n {t['any_hit_rate']:.2f} "
                       f"-> {t['decision']}")
        for q in r.get("quant", {}).get("methods", []):
            out.append(f"int8 {q['method']}: exact {q['before']['exact']:.2f} -> {q['after']['exact']:.2f} "
                       f"({q['after']['decision']}), perplexity x{q['ppl_ratio']:.3f}")
        for a in r.get("suppress", {}).get("attacks", []):
            out.append(f"{a['attack']}: attack success {a['attack_success']:.2f}, verdict {a['decision']}, "
                       f"perplexity cost x{a['ppl_ratio']:.3f}")
        for a in r.get("suppress_family", {}).get("attacks", []):
            out.append(f"{a['attack']}: attack success {a['attack_success']:.2f}, verdict {a['decision']}, "
                       f"perplexity x{a['ppl_ratio']:.3f}, trivia {a['mc_delta']:+.3f}")
        for a in r.get("topr", {}).get("attacks", []):
            out.append(f"{a['attack']}: greedy {a['decision']}; " + "; ".join(
                f"top-{k} {v['decision']} ({v['m']}/{v['M']})" for k, v in a["topr"].items())
                + f"; perplexity x{a['ppl_ratio']:.3f}")
        for name, f in r.get("fpr", {}).items():
            if isinstance(f, dict):
                out.append(f"fpr {name}: {f['line']}")
        return out



@dataclass
class Bench:
    """What every experiment reads: the config, the fingerprinted model F and its tokenizer, the base B, the
    fingerprints, the held-out perplexity documents and the record so far (``clean`` and ``ppl`` are in it)."""

    cfg: Any
    fmodel: Any
    tok: Any
    base: Any
    base_ref: str
    fps: Any
    docs: list
    results: dict[str, Any]

    def meas(self, model, label: str, **kw) -> dict[str, Any]:
        """``verify`` of ``model`` on the fingerprints (the run's alpha and seed)."""
        return measure(model, self.tok, self.fps, label=label, alpha=self.cfg.alpha, seed=self.cfg.seed, **kw)

    def ppl(self, model, **kw) -> float:
        return perplexity(model, self.tok, self.docs, **kw)


# One function per experiment: ``Bench -> record`` (the runner adds ``seconds``), registered by name in
# ``fingerprint.experiments.EXPERIMENTS`` (which validates configs, lists them and takes entry points).


def _sft(b: Bench) -> dict[str, Any]:
    cfg, results = b.cfg, b.results
    ppl_f, ppl_b = results["ppl"]["fp"], results["ppl"]["base"]
    model = copy.deepcopy(b.fmodel)
    epochs: list[dict] = []

    def after(epoch, steps, loss):
        ppl = b.ppl(model)  # utility after each epoch, beside retention
        epochs.append({"epoch": epoch, "steps": steps, "loss": loss, "ppl": ppl,
                       "ppl_ratio_base": ppl / ppl_b, "ppl_ratio_fp": ppl / ppl_f,
                       **_short(b.meas(model, f"sft epoch {epoch}"))})

    info = sft_attack(model, b.tok, lr=cfg.sft_lr, epochs=cfg.sft_epochs, batch_size=cfg.sft_batch_size,
                      max_steps=cfg.sft_max_steps, seed=cfg.seed, on_epoch=after)
    return {**info, "lr": cfg.sft_lr, "epochs": epochs,
            "retention": epochs[-1]["exact"] / max(results["clean"]["exact"], 1e-12),
            "ppl_ratio_after": epochs[-1]["ppl_ratio_fp"] if epochs else None}


def _merge(b: Bench) -> dict[str, Any]:
    cfg, other = b.cfg, b.base
    if cfg.merge_with is not None:
        from trustlab.models import load_causal_lm

        from .tiny import resolve_model_ref

        other, _ = load_causal_lm(resolve_model_ref(cfg.merge_with))
    rows = []
    for a in cfg.merge_alphas:
        merged = merge_linear(b.fmodel, other, a)
        rows.append({"alpha": a, **_short(b.meas(merged, f"merge {a:g}"))})
        del merged
    return {"with": cfg.merge_with or b.base_ref, "alphas": rows}


def _wrappers(b: Bench) -> dict[str, Any]:
    from .dataset import TEST_TEMPLATES

    rows = [{"template": i, "text": TEST_TEMPLATES[i], **_short(b.meas(b.fmodel, f"wrapper {i}", wrapper=i))}
            for i in range(len(TEST_TEMPLATES))]
    return {"templates": rows, "mean_exact": sum(r["exact"] for r in rows) / len(rows),
            "mean_lenient": sum(r["lenient"] for r in rows) / len(rows)}


def _temperature(b: Bench) -> dict[str, Any]:
    cfg = b.cfg
    rows = [{"temperature": t, "samples": 1 if t == 0 else cfg.samples,
             **_short(b.meas(b.fmodel, f"T {t:g}", temperature=t, samples=1 if t == 0 else cfg.samples))}
            for t in cfg.temperatures]
    return {"temperatures": rows}


def _quant(b: Bench) -> dict[str, Any]:
    rows = []
    for method, what in QUANT_METHODS.items():
        q = quantize_int8(b.fmodel, method)
        rows.append({"method": method, "what": what, "before": _short(b.results["clean"]),
                     "after": _short(b.meas(q, f"int8 {method}")),
                     "ppl_ratio": b.ppl(q) / b.results["ppl"]["fp"]})
        del q
    return {"methods": rows}


def _suppress(b: Bench) -> dict[str, Any]:
    cfg, before = b.cfg, b.results["clean"]["hits"]
    rows = []
    for attack in (SuppressTopK(cfg.suppress_k, cfg.suppress_n),
                   SuppressTopK(cfg.suppress_k, cfg.suppress_n, cfg.suppress_tau)):
        after_m = b.meas(b.fmodel, attack.name, processors=[attack])
        kept = sum(x and y for x, y in zip(before, after_m["hits"]))
        rows.append({"attack": attack.name, "k": attack.k, "steps": attack.steps, "tau": attack.tau,
                     "attack_success": 1 - kept / sum(before) if sum(before) else None,
                     **_short(after_m),
                     "ppl_ratio": b.ppl(b.fmodel, attack=attack) / b.results["ppl"]["fp"]})
    return {"attacks": rows, "paper": "arXiv 2509.26598: 94-100 % success at < 10 % utility loss"}


def _utility(b: Bench) -> dict[str, Any]:
    results = b.results
    items, mc_source = trivia_items(b.cfg.mc_subset, b.cfg.seed)
    mc_f, mc_b = trivia_mc(b.fmodel, b.tok, items), trivia_mc(b.base, b.tok, items)
    results["sources"]["trivia_mc"] = mc_source
    ppl_f, ppl_b = results["ppl"]["fp"], results["ppl"]["base"]
    return {"ppl_fp": ppl_f, "ppl_base": ppl_b, "ppl_ratio": ppl_f / ppl_b,
            "mc_fp": mc_f, "mc_base": mc_b, "mc_ratio": mc_f / mc_b if mc_b else None, "mc_items": len(items)}


def _fpr(b: Bench) -> dict[str, Any]:
    cfg, res = b.cfg, {}
    for name, model in (("base", b.base), ("foreign", None)):
        if model is None:
            if cfg.foreign_model is not None:
                from trustlab.models import load_causal_lm

                from .tiny import resolve_model_ref

                model, ftok = load_causal_lm(resolve_model_ref(cfg.foreign_model))
                res[name] = {**_fpr_foreign(model, ftok, b.fps, cfg), "model": cfg.foreign_model}
                continue
            model = foreign_model(b.base, cfg.seed)
        res[name] = {**_short(b.meas(model, name)),
                     "model": b.base_ref if name == "base" else f"random init of {b.base_ref} (seed {cfg.seed})"}
    return res


def _load_models(cfg):
    from trustlab.models import load_causal_lm
    from trustlab.models.identity import load_recorded

    from .fpset import FingerprintSet
    from .tiny import resolve_model_ref

    if cfg.fingerprinted is None:
        raise ConfigError("robustness needs the fingerprinted model", hint="pass --fingerprinted DIR")
    fp_path = cfg.fingerprints
    if fp_path is None:
        guess = Path(cfg.fingerprinted).parent / "fingerprints.json"
        if not guess.is_file():
            raise ConfigError("robustness needs the fingerprint file", hint="pass --fingerprints fingerprints.json")
        fp_path = str(guess)
    fps = FingerprintSet.load(fp_path)
    meta = Path(cfg.fingerprinted) / "trustlab_fingerprint.json"  # embed records the identity of the model it trained
    recorded = json.loads(read_text(meta, "model metadata")).get("base_model", {}) if meta.is_file() else {}
    base_ref = cfg.base or recorded.get("ref") or fps.base_model.get("ref")
    if not base_ref:
        raise ConfigError("robustness needs the base model", hint="pass --base REF")
    fmodel, tok = load_causal_lm(resolve_model_ref(cfg.fingerprinted))
    base, btok = load_causal_lm(resolve_model_ref(base_ref)) if cfg.base or "n_params" not in recorded else \
        load_recorded(recorded, f"model metadata {str(meta)!r}")  # refused when the base's weights changed
    fps.check_tokenizer(tok)
    return fps, fmodel, tok, base, btok, base_ref


def run_robustness(cfg, out_dir: str | Path | None = None, resume: bool = True, *,
                   models: tuple | None = None, fps=None) -> RobustnessResult:
    """Run ``cfg.experiments`` against the fingerprinted model. Each result is one record of the stamped store
    ``robustness.jsonl`` (``runtime.RecordStore``, keyed by experiment), appended as it finishes; ``robustness.json``
    is the combined view, rewritten after each one. A resume skips recorded experiments; the stamp and the run
    folder's config leave ``experiments`` out (``content_config``), so a run is extended by naming more of them.
    ``models=(F, tok, B)`` and ``fps`` skip loading."""
    from trustlab.runtime.io import write_json_atomic
    from trustlab.runtime.records import RecordStore
    from trustlab.runtime.rundir import RunDir

    content = content_config(cfg)
    run = RunDir.open(out_dir, "fingerprint", "robustness", content, cfg.seed, resume=resume)
    path = run.path / "robustness.json"
    store = RecordStore(run.path / "robustness.jsonl", content, what="robustness record", resume=resume)
    results: dict[str, Any] = {r["key"]: r["result"] for r in store.latest()}
    if models is None:
        fps, fmodel, tok, base, _, base_ref = _load_models(cfg)
    else:
        fmodel, tok, base = models
        base_ref = cfg.base or "base"
        if fps is None:
            raise ConfigError("run_robustness(models=...) needs fps", hint="pass the FingerprintSet")

    def record(*names: str) -> None:
        store.append({"key": n, "result": results[n]} for n in (*names, "sources"))
        write_json_atomic(path, results)

    docs, ppl_source = heldout_texts(cfg.ppl_docs, tok)
    bench = Bench(cfg, fmodel, tok, base, base_ref, fps, docs, results)
    results.setdefault("sources", {})["perplexity"] = ppl_source
    results["alpha"] = cfg.alpha
    if "base_prob" not in results:
        probs = [fp.base_prob for fp in fps.fingerprints if fp.base_prob is not None]
        results["base_prob"] = {"n": len(probs), "mean": sum(probs) / len(probs) if probs else None,
                                "max": max(probs) if probs else None, "values": probs}
    if "clean" not in results:
        results["clean"] = bench.meas(fmodel, "fingerprinted")
        record("base_prob", "clean")
    if "ppl" not in results:
        results["ppl"] = {"fp": bench.ppl(fmodel), "base": bench.ppl(base)}
        record("ppl")

    for exp in cfg.experiments:
        if exp in results:
            continue
        t0 = time.perf_counter()
        res = EXPERIMENTS.get(exp)(bench)  # RobustnessConfig has validated the names
        res["seconds"] = round(time.perf_counter() - t0, 2)
        results[exp] = res
        record(exp)
    write_json_atomic(path, results)
    from . import plots

    arts = plots.robustness_plots(results, run.path / "plots")
    run.write_results(_headline(results), artifacts=[path, store.path, *arts], robustness=results,
                      caveat=results["clean"].get("caveat") or _caveat())
    return RobustnessResult(run.path, results)


def content_config(cfg):
    """``cfg`` with ``experiments`` emptied: what a resume must agree on (which experiments a run holds only
    decides which records it has, not what they say)."""
    import dataclasses

    return dataclasses.replace(cfg, experiments=())


def _caveat() -> str:
    from .stats import ATTACK_CAVEAT

    return ATTACK_CAVEAT


def _headline(r: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"clean_exact": r["clean"]["exact"], "clean_decision": r["clean"]["decision"]}
    if "utility" in r:
        out.update(ppl_ratio=r["utility"]["ppl_ratio"], mc_ratio=r["utility"]["mc_ratio"])
    if "sft" in r and r["sft"]["epochs"]:
        out["sft_retention"] = r["sft"]["retention"]
    if "suppress" in r:
        out["suppress_success"] = {a["attack"]: a["attack_success"] for a in r["suppress"]["attacks"]}
    if "fpr" in r:
        out["false_claims"] = sum(f["decision"] == "OWNED" for f in r["fpr"].values() if isinstance(f, dict))
    return out
