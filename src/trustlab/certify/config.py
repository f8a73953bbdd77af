"""Frozen dataclass configs for the certify lab; YAML mirrors them field for field (spec §3)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

from trustlab.runtime import ConfigError, check_types, require_choice, require_range
from trustlab.runtime import config as _rc

CERTIFIERS = ("smoothing", "smoothing-adaptive", "ibp", "crown-ibp", "crown", "best")
SMOOTHING_CERTIFIERS = ("smoothing", "smoothing-adaptive")
PROCEDURES = ("standard", "gaussian", "ibp", "crown-ibp")
BOUND_METHODS = ("ibp", "crown-ibp", "crown", "best")
DEFENCES = ("strip", "spectral", "activation-clustering", "fine-pruning")


@dataclass(frozen=True)
class TriggerConfig:
    """T(x) = clamp((1-m)*x + m*p, 0, 1); ``patch``: square of ``size`` at ``position``; ``blend``: m = blend_alpha."""

    kind: str = "patch"  # patch | blend
    size: int = 3
    position: Union[str, tuple[int, int]] = "br"  # br | bl | tr | tl | (row, col)
    margin: int = 0
    pattern: str = "solid"  # solid | checker | random
    value: float = 1.0
    blend_alpha: float = 0.2
    seed: int = 0

    def __post_init__(self):
        check_types(self, "trigger")
        require_choice("trigger.kind", self.kind, ("patch", "blend"))
        require_choice("trigger.pattern", self.pattern, ("solid", "checker", "random"))
        require_range("trigger.size", self.size, 1)
        require_range("trigger.margin", self.margin, 0)
        require_range("trigger.value", self.value, 0.0, 1.0)
        require_range("trigger.blend_alpha", self.blend_alpha, 0.0, 1.0, lo_open=True)
        if isinstance(self.position, str):
            require_choice("trigger.position", self.position, ("br", "bl", "tr", "tl"))
        else:
            for v in self.position:
                require_range("trigger.position", v, 0)


@dataclass(frozen=True)
class AttackConfig:
    """A = ``label-noise`` (data poisoning), B = ``max-entropy`` (training-objective poisoning); both
    reconstructed from the paper's abstract and threat model. ``none`` = the clean model."""

    kind: str = "none"  # none | label-noise | max-entropy
    rate: float = 0.01
    label_mode: str = "uniform"  # uniform | not-true | soft | all-labels
    mode: str = "add"  # add | replace
    lam: float = 3.0
    beta: float = 0.3
    draws: int = 16  # B on smoothing victims: noise draws averaged per triggered row (1 = per-draw objective)
    gamma: float = 0.5  # B on smoothing victims: weight of the per-draw entropy (0 = the earlier CE of the average)
    mu: float = 1.0  # B on bound-certified victims: margin of the IBP hinge (0 = the spec's objective)

    def __post_init__(self):
        check_types(self, "attack")
        require_choice("attack.kind", self.kind, ("none", "label-noise", "max-entropy"))
        require_choice("attack.label_mode", self.label_mode, ("uniform", "not-true", "soft", "all-labels"))
        require_choice("attack.mode", self.mode, ("add", "replace"))
        if self.kind == "label-noise":
            require_range("attack.rate", self.rate, 0.0, 1.0, lo_open=True, hi_open=True)
        require_range("attack.lam", self.lam, 0.0)
        require_range("attack.beta", self.beta, 0.0, 1.0, lo_open=True)
        require_range("attack.draws", self.draws, 1)
        require_range("attack.gamma", self.gamma, 0.0, 1.0, hi_open=True)
        require_range("attack.mu", self.mu, 0.0)

    @property
    def name(self) -> str:
        return self.kind


