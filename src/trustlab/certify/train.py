"""One readable training loop: standard, Gaussian-augmented (for smoothing) or IBP-robust, with an optional
attack hook and atomic checkpoints (model, optimizer, epoch, step, RNG states) for exact CPU resume.

Checkpoints are stamped (``runtime.io.save_stamped``) with ``train_stamp``: the hash of everything the trained weights
depend on (training config, seed, data, initial weights, attack hook, frozen masks, device type). They load with
``weights_only=True``: a crafted or truncated file is a DataError (exit 2); one of other settings is discarded."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from trustlab.runtime import (ConfigError, MissingDependencyError, config_hash, derive_seed, load_stamped, progress,
                              save_stamped, to_dict)
from trustlab.runtime.finite import require_finite_step

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSummary:
    procedure: str
    epochs: int
    steps: int
    secs: float
    loss: float
    resumed_from_epoch: int

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(device: str = "auto"):
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MissingDependencyError(f"device {device!r} requested but torch sees no CUDA device",
                                     hint="install a CUDA build of torch or pass --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda[:i]; got {device!r}", hint="e.g. --device cpu")
    return torch.device(device)


def ibp_schedule(step: int, total_steps: int, cfg) -> tuple[float, float]:
    """(eps_t, kappa_t): eps 0 -> cfg.eps and kappa 1 -> cfg.kappa_end linearly per step over the first
    ``cfg.ramp`` fraction of the steps, constant after."""
    ramp_steps = cfg.ramp * total_steps
    frac = 1.0 if ramp_steps <= 0 else min(1.0, step / ramp_steps)
    return cfg.eps * frac, 1.0 - (1.0 - cfg.kappa_end) * frac


def crown_ibp_beta(step: int, total_steps: int, cfg) -> float:
    """beta of the CROWN-IBP mix: 1 -> 0 linearly per step over the ``ramp`` (with eps), 0 after."""
    ramp_steps = cfg.ramp * total_steps
    return 0.0 if ramp_steps <= 0 else max(0.0, 1.0 - step / ramp_steps)


def _ce(logits, y):
    import torch.nn.functional as F

    if y.ndim == 2:  # soft targets
        return -(y * F.log_softmax(logits, dim=1)).sum(1).mean()
    return F.cross_entropy(logits, y)


def hook_stamp(hook):
    """What an attack hook's loss depends on: its ``stamp`` if it has one, else its type's qualified name."""
    if hook is None:
        return None
    return getattr(hook, "stamp", None) or f"{type(hook).__module__}.{getattr(hook, '__qualname__', type(hook).__qualname__)}"


def train_stamp(model, x, y, cfg, *, seed: int, hook=None, param_masks: dict | None = None,
                device: str = "auto") -> str:
    """config_hash of what training ``model`` (at its current, initial weights) on (x, y) with ``cfg`` produces."""
    from trustlab.models.identity import weights_digest

    from .records import array_digest

    masks = None if not param_masks else array_digest(*[m for m in param_masks.values()])
    return config_hash({"train": to_dict(cfg), "seed": int(seed), "data": array_digest(np.asarray(x), np.asarray(y)),
                        "init": weights_digest(model), "hook": hook_stamp(hook), "masks": masks,
                        "device": resolve_device(device).type})


def train(model, x, y, cfg, *, seed: int, hook=None, ckpt_dir: str | Path | None = None,
          device: str = "auto", param_masks: dict | None = None) -> TrainSummary:
    """Train ``model`` in place (Adam, lr, batch) with ``cfg.procedure``: standard CE; gaussian = CE on x + sigma*xi
    with fresh noise each step (unclipped); ibp = kappa*CE(f(x), y) + (1 - kappa)*robust CE at eps_t; crown-ibp =
    the same with the beta-mixed CROWN-IBP/IBP margin bound (``bounds.crown_ibp_ce``, beta 1 -> 0 over the ramp).
    ``hook(model, xb, gen)`` adds an attacker's loss term; ``param_masks`` {param: 0/1} freezes masked entries.
    Checkpoints every ``ckpt_every`` epochs and resumes from a checkpoint stamped with the same ``train_stamp``."""
    import torch

    from .boundnet import BoundNet
    from .bounds import crown_ibp_ce, robust_ce

    dev = resolve_device(device)
    stamp = train_stamp(model, x, y, cfg, seed=seed, hook=hook, param_masks=param_masks, device=device)
    model.to(dev)
    x_t = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    y_np = np.asarray(y)
    y_t = torch.as_tensor(y_np, dtype=torch.float32 if y_np.ndim == 2 else torch.long)
    robust = cfg.procedure in ("ibp", "crown-ibp")
    if y_np.ndim == 2 and robust:
        raise ConfigError("soft labels cannot be used with ibp training", hint="use integer labels")
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    g_perm = torch.Generator().manual_seed(derive_seed(seed, "perm"))
    g_noise = torch.Generator(device=dev).manual_seed(derive_seed(seed, "noise"))
    n = len(x_t)
    per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * per_epoch
    start, step, secs, last_loss = 0, 0, 0.0, float("nan")
    ckpt = Path(ckpt_dir) / "ckpt.pt" if ckpt_dir is not None else None
    state = None
    if ckpt is not None and ckpt.is_file():
        try:
            state = load_stamped(ckpt, stamp, "training checkpoint")
        except ConfigError:  # written by another run or config: never resumed from, overwritten by this run
            log.warning("discarding %s: it belongs to other training settings", ckpt)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        g_perm.set_state(state["g_perm"])
        g_noise.set_state(state["g_noise"].to(g_noise.get_state().device))
        start, step, secs, last_loss = state["epoch"], state["step"], state["secs"], state["loss"]
    resumed_from = start
    net = BoundNet.from_module(model, x_t.shape[1:]) if robust else None
    handles = [p.register_hook(lambda g, m=m.to(dev): g * m) for p, m in (param_masks or {}).items()]
    model.train()
    for epoch in progress(range(start, cfg.epochs), f"train {cfg.procedure}", total=cfg.epochs - start):
        t0, losses = time.perf_counter(), []
        perm = torch.randperm(n, generator=g_perm)
        for b in range(per_epoch):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            xb, yb = x_t[idx].to(dev), y_t[idx].to(dev)
            if cfg.procedure == "gaussian":
                noisy = xb + cfg.sigma * torch.randn(xb.shape, generator=g_noise, device=dev)
                loss = _ce(model(noisy), yb)
            elif robust:
                eps_t, kappa = ibp_schedule(step, total, cfg)
                rob = (robust_ce(net, xb, yb, eps_t, cfg.robust_loss) if cfg.procedure == "ibp" else
                       crown_ibp_ce(net, xb, yb, eps_t, crown_ibp_beta(step, total, cfg)))
                loss = kappa * _ce(model(xb), yb) + (1 - kappa) * rob
            else:
                loss = _ce(model(xb), yb)
            if hook is not None:  # an attack hook; bound-aware ones also get the victim's bound net and target eps
                kw = {"bounds": (net, cfg.eps)} if robust and getattr(hook, "uses_bounds", False) else {}
                loss = loss + hook(model, xb, g_noise, **kw)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
        secs += time.perf_counter() - t0
        last_loss = float(np.mean(losses))
        # a diverged epoch (train.lr too high) stops before it is checkpointed or returned as a model
        require_finite_step(last_loss, model.named_parameters(), step=f"epoch {epoch + 1}", lr=cfg.lr,
                            what=f"{cfg.procedure} training", lr_name="train.lr")
        if ckpt is not None and ((epoch + 1) % cfg.ckpt_every == 0 or epoch + 1 == cfg.epochs):
            save_stamped({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                          "step": step, "secs": secs, "loss": last_loss, "g_perm": g_perm.get_state(),
                          "g_noise": g_noise.get_state()}, ckpt, stamp)
    for h in handles:
        h.remove()
    model.eval()
    return TrainSummary(cfg.procedure, cfg.epochs, step, round(secs, 3), last_loss, resumed_from)
