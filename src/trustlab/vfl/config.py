"""Frozen dataclass configs for the VFL lab; YAML sections ``data, model, defence, train, attack, transport``."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trustlab.runtime import ConfigError, from_dict, load_yaml, require_choice, require_range

DEFENCES = ("none", "hash", "gaussian", "laplace", "gsparse", "hash_laplace")
HASHED = ("hash", "hash_laplace")


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"
    path: str | None = None
    label_column: str | None = None
    id_column: str | None = None
    split: str = "columns"
    n_parties: int = 2
    ratios: tuple[float, ...] | None = None
    groups: tuple[tuple[str, ...], ...] | None = None
    drop_unassigned: bool = False
    test_frac: float = 0.3
    aux_frac: float = 0.2
    aux_in_training: bool = False
    label_party_block: int | None = None
    subsample: int | None = None


@dataclass(frozen=True)
class ModelConfig:
    bottom: str = "mlp"
    bottom_hidden: int = 64
    top_hidden: int = 16


@dataclass(frozen=True)
class DefenceConfig:
    kind: str = "hash"
    code_len: int = 16
    embed_dim: int = 16
    consistency_weight: float = 1.0
    class_codes: str = "bernoulli"
    ste: str = "identity"
    noise_scale: float = 0.1
    clip_norm: float = 1.0
    epsilon: float = 2.0
    sparsity: float = 0.99
    error_feedback: bool = True

    @property
    def width(self) -> int:
        """Message width: L for hashed defences, else ``embed_dim``."""
        return self.code_len if self.kind in HASHED else self.embed_dim


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-2
    weight_decay: float = 5e-4
    milestones: tuple[int, ...] = (45,)
    gamma: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class AttackConfig:
    target_party: int = 0
    n_targets: int = 100
    wb_steps: int = 500
    wb_lr: float = 0.01
    tv: float = 0.01
    l2: float = 0.0
    prior: float = 0.01
    inv_epochs: int = 50
    inv_lr: float = 1e-3
    inv_batch: int = 32
    leak_k: int = 4
    detect_sets: tuple[str, ...] = ("uniform", "swap")


@dataclass(frozen=True)
class TransportConfig:
    kind: str = "inproc"
    parties: str | None = None
    connect_timeout_s: float = 60.0
    connect_retries: int = 3
    message_timeout_s: float = 60.0
    max_message_mb: int = 64


@dataclass(frozen=True)
class VFLConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    defence: DefenceConfig = field(default_factory=DefenceConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)


PRESETS: dict[str, dict[str, Any]] = {
    # the authors' code: Adam 1e-3, x0.1 every 10 epochs, 30 epochs, batch 256
    "paper-code": {"epochs": 30, "lr": 1e-3, "milestones": (10, 20), "gamma": 0.1, "batch_size": 256},
}


def validate(cfg: VFLConfig) -> VFLConfig:
    """Check every range the spec names; raise ConfigError naming the parameter."""
    d, m, df, t, a, tr = cfg.data, cfg.model, cfg.defence, cfg.train, cfg.attack, cfg.transport
    require_choice("data.split", d.split, ("columns", "rows"))
    require_range("data.n_parties", d.n_parties, 1)
    require_range("data.test_frac", d.test_frac, 0, 1, lo_open=True, hi_open=True)
    require_range("data.aux_frac", d.aux_frac, 0, 1, lo_open=True, hi_open=True)
    if d.ratios is not None:
        if len(d.ratios) != d.n_parties:
            raise ConfigError(f"data.ratios has {len(d.ratios)} entries for {d.n_parties} parties",
                              hint="give one ratio per party")
        if abs(sum(d.ratios) - 1.0) > 1e-6 or min(d.ratios) <= 0:
            raise ConfigError(f"data.ratios must be positive and sum to 1, got {list(d.ratios)}")
    require_choice("model.bottom", m.bottom, ("mlp", "cnn"))
    require_range("model.bottom_hidden", m.bottom_hidden, 1)
    require_range("model.top_hidden", m.top_hidden, 1)
    require_choice("defence.kind", df.kind, DEFENCES)
    require_range("defence.code_len", df.code_len, 1)
    require_range("defence.embed_dim", df.embed_dim, 1)
    require_choice("defence.class_codes", df.class_codes, ("bernoulli", "hadamard"))
    require_choice("defence.ste", df.ste, ("identity", "clipped"))
    require_range("defence.noise_scale", df.noise_scale, 0)
    require_range("defence.clip_norm", df.clip_norm, 0, lo_open=True)
    require_range("defence.epsilon", df.epsilon, 0, lo_open=True)
    require_range("defence.sparsity", df.sparsity, 0, 1, hi_open=True)
    require_range("defence.consistency_weight", df.consistency_weight, 0)
    require_range("train.epochs", t.epochs, 1)
    if t.batch_size < 2:
        raise ConfigError(f"train.batch_size must be >= 2 (BatchNorm needs two samples), got {t.batch_size}",
                          hint="set train.batch_size to 2 or more")
    require_range("train.lr", t.lr, 0, lo_open=True)
    require_range("train.gamma", t.gamma, 0, lo_open=True)
    require_range("attack.n_targets", a.n_targets, 1)
    require_range("attack.wb_steps", a.wb_steps, 0)
    require_range("attack.leak_k", a.leak_k, 1)
    for s in a.detect_sets:
        require_choice("attack.detect_sets", s, ("uniform", "swap"))
    require_choice("transport.kind", tr.kind, ("inproc", "grpc"))
    require_range("transport.message_timeout_s", tr.message_timeout_s, 0, lo_open=True)
    require_range("transport.connect_timeout_s", tr.connect_timeout_s, 0, lo_open=True)
    require_range("transport.connect_retries", tr.connect_retries, 1)
    return cfg


def load_config(path: str | Path | None = None, overrides: dict[str, dict[str, Any]] | None = None) -> VFLConfig:
    """YAML (or defaults) plus ``{"section": {key: value}}`` overrides, validated.

    A ``train.preset: paper-code`` key expands to the authors' schedule."""
    raw = load_yaml(path) if path is not None else {}
    raw = {k: dict(v or {}) for k, v in raw.items()} if isinstance(raw, dict) else raw
    for sec, vals in (overrides or {}).items():
        raw.setdefault(sec, {}).update({k: v for k, v in vals.items() if v is not None})
    preset = raw.get("train", {}).pop("preset", None)
    if preset is not None:
        require_choice("train.preset", preset, PRESETS)
        raw["train"] = {**PRESETS[preset], **raw["train"]}
    cfg = from_dict(VFLConfig, raw, where=Path(path).name if path else "")
    return validate(cfg)


