"""The certify section of a trustlab report: a first paragraph saying what the run shows, the caveat, setup, the
headline table, attack effects, defences (with the attack's own effect next to "mitigated"), certification cost,
the smoothing budget in words, and captioned plots."""

from __future__ import annotations

from pathlib import Path

from . import RECONSTRUCTED as RECON

MIN_GAP = 0.05  # "mitigated" is shown only when the attack moved the triggered fallback by at least this much
ATTACK_NAMES = {"label-noise": "attack A (label noise)", "max-entropy": "attack B (max-entropy)",
                "label-noise-untriggered": "attack A's poisons without the trigger (baseline)"}
CERT_NAMES = {"smoothing": "randomized smoothing", "smoothing-adaptive": "adaptive randomized smoothing",
              "ibp": "IBP", "crown-ibp": "CROWN-IBP", "crown": "CROWN", "best": "the best bound"}


def _mean(v):
    """The mean of an aggregated leaf {mean, min, max}; the value itself otherwise."""
    return v.get("mean") if isinstance(v, dict) and "mean" in v else v


def _mmm(v, digits: int = 3) -> str:
    """mean [min-max] for aggregated leaves; plain value otherwise."""
    if isinstance(v, dict) and "mean" in v:
        if v.get("max") is None or abs(v["max"] - v["min"]) < 1e-12:
            return f"{v['mean']:.{digits}f}"
        return f"{v['mean']:.{digits}f} [{v['min']:.{digits}f}–{v['max']:.{digits}f}]"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return "—" if v is None else str(v)


def _attack(a: str) -> str:
    return ATTACK_NAMES.get(a, f"attack {a}")


def _cert(c: str) -> str:
    return CERT_NAMES.get(c, c)


def summary_text(results: dict) -> str:
    """The section's first paragraph, from the numbers: per certifier, what the strongest attack does to abstention
    on triggered inputs against the clean model, what it costs in clean accuracy, and whether any defence helps."""
    from trustlab.report import pct, points

    certs = results.get("summary", {}).get("certifiers", {})
    seeds = results.get("seeds") or []
    parts = []
    for track, by_cert in certs.items():
        for cert, e in by_cert.items():
            bm, eff = e.get("by_model", {}), e.get("attack_effect", {})
            real = {a: v for a, v in eff.items() if a in bm and not a.endswith("-untriggered")}
            if "clean" not in bm or not real:
                continue
            ref = _mean(bm["clean"]["triggered_inputs"]["abstain_rate"])
            best = max(real, key=lambda a: _mean(real[a]["triggered_abstain_delta"]) or 0.0)
            ab = _mean(bm[best]["triggered_inputs"]["abstain_rate"])
            s = (f"On track `{track}`, {_attack(best)} makes {_cert(cert)} abstain on {pct(ab)} of triggered inputs "
                 f"(the clean model: {pct(ref)}, so {points(ab - ref)}) while clean accuracy moves by "
                 f"{points(_mean(real[best]['clean_acc_delta']))}")
            others = [a for a in real if a != best]
            if others:
                s += "; " + ", ".join(f"{_attack(a)} adds {points(_mean(real[a]['triggered_abstain_delta']))}"
                                      for a in others)
            infl = real[best].get("cost_inflation")
            if infl:
                s += (f"; certifying a triggered input costs the attacked model {_mean(infl['mean']):.2f}× the clean "
                      f"model's mean forwards")
            parts.append(s + ".")
    judged, noise = [], 0
    for d, a, t, c, row in _defence_cases(results.get("summary", {})):
        if not _val(row.get("applicable")):
            continue
        if _judgeable(row, certs.get(t, {}).get(c, {})):
            v = row.get("verdict")
            judged.append((d, a, t, c, all(x == "effective" for x in (v if isinstance(v, list) else [v]))))
        else:
            noise += 1
    if judged or noise:
        good = [f"{d} against {_attack(a)} on {t}/{c}" for d, a, t, c, ok in judged if ok]
        s = f"Of {len(judged)} defence × attack × certifier cases where the attack had a measurable effect, "
        s += (f"{len(good)} {'reaches' if len(good) == 1 else 'reach'} the verdict 'effective': {'; '.join(good)}"
              if good else
              "none reaches the verdict 'effective' (it must remove half of the attack's effect at ≤ 2 points of "
              "clean accuracy)")
        parts.append(s + (f"; {noise} more, where the attack's effect is within noise, are not judged." if noise
                          else "."))
    if not parts:
        return "This run recorded no attacked model next to a clean one, so there is no attack effect to report."
    n = len(seeds)
    parts.append(f"These figures come from {'one seed' if n == 1 else f'{n} seeds (mean [min–max])'}"
                 f"{', so a rerun may move them by several points' if n == 1 else ''}.")
    return " ".join(parts)


