"""Plots of the fingerprint lab (PNG into a run's plots/): training curve, merge, wrappers, temperature, p vs M,
base_prob histogram. Each function returns the paths it wrote."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence


def training_curve(history: Sequence[dict[str, Any]], path: Path) -> Path:
    """FP loss (log) and exact-match accuracy per epoch, from ``train_log.jsonl`` records."""
    from trustlab.report.plots import figure, save

    rows = [r for r in history if "epoch" in r and not r.get("final_wa")]
    fig, ax = figure(6, 3.6)
    ep = [r["epoch"] for r in rows]
    ax.semilogy(ep, [max(r["fp_loss"], 1e-8) for r in rows], label="fingerprint loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (log)")
    ax2 = ax.twinx()
    ax2.plot(ep, [r["accuracy"] for r in rows], color="tab:green", label="exact match")
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_ylabel("exact match (share of keys)")
    ax.set_title("embedding")
    return save(fig, path)


def p_vs_m(hit_lists: dict[str, Sequence[bool]], p0: float, alpha: float, path: Path) -> Path:
    """log10 p-value against the number of keys queried M (first M keys), one line per model, alpha dashed."""
    from trustlab.report.plots import figure, legend_outside, save

    from .stats import log10_binom_tail

    fig, ax = figure(6, 3.6)
    styles = ["-", "--", ":", "-."]
    for k, (name, hits) in enumerate(hit_lists.items()):
        ms, ps, m = [], [], 0
        for M, h in enumerate(hits, start=1):
            m += int(h)
            ms.append(M)
            ps.append(log10_binom_tail(m, M, p0))
        ax.plot(ms, ps, ls=styles[k % 4], marker="ox^s"[k % 4], ms=3, label=name)  # overlapping lines stay visible
    ax.axhline(math.log10(alpha), ls="--", color="k", lw=1, label=f"alpha = {alpha:g}")
    ax.set_xlabel("fingerprints queried M")
    ax.set_ylabel("log10 p-value")
    legend_outside(ax)
    return save(fig, path)


def robustness_plots(r: dict[str, Any], folder: Path) -> list[Path]:
    """Every plot the recorded experiments allow."""
    from trustlab.report.plots import figure, legend_outside, save

    out: list[Path] = []
    folder = Path(folder)
    if r.get("merge"):
        rows = r["merge"]["alphas"]
        fig, ax = figure(5, 3.4)
        ax.plot([x["alpha"] for x in rows], [x["exact"] for x in rows], marker="o", label="exact")
        ax.plot([x["alpha"] for x in rows], [x["persistence"] for x in rows], marker="x", ls=":", label="persistence")
        ax.set_xlabel("merge alpha (weight of the fingerprinted model)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.05)
        ax.invert_xaxis()
        legend_outside(ax)
        out.append(save(fig, folder / "merge_alpha.png"))
    if r.get("wrappers"):
        rows = r["wrappers"]["templates"]
        fig, ax = figure(6, 3.4)
        ax.bar(range(len(rows)), [x["exact"] for x in rows], label="wrapped")
        ax.axhline(r["clean"]["exact"], color="k", ls="--", lw=1, label="no wrapper")
        ax.set_xlabel("test template")
        ax.set_ylabel("exact match")
        ax.set_ylim(0, 1.05)
        legend_outside(ax)
        out.append(save(fig, folder / "wrappers.png"))
    if r.get("temperature"):
        rows = r["temperature"]["temperatures"]
        fig, ax = figure(5, 3.4)
        ax.plot([x["temperature"] for x in rows], [x["mean_hit_rate"] for x in rows], marker="o", label="mean")
        ax.plot([x["temperature"] for x in rows], [x["any_hit_rate"] for x in rows], marker="s", label="any of n")
        ax.set_xlabel("temperature")
        ax.set_ylabel("hit rate")
        ax.set_ylim(0, 1.05)
        legend_outside(ax)
        out.append(save(fig, folder / "temperature.png"))
    if r.get("clean"):
        hits = {"fingerprinted": r["clean"]["hits"]}
        for name, f in (r.get("fpr") or {}).items():
            if isinstance(f, dict) and f.get("hits") is not None:
                hits[name] = f["hits"]
        p0 = r.get("p0") or _p0_from(r)
        if p0:
            out.append(p_vs_m(hits, p0, r.get("alpha", 1e-3), folder / "p_vs_M.png"))
    if r.get("suppress_family"):
        out.append(suppression_tradeoff(r["suppress_family"], r.get("topr"), folder / "suppression_tradeoff.png"))
    probs = (r.get("base_prob") or {}).get("values") or []
    if probs:
        fig, ax = figure(5, 3.4)
        ax.hist(probs, bins=min(30, max(5, len(probs) // 2)))
        ax.set_xlabel("base-model probability of the response token q(y1)")
        ax.set_ylabel("fingerprints")
        out.append(save(fig, folder / "base_prob.png"))
    return out


def _p0_from(r: dict[str, Any]) -> float | None:
    c = r.get("clean") or {}
    return c.get("p0")


def suppression_tradeoff(family: dict[str, Any], topr: dict[str, Any] | None, path: Path) -> Path:
    """Attack success against utility cost, one point per attack: perplexity ratio (left) and trivia-MC change
    (right); ``topr`` adds its demotions, marked by whether the top-r verdict survived."""
    from trustlab.report.plots import figure, legend_outside, save

    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    fig, axes = figure(10, 3.8, ncols=2)
    axes = axes[0]
    rows = [(a, "o") for a in family.get("attacks", [])]
    rows += [(a, "s" if all(v["decision"] == "OWNED" for v in a["topr"].values()) else "x")
             for a in (topr or {}).get("attacks", [])]
    for ax, key, label in ((axes[0], "ppl_ratio", "held-out perplexity ratio (attacked / clean)"),
                           (axes[1], "mc_delta", "trivia-MC change (attacked - clean)")):
        for i, (a, marker) in enumerate(rows):
            ax.scatter([a[key]], [a["attack_success"] or 0.0], marker=marker, s=36, label=a["attack"],
                       color=cmap(i % 20))
        ax.set_xlabel(label)
        ax.set_ylabel("attack success (share of clean hits removed)")
        ax.set_ylim(-0.05, 1.05)
    axes[0].set_title("o: family, s/x: demotions (top-r survives / beaten)", fontsize=8)
    legend_outside(axes[1], fontsize=7)
    return save(fig, path)
