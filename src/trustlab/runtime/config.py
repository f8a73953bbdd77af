"""Strict dataclass configs: YAML mirrors the dataclass field for field; unknown keys are an error."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError
from .validate import check_types, coerce, from_dict, require_choice, require_range  # noqa: F401 (re-exported)

T = TypeVar("T")


def to_dict(cfg: Any) -> Any:
    """Plain-data view of a (nested) dataclass config: tuples become lists, for YAML and JSON."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    if isinstance(cfg, float) and math.isinf(cfg):  # an InfFloat field: JSON has no infinity, "inf" reads back
        return "inf" if cfg > 0 else "-inf"
    return cfg


def config_diff(old: Any, new: Any) -> list[str]:
    """Dotted keys whose values differ between two configs (dataclasses or their plain-data forms)."""
    a, b = _flatten(to_dict(old)), _flatten(to_dict(new))
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys for mappings and ``[i]`` indices for lists: ``tracks[0].train.epochs``."""
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(d, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in d):
        out = {}
        for i, v in enumerate(d):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out or {prefix: d}
    return {prefix: d}


def config_hash(cfg: Any) -> str:
    """SHA-256 (first 16 hex digits) of the canonical JSON form of a config."""
    blob = json.dumps(to_dict(cfg), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing, unreadable, non-UTF-8 or malformed file is a ConfigError naming the path."""
    import yaml

    from .files import read_text

    text = read_text(path, what="config file", error=ConfigError)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}".splitlines()[0],
                          hint="check the indentation and quoting near the line named") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level, "
                          f"got {type(data).__name__}", hint="write the config as key: value lines")
    return data


def load_config(cls: type[T], path: str | Path) -> T:
    """``from_dict(cls, load_yaml(path))`` with the file named in errors."""
    data = load_yaml(path)
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.message}", hint=exc.hint) from exc


def config_with_overrides(cls: type[T], path: str | Path | None, overrides: dict[str, Any]) -> T:
    """The YAML file's keys (if any) overridden by the CLI flags that were given (``None`` = not given); dotted
    keys (``lora.enabled``) reach into nested sections. Errors name the file."""
    data = load_yaml(path) if path is not None else {}
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        *outer, last = key.split(".")
        for part in outer:
            node[part] = dict(node.get(part) or {})
            node = node[part]
        node[last] = value
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.message}" if path is not None else exc.message, hint=exc.hint) from None


def dump_yaml(cfg: Any, path: str | Path) -> None:
    import yaml

    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
