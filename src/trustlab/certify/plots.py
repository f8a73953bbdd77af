"""PNG plots for a certify run: certified accuracy curves, abstain bars, p_lower / margin histograms, defences,
trigger examples, sweeps. Every abstain figure of an attacked model sits beside the clean model's."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .records import cert_file, model_folder, read_records


def make_plots(run_dir: Path, cfg, per_seed: list[dict], summary: dict, examples=None) -> list[str]:
    """Every run plot; ``examples`` = (x, T(x)) of a few test inputs for the trigger figure (drawn when given)."""
    from trustlab.report.plots import figure, save

    out = []
    seed0 = per_seed[0]
    sd = run_dir / f"seed{seed0['seed']}"
    for track in cfg.tracks:
        for cert in track.certifiers:
            agg = summary["certifiers"][track.name][cert]["by_model"]
            models = list(agg)
            # certified accuracy vs r / eps
            fig, ax = figure(6, 4)
            for m in models:
                for which, ls in (("clean_inputs", "-"), ("triggered_inputs", "--")):
                    ca = agg[m][which]["certified_acc"]
                    xs = [float(k) for k in ca]
                    ax.plot(xs, [ca[k]["mean"] for k in ca], ls, marker="o",
                            label=f"{m} on {'x' if which == 'clean_inputs' else 'T(x)'}")
            ax.set_xlabel("L2 radius r" if cert.startswith("smoothing") else "L-inf eps")
            ax.set_ylabel("certified accuracy")
            ax.set_title(f"{track.name} / {cert}: certified accuracy (mean over seeds)")
            ax.legend(fontsize=7)
            out.append(_rel(run_dir, save(fig, run_dir / "plots" / f"{track.name}_{cert}_certified_acc.png")))
            # abstain bars with min-max
            fig, ax = figure(6, 4)
            w = 0.38
            for j, (which, lab) in enumerate((("clean_inputs", "x"), ("triggered_inputs", "T(x)"))):
                vals = [agg[m][which]["abstain_rate"] for m in models]
                mean = np.array([v["mean"] for v in vals])
                err = np.array([[v["mean"] - v["min"] for v in vals], [v["max"] - v["mean"] for v in vals]])
                ax.bar(np.arange(len(models)) + (j - 0.5) * w, mean, w, yerr=err, capsize=3, label=f"on {lab}")
            ax.set_xticks(range(len(models)), models)
            ax.set_ylim(0, 1.05)
            ax.set_ylabel("abstain rate (fallback)")
            ax.set_title(f"{track.name} / {cert}: abstain, mean [min-max] over seeds")
            ax.legend()
            out.append(_rel(run_dir, save(fig, run_dir / "plots" / f"{track.name}_{cert}_abstain.png")))
            # histograms of p_lower / margin lb on T(x), seed 0
            fig, ax = figure(6, 4)
            smooth = cert.startswith("smoothing")
            key = "p_lower" if smooth else "margin_lb"
            for m in models:
                recs = read_records(cert_file(model_folder(sd, track.name, m), cert, "triggered"))
                ax.hist([r[key] for r in recs], bins=30, histtype="step", label=f"{m} on T(x)")
            ax.axvline(0.5 if smooth else 0.0, color="k", lw=0.8)
            ax.set_xlabel("p_lower (abstain if < 1/2)" if smooth else "margin lower bound (abstain if <= 0)")
            ax.set_title(f"{track.name} / {cert}: seed {seed0['seed']}, triggered inputs")
            ax.legend(fontsize=7)
            out.append(_rel(run_dir, save(fig, run_dir / "plots" / f"{track.name}_{cert}_hist.png")))
    if summary.get("defences"):
        out.append(_defence_plot(run_dir, summary["defences"]))
    if examples is not None:
        out.append(_trigger_plot(run_dir, *examples))
    return out


def _defence_plot(run_dir, defences) -> str:
    from trustlab.report.plots import figure, save

    labels, before, after = [], [], []
    for d, by_attack in defences.items():
        for a, by_track in by_attack.items():
            for t, by_cert in by_track.items():
                for c, row in by_cert.items():
                    if not row.get("applicable") or not isinstance(row.get("triggered_fallback_before"), dict):
                        continue
                    labels.append(f"{d}\n{a}\n{t}/{c}")
                    before.append(row["triggered_fallback_before"]["mean"])
                    after.append(row["triggered_fallback_after"]["mean"])
    fig, ax = figure(max(6, 0.9 * len(labels)), 4.5)
    x = np.arange(len(labels))
    ax.bar(x - 0.2, before, 0.4, label="before defence")
    ax.bar(x + 0.2, after, 0.4, label="after defence")
    ax.set_xticks(x, labels, fontsize=6)
    ax.set_ylabel("fallback rate on T(x)")
    ax.set_ylim(0, 1.05)
    ax.legend()
    ax.set_title("defences: triggered fallback (abstain, or STRIP-flagged) before/after")
    return _rel(run_dir, save(fig, run_dir / "plots" / "defences.png"))


def _trigger_plot(run_dir, x, x_trig) -> str:
    """Four test inputs x (top row) and T(x) (bottom row)."""
    from trustlab.report.plots import figure, save

    fig, axes = figure(6, 3, ncols=4, nrows=2)
    for j in range(min(4, len(x))):
        for i, xs in enumerate((x, x_trig)):
            img = xs[j].transpose(1, 2, 0)
            axes[i][j].imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            axes[i][j].set_axis_off()
            axes[i][j].set_title("x" if i == 0 else "T(x)", fontsize=8)
    return _rel(run_dir, save(fig, run_dir / "plots" / "trigger_examples.png"))


def sweep_plots(run_dir: Path, cells: list[dict]) -> list[str]:
    """Triggered abstain vs each swept key (other keys at their first value), clean-model band, min-max bars."""
    from trustlab.report.plots import figure, save

    out = []
    if not cells:
        return out
    keys = list(cells[0]["values"])
    for key in keys:
        others = {k: cells[0]["values"][k] for k in keys if k != key}
        sel = [c for c in cells if all(c["values"][k] == v for k, v in others.items())]
        sel.sort(key=lambda c: float(c["values"][key]))
        xs = [float(c["values"][key]) for c in sel]
        certs = sel[0]["summary"]["certifiers"]
        fig, ax = figure(6, 4)
        for track, by_cert in certs.items():
            for cert, e in by_cert.items():
                for m in e["by_model"]:
                    vals = [c["summary"]["certifiers"][track][cert]["by_model"].get(m, {}).get("triggered_inputs", {})
                            .get("abstain_rate") for c in sel]
                    pts = [(x, v) for x, v in zip(xs, vals) if v is not None]
                    if not pts:
                        continue
                    px, vals = [p[0] for p in pts], [p[1] for p in pts]
                    mean = [v["mean"] for v in vals]
                    err = [[v["mean"] - v["min"] for v in vals], [v["max"] - v["mean"] for v in vals]]
                    if m == "clean":
                        ax.fill_between(px, [v["min"] for v in vals], [v["max"] for v in vals], alpha=0.2)
                    ax.errorbar(px, mean, yerr=err, marker="o", capsize=3, label=f"{track}/{cert}/{m}")
        ax.set_xlabel(key)
        ax.set_ylabel("abstain rate on T(x)")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=7)
        ax.set_title(f"sweep over {key}")
        out.append(_rel(run_dir, save(fig, run_dir / "plots" / f"sweep_{key.replace('.', '_')}.png")))
    return out


def _rel(run_dir: Path, p: Path) -> str:
    return str(Path(p).relative_to(run_dir))
