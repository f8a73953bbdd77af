"""The fingerprint section of a trustlab report: verdicts, utility, robustness tables, FPR rows, the caveat, plots.

``report_section(results, run_dir)`` reads a run's ``results.json`` (verbs verify, robustness, embed, generate and
demo; sub-results under ``verify``, ``robustness``, ``embed``) and returns report blocks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _f(v: Any, digits: int = 3) -> str:
    from trustlab.report import fmt

    return fmt(v, digits)


def _pct(v: Any) -> str:
    return "—" if v is None else f"{100 * v:.0f}%"


def _p(v: Any) -> str:
    return "—" if v is None else f"{v:.2g}"


CAPTIONS = {
    "training_curve": "Embedding: the fingerprint loss (log scale, left) and the share of keys answered exactly (right, "
                      "0..1) per epoch; training stops once every key is answered.",
    "p_vs_M": "log10 p-value of the ownership test against the number of keys queried: the fingerprinted model's line "
              "falls below the dashed α line after a few keys; models that never saw the fingerprints stay near 0.",
    "base_prob": "How likely the base model already was to produce each fingerprint response (its first token): "
                 "values near 0 mean a match is evidence, not chance.",
    "merge_alpha": "Share of fingerprints still answered after merging the fingerprinted model with another at weight "
                   "α (left = less of ours).",
    "wrappers": "Exact-match accuracy when the keys are wrapped in other chat templates; the dashed line is no wrapper.",
    "temperature": "Hit rate of the fingerprints when sampling at each temperature (mean over samples, and any-of-n).",
}


def _sequential(r: dict[str, Any]) -> bool:
    return r.get("mode") == "sequential"


def rests_on(r: dict[str, Any]) -> str:
    """What one verdict rests on, in words: the test behind it, or why it could not decide (INCONCLUSIVE)."""
    decision = r.get("decision")
    if _sequential(r):
        what = (f"anytime-valid p = 1/max E (E = {_f(r.get('e_value'))}, needs ≥ 1/α); "
                f"{r.get('keys_revealed')} of {r.get('available')} keys revealed")
        return (f"INCONCLUSIVE: {r.get('reason')}" if decision == "INCONCLUSIVE"
                else f"{what}; stopped: {r.get('reason')}" if r.get("reason") else what)
    M, dropped = r.get("M"), r.get("dropped")
    n_dropped = len(dropped) if isinstance(dropped, list) else (dropped or 0)
    null = r.get("null") or (f"p0 ≤ {_f(r.get('p0'))}" if r.get("p0") is not None else "per-key nulls")
    what = f"exact Poisson-binomial tail P[S ≥ m] over the {M} answered keys' nulls ({null})"
    if n_dropped:
        what += f"; {n_dropped} key(s) dropped (null reaches 1)"
    if decision == "INCONCLUSIVE":
        return ("INCONCLUSIVE: no answered key is evidence (every null reaches 1)" if not M else
                f"INCONCLUSIVE: even {M}/{M} hits could not reach α under these nulls ({null})"
                + (f"; {n_dropped} key(s) dropped" if n_dropped else ""))
    return what


def verify_caption(rows: list[dict[str, Any]]) -> str:
    """The verify table's caption: the decision rule of each mode present, and INCONCLUSIVE when a row is."""
    parts = []
    if any(not _sequential(r) for r in rows):
        parts.append("fixed: OWNED iff the exact Poisson-binomial tail over the answered keys' per-key nulls is "
                     "≤ α")
    if any(_sequential(r) for r in rows):
        parts.append("sequential: OWNED as soon as the test martingale E reaches 1/α (p = 1/max E, anytime-valid)")
    if any(r.get("decision") == "INCONCLUSIVE" for r in rows):
        parts.append("INCONCLUSIVE: even every key hitting could not reach α, so no verdict is claimed")
    return "Ownership verdicts of one fingerprinted model (one seed; " + "; ".join(parts) + ")"


def verify_notes(rows: list[dict[str, Any]]) -> str:
    """The verify table's legend, for the modes present."""
    note = ("match: how a response is compared (exact tokens or lenient text). m / M: keys answered with the "
            "fingerprint response of M answered. ")
    if any(not _sequential(r) for r in rows):
        note += ("p0: the largest per-key null rate, the chance a model that never saw the fingerprints matches one "
                 "key (each key's own rate: how many of its candidates one output can match, over k). Fixed-mode "
                 "p-value: the exact Poisson-binomial tail P[S ≥ m], S a sum of independent Bernoulli(p0_i); "
                 "Hoeffding: a distribution-free upper bound on it. ")
    if any(_sequential(r) for r in rows):
        note += ("Sequential-mode p-value: min(1, 1/max E) of the test martingale over the revealed keys' nulls, "
                 "valid at whatever key the test stopped.")
    return note.strip()


