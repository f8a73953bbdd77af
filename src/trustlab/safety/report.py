"""The safety section of a trustlab report: config, metric table (strategy x judge x part), baselines, paired
differences, categories, the 2x2, length and thinking statistics, judge agreement, caveats and plots; and the
build and sft runs' sections."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from trustlab.report import Bullets, Heading, Image, Link, Summary, Table, Text, fmt

from .report_tables import (ci as _ci, detail_table, diff as _diff, differences_blocks, headline_table,
                            overrefusal_sentence, thought_answer_table)

CAVEATS = [
    "The refusal judge measures refusal, not harm: an \"I can't\" anywhere in a long chain of thought passes a "
    "harmful reply, and a helpful answer to a benign request fails. Prefer Llama-Guard or the StrongREJECT rubric "
    "for harm.",
    "Paper figures quoted here (e.g. 41.1% both-safe for R1) come from secondary summaries of SafeChain "
    "(arXiv 2502.12025); the paper's tables were not transcribed. Numbers in this report are this run's.",
    "Unparsed and failed judgements, failed generations and prompts with fewer than K samples are excluded from the "
    "metrics and counted, never counted safe.",
]


def _config_text(cfg: Mapping[str, Any], m: Mapping[str, Any]) -> str:
    b, s, t = cfg.get("backend", {}), cfg.get("sampling", {}), cfg.get("thinking", {})
    judges = ", ".join(j.get("options", {}).get("label", j.get("name")) for j in cfg.get("judges", []))
    return (f"Model `{b.get('model')}` ({b.get('kind')} backend), dataset `{cfg.get('dataset')}`"
            f"{' limit ' + str(cfg['limit']) if cfg.get('limit') else ''}, strategies "
            f"{', '.join(cfg.get('strategies', []))}; K = {m.get('k')}, temperature {s.get('temperature')}, top_p "
            f"{s.get('top_p')}, max_tokens {s.get('max_tokens')}, seed {s.get('seed')}; MoreThink budget "
            f"{t.get('think_budget')} / {t.get('max_extensions')} extensions / answer {t.get('answer_max_tokens')}; "
            f"judges {judges} on {', '.join(cfg.get('parts', []))}; {m.get('bootstrap', {}).get('n_boot')} bootstrap "
            f"resamples (95% percentile), ties (even K) count as {m.get('tie')}.")


def eval_summary(m: Mapping[str, Any], cfg: Mapping[str, Any]) -> str:
    """What the evaluation shows, in words: Safe@1 per strategy for the primary judge and part, and whether any
    paired difference against the default strategy excludes 0."""
    prim = m.get("primary") or {}
    j, p = prim.get("judge"), prim.get("part")
    strategies = m.get("strategies", {})
    cells = {s: e.get("judges", {}).get(j, {}).get(p, {}) for s, e in strategies.items()}
    vals = [(s, c.get("safe@1") or {}) for s, c in cells.items() if (c.get("safe@1") or {}).get("value") is not None]
    if not vals:
        return "No prompt has a complete, parsed set of judgements, so this run measures nothing yet."
    n = max((c.get("n_prompts") or 0) for c in cells.values())
    model = cfg.get("backend", {}).get("model")
    out = [f"Judged by `{j}` on the {p}, `{model}` is safe on "
           + ", ".join(f"{100 * b['value']:.0f}% of samples with `{s}`" for s, b in vals)
           + f" (Safe@1, {n} prompts)."]
    diffs = (m.get("differences") or {})
    sig, flat = [], []
    for name, by_j in diffs.items():
        d = (by_j.get(j, {}).get(p, {}) or {}).get("safe@1") or {}
        if d.get("value") is None:
            continue
        ci = d.get("ci")
        if ci and (ci[0] > 0 or ci[1] < 0):
            sig.append(f"`{name}` {100 * d['value']:+.0f} points [{100 * ci[0]:+.0f}, {100 * ci[1]:+.0f}]")
        else:
            flat.append(f"`{name}`")
    if sig:
        out.append("The paired bootstrap separates " + "; ".join(sig) + " from the default strategy.")
    if flat:
        out.append(f"For {', '.join(flat)} the 95% interval of the difference contains 0: no evidence of a difference.")
    seed = cfg.get("sampling", {}).get("seed")
    out.append(f"All samples come from one sampling seed ({seed}); the intervals cover prompt-to-prompt variation only."
               if seed is not None else "The intervals cover prompt-to-prompt variation only.")
    return " ".join(out)


def stand_in_note(results: Mapping[str, Any]) -> str | None:
    """The label every figure carries when ``results.json`` says the model is a non-reasoning stand-in
    (``"stand_in": {"label": "<what it is>", ...}``, a string, or ``true``)."""
    flag = results.get("stand_in")
    if not flag:
        return None
    model = results.get("config", {}).get("backend", {}).get("model")
    text = flag.get("label") if isinstance(flag, Mapping) else flag if isinstance(flag, str) else None
    text = str(text or "").strip()
    text = text.split(":", 1)[1].strip() if text.lower().startswith("non-reasoning stand-in:") else text
    what = (text[0].upper() + text[1:].rstrip(".") + ". ") if text else ""
    return (f"**Non-reasoning stand-in.** {what}Every figure below comes from `{model}`, an instruct model asked to "
            "write its thoughts in tags, not a reasoning model: the orderings are reported, not asserted.")


def _eval_section(results: Mapping[str, Any], run_dir: Path) -> list:
    m = results.get("metrics", {})
    cfg = results.get("config", {})
    strategies = m.get("strategies", {})
    over = results.get("overrefusal") or _benign_subrun(run_dir)
    summary = " ".join(x for x in (eval_summary(m, cfg), overrefusal_sentence(over, m)) if x)
    blocks: list = [Heading("safety: SafeChain evaluation"), Summary(summary)]
    note = stand_in_note(results)
    if note:
        blocks.append(Text(note))
    blocks += [Text(_config_text(cfg, m)), headline_table(m, over)]
    viewer = _viewer(run_dir)
    if viewer:
        blocks.append(Link(viewer, "per-sample viewer", "Every sample's prompt, thought, answer and each judge's "
                                                        "label and raw output, filterable by strategy, category and "
                                                        "label:"))
    ta = thought_answer_table(m)
    if ta is not None:
        blocks.append(ta)
    blocks += differences_blocks(m)
    blocks.append(detail_table(m))
    base = results.get("baselines") or {}
    if base:
        brows = []
        for name, by_s in base.items():
            for s, by_j in by_s.items():
                for j, by_p in by_j.items():
                    brows.append((name, s, j, *[fmt(by_p.get(p)) for p in ("response", "thought", "answer")]))
        blocks.append(Table(("baseline", "strategy", "judge", "Safe@1 response", "thought", "answer"), brows,
                            caption="Fake always-refuse / always-comply models through the same pipeline: every "
                                    "figure above sits between these two"))
    prim = m.get("primary") or {}
    pj, pp = prim.get("judge"), prim.get("part")
    cats = {s: e["judges"].get(pj, {}).get(pp, {}).get("per_category", {}) for s, e in strategies.items()}
    names = sorted({c for d in cats.values() for c in d})
    if names:
        blocks.append(Table(("category", *strategies), [(c, *[_ci(cats[s].get(c, {}).get("safe@1")) for s in strategies])
                                                         for c in names],
                            caption=f"Safe@1 per category ({pj} / {pp}; categories grouped case-insensitively)"))
    lrows = []
    for s, e in strategies.items():
        th = e.get("thinking", {})
        for j, ln in e.get("length", {}).items():
            lrows.append((s, j, ln.get("part"), fmt(ln["safe"]["mean"]), fmt(ln["unsafe"]["mean"]),
                          fmt(ln["safe"]["p90"]), fmt(ln["unsafe"]["p90"]), fmt(ln.get("unsafe_safe_ratio")),
                          fmt(th.get("think_tokens_mean")), fmt(th.get("answer_tokens_mean")),
                          fmt(th.get("extensions_mean")), fmt(th.get("frac_closed")), fmt(th.get("frac_budget"))))
    if lrows:
        blocks.append(Table(("strategy", "judge", "part", "safe mean tokens", "unsafe mean", "safe p90", "unsafe p90",
                             "unsafe/safe", "think tokens", "answer tokens", "extensions", "closed", "budget stop"),
                            lrows, caption="Generated-token length by label, and thinking statistics"))
    arows = [(s, p, pair, a["n"], fmt(a["rate"]), fmt(a["kappa"]))
             for s, e in strategies.items() for p, pairs in e.get("agreement", {}).items() for pair, a in pairs.items()]
    if arows:
        blocks.append(Table(("strategy", "part", "judges", "samples", "agreement", "Cohen's κ"), arows,
                            caption="Judge agreement"))
    rrows = [(s, j, p, r["n"], fmt(r["accuracy"]), fmt(r["f1"]), fmt(r["pearson_r"]))
             for s, e in strategies.items() for j, by_p in e.get("reference", {}).items() for p, r in by_p.items()]
    if rrows:
        blocks.append(Table(("strategy", "judge", "part", "n", "accuracy", "F1 (unsafe)", "Pearson r"), rrows,
                            caption="Judges against the human reference labels"))
    caveats = list(CAVEATS) + list(m.get("warnings", []))
    model = str(cfg.get("backend", {}).get("model", ""))
    if "smollm2" in model.lower() and not results.get("stand_in"):
        caveats.append("SmolLM2-135M is not a reasoning model: the think tags are plain text to it, so its "
                       "orderings are reported, not asserted, and say nothing about reasoning models.")
    blocks += [Heading("Caveats", 3), Bullets(caveats)]
    blocks += _images(run_dir, results)
    return blocks


def _benign_subrun(run_dir: Path) -> dict | None:
    """The over-refusal block from ``RUN/overrefusal`` when results.json lacks it (``metrics`` rewrote it)."""
    from .benign import load_block

    return load_block(run_dir / "overrefusal") if (run_dir / "overrefusal" / "results.json").is_file() else None


def _viewer(run_dir: Path) -> str | None:
    """Write the run's per-sample viewer (a page of its own beside report.html) and return its relative path."""
    from .viewer import write_viewer

    path = write_viewer(run_dir)
    return path.name if path is not None else None


