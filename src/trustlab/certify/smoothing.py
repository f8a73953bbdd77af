"""Randomized smoothing (Cohen, Rosenfeld, Kolter 2019): g(x) = argmax_c P(f(x + delta) = c), delta ~ N(0, sigma^2 I).

Noise for input ``idx`` comes in fixed blocks of NOISE_BLOCK rows, each from its own torch generator seeded by a
hash of (run_seed, idx, role, block) (``block_seed``), with separate streams for selection, estimation and PREDICT:
results do not depend on batch size, input order, resume or sharding (on one device type). Stream v2 (NOISE_STREAM):
1000-row blocks and BLAKE2b seeds; v1 (500-row blocks, a numpy SeedSequence per block) spent a tenth of the digits
MLP's time on seeding; the stream version is part of every record file's stamp. ``certify_inputs`` uses an input's position as ``idx``;
``SmoothedClassifier`` without an ``idx`` uses a digest of the input itself, so distinct inputs get distinct noise.

Before certifying, the sample budget is priced: noisy forwards per second are measured on the model and a budget
whose estimated time exceeds ``max_hours`` is refused up front (``trustlab.certify.budget.require_budget``).
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator, Sequence

import numpy as np

from trustlab.models.identity import weights_digest
from trustlab.runtime import ConfigError, DataError, ModelError, progress, require_range

from . import ABSTAIN
from .records import append_records, array_digest, open_records
from .budget import draws_per_input, require_budget
from .stats import binom_pvalue, budget, cp_lower
from .torchutil import eval_mode, model_device  # noqa: F401  (eval_mode: also imported from here)

NOISE_BLOCK = 1000  # rows per seeded block of an input's noise stream
NOISE_STREAM = 2  # v1: 500-row blocks, a numpy SeedSequence per block; v2: 1000-row blocks, BLAKE2b block seeds
CHUNK_FORWARDS = 32  # a chunk of certify_inputs spans at least this many full forwards
ROLES = {"select": 0, "estimate": 1, "predict": 2}
BOUNDS = ("clopper-pearson", "randomized-cp")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SmoothCert:
    """CERTIFY's answer: ``pred`` (ABSTAIN = -1) robust within L2 ``radius`` with prob >= 1 - alpha."""

    pred: int
    radius: float
    p_lower: float
    n_a: int


@dataclass(frozen=True)
class SmoothCerts:
    """CERTIFY's answers for a batch: arrays ``pred`` (ABSTAIN = -1), ``radius``, ``p_lower``, ``n_a``."""

    pred: np.ndarray
    radius: np.ndarray
    p_lower: np.ndarray
    n_a: np.ndarray

    def __len__(self) -> int:
        return len(self.pred)

    def __getitem__(self, i: int) -> SmoothCert:
        return SmoothCert(int(self.pred[i]), float(self.radius[i]), float(self.p_lower[i]), int(self.n_a[i]))

    @property
    def abstain_rate(self) -> float:
        return float(np.mean(self.pred == ABSTAIN)) if len(self.pred) else float("nan")


def block_seed(run_seed: int, idx: int, role: str, block: int) -> int:
    """Seed of block ``block`` of the noise stream (run_seed, idx, role): 63 bits of BLAKE2b of the four numbers
    (stream v2; v1 took a numpy SeedSequence per block, 40x slower, which showed in the MLP's throughput)."""
    key = b"trustlab-noise-v2:%d:%d:%d:%d" % (int(run_seed), int(idx), ROLES[role], int(block))
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def stream_seeds(run_seed: int, idx: int, role: str, blocks: int) -> list[int]:
    """Seeds of the first ``blocks`` blocks of stream (run_seed, idx, role) (``block_seed`` of each)."""
    return [block_seed(run_seed, idx, role, b) for b in range(blocks)]


def _device(model):
    return model_device(model)


def count_classes(model, x, idx: Sequence[int], draws: int, role: str, *, sigma: float, K: int, run_seed: int,
                  batch: int) -> np.ndarray:
    """[B, K] counts of argmax f(x_i + sigma * z) over the first ``draws`` rows z of input i's noise stream ``role``
    (see ``count_streams``)."""
    return count_streams(model, x, idx, ((role, draws),), sigma=sigma, K=K, run_seed=run_seed, batch=batch)[0]