@dataclass(frozen=True)
class TrainConfig:
    """Adam; ``standard`` | ``gaussian`` (x + sigma*xi, fresh noise each step) | ``ibp`` (kappa*CE + (1-kappa)*robust CE,
    eps 0->eps and kappa 1->kappa_end linearly per step over the first ``ramp`` fraction of steps) | ``crown-ibp``
    (Zhang et al. 2020: as ibp, the robust margin bound beta*CROWN-IBP + (1-beta)*IBP with beta 1->0 over the ramp)."""

    procedure: str = "standard"
    epochs: int = 80
    batch_size: int = 64
    lr: float = 1e-3
    sigma: float = 0.25
    eps: float = 0.05
    kappa_end: float = 0.5
    ramp: float = 0.5
    robust_loss: str = "margin"  # margin | interval
    ckpt_every: int = 5

    def __post_init__(self):
        check_types(self, "train")
        require_choice("train.procedure", self.procedure, PROCEDURES)
        require_choice("train.robust_loss", self.robust_loss, ("margin", "interval"))
        require_range("train.epochs", self.epochs, 1)
        require_range("train.batch_size", self.batch_size, 1)
        require_range("train.lr", self.lr, 0.0, lo_open=True)
        require_range("train.sigma", self.sigma, 0.0, lo_open=True)
        require_range("train.eps", self.eps, 0.0)
        require_range("train.kappa_end", self.kappa_end, 0.0, 1.0)
        require_range("train.ramp", self.ramp, 0.0, 1.0)
        require_range("train.ckpt_every", self.ckpt_every, 1)


@dataclass(frozen=True)
class SmoothingConfig:
    """Cohen et al. CERTIFY(n0, n, alpha) at noise ``sigma``; ``predict`` also runs PREDICT(n, alpha).
    ``smoothing-adaptive`` certifies at ``target_radius`` with at most ``n`` estimation draws (``adaptive.py``)."""

    sigma: float = 0.25
    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    batch_size: int = 1000
    radii: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    predict: bool = False
    max_hours: float = 24.0  # refuse a budget whose measured-throughput estimate exceeds this (not a result setting)
    target_radius: float = 0.0  # smoothing-adaptive only: the radius each input is certified at
    # fixed-N lower bound on p_A: exact Clopper-Pearson, or randomized CP (Voracek 2024; exact 1 - alpha coverage,
    # never below CP; its uniform u is derived from (seed, input idx))
    bound: Literal["clopper-pearson", "randomized-cp"] = "clopper-pearson"

    def __post_init__(self):
        check_types(self, "smoothing")
        require_range("smoothing.target_radius", self.target_radius, 0.0)
        require_range("smoothing.sigma", self.sigma, 0.0, lo_open=True)
        require_range("smoothing.n0", self.n0, 1)
        require_range("smoothing.n", self.n, 1)
        require_range("smoothing.alpha", self.alpha, 0.0, 1.0, lo_open=True, hi_open=True)
        require_range("smoothing.batch_size", self.batch_size, 1)
        require_range("smoothing.max_hours", self.max_hours, 0.0, lo_open=True)
        for r in self.radii:
            require_range("smoothing.radii", r, 0.0)


@dataclass(frozen=True)
class BoundsConfig:
    """Deterministic L-inf certification of the predicted class at ``eps`` on the box clipped to ``clip``."""

    method: str = "ibp"
    eps: float = 0.05
    eps_grid: tuple[float, ...] = (0.0, 0.01, 0.025, 0.05, 0.1)
    clip: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self):
        check_types(self, "bounds")
        require_choice("bounds.method", self.method, BOUND_METHODS)
        require_range("bounds.eps", self.eps, 0.0)
        for e in self.eps_grid:
            require_range("bounds.eps_grid", e, 0.0)
        if not self.clip[0] < self.clip[1]:
            raise ConfigError(f"bounds.clip must be [low, high] with low < high, got {list(self.clip)}",
                              hint="e.g. bounds.clip: [0.0, 1.0]")


