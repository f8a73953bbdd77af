"""The certify lab's verbs on the user's own objects: ``train``, ``attack``, ``certify``, ``defend``. Each takes a
model (any ``nn.Module`` mapping NCHW inputs in [0, 1] to (B, K) logits), arrays / tensors / a DataLoader and a frozen
config, and returns a result dataclass. ``experiment.run_experiment`` composes them; the CLI only parses and prints.

    import torch
    from trustlab.certify.api import SmoothingConfig, TrainConfig, certify, train

The configs are re-exported here so that two imports are enough in a notebook.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from trustlab.runtime import ConfigError, DataError, derive_seed, require_choice

from .adaptive import AdaptiveConfig
from .config import (BOUND_METHODS, CERTIFIERS, DEFENCES, SMOOTHING_CERTIFIERS, AttackConfig, BoundsConfig,
                     DefenceConfig, SmoothingConfig, TrainConfig, TriggerConfig)

__all__ = ["AdaptiveConfig", "AttackConfig", "AttackResult", "BoundsConfig", "CertifyResult", "DefenceConfig",
           "SmoothingConfig", "TrainConfig", "TrainResult", "TriggerConfig", "as_arrays", "attack",
           "certify", "defend", "train"]


# --- inputs -------------------------------------------------------------------------------------------------------
def as_arrays(data, what: str = "data", labels: bool = True):
    """(x float32 numpy, y numpy or None) from ``(x, y)`` arrays/tensors, a bare x, a map-style Dataset, or a
    DataLoader / iterable of (x, y) batches (collected once, in its order). NaN/inf in x is a DataError naming the first bad row."""
    import torch

    def np_(t):
        return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)

    if isinstance(data, (dict, str, bytes)):
        raise DataError(f"{what}: cannot read a {type(data).__name__} as an array of inputs",
                        hint="pass arrays / tensors, (x, y), a Dataset or a DataLoader of (x, y) batches")
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        data = torch.utils.data.DataLoader(data, batch_size=1024)  # a map-style Dataset: read once, in order

    if isinstance(data, torch.utils.data.DataLoader) or (not isinstance(data, (tuple, list, np.ndarray, torch.Tensor))
                                                        and hasattr(data, "__iter__")):
        xs, ys = [], []
        for batch in data:
            if isinstance(batch, (tuple, list)):
                xs.append(np_(batch[0]))
                if len(batch) > 1:
                    ys.append(np_(batch[1]))
            else:
                xs.append(np_(batch))
        if not xs:
            raise DataError(f"{what}: the data loader yielded no batches", hint="pass a non-empty DataLoader")
        x, y = np.concatenate(xs), (np.concatenate(ys) if ys else None)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = np_(data[0]), np_(data[1])
    else:
        x, y = np_(data), None
    try:
        x = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what}: cannot read a {type(data).__name__} as an array of inputs ({exc})",
                        hint="pass arrays / tensors, (x, y), a Dataset or a DataLoader of (x, y) batches") from None
    if x.ndim < 2:
        raise DataError(f"{what}: inputs must be a batch (N, ...), got shape {list(x.shape)}",
                        hint="stack the inputs along a first batch axis")
    flat = x.reshape(len(x), -1)
    bad = np.flatnonzero(~np.isfinite(flat).all(1))
    if len(bad):
        raise DataError(f"{what}: input {bad[0]} holds NaN or inf", hint="pass finite inputs scaled to [0, 1]")
    if y is not None and len(y) != len(x):
        raise DataError(f"{what}: {len(x)} inputs but {len(y)} labels", hint="pass one label per input")
    if labels and y is None:
        raise DataError(f"{what}: labels are missing", hint="pass (x, y) or a DataLoader of (x, y) batches")
    return x, y


def _num_classes(model, x) -> int:
    import torch

    from .torchutil import eval_mode, model_device, model_dtype

    with eval_mode(model), torch.no_grad():
        out = model(torch.as_tensor(x[:1], dtype=model_dtype(model), device=model_device(model)))
    if out.ndim != 2 or out.shape[1] < 2:
        from trustlab.runtime import ModelError

        raise ModelError(f"model returned shape {tuple(out.shape)} for one input; expected (1, K) logits with K >= 2",
                         hint="the model must map a batch to (B, K) logits")
    return int(out.shape[1])


# --- train --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainResult:
    """The trained ``model`` (in eval mode, on the CPU) and what training did."""

    model: Any
    procedure: str
    epochs: int
    steps: int
    secs: float
    loss: float
    resumed_from_epoch: int

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}


def train(model, data, cfg: TrainConfig = TrainConfig(), *, seed: int = 0, hook=None, device: str = "auto",
          ckpt_dir: str | Path | None = None, param_masks: dict | None = None) -> TrainResult:
    """Train the user's ``model`` in place on ``data`` ((x, y) or a DataLoader) with ``cfg.procedure`` (standard,
    gaussian, ibp, crown-ibp; see ``train.train``); ``hook`` adds an attacker's loss (``attack(...).hook``)."""
    from .train import train as _train

    x, y = as_arrays(data, "train data")
    s = _train(model, x, y, cfg, seed=seed, hook=hook, ckpt_dir=ckpt_dir, device=device, param_masks=param_masks)
    return TrainResult(model.cpu().eval(), **s.to_dict())