def count_streams(model, x, idx: Sequence[int], streams: Sequence[tuple[str, int]], *, sigma: float, K: int,
                  run_seed: int, batch: int) -> list[np.ndarray]:
    """For each (role, draws) of ``streams``, the [B, K] counts of argmax f(x_i + sigma * z) over the first ``draws``
    rows z of input i's noise stream ``role``; all streams share the forwards (CERTIFY's selection and estimation
    draws are independent, so they are counted in one pass).

    The stream is cut in blocks of NOISE_BLOCK rows, block b drawn as sigma * z by ``normal_(0, sigma)`` (the same
    floats as sigma * torch.randn) from a generator seeded with ``block_seed(run_seed, idx[i], role, b)``; rows are
    packed into forwards of at most ``batch`` rows (several inputs per forward when draws < batch), so the counts do
    not depend on batch, order or grouping. A NaN or +inf logit makes its row's top logit, and so its input's sum of
    top logits, non-finite (ModelError naming the input). Buffers are allocated once and counts accumulate on the
    device, read once at the end: each forward reuses the same warm memory, and after it only max, one add and two
    index_adds run (keeping per-forward results cost 20% on the digits MLP)."""
    import torch

    dev = _device(model)
    x = torch.as_tensor(x, dtype=torch.float32, device=dev)
    n_in, shape, n_s = len(x), tuple(x.shape[1:]), len(streams)
    rows_of = x.unbind(0)
    counts = torch.zeros(n_s * n_in * K, dtype=torch.long, device=dev)  # (stream s, input i, class c) at (s*n_in+i)*K+c
    top = torch.zeros(n_s * n_in * K, dtype=torch.float32, device=dev)  # sums of top logits, at the same keys
    buf = torch.empty((batch, *shape), dtype=torch.float32, device=dev)
    blk = torch.empty((min(NOISE_BLOCK, max(d for _, d in streams)), *shape), dtype=torch.float32, device=dev)
    base = torch.empty(batch, dtype=torch.long, device=dev)  # (s * n_in + i) * K of each row of the forward
    key = torch.empty(batch, dtype=torch.long, device=dev)
    ones = torch.ones(batch, dtype=torch.long, device=dev)
    g = torch.Generator(device=dev)  # re-seeded per block: manual_seed resets the whole state, as a new one would
    # longest stream first, input by input: its full blocks then fill whole forwards, drawn in place (no copy)
    order = sorted(range(n_s), key=lambda s: -streams[s][1])
    plan = [((s * n_in + i) * K, i, block_seed(run_seed, idx[i], streams[s][0], b), size)
            for s in order for i in range(n_in) for b, size in enumerate(_blocks(streams[s][1]))]
    fill = 0

    def forward(xb):
        rows = xb.shape[0]
        logits = model(xb)
        if logits.ndim != 2 or logits.shape[1] != K or logits.shape[0] != rows:
            raise ModelError(f"model returned logits of shape {tuple(logits.shape)} for input idx "
                             f"{idx[(int(base[0]) // K) % n_in]}; expected ({rows}, {K})",
                             hint="the base model must map a batch to (B, K) logits")
        best, pred = logits.max(1)  # first maximum on ties, as argmax
        torch.add(pred, base[:rows], out=key[:rows])
        counts.index_add_(0, key[:rows], ones[:rows])
        top.index_add_(0, key[:rows], best.float())  # any logit dtype (autocast, float64)

    with torch.inference_mode():
        for o, i, seed, size in plan:
            g.manual_seed(seed)
            direct = batch - fill >= size  # the block fits: draw it straight into the forward buffer
            seg = buf[fill:fill + size] if direct else blk[:size]
            seg.normal_(0.0, sigma, generator=g).add_(rows_of[i])  # x + sigma * z
            if direct:
                base[fill:fill + size] = o
                fill += size
                if fill == batch:
                    forward(buf)
                    fill = 0
                continue
            off = 0
            while off < size:
                if fill == 0 and size - off >= batch:  # a whole forward inside the block: no copy
                    base[:batch] = o
                    forward(seg[off:off + batch])
                    off += batch
                    continue
                n = min(size - off, batch - fill)
                buf[fill:fill + n] = seg[off:off + n]
                base[fill:fill + n] = o
                fill += n
                off += n
                if fill == batch:
                    forward(buf)
                    fill = 0
        if fill:
            forward(buf[:fill])
    bad = ~torch.isfinite(top)
    if bool(bad.any()):
        raise ModelError(f"model returned non-finite logits under noise for input idx "
                         f"{idx[(int(bad.nonzero()[0, 0]) // K) % n_in]}", hint="check the model and its input scaling")
    return list(counts.view(n_s, n_in, K).cpu().numpy())