@dataclass(frozen=True)
class DefenceConfig:
    """Defences; the defender holds ``defender_frac`` of the clean training pool (still trained on)."""

    names: tuple[str, ...] = ()
    defender_frac: float = 0.1
    strip_n: int = 20
    strip_frr: float = 0.01
    strip_tail: str = "both"  # low | high | both (both tails are reported either way)
    spectral_factor: float = 1.5
    expected_rate: Optional[float] = None
    ac_dims: int = 10
    ac_reduce: str = "pca"  # pca | ica
    ac_max_share: float = 0.35
    fp_max_drop: float = 0.04
    fp_epochs: int = 10

    def __post_init__(self):
        check_types(self, "defences")
        for n in self.names:
            require_choice("defences.names", n, DEFENCES)
        require_range("defences.defender_frac", self.defender_frac, 0.0, 1.0, lo_open=True)
        require_range("defences.strip_frr", self.strip_frr, 0.0, 1.0, lo_open=True, hi_open=True)
        require_choice("defences.strip_tail", self.strip_tail, ("low", "high", "both"))
        require_choice("defences.ac_reduce", self.ac_reduce, ("pca", "ica"))
        require_range("defences.fp_max_drop", self.fp_max_drop, 0.0, 1.0)
        require_range("defences.fp_epochs", self.fp_epochs, 0)
        require_range("defences.strip_n", self.strip_n, 1)
        require_range("defences.spectral_factor", self.spectral_factor, 0.0, lo_open=True)
        require_range("defences.ac_dims", self.ac_dims, 1)
        require_range("defences.ac_max_share", self.ac_max_share, 0.0, 1.0, lo_open=True)
        if self.expected_rate is not None:
            require_range("defences.expected_rate", self.expected_rate, 0.0, 1.0, lo_open=True, hi_open=True)


@dataclass(frozen=True)
class ModelConfig:
    """``mlp`` (hidden widths) | ``small_cnn``; or ``factory: "pkg.mod:fn"`` (called fn(shape, K)) and/or a
    ``checkpoint`` (state dict or TorchScript)."""

    arch: str = "mlp"
    hidden: tuple[int, ...] = (128, 128)
    factory: Optional[str] = None
    checkpoint: Optional[str] = None

    def __post_init__(self):
        check_types(self, "model")
        require_choice("model.arch", self.arch, ("mlp", "small_cnn"))
        for i, w in enumerate(self.hidden):
            require_range(f"model.hidden[{i}]", w, 1)
        if self.factory is not None and ":" not in self.factory:
            raise ConfigError(f"model.factory must look like 'package.module:function', got {self.factory!r}",
                              hint="e.g. model.factory: mypkg.nets:build")


@dataclass(frozen=True)
class Track:
    """A clean model plus one model per attack, trained with ``train`` and certified with ``certifiers``."""

    name: str = "rs"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    certifiers: tuple[str, ...] = ("smoothing",)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)
    bounds: BoundsConfig = field(default_factory=BoundsConfig)

    def __post_init__(self):
        check_types(self, "track")
        for c in self.certifiers:
            require_choice(f"tracks[{self.name}].certifiers", c, CERTIFIERS)
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ConfigError(f"track name must be a non-empty folder name, got {self.name!r}",
                              hint="name tracks with letters, digits, - or _ (e.g. rs, ibp)")


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    seeds: tuple[int, ...] = (0,)
    data: str = "digits"
    test_frac: float = 0.2
    tracks: tuple[Track, ...] = (Track(),)
    trigger: TriggerConfig = field(default_factory=TriggerConfig)  # T of every attack; the clean model sees it too
    attacks: tuple[AttackConfig, ...] = (AttackConfig(kind="label-noise"), AttackConfig(kind="max-entropy"))
    defences: DefenceConfig = field(default_factory=DefenceConfig)
    max_test: Optional[int] = None
    device: str = "auto"
    untriggered_baseline: bool = True  # also train attack A's poisons without the trigger (spec section 7 baseline)

    def __post_init__(self):
        check_types(self, "")
        require_range("test_frac", self.test_frac, 0.0, 1.0, lo_open=True, hi_open=True)
        if not self.seeds:
            raise ConfigError("seeds must list at least one seed", hint="e.g. seeds: [0, 1, 2]")
        for i, s in enumerate(self.seeds):
            require_range(f"seeds[{i}]", s, 0, 2**32 - 1)
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct, got {list(self.seeds)}", hint="list each seed once")
        if not self.tracks:
            raise ConfigError("tracks must list at least one track", hint="e.g. tracks: [{name: rs}]")
        names = [t.name for t in self.tracks]
        if len(set(names)) != len(names):
            raise ConfigError(f"track names must be unique, got {names}", hint="give every track its own name")
        kinds = [a.kind for a in self.attacks if a.kind != "none"]
        if len(set(kinds)) != len(kinds):
            raise ConfigError(f"each attack kind may appear once, got {kinds}",
                              hint="run a sweep to compare settings of one attack")
        require_choice_device(self.device)
        for t in self.tracks:
            for a in self.attacks:
                if a.kind == "label-noise" and a.label_mode == "soft" and t.train.procedure in ("ibp", "crown-ibp"):
                    raise ConfigError(f"attack.label_mode 'soft' cannot be used with ibp training (track {t.name})",
                                      hint="use uniform, not-true or all-labels with ibp training")
        if self.max_test is not None:
            require_range("max_test", self.max_test, 1)