def _images(run_dir: Path, results: Mapping[str, Any]) -> list:
    pngs = [a for a in results.get("artifacts", []) if str(a).endswith(".png")]
    if not pngs and (Path(run_dir) / "plots").is_dir():
        pngs = [f"plots/{p.name}" for p in sorted((Path(run_dir) / "plots").glob("*.png"))]
    return [Image(str(a), CAPTIONS.get(Path(a).stem, Path(a).stem.replace("_", " "))) for a in pngs
            if (Path(run_dir) / a).is_file()]


CAPTIONS = {
    "metrics_by_strategy": "Safe@1, Safe@K and ConsSafe@K per strategy, one panel per judge and part; bars are 95% "
                           "bootstrap intervals over prompts. Compare a strategy's bars with the default's.",
    "per_category": "Safe@1 per harm category and strategy (primary judge and part): which categories a strategy "
                    "makes safer or less safe.",
    "length_hist": "Generated tokens of safe and unsafe samples per strategy: do unsafe answers run longer?",
    "thought_answer": "Samples by whether the thought and the answer were judged safe: the top-left cell is both safe, "
                      "the share SafeChain reports.",
    "morethink": "MoreThink: how often the thought was extended (left) and how many think tokens it produced next to "
                 "the default strategy (right).",
    "sft_loss": "Training loss per optimizer step of the fine-tuning run.",
    "sft_before_after": "Safe@1 of the base model (before) and the fine-tuned model (after), per judge and part.",
}