def verify_blocks(rows: list[dict[str, Any]]) -> list:
    from trustlab.report import Bullets, Table

    def p0(r):
        return "per key" if _sequential(r) else _f(r.get("p0"))

    table = Table(("suspect", "mode", "match", "m / M", "p0", "p-value", "Hoeffding", "alpha", "verdict", "rests on"),
                  [(r.get("target") or r.get("model") or r.get("label"), r.get("mode") or "fixed", r.get("match"),
                    f"{r.get('m')}/{r.get('M')}", p0(r), _p(r.get("p_value")),
                    "—" if _sequential(r) else _p(r.get("hoeffding_bound")), _f(r.get("alpha")), r.get("decision"),
                    rests_on(r))
                   for r in rows],
                  caption=verify_caption(rows),
                  notes=(verify_notes(rows),))
    notes = []
    for r in rows:
        if r.get("unanswered"):
            notes.append(f"{r.get('target')}: {len(r['unanswered'])} of {r.get('queried') or r.get('keys_revealed')} "
                         f"keys unanswered (ids {', '.join(map(str, r['unanswered'][:10]))}); the verdict covers the "
                         "answered keys")
        if r.get("heuristic_null"):
            notes.append(f"{r.get('target')}: the null rate p0 is heuristic (strategy english)")
        if r.get("bound_assumes_exact") is False:
            notes.append(f"{r.get('target')}: lenient text matching; each key's null counts the candidates one "
                         "output can match under it")
        if r.get("ledger_warning"):
            notes.append(f"{r.get('target')}: {r['ledger_warning']}")
    return [table] + ([Bullets(notes)] if notes else [])


def robustness_blocks(r: dict[str, Any]) -> list:
    from trustlab.report import Heading, Table, Text

    blocks: list = []
    c = r.get("clean")
    if c:
        blocks.append(Text(f"Fingerprinted model, no attack: {c['line']}"))
    bp = r.get("base_prob") or {}
    if bp.get("n"):
        blocks.append(Text(f"base_prob over {bp['n']} fingerprints: mean {_f(bp['mean'])}, max {_f(bp['max'])}."))
    u = r.get("utility")
    if u:
        blocks.append(Table(("utility", "base", "fingerprinted", "ratio F/B"),
                            [("held-out perplexity", _f(u["ppl_base"]), _f(u["ppl_fp"]), _f(u["ppl_ratio"], 4)),
                             (f"trivia MC accuracy ({u['mc_items']} items)", _f(u["mc_base"]), _f(u["mc_fp"]),
                              _f(u["mc_ratio"], 4))],
                            caption="; ".join(f"{k}: {v}" for k, v in (r.get("sources") or {}).items())))
    rows = []

    def row(name, m, extra=""):
        rows.append((name, _f(m.get("exact")), _f(m.get("lenient")), _f(m.get("persistence")),
                     f"{m.get('m')}/{m.get('M')}", _p(m.get("p_value")), m.get("decision"), extra))

    if c:
        row("none", c)
    for e in (r.get("sft") or {}).get("epochs", []):
        row(f"benign SFT epoch {e['epoch']} ({e['steps']} steps, lr {r['sft']['lr']:g})", e,
            f"perplexity x{_f(e.get('ppl_ratio_base'), 4)} of the base" if e.get("ppl_ratio_base") else "")
    for a in (r.get("merge") or {}).get("alphas", []):
        row(f"linear merge alpha {a['alpha']:g} with {r['merge']['with']}", a)
    w = r.get("wrappers")
    if w:
        for t in w["templates"]:
            row(f"wrapper {t['template']}", t)
    for t in (r.get("temperature") or {}).get("temperatures", []):
        row(f"temperature {t['temperature']:g} ({t['samples']} samples)", t,
            f"mean {_f(t.get('mean_hit_rate'))}, any-of-n {_f(t.get('any_hit_rate'))}")
    for q in (r.get("quant") or {}).get("methods", []):
        row(f"int8 quantization ({q['method'].replace('_', '-')})", q["after"], f"perplexity x{_f(q['ppl_ratio'], 4)}")
    for a in (r.get("suppress") or {}).get("attacks", []):
        row(a["attack"], a, f"attack success {_f(a['attack_success'])}, perplexity x{_f(a['ppl_ratio'], 4)}")
    if rows:
        blocks.append(Table(("attack / transform", "exact", "lenient", "persistence", "m / M", "p-value", "verdict",
                             "notes"), rows, caption="Robustness (accuracy of the fingerprinted model after each)"))
    fpr = {k: v for k, v in (r.get("fpr") or {}).items() if isinstance(v, dict)}
    if fpr:
        blocks.append(Heading("False positives", 3))
        blocks.append(Table(("model", "m / M", "p-value", "verdict"),
                            [(v.get("model", k), f"{v['m']}/{v['M']}", _p(v["p_value"]), v["decision"])
                             for k, v in fpr.items()], caption="Models that never saw the fingerprints"))
    return blocks


def embed_blocks(e: dict[str, Any]) -> list:
    from trustlab.report import Table

    s = e.get("settings", {})
    return [Table(("epochs", "converged", "exact match", "fp loss", "stop", "lr", "lambda_wa", "beta_dm", "LoRA",
                   "seconds"),
                  [(e.get("epochs"), e.get("converged"), _f(e.get("accuracy")), _f(e.get("fp_loss")),
                    e.get("stop_reason"), _f(s.get("lr")), _f(s.get("lambda_wa")), _f(s.get("beta_dm")),
                    s.get("lora"), _f(e.get("seconds")))], caption="Embedding")]