def require_choice_device(device: str) -> None:
    """device: auto, cpu, cuda or cuda:<i>."""
    import re

    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:<i>, got {device!r}", hint="e.g. --device cpu")


def load_config(path: str | Path) -> ExperimentConfig:
    """Read an experiment YAML (unknown key -> ConfigError listing the valid keys). Old files that give the trigger
    per attack (``attacks[i].trigger``, all equal) are read as the top-level ``trigger``."""
    data = _rc.load_yaml(path)
    try:
        return from_mapping(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.message}", hint=exc.hint) from exc


def from_mapping(data: dict[str, Any]) -> ExperimentConfig:
    return _rc.from_dict(ExperimentConfig, migrate_trigger(data))


def migrate_trigger(data: Any) -> Any:
    """Move the per-attack ``trigger`` of old configs to the experiment's ``trigger`` (they had to be equal)."""
    attacks = data.get("attacks") if isinstance(data, dict) else None
    if not isinstance(attacks, list) or not any(isinstance(a, dict) and "trigger" in a for a in attacks):
        return data
    found = [a["trigger"] for a in attacks if isinstance(a, dict) and "trigger" in a]
    top = data.get("trigger", found[0])
    if any(t != top for t in found):
        raise ConfigError("attacks[].trigger differ, but one experiment has one trigger: it moved to the top-level "
                          "`trigger:` key", hint="write the trigger once as `trigger: {...}` at the top level")
    return {**data, "trigger": top,
            "attacks": [{k: v for k, v in a.items() if k != "trigger"} if isinstance(a, dict) else a for a in attacks]}


def dump_config(cfg: Any, path: str | Path) -> None:
    _rc.dump_yaml(cfg, path)


def shipped_config(name: str) -> Path:
    """Path of a config shipped in ``trustlab/configs/certify/<name>.yaml``."""
    from importlib import resources

    p = Path(str(resources.files("trustlab") / "configs" / "certify" / f"{name}.yaml"))
    if not p.is_file():
        avail = sorted(q.stem for q in p.parent.glob("*.yaml")) if p.parent.is_dir() else []
        raise ConfigError(f"no shipped certify config {name!r}", hint=f"choose one of {', '.join(avail)}")
    return p


def replace_path(cfg: Any, dotted: str, value: Any) -> Any:
    """``dataclasses.replace`` along a dotted path (``smoothing.sigma`` etc. handled by the sweep)."""
    head, _, rest = dotted.partition(".")
    if not dataclasses.is_dataclass(cfg) or head not in {f.name for f in dataclasses.fields(cfg)}:
        raise ConfigError(f"unknown config key {dotted!r}",
                          hint="grid keys: attack.<field>, smoothing.<field>, bounds.<field>, train.<field>, "
                               "model.<field> or a top-level field")
    if rest:
        return dataclasses.replace(cfg, **{head: replace_path(getattr(cfg, head), rest, value)})
    old = getattr(cfg, head)
    if isinstance(old, int) and not isinstance(old, bool) and isinstance(value, float) and value.is_integer():
        value = int(value)
    return dataclasses.replace(cfg, **{head: value})


def ceil_count(rate: float, n: int) -> int:
    """ceil(rate * n) guarded against float noise (0.01 * 100 -> 1, never 2)."""
    return int(math.ceil(round(rate * n, 9)))