def _blocks(draws: int) -> Iterator[int]:
    full, rest = divmod(draws, NOISE_BLOCK)
    for _ in range(full):
        yield NOISE_BLOCK
    if rest:
        yield rest


def check_params(*, sigma: float | None = None, n0: int | None = None, n: int | None = None,
                 alpha: float | None = None, batch: int | None = None) -> None:
    """ConfigError naming the parameter for sigma <= 0, n0 < 1, n < 1, alpha outside (0, 1), batch < 1 or NaN."""
    if sigma is not None:
        require_range("sigma", sigma, 0.0, lo_open=True)
    for name, v in (("n0", n0), ("n", n), ("batch", batch)):
        if v is not None:
            if isinstance(v, float) and math.isfinite(v) and v.is_integer():
                v = int(v)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}", hint=f"pass {name} as an integer")
            require_range(name, v, 1)
    if alpha is not None:
        require_range("alpha", alpha, 0.0, 1.0, lo_open=True, hi_open=True)


def input_key(x) -> int:
    """A stable 62-bit noise-stream index from an input's bytes: distinct inputs, distinct noise; same input, same."""
    a = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    digest = hashlib.sha256(f"{a.shape}".encode() + a.tobytes()).digest()
    return int.from_bytes(digest[:8], "little") >> 2


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


def bound_u(run_seed: int, idx: int) -> float:
    """The uniform u in [0, 1) of randomized CP for input ``idx``: 53 bits of BLAKE2b of (run_seed, idx), a stream
    apart from every noise block, so u is independent of the draws and the same on resume and in any shard."""
    key = b"trustlab-rcp-u:%d:%d" % (int(run_seed), int(idx))
    return (int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 11) * 2.0 ** -53


def p_lower_bound(n_a, n: int, alpha: float, bound: str, run_seed: int, idx: Sequence[int]) -> np.ndarray:
    """Lower (1 - alpha) confidence bounds on p_A from n_a of n: Clopper-Pearson, or randomized CP with u from
    ``bound_u`` clipped below at 2 alpha (a larger u only lowers the bound, so coverage stays >= 1 - alpha, and the
    bound stays below 1 when all n draws agree, keeping the radius finite)."""
    if bound == "clopper-pearson":
        return np.atleast_1d(cp_lower(n_a, n, alpha))
    if bound == "randomized-cp":
        from .randomized_cp import randomized_cp_lower

        u = np.maximum([bound_u(run_seed, i) for i in idx], 2 * alpha)
        return np.atleast_1d(randomized_cp_lower(n_a, n, alpha, u))
    raise ConfigError(f"bound must be one of 'clopper-pearson', 'randomized-cp'; got {bound!r}",
                      hint="pass bound='clopper-pearson' (default) or 'randomized-cp'")


def certify_batch(model, x, idx, *, n0: int, n: int, alpha: float, sigma: float, K: int, run_seed: int,
                  batch: int, bound: str = "clopper-pearson") -> list[SmoothCert]:
    """CERTIFY for each input: guess c from n0 selection draws, lower-bound p_c from n *fresh* draws (``bound``:
    Clopper-Pearson or randomized CP, see ``p_lower_bound``); abstain if p_lower < 1/2, else certify c within
    sigma * Phi^-1(p_lower) with probability >= 1 - alpha."""
    from scipy.special import ndtri  # Phi^-1 (norm.ppf's routine)

    check_params(sigma=sigma, n0=n0, n=n, alpha=alpha, batch=batch)
    if bound not in BOUNDS:  # fail before any forward
        p_lower_bound(np.zeros(0), 1, alpha, bound, run_seed, [])

    # selection and estimation draws are independent streams: counted in one pass, c is picked from sel alone
    sel, est = count_streams(model, x, idx, (("select", n0), ("estimate", n)), sigma=sigma, K=K, run_seed=run_seed,
                             batch=batch)
    c_hat = sel.argmax(1)  # ties -> lowest class index
    n_a = est[np.arange(len(x)), c_hat]
    p_low = p_lower_bound(n_a, n, alpha, bound, run_seed, idx)
    radius = sigma * ndtri(p_low)
    return [SmoothCert(ABSTAIN, 0.0, float(p), int(k)) if p < 0.5 else SmoothCert(int(c), float(r), float(p), int(k))
            for c, k, p, r in zip(c_hat, n_a, p_low, radius)]


