"""Safety plots (PNG, headless): metrics by strategy with CI bars, per-category bars, length histograms by label,
the thought x answer 2x2, MoreThink extensions and think tokens, and the SFT loss curve / before-after bars."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from trustlab.report.plots import figure, legend_outside, save

from .metrics import METRICS, label_safe


def _primary(summary: Mapping[str, Any]) -> tuple[Optional[str], Optional[str]]:
    p = summary.get("primary") or {}
    return p.get("judge"), p.get("part")


def _err(block: Mapping[str, Any]) -> tuple[float, float, float]:
    v = block.get("value")
    ci = block.get("ci")
    if v is None:
        return 0.0, 0.0, 0.0
    if not ci:
        return v, 0.0, 0.0
    return v, max(0.0, v - ci[0]), max(0.0, ci[1] - v)


def _label_zeros(ax, bars, values) -> None:
    """A bar of height 0 is invisible: write "0" on it so a reader sees a measured zero, not missing data."""
    ax.bar_label(bars, labels=["0" if v == 0 else "" for v in values], fontsize=6, padding=1)


def metrics_by_strategy(summary: Mapping[str, Any], path: Path) -> Optional[Path]:
    """One panel per (judge, part): Safe@1 / Safe@K / ConsSafe@K per strategy with 95% bootstrap error bars."""
    import numpy as np

    strategies = list(summary.get("strategies", {}))
    cells = sorted({(j, p) for e in summary["strategies"].values() for j, parts in e["judges"].items() for p in parts})
    if not strategies or not cells:
        return None
    ncols = min(3, len(cells))
    nrows = (len(cells) + ncols - 1) // ncols
    fig, axes = figure(4.2 * ncols, 3.2 * nrows, ncols=ncols, nrows=nrows)
    axes = np.atleast_1d(axes).ravel()
    width = 0.8 / len(METRICS)
    for ax, (judge, part) in zip(axes, cells):
        x = np.arange(len(strategies))
        for m, name in enumerate(METRICS):
            vals = [_err(summary["strategies"][s]["judges"].get(judge, {}).get(part, {}).get(name, {}))
                    for s in strategies]
            bars = ax.bar(x + (m - 1) * width, [v[0] for v in vals], width,
                          yerr=[[v[1] for v in vals], [v[2] for v in vals]], capsize=2, label=name)
            _label_zeros(ax, bars, [v[0] for v in vals])
        ax.set_xticks(x, strategies, rotation=20)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("share safe", fontsize=8)
        ax.set_title(f"{judge} / {part}", fontsize=9)
    for ax in axes[len(cells):]:
        ax.axis("off")
    legend_outside(axes[min(ncols, len(cells)) - 1], fontsize=7)
    return save(fig, path)


def per_category(summary: Mapping[str, Any], path: Path) -> Optional[Path]:
    """Safe@1 per category (primary judge and part), one bar group per category, one bar per strategy."""
    import numpy as np

    judge, part = _primary(summary)
    if judge is None:
        return None
    per = {s: e["judges"].get(judge, {}).get(part, {}).get("per_category", {}) for s, e in summary["strategies"].items()}
    cats = sorted({c for d in per.values() for c in d})
    if not cats:
        return None
    fig, ax = figure(max(5.0, 0.9 * len(cats) + 2), 3.6)
    width = 0.8 / max(1, len(per))
    x = np.arange(len(cats))
    for i, (s, d) in enumerate(per.items()):
        vals = [_err(d.get(c, {}).get("safe@1", {})) for c in cats]
        bars = ax.bar(x + (i - (len(per) - 1) / 2) * width, [v[0] for v in vals], width,
                      yerr=[[v[1] for v in vals], [v[2] for v in vals]], capsize=2, label=s)
        _label_zeros(ax, bars, [v[0] for v in vals])
    ax.set_xticks(x, cats, rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"Safe@1 ({judge} / {part})")
    legend_outside(ax, fontsize=7)
    return save(fig, path)


def _strategy_rows(gens, labels, judge, part):
    lab = {(r.get("strategy", "default"), r["key"]): r for r in labels if r["judge"] == judge and r["part"] == part}
    out: dict[str, list[tuple[int, bool]]] = {}
    for g in gens:
        r = lab.get((g.get("strategy", "default"), g["key"]))
        if g.get("status", "ok") != "ok" or r is None or label_safe(r) is None:
            continue
        n = int(g.get("think_tokens") or 0) + int(g.get("answer_tokens") or 0)
        out.setdefault(g.get("strategy", "default"), []).append((n, not label_safe(r)))
    return out


def length_histograms(summary, gens, labels, path: Path) -> Optional[Path]:
    """Generated tokens of safe and unsafe samples (primary judge, on response when labelled), per strategy."""
    import numpy as np

    judge, part = _primary(summary)
    if judge is None:
        return None
    has_resp = any(r["judge"] == judge and r["part"] == "response" for r in labels)
    rows = _strategy_rows(gens, labels, judge, "response" if has_resp else part)
    if not rows:
        return None
    fig, axes = figure(3.6 * len(rows), 3.0, ncols=len(rows))
    axes = np.atleast_1d(axes).ravel()
    for ax, (s, pairs) in zip(axes, rows.items()):
        lengths = np.array([n for n, _ in pairs])
        unsafe = np.array([u for _, u in pairs])
        bins = np.linspace(0, max(1, lengths.max()), 16)
        ax.hist(lengths[~unsafe], bins=bins, alpha=0.6, label=f"safe ({(~unsafe).sum()})")
        ax.hist(lengths[unsafe], bins=bins, alpha=0.6, label=f"unsafe ({unsafe.sum()})")
        ax.set_title(s, fontsize=9)
        ax.set_xlabel("generated tokens")
        ax.set_ylabel("samples")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    return save(fig, path)


def thought_answer(summary, path: Path) -> Optional[Path]:
    """The thought x answer 2x2 (counts) per strategy for the primary judge."""
    import numpy as np

    judge, _ = _primary(summary)
    tabs = {s: e.get("thought_answer_table", {}).get(judge) for s, e in summary.get("strategies", {}).items()}
    tabs = {s: t for s, t in tabs.items() if t}
    if not tabs:
        return None
    fig, axes = figure(3.0 * len(tabs), 2.9, ncols=len(tabs))
    axes = np.atleast_1d(axes).ravel()
    for ax, (s, t) in zip(axes, tabs.items()):
        m = np.array([[t["thought_safe"]["answer_safe"], t["thought_safe"]["answer_unsafe"]],
                      [t["thought_unsafe"]["answer_safe"], t["thought_unsafe"]["answer_unsafe"]]])
        ax.imshow(m, cmap="Blues")
        for i in range(2):
            for j in range(2):
                ax.text(j, i, str(m[i, j]), ha="center", va="center",
                        color="white" if m[i, j] > m.max() / 2 else "black")
        ax.set_xticks([0, 1], ["answer safe", "answer unsafe"], fontsize=7)
        ax.set_yticks([0, 1], ["thought safe", "thought unsafe"], fontsize=7)
        share = t.get("both_safe_share")
        ax.set_title(f"{s}: both safe {share:.0%}" if share is not None else s, fontsize=8)
    return save(fig, path)


def morethink(gens: Sequence[Mapping[str, Any]], path: Path) -> Optional[Path]:
    """MoreThink: extensions per sample, and think tokens next to the default strategy's."""
    import numpy as np

    mt = [g for g in gens if g.get("strategy") == "morethink" and g.get("status", "ok") == "ok"]
    if not mt:
        return None
    base = [g for g in gens if g.get("strategy") == "default" and g.get("status", "ok") == "ok"]
    fig, axes = figure(8.0, 3.0, ncols=2)
    a, b = np.atleast_1d(axes).ravel()
    ext = np.array([int(g.get("extensions") or 0) for g in mt])
    a.hist(ext, bins=np.arange(ext.max() + 2) - 0.5)
    a.set_xlabel("extensions per sample")
    a.set_title("MoreThink extensions", fontsize=9)
    data, names = [[int(g.get("think_tokens") or 0) for g in mt]], ["morethink"]
    if base:
        data.insert(0, [int(g.get("think_tokens") or 0) for g in base])
        names.insert(0, "default")
    b.boxplot(data)
    b.set_xticks(range(1, len(names) + 1), names)
    b.set_ylabel("think tokens")
    return save(fig, path)


