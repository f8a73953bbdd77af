"""PNG plots: reconstruction grids, Hamming histograms, bit balance, training curves, trade-off."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trustlab.report.plots import figure, legend_outside, save, span_axis


ATTACK_WORDS = {"inv": "inverse net", "wb": "white-box", "decoded": "decoded class"}
ROW_WORDS = {"original": "original", "class mean": "class-mean baseline", "inverse net": "reconstructed (inverse net)",
             "whitebox": "reconstructed (white-box)", "decoded class mean": "decoded class mean"}


def row_label(label: str) -> str:
    """A grid row's label in words: ``none (inv)`` -> "reconstructed, no defence (inverse net)", ``hash (inv)`` ->
    "reconstructed, hash defence (inverse net)"; the original and the baselines keep their names."""
    if label in ROW_WORDS:
        return ROW_WORDS[label]
    if label.endswith(")") and " (" in label:
        defence, tag = label[:-1].rsplit(" (", 1)
        who = "no defence" if defence in ("none", "vanilla") else f"{defence} defence"
        return f"reconstructed, {who}\n({ATTACK_WORDS.get(tag, tag)})"
    return label


def recon_grid(rows: list[tuple[str, np.ndarray]], shape, path: Path, n: int = 10) -> Path | None:
    """One row per (label, images as flat rows), labelled in words; columns are the first ``n`` test rows."""
    if shape is None or not rows:
        return None
    n = min(n, len(rows[0][1]))
    fig, axes = figure(0.75 * n + 2.6, 1.0 * len(rows) * shape[1] / max(shape[2], 1) * 0.5 + 0.8, ncols=n,
                       nrows=len(rows))
    for r, (label, xs) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            img = np.asarray(xs[c]).reshape(shape)
            ax.imshow(img[0] if shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"test row {c + 1}", fontsize=7)
            if c == 0:
                ax.set_ylabel(row_label(label), rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("party 0's features: original, baseline and reconstructions", fontsize=9)
    return save(fig, path)


def run_plots(run_dir: Path, res: dict, recon: dict, shape, test_msgs, codes, y_test) -> list[Path]:
    out = []
    plots = Path(run_dir) / "plots"
    order = ["original", "class_mean", "inverse_net", "whitebox", "decoded_class_mean"]
    p = recon_grid([(k.replace("_", " "), recon[k]) for k in order if k in recon], shape, plots / "recon_grid.png")
    if p:
        out.append(p)
    hist = res.get("train", {}).get("history") or []
    if hist:
        fig, ax = figure(5, 3)
        ax.plot([h["epoch"] for h in hist], [h["loss"] for h in hist], label="loss")
        ax2 = ax.twinx()
        ax2.plot([h["epoch"] for h in hist], [h["train_acc"] for h in hist], color="C1", label="batch acc")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax2.set_ylabel("train batch accuracy")
        ax2.set_ylim(-0.02, 1.02)
        ax.set_title(f"training ({res.get('config', {}).get('defence', {}).get('kind', '')})")
        out.append(save(fig, plots / "train_curve.png"))
    if codes is not None:
        fig, ax = figure(5, 3)
        L = codes.shape[1]
        for i, m in enumerate(test_msgs):
            d = (np.where(m >= 0, 1, -1) != codes[y_test]).sum(1)
            ax.hist(d, bins=np.arange(L + 2) - 0.5, alpha=0.6, label=f"party {i}")
        ax.set_xlabel("Hamming distance to the class code o_y")
        ax.set_ylabel("test samples")
        legend_outside(ax)
        out.append(save(fig, plots / "hamming_hist.png"))
        fig, ax = figure(5, 3)
        for i, m in enumerate(test_msgs):
            mu = np.where(m >= 0, 1, -1).mean(0)
            ax.bar(np.arange(L) + 0.4 * i, mu, width=0.4, label=f"party {i}")
        ax.set_xlabel("bit j")
        ax.set_ylabel("mean bit mu_j")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylim(-1.05, 1.05)
        legend_outside(ax)
        out.append(save(fig, plots / "bit_balance.png"))
    return out


def tradeoff(points: list[dict], path: Path, baselines: dict | None = None) -> Path:
    """Accuracy vs inverse-network MSE per defence, with the aux-mean and class-mean MSE as vertical lines."""
    fig, ax = figure(5.5, 3.8)
    for p in points:
        ax.errorbar(p["mse"], p["acc"], xerr=p.get("mse_std", 0), yerr=p.get("acc_std", 0), fmt="o", capsize=3)
        ax.annotate(p["label"], (p["mse"], p["acc"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    for name, style in (("aux_mean", "--"), ("class_mean", ":")):
        if baselines and baselines.get(name) is not None:
            ax.axvline(baselines[name], ls=style, color="gray", label=name.replace("_", " "))
    ax.set_xlabel("inverse-network reconstruction MSE (higher = more private)")
    ax.set_ylabel("test accuracy")
    span_axis(ax, [p["acc"] for p in points], min_span=0.05, lo=0.0, hi=1.0)
    legend_outside(ax)
    return save(fig, path)
