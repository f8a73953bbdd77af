"""One typed validation layer for every config, CLI option and YAML file (scikit-learn style messages).

``check_types(cfg)`` checks every field of a dataclass against its annotation and normalises it in place
(``int`` -> ``float`` where a float is asked for, ``list`` -> ``tuple`` for tuple fields); call it first in
``__post_init__`` so a config built in a notebook is checked exactly like one read from YAML. Ranges and choices
are ``require_range`` / ``require_choice``; ``from_dict(cls, mapping)`` builds a config from plain data (YAML, JSON)
through the same checks. Every message names the field, what it expects and the value it got.

Numbers are finite: NaN is never a float here, and neither is +-inf (``--lr inf`` would train a model of NaN
tensors). A field whose value may legitimately be infinite opts in: annotate it ``InfFloat`` (or
``Optional[InfFloat]``) and pass ``allow_inf=True`` to ``require_range``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Iterable, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class AllowInf:
    """Marker inside ``Annotated[float, AllowInf]``: this field may be +-inf (e.g. a limit meaning "no limit")."""


InfFloat = Annotated[float, AllowInf]
_INF_TEXT = ("inf", "-inf", ".inf", "-.inf", "infinity", "-infinity")  # an InfFloat read back from JSON or YAML

_YAML11_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def type_name(tp: Any) -> str:
    """Readable name of an annotation: ``int``, ``float``, ``tuple[int, ...]``, ``str or None``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (tuple, list):
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]" if args else origin.__name__
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def _hint(name: str, tp: Any, value: Any) -> str:
    if isinstance(value, str) and _YAML11_FLOAT.match(value.strip()):
        return (f"YAML 1.1 reads {value!r} as a string; write it with a decimal point and a signed exponent, "
                f"e.g. {name}: {float(value):.1e}".replace("e-0", "e-").replace("e+0", "e+"))
    return f"set {name} to a value of type {type_name(tp)}"


