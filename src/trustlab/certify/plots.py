"""PNG plots for a certify run: certified accuracy curves, abstain bars, p_lower / margin histograms, defences,
trigger examples, sweeps. Every abstain figure of an attacked model sits beside the clean model's."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .records import cert_file, model_folder, read_records


def make_plots(run_dir: Path, cfg, per_seed: list[dict], summary: dict, examples=None) -> list[str]:
    """Every run plot; ``examples`` = (x, T(x)) of a few test inputs for the trigger figure (drawn when given)."""
    from trustlab.report.plots import figure, legend_outside, pair, save, share_axis

    out = []
    seed0 = per_seed[0]
    sd = run_dir / f"seed{seed0['seed']}"
    for track in cfg.tracks:
        for cert in track.certifiers:
            agg = summary["certifiers"][track.name][cert]["by_model"]
            models = list(agg)
            smooth = cert.startswith("smoothing")
            # certified accuracy vs r / eps: one hue per model, solid on x, dashed on T(x)
            fig, ax = figure(6.5, 4)
            limit, why = _radius_limit(track, cert) if smooth else (None, "")
            for i, m in enumerate(models):
                dark, light = pair(i)
                for which, ls, col in (("clean_inputs", "-", dark), ("triggered_inputs", "--", light)):
                    ca = agg[m][which]["certified_acc"]
                    xs = np.array([float(k) for k in ca])
                    ys = np.array([_mean(ca[k]) for k in ca])
                    ax.plot(xs, ys, ls, color=col, marker="o", ms=4,
                            label=f"{m} on {'x' if which == 'clean_inputs' else 'T(x)'}")
                    if limit is not None:
                        beyond = xs > limit + 1e-9
                        ax.plot(xs[beyond], ys[beyond], "x", color="k", ms=8, mew=1.5)
            if limit is not None and limit < max(float(k) for k in agg[models[0]]["clean_inputs"]["certified_acc"]):
                ax.axvline(limit, color="k", ls=":", lw=1, label=f"budget limit: {why}")
                ax.plot([], [], "x", color="k", ms=8, mew=1.5, label="beyond the limit: 0 by construction")
                ax.annotate("budget limit", (limit, 0.97), xytext=(-4, 0), textcoords="offset points", ha="right",
                            va="top", fontsize=8)
            ax.set_xlabel("L2 radius r" if smooth else "L-inf eps")
            ax.set_ylabel("certified accuracy")
            share_axis(ax)
            ax.set_title(f"{track.name} / {cert}: certified accuracy (mean over seeds)", fontsize=10)
            legend_outside(ax, fontsize=7)
            out.append(_rel(run_dir, save(fig, run_dir / "plots" / f"{track.name}_{cert}_certified_acc.png")))
            # abstain bars with min-max: one hue per model, light on x, dark on T(x)
            fig, ax = figure(6.5, 4)
            w = 0.38
            for j, (which, lab) in enumerate((("clean_inputs", "x"), ("triggered_inputs", "T(x)"))):
                vals = [agg[m][which]["abstain_rate"] for m in models]
                mean = np.array([_mean(v) for v in vals])
                err = np.array([[_mean(v) - v.get("min", _mean(v)) if isinstance(v, dict) else 0 for v in vals],
                                [v.get("max", _mean(v)) - _mean(v) if isinstance(v, dict) else 0 for v in vals]])
                cols = [pair(i)[1 - j] for i in range(len(models))]
                ax.bar(np.arange(len(models)) + (j - 0.5) * w, mean, w, yerr=err if err.any() else None, capsize=3,
                       color=cols,
                       edgecolor="k", lw=0.4, label=f"on {lab} ({'light' if j == 0 else 'dark'})")
            ax.set_xticks(range(len(models)), models, rotation=15, ha="right", fontsize=8)
            share_axis(ax)
            ax.set_ylabel("abstain rate (fallback)")
            ax.set_title(f"{track.name} / {cert}: abstain, mean [min-max] over seeds", fontsize=10)
            legend_outside(ax)
            out.append(_rel(run_dir, save(fig, run_dir / "plots" / f"{track.name}_{cert}_abstain.png")))
            # histograms of p_lower / margin lb on T(x), seed 0
            fig, ax = figure(6.5, 4)
            key = "p_lower" if smooth else "margin_lb"
            for i, m in enumerate(models):
                recs = read_records(cert_file(model_folder(sd, track.name, m), cert, "triggered"))
                vals = [r[key] for r in recs if r.get(key) is not None]
                if vals:
                    ax.hist(vals, bins=30, histtype="step", lw=1.5, color=pair(i)[0], label=f"{m} on T(x)")
            ax.axvline(0.5 if smooth else 0.0, color="k", lw=0.8)
            ax.set_xlabel("p_lower (abstain if < 1/2)" if smooth else "margin lower bound (abstain if <= 0)")
            ax.set_ylabel("triggered inputs")
            ax.set_title(f"{track.name} / {cert}: seed {seed0['seed']}, triggered inputs", fontsize=10)
            legend_outside(ax, fontsize=7)
            out.append(_rel(run_dir, save(fig, run_dir / "plots" / f"{track.name}_{cert}_hist.png")))
            if any(agg[m][w].get("cost") for m in models for w in ("clean_inputs", "triggered_inputs")):
                out.append(_cost_plot(run_dir, track, cert, agg))
    if summary.get("defences"):
        out.append(_defence_plot(run_dir, summary["defences"], summary.get("certifiers", {})))
    if examples is not None:
        out.append(_trigger_plot(run_dir, *examples))
    return out


def _mean(v):
    return v["mean"] if isinstance(v, dict) and "mean" in v else v


def _radius_limit(track, cert) -> tuple[float | None, str]:
    """The largest radius the run could certify: sigma * Phi^-1(alpha^(1/N)) (and, for the adaptive certifier, its
    target radius, the only one it certifies at)."""
    from .stats import max_radius

    s = track.smoothing
    r = max_radius(s.n, s.alpha, s.sigma)
    why = f"r = {r:.2f} at N = {s.n:g}"
    if cert == "smoothing-adaptive" and s.target_radius < r:
        return s.target_radius, f"target radius {s.target_radius:g}"
    return r, why


def _cost_plot(run_dir, track, cert, agg) -> str:
    """Mean (bar) and p95 (dot) forwards per input, clean inputs light / triggered dark, per model; N dashed."""
    from trustlab.report.plots import figure, legend_outside, pair, save

    models = [m for m in agg if agg[m]["clean_inputs"].get("cost") or agg[m]["triggered_inputs"].get("cost")]
    fig, ax = figure(6.5, 4)
    w = 0.38
    for j, (which, lab) in enumerate((("clean_inputs", "x"), ("triggered_inputs", "T(x)"))):
        costs = [agg[m][which].get("cost") or {} for m in models]
        xs = np.arange(len(models)) + (j - 0.5) * w
        mean = [_mean(c.get("forwards_mean")) or 0.0 for c in costs]
        p95 = [_mean(c.get("forwards_p95")) or 0.0 for c in costs]
        ax.bar(xs, mean, w, color=[pair(i)[1 - j] for i in range(len(models))], edgecolor="k", lw=0.4,
               label=f"mean on {lab} ({'light' if j == 0 else 'dark'})")
        ax.plot(xs, p95, "D", color="k", ms=4, label="p95" if j == 0 else None)
    most = track.smoothing.n0 + track.smoothing.n  # selection draws n0, then at most N estimation draws
    ax.axhline(most, color="gray", ls="--", lw=1, label=f"budget n0 + N = {most:g}")
    ax.set_ylim(0, most * 1.1)
    ax.set_xticks(range(len(models)), models, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel("base-model forwards per input")
    ax.set_title(f"{track.name} / {cert}: certification cost", fontsize=10)
    legend_outside(ax)
    return _rel(run_dir, save(fig, run_dir / "plots" / f"{track.name}_{cert}_cost.png"))


def _defence_plot(run_dir, defences, certifiers=None) -> str:
    """Triggered fallback before (light) and after (dark) each defence; a black tick at the clean model's level."""
    from trustlab.report.plots import figure, legend_outside, pair, save, share_axis

    labels, before, after, hue, ref = [], [], [], [], []
    for k, (d, by_attack) in enumerate(defences.items()):
        for a, by_track in by_attack.items():
            for t, by_cert in by_track.items():
                for c, row in by_cert.items():
                    b = row.get("triggered_fallback_before")
                    if not row.get("applicable") or b is None:
                        continue
                    labels.append(f"{d} vs {a}, {t}/{c}")
                    before.append(_mean(b))
                    after.append(_mean(row["triggered_fallback_after"]))
                    hue.append(k)
                    clean = ((certifiers or {}).get(t, {}).get(c, {}).get("by_model", {}).get("clean", {})
                             .get("triggered_inputs", {}).get("abstain_rate"))
                    ref.append(np.nan if clean is None else _mean(clean))
    fig, ax = figure(7.5, 0.55 * len(labels) + 1.4)
    y = np.arange(len(labels))[::-1]  # first case on top
    ax.barh(y + 0.2, before, 0.4, color=[pair(k)[1] for k in hue], edgecolor="k", lw=0.4,
            label="before defence (light)")
    ax.barh(y - 0.2, after, 0.4, color=[pair(k)[0] for k in hue], edgecolor="k", lw=0.4, label="after defence (dark)")
    if not np.isnan(ref).all():
        ax.plot(ref, y, "|", color="k", ms=22, mew=2, label="clean model's level")
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlabel("fallback rate on T(x)")
    share_axis(ax, "x")
    legend_outside(ax)
    ax.set_title("defences: triggered fallback (abstain, or STRIP-flagged) before/after", fontsize=10)
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
            axes[i][j].set_title("x (clean)" if i == 0 else "T(x) (triggered)", fontsize=8)
    return _rel(run_dir, save(fig, run_dir / "plots" / "trigger_examples.png"))


