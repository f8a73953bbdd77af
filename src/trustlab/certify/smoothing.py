"""Randomized smoothing (Cohen, Rosenfeld, Kolter 2019): g(x) = argmax_c P(f(x + delta) = c), delta ~ N(0, sigma^2 I).

Noise for input ``idx`` comes in fixed blocks, each from its own generator seeded by SeedSequence(run_seed, idx, role,
block), with separate streams for selection, estimation and PREDICT: results do not depend on batch size, input
order, resume or sharding (on one device type).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from trustlab.runtime import ModelError, append_jsonl, read_jsonl

from . import ABSTAIN
from .stats import binom_pvalue, budget, cp_lower

NOISE_BLOCK = 500
ROLES = {"select": 0, "estimate": 1, "predict": 2}
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SmoothCert:
    """CERTIFY's answer: ``pred`` (ABSTAIN = -1) robust within L2 ``radius`` with prob >= 1 - alpha."""

    pred: int
    radius: float
    p_lower: float
    n_a: int


@contextlib.contextmanager
def eval_mode(model):
    """Certify in eval mode and restore the caller's mode afterwards."""
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


def block_seed(run_seed: int, idx: int, role: str, block: int) -> int:
    words = np.random.SeedSequence([int(run_seed), int(idx), ROLES[role], int(block)]).generate_state(2, np.uint32)
    return (int(words[0]) << 31) ^ int(words[1])


def _device(model):
    try:
        return next(model.parameters()).device
    except StopIteration:
        return "cpu"


def count_classes(model, x, idx: Sequence[int], draws: int, role: str, *, sigma: float, K: int, run_seed: int,
                  batch: int) -> np.ndarray:
    """[B, K] counts of f(x_i + delta) over ``draws`` fresh Gaussian draws per input, packed into forwards of
    at most ``batch`` rows (noise is written straight into a reusable buffer)."""
    import torch

    dev = _device(model)
    x = torch.as_tensor(x, dtype=torch.float32, device=dev)
    counts = torch.zeros(len(x) * K, dtype=torch.long, device=dev)
    cap = batch + NOISE_BLOCK
    buf = torch.empty((cap, *x.shape[1:]), dtype=torch.float32, device=dev)
    own = torch.empty(cap, dtype=torch.long, device=dev)
    ones = torch.ones(cap, dtype=torch.long, device=dev)
    fill = 0

    def run(rows: int) -> None:
        logits = _forward(model, buf[:rows], own[:rows], idx, K)
        counts.index_add_(0, own[:rows] * K + logits.argmax(1), ones[:rows])

    for i in range(len(x)):
        for b, size in enumerate(_blocks(draws)):
            g = torch.Generator(device=dev).manual_seed(block_seed(run_seed, idx[i], role, b))
            seg = buf[fill:fill + size]
            torch.randn(seg.shape, generator=g, device=dev, out=seg)
            seg.mul_(sigma).add_(x[i])
            own[fill:fill + size] = i
            fill += size
            while fill >= batch:
                run(batch)
                rest = fill - batch
                if rest:
                    buf[:rest] = buf[batch:fill].clone()
                    own[:rest] = own[batch:fill].clone()
                fill = rest
    if fill:
        run(fill)
    return counts.view(len(x), K).cpu().numpy()


def _blocks(draws: int) -> Iterator[int]:
    full, rest = divmod(draws, NOISE_BLOCK)
    yield from [NOISE_BLOCK] * full
    if rest:
        yield rest


def _forward(model, xb, owners, idx, K):
    import torch

    with torch.inference_mode():
        logits = model(xb)
    if logits.ndim != 2 or logits.shape[1] != K or logits.shape[0] != xb.shape[0]:
        raise ModelError(f"model returned logits of shape {tuple(logits.shape)} for input idx {idx[int(owners[0])]}; "
                         f"expected ({xb.shape[0]}, {K})", hint="the base model must map a batch to (B, K) logits")
    if not bool(torch.isfinite(logits.sum())):
        bad = ~torch.isfinite(logits).all(1)
        raise ModelError(f"model returned non-finite logits under noise for input idx "
                         f"{idx[int(owners[int(bad.nonzero()[0])])]}", hint="check the model and its input scaling")
    return logits


def certify_batch(model, x, idx, *, n0: int, n: int, alpha: float, sigma: float, K: int, run_seed: int,
                  batch: int) -> list[SmoothCert]:
    """CERTIFY for each input: guess c from n0 selection draws, lower-bound p_c from n *fresh* draws; abstain if
    p_lower < 1/2, else certify c within sigma * Phi^-1(p_lower) with probability >= 1 - alpha."""
    from scipy.stats import norm

    sel = count_classes(model, x, idx, n0, "select", sigma=sigma, K=K, run_seed=run_seed, batch=batch)
    c_hat = sel.argmax(1)  # ties -> lowest class index
    est = count_classes(model, x, idx, n, "estimate", sigma=sigma, K=K, run_seed=run_seed, batch=batch)
    n_a = est[np.arange(len(x)), c_hat]
    p_low = np.atleast_1d(cp_lower(n_a, n, alpha))
    out = []
    for c, k, p in zip(c_hat, n_a, p_low):
        if p < 0.5:
            out.append(SmoothCert(ABSTAIN, 0.0, float(p), int(k)))
        else:
            out.append(SmoothCert(int(c), float(sigma * norm.ppf(p)), float(p), int(k)))
    return out