def coerce(name: str, tp: Any, value: Any, allow_inf: bool = False) -> Any:
    """``value`` checked against annotation ``tp`` and normalised; ConfigError naming ``name`` otherwise.

    bool is never an int here, NaN and +-inf are never a float (unless ``tp`` is ``InfFloat``, or ``allow_inf``),
    and a string is never a sequence."""
    if tp is Any or tp is typing.Any:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return coerce(name, args[0], value, allow_inf or AllowInf in tp.__metadata__)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(name, arg, value, allow_inf)
            except ConfigError as exc:
                errors.append(exc)
        if _is_number(value) and not math.isfinite(value) and len(errors) == 1:
            raise errors[0]  # "must be a finite number, got inf" says more than "must be float or None"
        raise ConfigError(f"{name} must be {type_name(tp)}, got {value!r}", hint=_hint(name, tp, value))
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, args))}; got {value!r}",
                          hint=f"set {name} to one of {', '.join(map(str, args))}")
    if origin in (tuple, list):
        if isinstance(value, (str, bytes, dict)) or not isinstance(value, (list, tuple)):
            scalar_items = bool(args) and args[0] in (int, float, str, bool)
            raise ConfigError(f"{name} must be a list ({type_name(tp)}), got {value!r}",
                              hint=f"write {name} as a list, e.g. [{value!r}]" if scalar_items and value is not None
                              else f"write {name} as a YAML list of {type_name(args[0]) if args else 'items'}")
        if args and (len(args) == 2 and args[1] is Ellipsis or origin is list):
            items = [coerce(f"{name}[{i}]", args[0], v) for i, v in enumerate(value)]
        elif args:
            if len(value) != len(args):
                raise ConfigError(f"{name} must have {len(args)} items ({type_name(tp)}), got {value!r}",
                                  hint=f"give exactly {len(args)} values for {name}")
            items = [coerce(f"{name}[{i}]", a, v) for i, (a, v) in enumerate(zip(args, value))]
        else:
            items = list(value)
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {value!r}", hint=f"write {name} as key: value pairs")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            return from_dict(tp, value, name)
        raise ConfigError(f"{name} must be a mapping of {tp.__name__} fields, got {value!r}",
                          hint=f"valid keys: {', '.join(f.name for f in dataclasses.fields(tp))}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be true or false, got {value!r}", hint=f"set {name} to true or false")
    if tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, float) and value.is_integer() and math.isfinite(value) and abs(value) < 2**53:
            return int(value)
        raise ConfigError(f"{name} must be an integer, got {value!r}", hint=_hint(name, tp, value))
    if tp is float:
        if allow_inf and isinstance(value, str) and value.strip().lower().lstrip("+") in _INF_TEXT:
            return -math.inf if value.strip().startswith("-") else math.inf  # as ``to_dict`` writes it
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            value = float(value)
            if math.isnan(value):
                raise ConfigError(f"{name} must be a number, got nan", hint=f"set {name} to a finite number")
            if math.isinf(value) and not allow_inf:
                raise ConfigError(f"{name} must be a finite number, got {value}",
                                  hint=f"set {name} to a finite number")
            return value
        raise ConfigError(f"{name} must be a number, got {value!r}", hint=_hint(name, tp, value))
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{name} must be a string, got {value!r}", hint=f"quote {name} in YAML, e.g. \"{value}\"")
    if tp is Path:
        if isinstance(value, (str, Path)) and str(value):
            return Path(value)
        raise ConfigError(f"{name} must be a path, got {value!r}", hint=f"set {name} to a file or folder path")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{name} must be {type_name(tp)}, got {value!r}", hint=_hint(name, tp, value))
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, recursing into nested dataclasses.

    Unknown keys raise ConfigError listing the valid ones; lists become tuples where the field is a tuple.
    """
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__} must be a mapping, got {type(data).__name__}")
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(map(repr, unknown))} in {where or cls.__name__}",
            hint=f"valid keys: {', '.join(fields)}",
        )
    hints = typing.get_type_hints(cls, include_extras=True)  # keeps InfFloat's opt-in
    kwargs = {name: coerce(f"{where}.{name}".lstrip("."), hints[name], value) for name, value in data.items()}
    try:
        cfg = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad {where or cls.__name__}: {exc}") from exc
    check_types(cfg, where)
    return cfg


def check_types(cfg: Any, prefix: str | None = None) -> None:
    """Check and normalise every field of dataclass ``cfg`` against its annotation (works on frozen ones)."""
    hints = typing.get_type_hints(type(cfg), include_extras=True)
    where = prefix if prefix is not None else ""
    for f in dataclasses.fields(cfg):
        name = f"{where}.{f.name}" if where else f.name
        value = getattr(cfg, f.name)
        fixed = coerce(name, hints.get(f.name, Any), value)
        if fixed is not value:
            object.__setattr__(cfg, f.name, fixed)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def require_range(name: str, value: Any, lo: float | None = None, hi: float | None = None,
                  lo_open: bool = False, hi_open: bool = False, allow_inf: bool = False) -> None:
    """Raise ConfigError naming ``name``, the allowed range and ``value`` when it is not a number inside it.

    NaN is outside every range; so is +-inf, unless ``allow_inf`` (then a missing bound, ``None``, takes it)."""
    left = "[" if lo is None and allow_inf else "(" if lo is None or lo_open else "["
    right = "]" if hi is None and allow_inf else ")" if hi is None or hi_open else "]"
    rng = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
    if not _is_number(value):
        raise ConfigError(f"{name} must be a number in {rng}, got {value!r}", hint=_hint(name, float, value))
    bad = math.isnan(value) or (math.isinf(value) and not allow_inf) or (
        lo is not None and (value < lo or (lo_open and value == lo))) or (
        hi is not None and (value > hi or (hi_open and value == hi)))
    if bad:
        raise ConfigError(f"{name} must lie in {rng}, got {value}", hint=f"set {name} within {rng}")


def require_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """Raise ConfigError naming ``name`` and the allowed values."""
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}",
                          hint=f"set {name} to one of {', '.join(map(str, choices))}")


def parse_int_list(name: str, text: str, example: str = "128,64") -> tuple[int, ...]:
    """``"128,64"`` -> ``(128, 64)`` for list-valued CLI flags; ConfigError naming the flag otherwise."""
    try:
        return tuple(int(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated integers, got {text!r}",
                          hint=f"e.g. {name} {example}") from None


def parse_float_list(name: str, text: str, example: str = "0,0.25,0.5") -> tuple[float, ...]:
    """``"0,0.25"`` -> ``(0.0, 0.25)``; NaN, +-inf and non-numbers refused naming the flag."""
    try:
        values = tuple(float(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated numbers, got {text!r}",
                          hint=f"e.g. {name} {example}") from None
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{name} must hold finite numbers, got {text!r}", hint=f"give finite numbers for {name}")
    return values