def report_section(results: dict, run_dir: Path) -> list:
    from trustlab.report import Heading, Summary, Table, Text

    verb = results.get("verb")
    if verb == "sweep":
        cells = results.get("cells", [])
        return [Heading("certify sweep"),
                Summary(f"A sweep of {len(cells)} cells; each plot shows the abstain rate on triggered inputs of every "
                        "model against one swept setting (the others at their first value), the clean model as a "
                        "band. " + (results.get("caveat") or "")),
                Table(("cell", "folder"), [(str(c["values"]), c["dir"]) for c in cells]),
                *_images(results)]
    if verb == "eval":
        by = results.get("by_inputs") or {}
        rows = [(which.replace("_inputs", ""), _mmm(v.get("n")), _mmm(v.get("clean_acc")), _mmm(v.get("abstain_rate")),
                 _mmm(v.get("mean_radius"))) for which, v in by.items()]
        words = "; ".join(f"on {w.replace('_inputs', '')} inputs it is correct on {_pct(v.get('clean_acc'))} and "
                          f"abstains on {_pct(v.get('abstain_rate'))}" for w, v in by.items())
        return [Heading(f"certify eval ({results.get('certifier')})"),
                Summary(f"{_cert(str(results.get('certifier')))} on this model: {words or 'no inputs certified'}."),
                Text(RECON),
                Table(("inputs", "n", "clean acc", "abstain rate", "mean radius"), rows,
                      notes=("clean acc: share of inputs where the certifier's prediction is the true label; abstain "
                             "rate: share where it returns no prediction (the fallback); mean radius: mean certified "
                             "radius, 0 for abstentions.",))]
    if verb == "train":
        metrics = results.get("metrics") or {}
        acc = metrics.get("test_acc", metrics.get("clean_acc"))
        return [Heading("certify train"),
                Summary("A model trained for certification" + (f": test accuracy {_pct(acc)}." if acc is not None
                                                                else "; its training metrics follow.")),
                Text(RECON), Table(("metric", "value"), [(k, _mmm(v)) for k, v in metrics.items()])]
    return _experiment_section(results)


def _pct(v) -> str:
    from trustlab.report import pct

    return pct(_mean(v))