def summary_text(results: dict) -> str:
    """What the run shows, in words: the ownership verdict on the fingerprinted model and on models that never saw
    the fingerprints, which attacks it survives, and what embedding cost in utility."""
    ver = results.get("verify")
    ver = [ver] if isinstance(ver, dict) else (ver or [])
    rob = results.get("robustness") or {}
    out = []
    name = lambda r: r.get("target") or r.get("model") or r.get("label") or "the suspect model"  # noqa: E731
    if ver:
        r = ver[0]
        p = (f"anytime-valid p ≤ {_p(r.get('p_value'))} after {r.get('keys_revealed')} keys revealed"
             if _sequential(r) else f"p = {_p(r.get('p_value'))}")
        why = f" ({rests_on(r).removeprefix('INCONCLUSIVE: ')})" if r.get("decision") == "INCONCLUSIVE" else ""
        out.append(f"`{name(r)}` answers {r.get('m')} of {r.get('M')} fingerprint keys with the fingerprint response: "
                   f"{p} against α = {_f(r.get('alpha'))}, so the verdict is "
                   f"**{r.get('decision')}**{why}" + ("; models that never saw the fingerprints: " + ", ".join(
                       f"`{name(x)}` {x.get('m')}/{x.get('M')} ({x.get('decision')})" for x in ver[1:])
                       if len(ver) > 1 else "") + ".")
    attacked = []
    for e in (rob.get("sft") or {}).get("epochs", [])[-1:]:
        attacked.append((f"benign fine-tuning ({e['steps']} steps)", e))
    for a in (rob.get("merge") or {}).get("alphas", []):
        attacked.append((f"merging at α = {a['alpha']:g}", a))
    for q in (rob.get("quant") or {}).get("methods", []):
        attacked.append((f"int8 quantization ({q['method']})", q.get("after") or {}))
    for a in (rob.get("suppress") or {}).get("attacks", []):
        attacked.append((str(a.get("attack")), a))
    if attacked:
        kept = sum(m.get("decision") == "OWNED" for _, m in attacked)
        out.append(("After " + "; ".join(f"{n} {m.get('m')}/{m.get('M')} keys still match ({m.get('decision')})"
                                         for n, m in attacked))
                   + (f": the verdict survives {kept} of {len(attacked)} transformations." if len(attacked) > 1 else "."))
    emb = results.get("embed") or (results if results.get("verb") == "embed" else None)
    if isinstance(emb, dict) and emb.get("epochs") is not None:
        out.append(f"Embedding answered {_pct(emb.get('accuracy'))} of the keys exactly after {emb.get('epochs')} "
                   f"epochs (stopped by {emb.get('stop_reason')}).")
    u = rob.get("utility")
    if u:
        out.append(f"Its cost in utility: held-out perplexity ×{_f(u['ppl_ratio'])} of the base model, trivia "
                   f"accuracy {_f(u['mc_fp'])} against {_f(u['mc_base'])}.")
    if results.get("embed") is not None or results.get("verb") == "embed":
        out.append(f"The model was fingerprinted once (one seed: {(results.get('config') or {}).get('seed', '?')}); "
                   "the p-values hold for this model, not for every embedding run.")
    if not out:
        return "This run holds no verdict or robustness figures; its settings follow."
    return " ".join(out)


def report_section(results: dict, run_dir: Path) -> list:
    from trustlab.report import Bullets, Heading, Image, Summary, Table, Text

    from .stats import ATTACK_CAVEAT

    verb = results.get("verb", "")
    blocks: list = [Heading(f"fingerprint {verb}".strip()), Summary(summary_text(results))]
    caveat = results.get("caveat") or ATTACK_CAVEAT
    cfg = results.get("config") or {}
    if cfg:
        keys = [k for k in ("model", "fingerprints", "fingerprinted", "base", "endpoint", "served_model", "match",
                            "strategy", "num_fingerprints", "lr", "lambda_wa", "beta_dm", "alpha") if cfg.get(k)
                is not None]
        if keys:
            blocks.append(Table(("setting", "value"), [(k, _f(cfg[k])) for k in keys], caption="Configuration"))
    emb = results.get("embed") or (results if verb == "embed" else None)
    if isinstance(emb, dict) and "epochs" in emb:
        blocks += embed_blocks(emb)
    ver = results.get("verify")
    if isinstance(ver, dict):
        ver = [ver]
    if ver:
        blocks += verify_blocks(ver)
    rob = results.get("robustness")
    if isinstance(rob, dict) and rob:
        blocks += robustness_blocks(rob)
    if verb == "generate" and "metrics" in results:
        m = results["metrics"]
        blocks.append(Bullets([f"{k}: {_f(v)}" for k, v in m.items() if not isinstance(v, (dict, list))]))
    blocks.append(Text("**Caveat:** " + caveat))
    blocks += [Image(a, CAPTIONS.get(Path(a).stem, Path(a).stem.replace("_", " "))) for a in results.get("artifacts", [])
               if str(a).endswith(".png")]
    return blocks