def predict_batch(model, x, idx, *, n: int, alpha: float, sigma: float, K: int, run_seed: int,
                  batch: int) -> list[tuple[int, float]]:
    """PREDICT: top class of n draws, or ABSTAIN when the two-sided binomial test of the top two counts has
    p-value > alpha (then g(x) is returned wrongly with probability <= alpha)."""
    counts = count_classes(model, x, idx, n, "predict", sigma=sigma, K=K, run_seed=run_seed, batch=batch)
    out = []
    for row in counts:
        top2 = np.argsort(-row, kind="stable")[:2]
        pv = binom_pvalue(row[top2[0]], row[top2[0]] + row[top2[1]])
        out.append((ABSTAIN if pv > alpha else int(top2[0]), pv))
    return out


class SmoothedClassifier:
    """g(x) for a base classifier ``model`` (any module mapping NCHW in [0,1] to (B, K) logits)."""

    def __init__(self, model, K: int, sigma: float):
        self.model, self.K, self.sigma = model, K, sigma

    def certify(self, x, n0: int, n: int, alpha: float, batch: int = 1000, gen: int = 0, idx: int = 0) -> SmoothCert:
        """One input: see ``certify_batch``; ``gen`` is the run seed of the noise streams."""
        with eval_mode(self.model):
            return certify_batch(self.model, np.asarray(x)[None], [idx], n0=n0, n=n, alpha=alpha, sigma=self.sigma,
                                 K=self.K, run_seed=gen, batch=batch)[0]

    def predict(self, x, n: int, alpha: float, batch: int = 1000, gen: int = 0, idx: int = 0) -> int:
        budget(n=max(n, 1), alpha=alpha, sigma=self.sigma, n_predict=n)
        with eval_mode(self.model):
            return predict_batch(self.model, np.asarray(x)[None], [idx], n=n, alpha=alpha, sigma=self.sigma,
                                 K=self.K, run_seed=gen, batch=batch)[0][0]


def certify_inputs(model, x, cfg, *, seed: int, K: int, records: str | Path | None = None,
                   shard: tuple[int, int] = (0, 1), idx: Sequence[int] | None = None,
                   labels: Sequence[int] | None = None) -> list[dict]:
    """CERTIFY (and PREDICT if ``cfg.predict``) every input; ``records`` = a JSONL file appended and flushed per
    chunk, whose finished indices are skipped on restart. ``shard=(r, w)`` takes idx = r (mod w)."""
    idx = np.arange(len(x)) if idx is None else np.asarray(idx)
    labels = np.full(len(x), -1) if labels is None else np.asarray(labels)
    rank, world = shard
    todo = [i for i in range(len(x)) if idx[i] % world == rank]
    done = {}
    if records is not None:
        done = {r["idx"]: r for r in read_jsonl(records)}
        todo = [i for i in todo if int(idx[i]) not in done]
    chunk = max(8, cfg.batch_size // max(cfg.n, 1))
    x = np.asarray(x, dtype=np.float32)
    out = list(done.values())
    with eval_mode(model):
        for s in range(0, len(todo), chunk):
            part = todo[s:s + chunk]
            recs = _certify_chunk(model, x[part], idx[part], labels[part], cfg, seed, K)
            if records is not None:
                append_jsonl(records, recs)
            out += recs
    return sorted(out, key=lambda r: r["idx"])


def _certify_chunk(model, x, idx, labels, cfg, seed, K) -> list[dict]:
    import torch

    batch = cfg.batch_size
    while True:
        try:
            certs = certify_batch(model, x, idx, n0=cfg.n0, n=cfg.n, alpha=cfg.alpha, sigma=cfg.sigma, K=K,
                                  run_seed=seed, batch=batch)
            preds = (predict_batch(model, x, idx, n=cfg.n, alpha=cfg.alpha, sigma=cfg.sigma, K=K, run_seed=seed,
                                   batch=batch) if cfg.predict else None)
            break
        except torch.cuda.OutOfMemoryError:
            if batch <= 1:
                raise
            batch //= 2
            log.warning("CUDA out of memory: halving the smoothing batch to %d", batch)
            torch.cuda.empty_cache()
    recs = []
    for j, c in enumerate(certs):
        r = {"idx": int(idx[j]), "label": int(labels[j]), "pred": c.pred, "radius": c.radius, "p_lower": c.p_lower,
             "n_a": c.n_a}
        if preds is not None:
            r["predict"], r["predict_pvalue"] = preds[j]
        recs.append(r)
    return recs
