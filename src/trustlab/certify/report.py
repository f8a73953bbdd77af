"""The certify section of a trustlab report: caveat, setup, headline table, effects, defences, budget, plots."""

from __future__ import annotations

from pathlib import Path

from . import RECONSTRUCTED as RECON


def _mmm(v, digits: int = 3) -> str:
    """mean [min-max] for aggregated leaves; plain value otherwise."""
    if isinstance(v, dict) and "mean" in v:
        if abs(v["max"] - v["min"]) < 1e-12:
            return f"{v['mean']:.{digits}f}"
        return f"{v['mean']:.{digits}f} [{v['min']:.{digits}f}–{v['max']:.{digits}f}]"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return "—" if v is None else str(v)


def report_section(results: dict, run_dir: Path) -> list:
    from trustlab.report import Bullets, Heading, Image, Table, Text

    if results.get("verb") == "sweep":
        return [Heading("certify sweep"), Text(results.get("caveat", "")),
                Table(("cell", "folder"), [(str(c["values"]), c["dir"]) for c in results.get("cells", [])]),
                *[Image(a, Path(a).stem) for a in results.get("artifacts", []) if a.endswith(".png")]]
    if results.get("verb") == "eval":
        rows = [(which.replace("_inputs", ""), _mmm(v.get("n")), _mmm(v.get("clean_acc")), _mmm(v.get("abstain_rate")),
                 _mmm(v.get("mean_radius"))) for which, v in (results.get("by_inputs") or {}).items()]
        return [Heading(f"certify eval ({results.get('certifier')})"), Text(RECON),
                Table(("inputs", "n", "clean acc", "abstain rate", "mean radius"), rows)]
    if results.get("verb") == "train":
        metrics = results.get("metrics") or {}
        return [Heading("certify train"), Text(RECON),
                Table(("metric", "value"), [(k, _mmm(v)) for k, v in metrics.items()])]
    summ = results.get("summary", {})
    certs = summ.get("certifiers", {})
    ds = results.get("dataset", {})
    blocks = [Heading("certify: availability attacks on certifiers"),
              Text("**Caveat:** " + results.get("caveat", "")),
              Text(f"Setup: dataset `{ds.get('name')}` ({ds.get('n_train')} train / {ds.get('n_test')} test, "
                   f"K = {ds.get('K')}, {ds.get('n_poison')} poisons for attack A), seeds {results.get('seeds')}, "
                   f"trigger {results.get('trigger', {}).get('kind')} size {results.get('trigger', {}).get('size')} "
                   f"at {results.get('trigger', {}).get('position')}. Figures are mean [min–max] over seeds; "
                   "they are this run's, not the paper's.")]
    rows = []
    for track, by_cert in certs.items():
        for cert, e in by_cert.items():
            for m, s in e["by_model"].items():
                ci, ti = s["clean_inputs"], s["triggered_inputs"]
                ca0 = next(iter(ci["certified_acc"].values()), None) if cert.startswith("smoothing") else \
                    ci["certified_acc"].get(str(results.get("certifiers", {}).get(track, {}).get(cert, {})
                                                .get("params", {}).get("eps")))
                rows.append((track, cert, m, _mmm(ci["clean_acc"]), _mmm(ci["abstain_rate"]),
                             _mmm(ti["abstain_rate"]), _mmm(ca0)))
    blocks.append(Table(("track", "certifier", "model", "clean acc", "abstain on x", "abstain on T(x)",
                         "certified acc on x"), rows,
                        caption="Headline: the clean model's row is the baseline for the same triggered inputs"))
    eff_rows = []
    for track, by_cert in certs.items():
        for cert, e in by_cert.items():
            for a, eff in e.get("attack_effect", {}).items():
                eff_rows.append((track, cert, a, _mmm(eff["triggered_abstain_delta"]),
                                 _mmm(eff["trigger_only_effect"]), _mmm(eff["clean_acc_delta"]),
                                 _mmm(eff["clean_abstain_delta"]), _mmm(eff["flip_rate"])))
    if eff_rows:
        blocks.append(Table(("track", "certifier", "attack", "effect (Δ triggered abstain vs clean model)",
                             "trigger-only effect (clean model, T(x) vs x)", "Δ clean acc", "Δ clean abstain",
                             "flip rate"), eff_rows, caption="Attack effect and stealth"))
    drows = []
    for d, by_attack in summ.get("defences", {}).items():
        for a, by_track in by_attack.items():
            for t, by_cert in by_track.items():
                for c, row in by_cert.items():
                    if not _val(row.get("applicable")):
                        drows.append((d, a, t, c, "—", "—", "—", "—", "not_applicable"))
                        continue
                    drows.append((d + (f" ({row.get('tail')})" if d == "strip" else ""), a, t, c,
                                  _mmm(row.get("triggered_fallback_before")), _mmm(row.get("triggered_fallback_after")),
                                  _mmm(row.get("clean_fallback_after")), _mmm(row.get("mitigated")),
                                  _verdicts(row.get("verdict"))))
    if drows:
        blocks.append(Table(("defence", "attack", "track", "certifier", "T(x) fallback before", "after",
                             "clean fallback after", "mitigated", "verdict"), drows,
                            caption="Defences (STRIP-flagged inputs still go to the fallback)"))
    notes = []
    for track, by_cert in results.get("certifiers", {}).items():
        p = by_cert.get("smoothing", {}).get("params")
        if p:
            notes.append(f"{track}: sigma {p['sigma']:g}, n0 {p['n0']:g}, N {p['n']:g}, alpha {p['alpha']:g}: max "
                         f"certifiable radius {p['max_radius']:.3f}, N minimum {p['n_min']:g}, PREDICT minimum "
                         f"{p['n_predict_min']:g}"
                         + (" — N TOO SMALL" if p.get("n_too_small") else "")
                         + (f"; radii {p['radii_unreachable']} unreachable" if p.get("radii_unreachable") else ""))
    if notes:
        blocks += [Heading("Smoothing budget", 3), Bullets(notes)]
    blocks += [Image(a, Path(a).stem.replace("_", " ")) for a in results.get("artifacts", []) if a.endswith(".png")]
    return blocks


def _val(v):
    return v if not isinstance(v, list) else any(v)


def _verdicts(v):
    return v if not isinstance(v, list) else "/".join(sorted(set(map(str, v))))
