"""Adaptive (sequential) randomized-smoothing certification at a target radius r, with CERTIFY's 1 - alpha guarantee.

Decision at radius r, threshold tau = Phi(r / sigma):
  1. select c = argmax of n0 *selection* draws (ties -> lowest index), exactly as Cohen et al.'s CERTIFY;
  2. draw fresh *estimation* noise in growing batches (sizes ``first * growth^j``, capped at ``n_max`` draws in all)
     and after each batch update the beta-binomial mixture confidence sequence (L_t, U_t) for p_c
     (``confseq.py``: time-uniform, so stopping on the data is allowed);
  3. stop with ``certify`` as soon as L_t > tau (radius sigma * Phi^-1(L_t) > r), with ``abstain`` as soon as
     U_t < tau, or with ``budget`` (abstain) after ``n_max`` estimation draws.
Guarantee: with probability >= 1 - alpha over the estimation noise, every L_t and U_t bounds p_c, so a certificate
is wrong (c not g(x), or radius above sigma * Phi^-1(p_c)) with probability <= alpha, and an ``abstain`` stop happens
with p_c > tau with probability <= alpha.

Noise: input ``idx`` uses the same block streams as ``smoothing.py`` (stream v2: 1000-row blocks, each seeded by
``block_seed(run_seed, idx, role, block)``): the selection draws are fixed-N CERTIFY's, and the estimation draws are a prefix of fixed-N's
stream at N = n_max, so adaptive and fixed-N decisions are paired on the same noise. Results depend on (seed, idx)
only, not on batch size, the order or grouping of inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from trustlab.runtime import ConfigError, ModelError, check_types, progress, require_range

from . import ABSTAIN
from .confseq import mixture_bounds

STOPS = ("certify", "abstain", "budget")


@dataclass(frozen=True)
class AdaptiveConfig:
    """Adaptive CERTIFY at target ``radius``: n0 selection draws, then estimation batches ``first * growth^j`` until
    a decision or ``n_max`` estimation draws; Beta ``prior`` of the mixture confidence sequence."""

    sigma: float = 0.25
    radius: float = 0.0
    n0: int = 100
    n_max: int = 100_000
    alpha: float = 0.001
    first: int = 64
    growth: float = 1.5
    prior: tuple[float, float] = (0.5, 0.5)
    batch_size: int = 1000
    max_hours: float = 24.0  # worst case (n_max draws per input) priced up front, as for fixed-N

    def __post_init__(self):
        check_types(self, "adaptive")
        require_range("adaptive.sigma", self.sigma, 0.0, lo_open=True)
        require_range("adaptive.radius", self.radius, 0.0)
        require_range("adaptive.n0", self.n0, 1)
        require_range("adaptive.n_max", self.n_max, 1)
        require_range("adaptive.alpha", self.alpha, 0.0, 1.0, lo_open=True, hi_open=True)
        require_range("adaptive.first", self.first, 1)
        require_range("adaptive.growth", self.growth, 1.0)
        for i, v in enumerate(self.prior):
            require_range(f"adaptive.prior[{i}]", v, 0.0, lo_open=True)
        require_range("adaptive.batch_size", self.batch_size, 1)
        require_range("adaptive.max_hours", self.max_hours, 0.0, lo_open=True)

    @property
    def threshold(self) -> float:
        return threshold(self.radius, self.sigma)

    @classmethod
    def from_smoothing(cls, cfg, radius: float, **kw) -> "AdaptiveConfig":
        """The adaptive counterpart of a fixed-N ``SmoothingConfig`` at target ``radius`` (N becomes n_max)."""
        return cls(sigma=cfg.sigma, radius=radius, n0=cfg.n0, n_max=cfg.n, alpha=cfg.alpha,
                   batch_size=cfg.batch_size, max_hours=cfg.max_hours, **kw)


@dataclass(frozen=True)
class AdaptiveCert:
    """One adaptive decision: ``pred`` (ABSTAIN = -1) robust within ``radius`` (>= the target) with prob >= 1 - alpha.

    ``selected`` = c from the selection draws; ``n_a`` of ``n_used`` estimation draws voted c; ``samples`` = n0 +
    n_used base-model forwards; (``p_lower``, ``p_upper``) the confidence-sequence bounds on p_c at the stop;
    ``stop`` in certify | abstain (upper bound below the threshold) | budget (n_max reached undecided)."""

    pred: int
    radius: float
    p_lower: float
    p_upper: float
    n_a: int
    n_used: int
    samples: int
    stop: str
    selected: int

    def record(self) -> dict:
        return {"pred": self.pred, "radius": self.radius, "p_lower": self.p_lower, "p_upper": self.p_upper,
                "n_a": self.n_a, "n_used": self.n_used, "samples": self.samples, "stop": self.stop,
                "selected": self.selected}


def threshold(radius: float, sigma: float) -> float:
    """tau = Phi(r / sigma): p_c > tau certifies radius sigma * Phi^-1(p_c) > r."""
    from scipy.stats import norm

    return float(norm.cdf(radius / sigma))


def batch_sizes(n_max: int, first: int = 64, growth: float = 1.5) -> list[int]:
    """Estimation batch sizes ceil(first * growth^j), the last one cut so they sum to exactly ``n_max``."""
    require_range("n_max", n_max, 1)
    require_range("first", first, 1)
    require_range("growth", growth, 1.0)
    sizes, total, size = [], 0, float(first)
    while total < n_max:
        b = min(int(math.ceil(size)), n_max - total)
        sizes.append(b)
        total += b
        size *= growth
    return sizes


# draw(role, rows, start, count) -> [len(rows), K] class counts of draws start..start+count-1 of stream ``role``
Draw = Callable[[str, np.ndarray, int, int], np.ndarray]


def decide(draw: Draw, n_inputs: int, *, tau: float, alpha: float, n0: int, sizes: Sequence[int],
           prior: tuple[float, float] = (0.5, 0.5), bounds: Callable | None = None) -> dict[str, np.ndarray]:
    """The sequential rule for ``n_inputs`` inputs in lockstep (see module docstring); ``draw`` supplies counts.

    Returns arrays: selected, n_a, n_used, p_lower, p_upper, stop (index into STOPS). The bounds are the running
    max / min of the confidence sequence over the batch ends. ``bounds(s, t, alpha, prior) -> (lower, upper)``
    replaces the mixture confidence sequence (tests use it to show that per-look intervals break the guarantee)."""
    bounds = mixture_bounds if bounds is None else bounds
    sel = np.asarray(draw("select", np.arange(n_inputs), 0, n0))
    c = sel.argmax(1)
    s = np.zeros(n_inputs, dtype=np.int64)
    t = np.zeros(n_inputs, dtype=np.int64)
    lower, upper = np.zeros(n_inputs), np.ones(n_inputs)
    stop = np.full(n_inputs, STOPS.index("budget"))
    active = np.arange(n_inputs)
    start = 0
    for size in sizes:
        if not len(active):
            break
        counts = np.asarray(draw("estimate", active, start, size))
        s[active] += counts[np.arange(len(active)), c[active]]
        t[active] += size
        start += size
        lo, hi = bounds(s[active], t[active], alpha, prior)
        lower[active] = np.maximum(lower[active], lo)
        upper[active] = np.minimum(upper[active], hi)
        cert = lower[active] > tau
        absn = ~cert & (upper[active] < tau)
        stop[active[cert]] = STOPS.index("certify")
        stop[active[absn]] = STOPS.index("abstain")
        active = active[~(cert | absn)]
    return {"selected": c, "n_a": s, "n_used": t, "p_lower": lower, "p_upper": upper, "stop": stop}


def max_radius(n_max: int, alpha: float, sigma: float, prior: tuple[float, float] = (0.5, 0.5)) -> float:
    """Largest radius the adaptive certifier can reach: sigma * Phi^-1(L) with all n_max draws voting c."""
    from scipy.stats import norm

    low = float(mixture_bounds(np.array([n_max]), np.array([n_max]), alpha, prior)[0][0])
    return float(sigma * norm.ppf(low)) if low > 0.5 else 0.0


def check_reachable(radius: float, n_max: int, alpha: float, sigma: float, prior=(0.5, 0.5)) -> None:
    """CertifyWarning when no outcome of n_max draws can certify ``radius`` (every input then abstains)."""
    import warnings

    from .stats import CertifyWarning

    top = max_radius(n_max, alpha, sigma, prior)
    if radius >= top:
        warnings.warn(f"radius {radius:g} is unreachable: with n_max={n_max:,} at alpha={alpha:g} the adaptive "
                      f"certifier certifies at most {top:.3f} (sigma={sigma:g}); every input will abstain",
                      CertifyWarning, stacklevel=3)


def _certs(out: dict, n0: int, sigma: float) -> list[AdaptiveCert]:
    from scipy.stats import norm

    certs = []
    for i in range(len(out["stop"])):
        stop = STOPS[int(out["stop"][i])]
        p_low = float(out["p_lower"][i])
        ok = stop == "certify"
        certs.append(AdaptiveCert(pred=int(out["selected"][i]) if ok else ABSTAIN,
                                  radius=float(sigma * norm.ppf(p_low)) if ok else 0.0, p_lower=p_low,
                                  p_upper=float(out["p_upper"][i]), n_a=int(out["n_a"][i]),
                                  n_used=int(out["n_used"][i]), samples=n0 + int(out["n_used"][i]), stop=stop,
                                  selected=int(out["selected"][i])))
    return certs


# --- the base model's noise streams ---------------------------------------------------------------------------
class _ModelDraw:
    """Counts of argmax f(x_i + delta) over slices of the block streams of ``smoothing.py``; one cached raw block per
    input, noisy rows packed into forwards of at most ``batch`` rows."""

    def __init__(self, model, x, idx, *, sigma: float, K: int, run_seed: int, batch: int, n_max: int):
        import torch

        from .smoothing import _blocks, _device

        self.model, self.idx, self.sigma, self.K, self.seed, self.batch = model, list(idx), sigma, K, run_seed, batch
        self.dev = _device(model)
        self.x = torch.as_tensor(np.asarray(x, dtype=np.float32), device=self.dev)
        self.est_sizes = list(_blocks(n_max))
        self.cache: dict[int, tuple[int, object]] = {}
        self.buf = torch.empty((batch, *self.x.shape[1:]), dtype=torch.float32, device=self.dev)
        self.own = torch.empty(batch, dtype=torch.long, device=self.dev)
        self.forwards = 0

    def _raw(self, i: int, block: int):
        import torch

        from .smoothing import block_seed

        hit = self.cache.get(i)
        if hit is None or hit[0] != block:
            g = torch.Generator(device=self.dev).manual_seed(block_seed(self.seed, self.idx[i], "estimate", block))
            raw = torch.randn((self.est_sizes[block], *self.x.shape[1:]), generator=g, device=self.dev)
            self.cache[i] = hit = (block, raw)
        return hit[1]

    def __call__(self, role: str, rows: np.ndarray, start: int, count: int) -> np.ndarray:
        import torch

        from .smoothing import NOISE_BLOCK, _forward, count_classes

        if role == "select":
            self.forwards += count * len(rows)
            return count_classes(self.model, self.x, self.idx, count, "select", sigma=self.sigma, K=self.K,
                                 run_seed=self.seed, batch=self.batch)
        counts = torch.zeros(len(self.idx) * self.K, dtype=torch.long, device=self.dev)
        ones = torch.ones(self.batch, dtype=torch.long, device=self.dev)
        fill = 0

        def flush(n):
            logits = _forward(self.model, self.buf[:n], self.own[:n], self.idx, self.K)
            counts.index_add_(0, self.own[:n] * self.K + logits.argmax(1), ones[:n])
            self.forwards += n

        for i in map(int, rows):
            pos, end = start, start + count
            while pos < end:
                block, off = divmod(pos, NOISE_BLOCK)
                take = min(end - pos, self.est_sizes[block] - off, self.batch - fill)
                seg = self.buf[fill:fill + take]
                torch.mul(self._raw(i, block)[off:off + take], self.sigma, out=seg)
                seg.add_(self.x[i])
                self.own[fill:fill + take] = i
                fill += take
                pos += take
                if fill == self.batch:
                    flush(fill)
                    fill = 0
        if fill:
            flush(fill)
        for i in set(self.cache) - set(map(int, rows)):
            del self.cache[i]  # inputs that have stopped
        picked = torch.as_tensor(rows, dtype=torch.long, device=self.dev)
        return counts.view(len(self.idx), self.K)[picked].cpu().numpy()


def certify_model_batch(model, x, idx: Sequence[int], *, sigma: float, radius: float, alpha: float, n0: int,
                        n_max: int, K: int, run_seed: int, first: int = 64, growth: float = 1.5,
                        prior: tuple[float, float] = (0.5, 0.5), batch: int = 1000) -> list[AdaptiveCert]:
    """Adaptive CERTIFY of inputs ``x`` (noise streams ``idx`` under ``run_seed``) with an nn.Module base model."""
    from .smoothing import check_params, eval_mode

    check_params(sigma=sigma, n0=n0, n=n_max, alpha=alpha, batch=batch)
    require_range("radius", radius, 0.0)
    check_reachable(radius, n_max, alpha, sigma, prior)
    draw = _ModelDraw(model, x, idx, sigma=sigma, K=K, run_seed=run_seed, batch=batch, n_max=n_max)
    with eval_mode(model):
        out = decide(draw, len(idx), tau=threshold(radius, sigma), alpha=alpha, n0=n0,
                     sizes=batch_sizes(n_max, first, growth), prior=prior)
    return _certs(out, n0, sigma)


def certify_adaptive(base, x=None, *, sigma: float, radius: float, alpha: float, n0: int = 100,
                     n_max: int = 100_000, first: int = 64, growth: float = 1.5,
                     prior: tuple[float, float] = (0.5, 0.5), gen: int = 0, idx: int | None = None,
                     K: int | None = None, batch: int = 1000) -> AdaptiveCert:
    """Adaptive CERTIFY of one input at target ``radius`` (see module docstring) on any base classifier.

    ``base`` is an nn.Module (logits (B, K) for NCHW input; ``x`` the input, ``K`` the number of classes, ``gen`` the
    run seed and ``idx`` the noise stream, default a digest of ``x``), or a function ``base(role, start, count)``
    returning the K class counts of the base classifier on draws start..start+count-1 of the independent noise
    stream ``role`` ("select" or "estimate"); ``x``, ``gen`` and ``idx`` are then unused."""
    from .smoothing import check_params, eval_mode, input_key

    check_params(sigma=sigma, n0=n0, n=n_max, alpha=alpha, batch=batch)
    require_range("radius", radius, 0.0)
    if hasattr(base, "parameters") and hasattr(base, "eval"):
        if K is None or isinstance(K, bool) or not isinstance(K, (int, np.integer)) or K < 2:
            raise ConfigError(f"K must be an integer >= 2 (number of classes), got {K!r}", hint="pass K >= 2")
        x = _finite(x)
        key = input_key(x) if idx is None else int(idx)
        with eval_mode(base):
            return certify_model_batch(base, x[None], [key], sigma=sigma, radius=radius, alpha=alpha, n0=n0,
                                       n_max=n_max, K=int(K), run_seed=gen, first=first, growth=growth, prior=prior,
                                       batch=batch)[0]
    if not callable(base):
        raise ConfigError(f"base must be an nn.Module or a counts function, got {type(base).__name__}",
                          hint="pass the model, or fn(role, start, count) -> class counts")

    def draw(role, rows, start, count):
        c = np.asarray(base(role, start, count))
        if c.ndim != 1 or c.sum() != count:
            raise ModelError(f"counts function returned {c.tolist()!r} for {count} draws",
                              hint="return one count per class, summing to the number of draws asked for")
        return c[None]

    check_reachable(radius, n_max, alpha, sigma, prior)
    out = decide(draw, 1, tau=threshold(radius, sigma), alpha=alpha, n0=n0, sizes=batch_sizes(n_max, first, growth),
                 prior=prior)
    return _certs(out, n0, sigma)[0]


def _finite(x):
    from trustlab.runtime import DataError

    x = np.asarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise DataError("input holds NaN or inf", hint="certify finite inputs (images scaled to [0, 1])")
    return x


class AdaptiveSmoothedClassifier:
    """g(x) for a base classifier ``model`` at noise ``sigma``, certified adaptively (mirrors SmoothedClassifier:
    ``gen`` is the run seed of the noise streams, ``idx`` the input's stream, default a digest of the input)."""

    def __init__(self, model, K: int, sigma: float):
        from .smoothing import SmoothedClassifier

        base = SmoothedClassifier(model, K, sigma)  # same checks of K and sigma
        self.model, self.K, self.sigma = base.model, base.K, base.sigma

    def certify(self, x, radius: float, n0: int = 100, n_max: int = 100_000, alpha: float = 0.001,
                batch: int = 1000, gen: int = 0, idx: int | None = None, first: int = 64, growth: float = 1.5,
                prior: tuple[float, float] = (0.5, 0.5)) -> AdaptiveCert:
        """One input at target ``radius``: see ``certify_adaptive``."""
        return certify_adaptive(self.model, x, sigma=self.sigma, radius=radius, alpha=alpha, n0=n0, n_max=n_max,
                                first=first, growth=growth, prior=prior, gen=gen, idx=idx, K=self.K, batch=batch)


def adaptive_settings(model, x, idx, labels, cfg: AdaptiveConfig, seed: int, K: int) -> dict:
    """What an adaptive certificate depends on (the stamp of its record file)."""
    from trustlab.models.identity import weights_digest

    from .records import array_digest
    from .smoothing import NOISE_STREAM

    return {"certifier": "smoothing-adaptive", "sigma": cfg.sigma, "radius": cfg.radius, "n0": cfg.n0,
            "n_max": cfg.n_max, "alpha": cfg.alpha, "first": cfg.first, "growth": cfg.growth,
            "prior": list(cfg.prior), "noise_stream": NOISE_STREAM, "noise_seed": int(seed), "K": int(K),
            "model": weights_digest(model),
            "inputs": array_digest(np.asarray(x, dtype=np.float32), np.asarray(idx), np.asarray(labels))}


def certify_inputs_adaptive(model, x, cfg: AdaptiveConfig, *, seed: int, K: int, records: str | Path | None = None,
                            shard: tuple[int, int] = (0, 1), idx: Sequence[int] | None = None,
                            labels: Sequence[int] | None = None, resume: bool = True, on_stale: str = "refuse",
                            chunk: int = 32) -> list[dict]:
    """Adaptive CERTIFY of every input (``shard=(r, w)`` takes idx = r (mod w)), ``chunk`` inputs in lockstep.

    Records (``idx, label`` + ``AdaptiveCert.record()``) go to a stamped JSONL file as in ``certify_inputs``;
    the worst case (n0 + n_max draws per input) is priced up front against ``cfg.max_hours``."""
    from types import SimpleNamespace

    from .records import append_records, open_records
    from .budget import require_budget
    from .smoothing import eval_mode

    idx = np.arange(len(x)) if idx is None else np.asarray(idx)
    labels = np.full(len(x), -1) if labels is None else np.asarray(labels)
    x = np.asarray(x, dtype=np.float32)
    rank, world = shard
    todo = [i for i in range(len(x)) if idx[i] % world == rank]
    done: dict = {}
    if records is not None:
        settings = adaptive_settings(model, x, idx, labels, cfg, seed, K)
        done = {r["idx"]: r for r in open_records(records, settings, resume=resume, on_stale=on_stale)}
        todo = [i for i in todo if int(idx[i]) not in done]
    price = SimpleNamespace(n0=cfg.n0, n=cfg.n_max, predict=False, alpha=cfg.alpha, batch_size=cfg.batch_size,
                            max_hours=cfg.max_hours)
    require_budget(model, x.shape[1:], price, len(todo),
                   names={"n": "adaptive.n_max", "max_hours": "adaptive.max_hours"})
    out = list(done.values())
    starts = range(0, len(todo), chunk)
    with eval_mode(model):
        for s in progress(starts, f"certify RS adaptive (r={cfg.radius:g}, N<={cfg.n_max:,}, {len(todo)} inputs)",
                          total=len(starts)):
            part = todo[s:s + chunk]
            certs = certify_model_batch(model, x[part], [int(i) for i in idx[part]], sigma=cfg.sigma,
                                        radius=cfg.radius, alpha=cfg.alpha, n0=cfg.n0, n_max=cfg.n_max, K=K,
                                        run_seed=seed, first=cfg.first, growth=cfg.growth, prior=cfg.prior,
                                        batch=cfg.batch_size)
            recs = [{"idx": int(idx[j]), "label": int(labels[j]), **c.record()} for j, c in zip(part, certs)]
            if records is not None:
                append_records(records, recs)
            out += recs
    return sorted(out, key=lambda r: r["idx"])


def summarise_radii(by_radius: dict[float, Sequence[dict]]) -> dict:
    """Metrics of adaptive runs at several target radii (one run per radius, records with ``label``):
    certified accuracy{r} (certified and correct), abstain rate{r}, and the cost summary{r}."""
    out: dict = {"certified_acc": {}, "abstain_rate": {}, "cost": {}}
    for r, recs in sorted(by_radius.items()):
        key = f"{r:g}"
        n = max(len(recs), 1)
        out["certified_acc"][key] = sum(x["pred"] != ABSTAIN and x["pred"] == x["label"] for x in recs) / n
        out["abstain_rate"][key] = sum(x["pred"] == ABSTAIN for x in recs) / n
        out["cost"][key] = cost_summary(recs)
    return out


def cost_summary(records: Sequence[dict]) -> dict:
    """Certification cost (issue 11 item 3): mean and p95 base-model forwards per input, and the stop shares."""
    n = np.array([r["samples"] for r in records], dtype=float)
    if not len(n):
        return {"n": 0, "forwards_mean": None, "forwards_p95": None, "stops": {}}
    stops = [r["stop"] for r in records]
    return {"n": len(n), "forwards_mean": float(n.mean()), "forwards_p95": float(np.percentile(n, 95)),
            "forwards_max": float(n.max()), "stops": {s: stops.count(s) / len(stops) for s in STOPS}}