def predict_batch(model, x, idx, *, n: int, alpha: float, sigma: float, K: int, run_seed: int,
                  batch: int) -> list[tuple[int, float]]:
    """PREDICT: top class of n draws, or ABSTAIN when the two-sided binomial test of the top two counts has
    p-value > alpha (then g(x) is returned wrongly with probability <= alpha)."""
    check_params(sigma=sigma, n=n, alpha=alpha, batch=batch)
    counts = count_classes(model, x, idx, n, "predict", sigma=sigma, K=K, run_seed=run_seed, batch=batch)
    top2 = np.argsort(-counts, axis=1, kind="stable")[:, :2]  # ties -> lowest class index
    n1, n2 = np.take_along_axis(counts, top2, 1).T
    pv = np.atleast_1d(binom_pvalue(n1, n1 + n2))
    return [(ABSTAIN if p > alpha else int(c), float(p)) for c, p in zip(top2[:, 0], pv)]


class SmoothedClassifier:
    """g(x) for a base classifier ``model`` (any module mapping NCHW in [0,1] to (B, K) logits) at noise ``sigma`` > 0.

    ``gen`` is the run seed of the noise streams; ``idx`` names the input's stream (default: a digest of the input,
    so every distinct input gets its own noise and the same input always the same)."""

    def __init__(self, model, K: int, sigma: float):
        check_params(sigma=sigma)
        if isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 2:
            raise ConfigError(f"K must be an integer >= 2 (number of classes), got {K!r}", hint="pass K >= 2")
        self.model, self.K, self.sigma = model, int(K), float(sigma)

    def _input(self, x):
        x = np.asarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise DataError("input holds NaN or inf", hint="certify finite inputs (images scaled to [0, 1])")
        return x

    def _budget(self, x, n0: int, n: int, alpha: float, batch: int, max_hours: float, predict: bool) -> None:
        require_range("max_hours", max_hours, 0.0, lo_open=True)
        cfg = SimpleNamespace(n0=n0, n=0 if predict else n, predict=predict, alpha=alpha, batch_size=batch,
                              max_hours=max_hours)
        if predict:
            cfg.n0, cfg.n = 0, n
        require_budget(self.model, x.shape, cfg, 1, names={"n": "n", "max_hours": "max_hours"})

    def certify(self, x, n0: int, n: int, alpha: float, batch: int = 1000, gen: int = 0,
                idx: int | None = None, max_hours: float = 24.0, bound: str = "clopper-pearson") -> SmoothCert:
        """One input: see ``certify_batch``; a budget estimated above ``max_hours`` is refused (ConfigError)."""
        check_params(n0=n0, n=n, alpha=alpha, batch=batch)
        x = self._input(x)
        self._budget(x, n0, n, alpha, batch, max_hours, predict=False)
        key = input_key(x) if idx is None else idx
        with eval_mode(self.model):
            return certify_batch(self.model, x[None], [key], n0=n0, n=n, alpha=alpha, sigma=self.sigma,
                                 K=self.K, run_seed=gen, batch=batch, bound=bound)[0]

    def certify_batch(self, x, n0: int, n: int, alpha: float, batch: int = 1000, gen: int = 0,
                      idx: Sequence[int] | None = None, max_hours: float = 24.0,
                      bound: str = "clopper-pearson") -> "SmoothCerts":
        """Many inputs at once (noise packed across inputs; input i uses stream ``idx[i]``, default a digest of it):
        each result equals ``certify`` of that input alone with the same ``idx``."""
        check_params(n0=n0, n=n, alpha=alpha, batch=batch)
        x = self._input(x)
        keys = [input_key(xi) for xi in x] if idx is None else [int(i) for i in idx]
        if len(keys) != len(x):
            raise ConfigError(f"idx has {len(keys)} entries for {len(x)} inputs", hint="pass one idx per input")
        cfg = SimpleNamespace(n0=n0, n=n, predict=False, alpha=alpha, batch_size=batch, max_hours=max_hours)
        require_range("max_hours", max_hours, 0.0, lo_open=True)
        require_budget(self.model, x.shape[1:], cfg, len(x), names={"n": "n", "max_hours": "max_hours"})
        with eval_mode(self.model):
            certs = certify_batch(self.model, x, keys, n0=n0, n=n, alpha=alpha, sigma=self.sigma, K=self.K,
                                  run_seed=gen, batch=batch, bound=bound)
        return SmoothCerts(np.array([c.pred for c in certs], dtype=int), np.array([c.radius for c in certs]),
                           np.array([c.p_lower for c in certs]), np.array([c.n_a for c in certs], dtype=int))

    def predict(self, x, n: int, alpha: float, batch: int = 1000, gen: int = 0, idx: int | None = None,
                max_hours: float = 24.0) -> int:
        """One input: see ``predict_batch``; warns (CertifyWarning) when n can never reach the alpha level."""
        check_params(n=n, alpha=alpha, batch=batch)
        x = self._input(x)
        self._budget(x, 0, n, alpha, batch, max_hours, predict=True)
        key = input_key(x) if idx is None else idx
        budget(n=n, alpha=alpha, sigma=self.sigma, n_predict=n)
        with eval_mode(self.model):
            return predict_batch(self.model, x[None], [key], n=n, alpha=alpha, sigma=self.sigma,
                                 K=self.K, run_seed=gen, batch=batch)[0][0]