def _experiment_section(results: dict) -> list:
    from trustlab.report import Heading, Summary, Table, Text, seeds_note

    summ = results.get("summary", {})
    certs = summ.get("certifiers", {})
    ds = results.get("dataset", {})
    one = seeds_note(results.get("seeds"))
    trig = results.get("trigger", {})
    blocks = [Heading("certify: availability attacks on certifiers"), Summary(summary_text(results)),
              Text("**Caveat:** " + results.get("caveat", "")),
              Text(f"Setup: dataset `{ds.get('name')}` ({ds.get('n_train')} train / {ds.get('n_test')} test, "
                   f"K = {ds.get('K')}, {ds.get('n_poison')} poisons for attack A), seeds {results.get('seeds')}, "
                   f"trigger: a {trig.get('kind')} of {trig.get('size')} pixels at {trig.get('position')}. x is a clean "
                   "test input, T(x) the same input with the trigger. Figures are mean [min–max] over seeds; "
                   "they are this run's, not the paper's.")]
    rows = []
    for track, by_cert in certs.items():
        for cert, e in by_cert.items():
            for m, s in e["by_model"].items():
                ci, ti = s["clean_inputs"], s["triggered_inputs"]
                r0 = _first_radius(results, track, cert, ci)
                rows.append((track, cert, m, _mmm(ci["clean_acc"]), _mmm(ci["abstain_rate"]),
                             _mmm(ti["abstain_rate"]), _mmm(r0)))
    blocks.append(Table(("track", "certifier", "model", "clean acc", "abstain on x", "abstain on T(x)",
                         "certified acc on x"), rows,
                        caption="Headline: every model on clean inputs x and triggered inputs T(x)",
                        notes=("clean acc: the certifier's prediction equals the label; abstain: the certifier returns "
                               "no prediction and the input goes to the fallback; certified acc: correct *and* "
                               "certified at the smallest radius (smoothing) or at the training ε (bounds). The "
                               "clean model's row is the baseline for the same triggered inputs.",)))
    eff_rows = []
    for track, by_cert in certs.items():
        for cert, e in by_cert.items():
            for a, eff in e.get("attack_effect", {}).items():
                eff_rows.append((track, cert, a, _mmm(eff["triggered_abstain_delta"]),
                                 _mmm(eff["trigger_only_effect"]), _mmm(eff["clean_acc_delta"]),
                                 _mmm(eff["clean_abstain_delta"]), _mmm(eff["flip_rate"])))
    if eff_rows:
        blocks.append(Table(("track", "certifier", "attack", "Δ abstain on T(x)", "trigger-only effect",
                             "Δ clean acc", "Δ abstain on x", "flip rate"), eff_rows,
                            caption="Attack effect (what the poisoning adds) and stealth (what it costs on clean "
                                    "inputs); differences are shares, 0.10 = 10 points",
                            notes=("Δ abstain on T(x): attacked model minus clean model, on the same triggered inputs "
                                   "(the attack's effect). Trigger-only effect: the clean model's abstain on T(x) "
                                   "minus on x (what the patch alone does, no poisoning). Δ clean acc and Δ abstain "
                                   "on x: attacked minus clean model on clean inputs (near 0 = stealthy). Flip rate: "
                                   "share of inputs the clean model certifies on T(x) that the attacked model no "
                                   "longer certifies.",)))
    blocks += _defence_blocks(summ, certs, one)
    blocks += _cost_blocks(certs)
    blocks += _budget_blocks(results)
    blocks += _images(results)
    return blocks


def _first_radius(results, track, cert, ci):
    ca = ci.get("certified_acc", {})
    if cert.startswith("smoothing"):
        return next(iter(ca.values()), None)
    eps = results.get("certifiers", {}).get(track, {}).get(cert, {}).get("params", {}).get("eps")
    return ca.get(str(eps))


def _defence_cases(summ: dict):
    """(defence, attack, track, certifier, row) for every defence row of the summary."""
    for d, by_attack in summ.get("defences", {}).items():
        for a, by_track in by_attack.items():
            for t, by_cert in by_track.items():
                for c, row in by_cert.items():
                    yield d, a, t, c, row


def _judgeable(row: dict, cert_summary: dict) -> bool:
    """A defence row whose 'mitigated' means something: the attack moved the triggered fallback beyond noise."""
    clean = cert_summary.get("by_model", {}).get("clean", {}).get("triggered_inputs", {})
    ref, before = _mean(clean.get("abstain_rate")), _mean(row.get("triggered_fallback_before"))
    if ref is None or before is None or _mean(row.get("mitigated")) is None:
        return False
    return meaningful_gap(before, ref, _mean(clean.get("n")))


