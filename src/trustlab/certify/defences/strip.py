"""STRIP (Gao et al. 2019) as a test-time detector: blend the input 0.5/0.5 with ``n`` defender images,
H = mean base-2 softmax entropy; threshold = empirical quantile of the defender images' own H at the target FRR.
Tail ``low`` (original: triggers keep the prediction), ``high`` or ``both`` (attack B *raises* entropy)."""

from __future__ import annotations

import numpy as np

from trustlab.runtime import progress


def strip_entropy(model, x, x_def, n: int = 20, seed: int = 0, batch: int = 4096, show: bool = True) -> np.ndarray:
    """Mean base-2 entropy of softmax(f(0.5 x + 0.5 d)) over ``n`` seeded defender images d, per input."""
    import torch

    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(x_def), size=(len(x), n))
    from ..torchutil import eval_mode, model_device

    dev = model_device(model)
    out = np.empty(len(x))
    with eval_mode(model), torch.no_grad():
        step = max(1, batch // n)
        starts = range(0, len(x), step)
        for s in progress(starts, f"STRIP entropy ({len(x)} inputs)", total=len(starts)) if show else starts:
            xs = np.asarray(x[s:s + step])
            blend = 0.5 * xs[:, None] + 0.5 * np.asarray(x_def)[picks[s:s + step]]
            p = torch.softmax(model(torch.as_tensor(blend.reshape(-1, *xs.shape[1:]), device=dev)), 1).double()
            h = -(p * torch.log2(p.clamp_min(1e-300))).sum(1)
            out[s:s + len(xs)] = h.view(len(xs), n).mean(1).cpu().numpy()
    return out


def thresholds(h_def: np.ndarray, frr: float, tail: str) -> tuple[float, float]:
    """(low, high) thresholds: flag H < low or H > high, each an empirical quantile of defender H."""
    if tail == "low":
        return float(np.quantile(h_def, frr)), float("inf")
    if tail == "high":
        return float("-inf"), float(np.quantile(h_def, 1 - frr))
    return float(np.quantile(h_def, frr / 2)), float(np.quantile(h_def, 1 - frr / 2))


def thresholds_json(thr: tuple[float, float]) -> list[float | None]:
    """The thresholds as JSON can hold them: an unbounded side (+-inf) is null."""
    return [x if np.isfinite(x) else None for x in thr]


def flag(h: np.ndarray, thr: tuple[float, float]) -> np.ndarray:
    return (h < thr[0]) | (h > thr[1])


def auroc(h_clean: np.ndarray, h_trig: np.ndarray, h_def: np.ndarray, tail: str) -> float:
    """AUROC of the tail's score (low: -H; high: H; both: |H - median defender H|) for triggered vs clean."""
    from sklearn.metrics import roc_auc_score

    med = np.median(h_def)
    score = {"low": lambda h: -h, "high": lambda h: h, "both": lambda h: np.abs(h - med)}[tail]
    y = np.r_[np.zeros(len(h_clean)), np.ones(len(h_trig))]
    return float(roc_auc_score(y, np.r_[score(h_clean), score(h_trig)]))


def defender_entropy(model, x_def, n: int, seed: int) -> np.ndarray:
    """H of each defender image blended with ``n`` *other* defender images (leave-one-out pools)."""
    rng = np.random.default_rng(seed + 1)
    out = np.empty(len(x_def))
    for i in progress(range(len(x_def)), f"STRIP defender entropy ({len(x_def)} images)", total=len(x_def)):
        others = np.delete(np.arange(len(x_def)), i)
        pool = np.asarray(x_def)[rng.choice(others, size=min(n, len(others)), replace=False)]
        out[i] = strip_entropy(model, np.asarray(x_def)[i:i + 1], pool, n=len(pool), seed=seed, show=False)[0]
    return out