def with_(cfg: VFLConfig, **sections: dict[str, Any]) -> VFLConfig:
    """A copy with some fields of some sections replaced, validated."""
    parts = {name: replace(getattr(cfg, name), **vals) for name, vals in sections.items()}
    return validate(replace(cfg, **parts))


@dataclass(frozen=True)
class PartyEndpoint:
    id: int
    address: str
    ca: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class PartiesFile:
    """``parties.yaml``: A's CA, certificate and key, and each party's id and address."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure: bool = False
    parties: tuple[PartyEndpoint, ...] = ()


def load_parties(path: str | Path) -> PartiesFile:
    """Read ``parties.yaml``; duplicate ids are a ConfigError; relative paths are relative to the file."""
    raw = load_yaml(path)
    base = Path(path).parent
    pf = from_dict(PartiesFile, raw, where=Path(path).name)
    ids = [p.id for p in pf.parties]
    if not ids:
        raise ConfigError(f"{path}: lists no parties", hint="add parties: [{id: 0, address: host:port}]")
    if len(set(ids)) != len(ids):
        from .errors import ProtocolMismatchError

        raise ProtocolMismatchError(f"{path}: duplicate party ids {sorted(ids)}", hint="give each party its own id")

    def fix(p: str | None) -> str | None:
        return None if p is None else str(p if Path(p).is_absolute() else base / p)

    parties = tuple(PartyEndpoint(p.id, p.address, fix(p.ca), fix(p.cert), fix(p.key)) for p in pf.parties)
    return PartiesFile(fix(pf.ca), fix(pf.cert), fix(pf.key), pf.insecure, parties)