def _defence_blocks(summ: dict, certs: dict, one: str) -> list:
    from trustlab.report import Table

    drows, small = [], False
    for d, a, t, c, row in _defence_cases(summ):
        name = d + (f" ({row.get('tail')} tail)" if d == "strip" and row.get("tail") else "")
        if not _val(row.get("applicable")):
            drows.append((name, a, t, c, "—", "—", "—", "—", "—", "—", "not applicable"))
            continue
        ref = _mean(certs.get(t, {}).get(c, {}).get("by_model", {}).get("clean", {})
                    .get("triggered_inputs", {}).get("abstain_rate"))
        before = _mean(row.get("triggered_fallback_before"))
        gap = None if ref is None or before is None else before - ref
        if _judgeable(row, certs.get(t, {}).get(c, {})):
            mit = _mean(row["mitigated"])
            mit_s, verdict = f"{100 * mit:.0f}%" + (" (worse)" if mit < 0 else ""), _verdicts(row.get("verdict")) + one
        else:
            mit_s, verdict, small = "—¹", "—¹", True
        drows.append((name, a, t, c, _mmm(row.get("triggered_fallback_before")),
                      _mmm(row.get("triggered_fallback_after")), "—" if ref is None else f"{ref:.3f}",
                      "—" if gap is None else f"{gap:+.3f}", mit_s, _mmm(row.get("clean_acc_cost")), verdict))
    if not drows:
        return []
    notes = ["Fallback on T(x): share of triggered inputs that get no certified prediction (abstain, or flagged by "
             "STRIP). Reference: the clean model's fallback on the same T(x). Attack's effect = before − reference. "
             "Mitigated = (before − after) / (before − reference): the share of the attack's effect the defence "
             "removes (100% = back to the clean model; negative = the defence made it worse). Verdict 'effective' "
             "needs mitigated ≥ 50%, ≤ 2 points of clean-accuracy cost and ≤ 5 points more fallback on x."]
    if small:
        notes.append(f"¹ The attack's own effect here is under {100 * MIN_GAP:.0f} points or within two standard "
                     "errors of the sampling noise of two abstain rates on these inputs, so the ratio divides by noise "
                     "and means nothing; neither it nor a verdict is shown.")
    return [Table(("defence", "attack", "track", "certifier", "fallback on T(x) before", "after", "reference",
                   "attack's effect", "mitigated", "clean acc cost", "verdict"), drows,
                  caption="Defences: how much of each attack's effect they remove", notes=notes)]


def meaningful_gap(before: float, ref: float, n: float | None) -> bool:
    """Whether the attack's effect before − ref (two fallback shares on n inputs each) is large enough to divide by:
    at least MIN_GAP and more than two standard errors sqrt(b(1−b)/n + r(1−r)/n) of its sampling noise."""
    gap = before - ref
    if gap < MIN_GAP:
        return False
    if not n:
        return True
    se = (before * (1 - before) / n + ref * (1 - ref) / n) ** 0.5
    return gap > 2 * se


def _cost_blocks(certs: dict) -> list:
    """Forwards per input of the adaptive certifier, per model and inputs, with the attack's cost inflation."""
    from trustlab.report import Table

    rows = []
    for track, by_cert in certs.items():
        for cert, e in by_cert.items():
            eff = e.get("attack_effect", {})
            for m, s in e.get("by_model", {}).items():
                for which in ("clean_inputs", "triggered_inputs"):
                    cost = s.get(which, {}).get("cost")
                    if not cost or not cost.get("n"):
                        continue
                    infl = eff.get(m, {}).get("cost_inflation") if which == "triggered_inputs" else None
                    rows.append((f"{track}/{cert}", m, "T(x)" if which == "triggered_inputs" else "x",
                                 _num(cost.get("forwards_mean")), _num(cost.get("forwards_p95")),
                                 _num(cost.get("forwards_max")),
                                 "—" if not infl else f"{_mean(infl['mean']):.2f}× / {_mean(infl['p95']):.2f}×",
                                 ", ".join(f"{k} {100 * _mean(v):.0f}%" for k, v in (cost.get("stops") or {}).items())))
    if not rows:
        return []
    return [Table(("certifier", "model", "inputs", "mean forwards", "p95 forwards", "max", "inflation mean / p95",
                   "stopped by"), rows, caption="Certification cost: base-model forward passes per input",
                  notes=("The adaptive certifier stops drawing noise as soon as it can certify or abstain, so an attack "
                         "can also make certification slower. Inflation: the attacked model's mean (p95) forwards on "
                         "triggered inputs over the clean model's on the same inputs (1.00× = no extra cost). Stopped "
                         "by: share of inputs ending in a certificate, an early abstention, or the budget N.",))]


def _num(v) -> str:
    v = _mean(v)
    return "—" if v is None else f"{v:,.0f}"


