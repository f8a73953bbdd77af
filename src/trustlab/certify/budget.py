"""Pricing a smoothing run before it starts: noisy forwards per second measured on the model (``forward_rate``),
draws per input (``draws_per_input``), and ``require_budget``, which refuses (ConfigError, with the estimate and a
smaller n to try) a budget whose estimated time exceeds ``max_hours``.
"""

from __future__ import annotations

import math
import time

from trustlab.runtime import ConfigError
from trustlab.runtime.workload import format_seconds

from .stats import max_radius
from .torchutil import eval_mode, model_device


_RATES: dict = {}


def forward_rate(model, shape, batch: int) -> float:
    """Noisy forwards per second of ``model`` on inputs of ``shape``: noise draw + forward + argmax of one batch of
    min(batch, 256) rows, best of two timed runs after a warm-up (cached per architecture, shape and device)."""
    import torch

    dev = model_device(model)
    rows = max(1, min(int(batch), 256))
    key = (type(model).__name__, repr(model), tuple(shape), str(dev), rows)
    if key not in _RATES:
        buf = torch.empty((rows, *shape), dtype=torch.float32, device=dev)
        best = math.inf
        with eval_mode(model), torch.inference_mode():
            for rep in range(3):
                t0 = time.perf_counter()
                torch.randn(buf.shape, out=buf, device=dev)
                model(buf).argmax(1).cpu()
                if rep:
                    best = min(best, time.perf_counter() - t0)
        _RATES[key] = rows / max(best, 1e-9)
    return _RATES[key]


def draws_per_input(cfg) -> int:
    return cfg.n0 + cfg.n + (cfg.n if cfg.predict else 0)




def require_budget(model, shape, cfg, n_inputs: int, names: dict | None = None) -> float:
    """Estimated seconds to certify ``n_inputs`` inputs with ``cfg`` (SmoothingConfig) on ``model``; ConfigError
    with the estimate when it exceeds ``cfg.max_hours``. ``names`` spells the knobs in the hint (flags or keys)."""
    names = {"n": "smoothing.n", "max_hours": "smoothing.max_hours", **(names or {})}
    if n_inputs <= 0:
        return 0.0
    rate = forward_rate(model, shape, cfg.batch_size)
    total = n_inputs * draws_per_input(cfg)
    sec = total / rate
    if sec > cfg.max_hours * 3600:
        suggest = 100_000 if cfg.n > 100_000 else max(1, cfg.n // 10)
        raise ConfigError(
            f"smoothing budget too large: {n_inputs} inputs x {draws_per_input(cfg):,} noisy forwards "
            f"(n0 {cfg.n0} + n {cfg.n:,}{' + predict n' if cfg.predict else ''}) would take about "
            f"{format_seconds(sec)} at the {rate:,.0f} forwards/s measured here; the limit is {cfg.max_hours:g} h",
            hint=f"lower {names['n']} (n = {suggest:,} certifies radii up to "
                 f"{max_radius(suggest, cfg.alpha, 1.0):.2f} sigma at alpha {cfg.alpha:g}), or raise "
                 f"{names['max_hours']}")
    return sec