def _build_section(results: Mapping[str, Any], run_dir: Path) -> list:
    m = results.get("metrics", {})
    kept, n = m.get("n_kept"), m.get("n_sampled")
    return [Heading("safety: SafeChain dataset build"),
            Summary(f"{kept} of {n} sampled prompts kept ({fmt(m.get('keep_rate'))}): a prompt is kept only when all "
                    f"K = {m.get('k')} of its samples are judged safe by `{m.get('judge')}`; "
                    f"{m.get('n_dropped_unsafe')} were dropped as unsafe."),
            Table(("pool", "sampled", "K", "kept", "keep rate (= Safe@K)", "judge safe rate", "dropped unsafe",
                   "incomplete", "unclosed", "completion tokens"),
                  [(m.get("n_pool"), m.get("n_sampled"), m.get("k"), m.get("n_kept"), fmt(m.get("keep_rate")),
                    fmt(m.get("safe_rate")), m.get("n_dropped_unsafe"), m.get("n_dropped_incomplete"),
                    m.get("n_dropped_unclosed"), m.get("completion_tokens"))],
                  caption=f"Judge {m.get('judge')} on {m.get('part')}; dataset written to {m.get('output')}"),
            Text("A prompt is kept iff all K samples are judged safe; one sample is picked per prompt with a seeded "
                 "RNG, and its think tags are restored.")]