# --- attack -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttackResult:
    """What an attacker hands the victim: training data (poisoned for A) and a loss ``hook`` (B), plus the trigger
    ``T`` (callable on NCHW arrays) that activates the attack at test time."""

    kind: str
    x: np.ndarray
    y: np.ndarray
    poison_idx: np.ndarray
    trigger: Any
    hook: Optional[Callable] = None

    @property
    def data(self) -> tuple:
        return self.x, self.y


def attack(data, cfg: AttackConfig, trigger: TriggerConfig = TriggerConfig(), *, K: int | None = None,
           sigma: float = 0.0, seed: int = 0, stamp: bool = True) -> AttackResult:
    """Attack A (``label-noise``: poisoned training data) or B (``max-entropy``: a training-loss hook against noise
    ``sigma``, the certifier's smoothing sigma or 0), both reconstructed from the paper's abstract.
    ``stamp=False`` gives A's poisons without the trigger (the baseline that isolates the trigger's effect)."""
    from .attacks import MaxEntropyHook, poison_label_noise
    from .triggers import Trigger

    x, y = as_arrays(data, "attack data")
    K = int(y.max()) + 1 if K is None else int(K)
    if K < 2:
        raise DataError(f"attack data has K = {K} classes; need at least 2", hint="pass K or labels of >= 2 classes")
    trig = Trigger.from_config(trigger, x.shape[1:])
    none = np.zeros(0, dtype=int)
    if cfg.kind == "label-noise":
        p = poison_label_noise(x, y, K, trig if stamp else (lambda v: v), cfg.rate, cfg.label_mode, cfg.mode,
                               seed=seed)
        return AttackResult(cfg.kind, p.x, p.y, p.poison_idx, trig)
    if cfg.kind == "max-entropy":
        hook = MaxEntropyHook(trig, K, cfg.lam, cfg.beta, sigma, cfg.draws, cfg.gamma, cfg.mu)
        return AttackResult(cfg.kind, x, y, none, trig, hook)
    return AttackResult(cfg.kind, x, y, none, trig)


# --- certify ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CertifyResult:
    """One record per input (``idx, label, pred`` with ``pred`` = -1 for abstain, plus ``radius, p_lower, n_a``
    for smoothing; ``samples, stop, p_upper`` for smoothing-adaptive; ``certified, margin_lb`` for bounds) and, when
    labels were given, the summary (clean acc, abstain rate + CI, certified accuracy per radius / eps)."""

    certifier: str
    records: list
    summary: Optional[dict] = None
    params: dict = field(default_factory=dict)

    @property
    def pred(self) -> np.ndarray:
        return np.array([r["pred"] for r in self.records], dtype=int)

    @property
    def abstain_rate(self) -> float:
        from .metrics import abstained

        return float(np.mean([abstained(r) for r in self.records])) if self.records else float("nan")


def certifier_of(cfg, certifier: str | None) -> str:
    """The certifier a config asks for: SmoothingConfig -> smoothing (or smoothing-adaptive), AdaptiveConfig ->
    smoothing-adaptive, BoundsConfig -> its method (or any bound method given)."""
    if certifier is not None:
        require_choice("certifier", certifier, CERTIFIERS)
    if isinstance(cfg, AdaptiveConfig):
        want = certifier or "smoothing-adaptive"
        ok = ("smoothing-adaptive",)
    elif isinstance(cfg, SmoothingConfig):
        want = certifier or "smoothing"
        ok = SMOOTHING_CERTIFIERS
    elif isinstance(cfg, BoundsConfig):
        want = certifier or cfg.method
        ok = BOUND_METHODS
    else:
        raise ConfigError(f"certify needs a SmoothingConfig, AdaptiveConfig or BoundsConfig, got {type(cfg).__name__}",
                          hint="e.g. certify(model, x, SmoothingConfig(sigma=0.25, n=1000))")
    if want not in ok:
        raise ConfigError(f"certifier {want!r} does not take a {type(cfg).__name__}",
                          hint=f"with a {type(cfg).__name__} use one of {', '.join(ok)}")
    return want


