"""Reconstruction, bit-balance, detection and trade-off metrics. Every reconstruction figure comes with baselines."""

from __future__ import annotations

import math

import numpy as np


def ssim_win(shape) -> int | None:
    """Largest odd window <= min(H, W, 7); None if a side is < 3 (SSIM undefined)."""
    m = min(int(shape[-2]), int(shape[-1]), 7)
    if m < 3:
        return None
    return m if m % 2 else m - 1


def psnr(mse: float) -> float | None:
    """PSNR = 10 log10(1 / MSE) for data on [0, 1]."""
    return None if mse <= 0 else 10 * math.log10(1.0 / mse)


def ssim(x: np.ndarray, xr: np.ndarray, image_shape) -> float | None:
    """Mean SSIM (scikit-image, data_range=1) over images of shape (C,H,W) given as flat rows."""
    from skimage.metrics import structural_similarity

    win = ssim_win(image_shape)
    if win is None:
        return None
    c = int(image_shape[0])
    vals = []
    for a, b in zip(x.reshape(len(x), *image_shape), xr.reshape(len(xr), *image_shape)):
        if c == 1:
            vals.append(structural_similarity(a[0], b[0], data_range=1.0, win_size=win))
        else:
            vals.append(structural_similarity(a, b, data_range=1.0, win_size=win, channel_axis=0))
    return float(np.mean(vals))


def recon_metrics(x: np.ndarray, xr: np.ndarray, image_shape=None, onehot=(), clf=None, y=None) -> dict:
    """Images: MSE, PSNR, SSIM, semantic accuracy (a classifier trained on real x_i, applied to ``xr``).
    Tables: MSE over numeric (standardised) features, per-feature MSE, one-hot groups scored as argmax accuracy."""
    x, xr = np.asarray(x, np.float64), np.asarray(xr, np.float64)
    out: dict = {"n": int(len(x))}
    sem = None if clf is None or y is None else float(np.mean(clf.predict(xr.astype(np.float32)) == y))
    if image_shape is not None:
        mse = float(np.mean((x - xr) ** 2))
        out.update(mse=mse, psnr=psnr(mse), ssim=ssim(x, xr, image_shape), semantic_acc=sem)
        return out
    cat = sorted({j for g in onehot for j in g})
    num = [j for j in range(x.shape[1]) if j not in set(cat)]
    per = np.mean((x - xr) ** 2, axis=0)
    out["mse"] = float(per[num].mean()) if num else None
    out["psnr"] = None
    out["ssim"] = None
    out["semantic_acc"] = sem
    out["per_feature_mse"] = [float(per[j]) for j in num]
    if onehot:
        accs = [float(np.mean(x[:, list(g)].argmax(1) == xr[:, list(g)].argmax(1))) for g in onehot]
        out["onehot_acc"] = float(np.mean(accs))
    return out


def baselines(x_t, y_t, x_aux, y_aux, image_shape=None, onehot=(), clf=None, seed: int = 0) -> dict:
    """aux_mean (the aux mean for every target), class_mean (aux class mean at the true label: what the label
    alone gives) and noise (U[0,1] for images, N(0,1) for standardised tables)."""
    rng = np.random.default_rng(seed)
    means = class_means(x_aux, y_aux, x_t.shape[1])
    aux_mean = np.repeat(x_aux.mean(0, keepdims=True), len(x_t), axis=0)
    noise = rng.random(x_t.shape) if image_shape is not None else rng.standard_normal(x_t.shape)
    return {name: recon_metrics(x_t, xr, image_shape, onehot, clf, y_t)
            for name, xr in (("aux_mean", aux_mean), ("class_mean", means[y_t]), ("noise", noise))}


def class_means(x_aux, y_aux, d: int, C: int | None = None) -> np.ndarray:
    """Per-class aux mean (the overall aux mean for a class absent from aux)."""
    C = C or int(max(y_aux.max() + 1, 1))
    out = np.repeat(x_aux.mean(0, keepdims=True), max(C, int(y_aux.max()) + 1), axis=0)
    for c in np.unique(y_aux):
        out[c] = x_aux[y_aux == c].mean(0)
    return out


def bit_balance(h: np.ndarray, codes: np.ndarray | None = None, y: np.ndarray | None = None) -> dict:
    """mu_j = mean of bit j (in +-1): mean and max |mu_j|, mean entropy (bits) of (1+mu_j)/2, unique codes, and
    against o_y the fraction of codes equal to it and the mean Hamming distance."""
    s = np.where(np.asarray(h) >= 0, 1, -1)
    mu = s.mean(0)
    p = np.clip((1 + mu) / 2, 1e-12, 1 - 1e-12)
    ent = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    out = {"mean_abs_mu": float(np.abs(mu).mean()), "max_abs_mu": float(np.abs(mu).max()),
           "entropy": float(ent.mean()), "unique_codes": int(len(np.unique(s, axis=0)))}
    if codes is not None and y is not None:
        d = (s != codes[y]).sum(1)
        out.update(frac_equal_oy=float(np.mean(d == 0)), mean_hamming_oy=float(d.mean()))
    return out


def auroc(neg: np.ndarray, pos: np.ndarray) -> float:
    """Area under the ROC curve with positives = abnormal (higher score = more abnormal)."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(neg)), np.ones(len(pos))]
    return float(roc_auc_score(y, np.r_[neg, pos]))


def detection_auroc(clean: np.ndarray, abnormal: np.ndarray, reference: np.ndarray, q: float = 95.0) -> dict:
    """AUROC of clean vs abnormal scores; TPR/FPR at the q-th percentile of clean ``reference`` (aux) scores."""
    thr = float(np.percentile(reference, q))
    return {"auroc": auroc(clean, abnormal), "tpr": float(np.mean(abnormal > thr)),
            "fpr": float(np.mean(clean > thr)), "threshold": thr,
            "clean_mean": float(np.mean(clean)), "abnormal_mean": float(np.mean(abnormal))}


def dcs(ap: float, mp: float, mp_ref: float, beta: float = 0.5) -> float:
    """VFLAIR's defence capability score: 1 / (1 + sqrt((1-beta) AP^2 + beta (MP - MP*)^2))."""
    return 1.0 / (1.0 + math.sqrt((1 - beta) * ap ** 2 + beta * (mp - mp_ref) ** 2))


def recon_ap(mse: float, mse_aux_mean: float) -> float:
    """Attack performance of a reconstruction: clip(1 - MSE / MSE_aux_mean, 0, 1) (our definition)."""
    return float(np.clip(1 - mse / mse_aux_mean, 0, 1)) if mse_aux_mean > 0 else 0.0