def smoothing_settings(model, x, idx, labels, cfg, seed: int, K: int) -> dict:
    """What a smoothing certificate depends on (the stamp of its record file)."""
    return {"certifier": "smoothing", "sigma": cfg.sigma, "n0": cfg.n0, "n": cfg.n, "alpha": cfg.alpha,
            "predict": cfg.predict, "bound": cfg.bound, "noise_stream": NOISE_STREAM, "noise_seed": int(seed),
            "K": int(K), "model": weights_digest(model),
            "inputs": array_digest(np.asarray(x, dtype=np.float32), np.asarray(idx), np.asarray(labels))}


def certify_inputs(model, x, cfg, *, seed: int, K: int, records: str | Path | None = None,
                   shard: tuple[int, int] = (0, 1), idx: Sequence[int] | None = None,
                   labels: Sequence[int] | None = None, resume: bool = True, on_stale: str = "refuse") -> list[dict]:
    """CERTIFY (and PREDICT if ``cfg.predict``) every input; ``shard=(r, w)`` takes idx = r (mod w).

    ``records``: a stamped JSONL file (see ``records.py``) appended and flushed per chunk. On restart its finished
    indices are skipped if it was written under the same settings (sigma, n0, n, alpha, predict, bound, noise stream,
    seed, model weights, inputs); a file of other settings is refused (``on_stale="refuse"``) or discarded (``"discard"``);
    ``resume=False`` starts it afresh. The budget is priced first (``require_budget``)."""
    idx = np.arange(len(x)) if idx is None else np.asarray(idx)
    labels = np.full(len(x), -1) if labels is None else np.asarray(labels)
    x = np.asarray(x, dtype=np.float32)
    rank, world = shard
    todo = [i for i in range(len(x)) if idx[i] % world == rank]
    done: dict = {}
    if records is not None:
        settings = smoothing_settings(model, x, idx, labels, cfg, seed, K)
        done = {r["idx"]: r for r in open_records(records, settings, resume=resume, on_stale=on_stale)}
        todo = [i for i in todo if int(idx[i]) not in done]
    require_budget(model, x.shape[1:], cfg, len(todo))
    # inputs per chunk (records are flushed per chunk): at least 8, and at least CHUNK_FORWARDS full forwards, so the
    # per-chunk work (buffers, bounds, records) stays a small share when N is small
    chunk = max(8, CHUNK_FORWARDS * cfg.batch_size // draws_per_input(cfg))
    out = list(done.values())
    starts = range(0, len(todo), chunk)
    with eval_mode(model):
        for s in progress(starts, f"certify RS (N={cfg.n:,}, {len(todo)} inputs)", total=len(starts)):
            part = todo[s:s + chunk]
            recs = _certify_chunk(model, x[part], idx[part], labels[part], cfg, seed, K)
            if records is not None:
                append_records(records, recs)
            out += recs
    return sorted(out, key=lambda r: r["idx"])


def _certify_chunk(model, x, idx, labels, cfg, seed, K) -> list[dict]:
    import torch

    batch = cfg.batch_size
    while True:
        try:
            certs = certify_batch(model, x, idx, n0=cfg.n0, n=cfg.n, alpha=cfg.alpha, sigma=cfg.sigma, K=K,
                                  run_seed=seed, batch=batch, bound=cfg.bound)
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
             "n_a": c.n_a, "bound": cfg.bound}
        if preds is not None:
            r["predict"], r["predict_pvalue"] = preds[j]
        recs.append(r)
    return recs