def certify(model, x, cfg, *, y=None, certifier: str | None = None, seed: int = 0, K: int | None = None,
            records: str | Path | None = None, resume: bool = True, on_stale: str = "refuse",
            ranks=None) -> CertifyResult:
    """Certify every input of ``x`` (array, tensor, (x, y) or a DataLoader) with the certifier ``cfg`` selects:
    ``smoothing`` (Cohen et al. CERTIFY), ``smoothing-adaptive`` (sequential CERTIFY at ``target_radius`` /
    ``radius``), or a bound method (``ibp``, ``crown-ibp``, ``crown``, ``best``; float64, certifies the predicted
    class). ``records``: a stamped JSONL file, resumed under the same settings. The model's train/eval mode is
    restored. ``seed`` names the noise streams (input i uses stream (seed, i)). ``ranks``
    (``distributed.ranks_from_env()`` inside ``distributed.process_group``, under torchrun) shares smoothing across
    the ranks by input idx (``records`` required); every rank gets the merged result, equal to one process's."""
    from .certifiers import run_certifier

    name = certifier_of(cfg, certifier)
    xs, ys = as_arrays(x, "certify inputs", labels=False)
    if y is not None:
        ys = np.asarray(y.detach().cpu().numpy() if hasattr(y, "detach") else y)
        if len(ys) != len(xs):
            raise DataError(f"certify: {len(xs)} inputs but {len(ys)} labels", hint="pass one label per input")
    if name in SMOOTHING_CERTIFIERS and K is None:
        K = _num_classes(model, xs)
    if ranks is not None and ranks.world > 1:
        from .distributed import certify_sharded

        if records is None:
            raise ConfigError("certify across ranks needs a records file (the ranks merge through it)",
                              hint="pass records='RUN/smoothing/clean.jsonl' on every rank")
        recs, summary, params = certify_sharded(model, xs, ys, name, cfg, seed=seed, K=K, records=records,
                                                ranks=ranks, resume=resume, on_stale=on_stale)
    else:
        recs, summary, params = run_certifier(model, xs, ys, name, cfg, seed=seed, K=K, records=records,
                                              resume=resume, on_stale=on_stale)
    return CertifyResult(name, recs, summary, params)


# --- defend -------------------------------------------------------------------------------------------------------
def _fresh_copy(model, seed: int):
    """A copy of ``model`` with every ``reset_parameters`` layer re-initialised (seeded): retrain from scratch."""
    import torch

    m = copy.deepcopy(model)
    torch.manual_seed(seed)
    for sub in m.modules():
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
    return m


def defend(name: str, model, cfg: DefenceConfig = DefenceConfig(), *, defender, train_data=None, poison_idx=None,
           attack_kind: str = "label-noise", train_cfg: TrainConfig = TrainConfig(), seed: int = 0,
           device: str = "auto", retrain: Callable | None = None, finetune: Callable | None = None):
    """Apply defence ``name`` to the user's attacked ``model`` with a clean ``defender`` set ((x, y) or loader):
    ``spectral`` / ``activation-clustering`` filter ``train_data`` and retrain a fresh copy with ``train_cfg``
    (attack A only: B leaves the data clean, result ``applicable=False``); ``fine-pruning`` prunes and fine-tunes a
    copy on the defender set; ``strip`` fits its entropy thresholds on the defender set (``info``: thresholds per
    tail; score test inputs with ``defences.strip``). Returns ``defences.DefenceResult``."""
    from .defences import DefenceContext, apply
    from .train import train as _train

    import torch.nn as nn

    require_choice("defence", name, DEFENCES)
    if name != "strip" and not isinstance(model, nn.Sequential):
        from trustlab.runtime import ModelError

        raise ModelError(f"defence {name!r} reads the layers before the last one, which a {type(model).__name__} with "
                         f"its own forward does not expose", hint="pass the model as an nn.Sequential (strip takes "
                                                                  "any module)")
    x_def, y_def = as_arrays(defender, "defender data")
    if train_data is not None:
        x_tr, y_tr = as_arrays(train_data, "train data")
    elif name in ("spectral", "activation-clustering") and attack_kind == "label-noise":
        raise ConfigError(f"defence {name!r} filters the training set: pass train_data=(x, y)",
                          hint="give the (possibly poisoned) training data the model was trained on")
    else:
        x_tr, y_tr = x_def, y_def
    K = int(max(y_def.max(), y_tr.max())) + 1

    def _retrain(xf, yf):
        m = _fresh_copy(model, derive_seed(seed, "defence", "init"))
        _train(m, xf, yf, train_cfg, seed=derive_seed(seed, "defence", "train"), device=device)
        return m.cpu().eval()

    def _finetune(m, xf, yf, masks):
        import dataclasses

        tcfg = dataclasses.replace(train_cfg, epochs=cfg.fp_epochs, ramp=0.0)
        _train(m, xf, yf, tcfg, seed=derive_seed(seed, "defence", "finetune"), device=device, param_masks=masks)
        return m.cpu().eval()

    ctx = DefenceContext(cfg, AttackConfig(kind=attack_kind), model, x_tr, y_tr, np.asarray([] if poison_idx is None else poison_idx, dtype=int), x_def, y_def,
                         retrain or _retrain, finetune or _finetune, seed, K)
    res = apply(name, ctx)
    if name == "strip" and res.applicable:
        from .defences import strip as strip_mod

        h = strip_mod.defender_entropy(model, x_def, cfg.strip_n, seed)
        res.info.update({tail: strip_mod.thresholds_json(strip_mod.thresholds(h, cfg.strip_frr, tail))
                         for tail in ("low", "high", "both")})
    return res