def make_plots(summary: Mapping[str, Any], gens: Sequence[Mapping[str, Any]], labels: Sequence[Mapping[str, Any]],
               plots_dir: str | Path) -> list[Path]:
    """Every eval plot that has data, written into ``plots_dir``; returns the paths written."""
    d = Path(plots_dir)
    made = [metrics_by_strategy(summary, d / "metrics_by_strategy.png"), per_category(summary, d / "per_category.png"),
            length_histograms(summary, gens, labels, d / "length_hist.png"),
            thought_answer(summary, d / "thought_answer.png"), morethink(gens, d / "morethink.png")]
    return [p for p in made if p is not None]


def sft_plots(train_log: str | Path, before_after: Optional[Mapping[str, Any]], plots_dir: str | Path) -> list[Path]:
    """The training loss curve and, with a before/after evaluation, Safe@1 of base and tuned model per part."""
    import numpy as np

    from trustlab.runtime.io import read_jsonl

    d = Path(plots_dir)
    out = []
    log = read_jsonl(train_log, repair=False) if Path(train_log).is_file() else []
    if log:
        fig, ax = figure(5.0, 3.0)
        ax.plot([r["step"] for r in log], [r["loss"] for r in log])
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss")
        out.append(save(fig, d / "sft_loss.png"))
    if before_after:
        rows = []
        for s, e in before_after["before"].get("strategies", {}).items():
            for j, parts in e["judges"].items():
                for p, blk in parts.items():
                    after = before_after["after"]["strategies"].get(s, {}).get("judges", {}).get(j, {}).get(p)
                    if after:
                        rows.append((f"{j}/{p}", _err(blk["safe@1"]), _err(after["safe@1"])))
        if rows:
            fig, ax = figure(max(4.0, 1.3 * len(rows) + 1.5), 3.2)
            x = np.arange(len(rows))
            for i, (name, idx) in enumerate((("before", 1), ("after", 2))):
                ax.bar(x + (i - 0.5) * 0.38, [r[idx][0] for r in rows], 0.38,
                       yerr=[[r[idx][1] for r in rows], [r[idx][2] for r in rows]], capsize=2, label=name)
            ax.set_xticks(x, [r[0] for r in rows], rotation=20, fontsize=7)
            ax.set_ylim(0, 1.05)
            ax.set_ylabel("Safe@1")
            legend_outside(ax, fontsize=7)
            out.append(save(fig, d / "sft_before_after.png"))
    return out