def _budget_blocks(results: dict) -> list:
    from trustlab.report import Bullets, Heading

    notes = []
    for track, by_cert in results.get("certifiers", {}).items():
        for cert in ("smoothing", "smoothing-adaptive"):
            p = by_cert.get(cert, {}).get("params")
            if not p:
                continue
            s = (f"{track} / {cert}: σ = {p['sigma']:g}, N = {p['n']:g} noise draws, α = {p['alpha']:g}. Even if all N "
                 f"draws agree, no radius beyond σ·Φ⁻¹(α^(1/N)) = **{p['max_radius']:.3f}** can be certified (the budget "
                 f"limit)")
            if p.get("radii_unreachable"):
                s += (f", so certified accuracy at r = {', '.join(f'{r:g}' for r in p['radii_unreachable'])} is 0 by "
                      "construction, not because of the attack")
            if cert == "smoothing-adaptive" and p.get("target_radius") is not None:
                s += f"; the adaptive certifier certifies at r = {p['target_radius']:g} only"
            if p.get("n_too_small"):
                s += f". N is below the minimum {p['n_min']:g}: nothing can be certified"
            notes.append(s + ".")
    return [Heading("Smoothing budget", 3), Bullets(notes)] if notes else []


CAPTIONS = {
    "certified_acc": "Certified accuracy against the radius (ε for bounds): one hue per model, solid on clean inputs "
                     "x, dashed on triggered inputs T(x). Look at the gap between a dashed attacked curve and the "
                     "dashed clean-model curve. The dotted line is the budget limit σ·Φ⁻¹(α^(1/N)) (smoothing), and "
                     "× marks radii beyond it, where every curve is 0 by construction.",
    "abstain": "Abstain rate per model: light bar on clean inputs x, dark bar on triggered inputs T(x). A tall dark bar "
               "next to a short light one is the attack working while staying stealthy.",
    "hist": "Distribution of the certificate's score on triggered inputs (first seed); left of the black line the "
            "certifier abstains. An attacked model's mass piling up left of the line is the attack.",
    "cost": "Mean base-model forwards per input (bars; the dot marks p95), clean inputs x light and triggered inputs "
            "T(x) dark, per model. A dark bar above the clean model's is an attack that also slows certification.",
}


def _caption(path: str) -> str:
    stem = Path(path).stem
    if stem == "defences":
        return ("Fallback on triggered inputs before (light) and after (dark) each defence; the black tick is the "
                "clean model's fallback on the same inputs. A defence works where the dark bar ends near the tick.")
    if stem == "trigger_examples":
        return "Four test inputs x (top) and the same inputs with the trigger T(x) (bottom): the patch the attacks use."
    if stem.startswith("sweep_"):
        return (f"Abstain rate on triggered inputs as {stem[6:].replace('_', '.')} varies; the shaded band is the "
                "clean model (min–max over seeds).")
    for key, text in CAPTIONS.items():
        if stem.endswith("_" + key):
            track_cert = stem[: -len(key) - 1].replace("_", " / ", 1)
            return f"{track_cert}: {text}"
    return stem.replace("_", " ")


def _images(results: dict) -> list:
    from trustlab.report import Image

    pngs = [str(a) for a in results.get("artifacts", []) if str(a).endswith(".png")]
    kinds = ("certified_acc", "abstain", "cost", "hist")
    groups: dict[str, dict[str, str]] = {}
    first, last = [], []
    for a in pngs:
        stem = Path(a).stem
        kind = next((k for k in kinds if stem.endswith("_" + k)), None)
        if kind:
            groups.setdefault(stem[: -len(kind) - 1], {})[kind] = a
        else:
            (first if stem == "trigger_examples" else last).append(a)
    track_order = [f"{t}_{c}" for t, by in results.get("summary", {}).get("certifiers", {}).items() for c in by]
    keys = sorted(groups, key=lambda g: track_order.index(g) if g in track_order else len(track_order))
    ordered = first + [groups[g][k] for g in keys for k in kinds if k in groups[g]] + last
    return [Image(a, _caption(a)) for a in ordered]


def _val(v):
    return v if not isinstance(v, list) else any(v)


def _verdicts(v):
    return str(v) if not isinstance(v, list) else "/".join(sorted(set(map(str, v))))