def sweep_plots(run_dir: Path, cells: list[dict]) -> list[str]:
    """Triggered abstain vs each swept key (other keys at their first value), clean-model band, min-max bars."""
    from trustlab.report.plots import figure, legend_outside, pair, save, share_axis

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
        fig, ax = figure(6.5, 4)
        k = 0
        for track, by_cert in certs.items():
            for cert, e in by_cert.items():
                for m in e["by_model"]:
                    col = pair(k)[0]
                    k += 1
                    vals = [c["summary"]["certifiers"][track][cert]["by_model"].get(m, {}).get("triggered_inputs", {})
                            .get("abstain_rate") for c in sel]
                    pts = [(x, v) for x, v in zip(xs, vals) if v is not None]
                    if not pts:
                        continue
                    px, vals = [p[0] for p in pts], [p[1] for p in pts]
                    mean = [v["mean"] for v in vals]
                    err = [[v["mean"] - v["min"] for v in vals], [v["max"] - v["mean"] for v in vals]]
                    if m == "clean":
                        ax.fill_between(px, [v["min"] for v in vals], [v["max"] for v in vals], color=col, alpha=0.2)
                    ax.errorbar(px, mean, yerr=err, marker="o", capsize=3, color=col, label=f"{track}/{cert}/{m}")
        ax.set_xlabel(key)
        ax.set_ylabel("abstain rate on T(x)")
        share_axis(ax)
        legend_outside(ax, fontsize=7)
        ax.set_title(f"sweep over {key}")
        out.append(_rel(run_dir, save(fig, run_dir / "plots" / f"sweep_{key.replace('.', '_')}.png")))
    return out


def _rel(run_dir: Path, p: Path) -> str:
    return str(Path(p).relative_to(run_dir))