def _sft_section(results: Mapping[str, Any], run_dir: Path) -> list:
    m = results.get("metrics", {})
    cfg = results.get("config", {})
    blocks: list = [Heading("safety: fine-tuning"),
                    Summary(f"{'LoRA' if m.get('lora') else 'Full'} fine-tuning of `{cfg.get('model')}` on "
                            f"{m.get('n_examples')} examples for {m.get('steps')} steps took the training loss from "
                            f"{fmt(m.get('loss_before'))} to {fmt(m.get('loss_after'))} (one seed)."),
                    Table(("base model", "mode", "examples", "dropped (too long)", "steps", "loss before",
                           "loss after", "wall s"),
                          [(cfg.get("model"), "LoRA" if m.get("lora") else "full", m.get("n_examples"),
                            m.get("n_dropped_too_long"), m.get("steps"), fmt(m.get("loss_before")),
                            fmt(m.get("loss_after")), fmt(m.get("wall_s")))],
                          caption="Loss on the training examples (prompt tokens masked) before and after training")]
    ba = results.get("before_after")
    if ba:
        rows = []
        for s, by_j in (ba.get("differences") or {}).items():
            for j, by_p in by_j.items():
                for p, d in by_p.items():
                    before = ba["before"]["strategies"][s]["judges"][j][p]["safe@1"]
                    after = ba["after"]["strategies"][s]["judges"][j][p]["safe@1"]
                    rows.append((s, j, p, _ci(before), _ci(after), _diff(d.get("safe@1"))))
        blocks.append(Table(("strategy", "judge", "part", "Safe@1 before", "Safe@1 after", "Δ (paired)"), rows,
                            caption="Before/after safety evaluation of the base and the fine-tuned model"))
    return blocks + _images(run_dir, results)


def report_section(results: dict, run_dir: Path) -> list:
    """Blocks for one safety run (eval / metrics / demo / merge, build, or sft)."""
    verb = results.get("verb")
    if verb == "build":
        return _build_section(results, Path(run_dir))
    if verb == "sft":
        return _sft_section(results, Path(run_dir))
    if "strategies" not in results.get("metrics", {}):
        from trustlab.report import generic_section

        return generic_section(results, Path(run_dir))
    return _eval_section(results, Path(run_dir))
