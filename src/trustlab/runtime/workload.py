"""Price a workload before running it: token counts against the model's context, bytes against the memory this
machine has, seconds against a time limit. Each refusal is one ConfigError naming the value, the estimate and
the limit, raised before any work starts (certify's smoothing budget is the model: ``require_budget``).

The time limit is ``max_hours`` where a config has one, else ``$TRUSTLAB_MAX_HOURS`` (default 24; ``inf`` turns
the guard off).
"""

from __future__ import annotations

import math
import os
from typing import Any

from .errors import ConfigError

DEFAULT_MAX_HOURS = 24.0
MEMORY_SHARE = 0.8  # refuse a workload that needs more than this share of the memory available now


def format_seconds(sec: float) -> str:
    """``93.2 h`` / ``4.1 days`` / ``2.3e+04 years``: a duration at a glance."""
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("h", 3600), ("min", 60)):
        if sec >= 2 * size:
            return f"{sec / size:.3g} {unit}"
    return f"{sec:.3g} s"


def format_bytes(n: float) -> str:
    for unit, size in (("PB", 1 << 50), ("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} bytes"


def max_hours() -> float:
    """The time limit of verbs without their own ``max_hours``: ``$TRUSTLAB_MAX_HOURS``, default 24."""
    raw = os.environ.get("TRUSTLAB_MAX_HOURS", "").strip()
    if not raw:
        return DEFAULT_MAX_HOURS
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not value > 0:  # also NaN
        raise ConfigError(f"TRUSTLAB_MAX_HOURS must be a positive number of hours or inf, got {raw!r}",
                          hint="e.g. export TRUSTLAB_MAX_HOURS=48 (inf: no limit)")
    return value


def available_memory() -> int:
    """Bytes of memory available now (``MemAvailable``), else the physical memory; 0 when unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def require_memory(what: str, nbytes: float, hint: str) -> float:
    """ConfigError when ``what`` needs more than ``MEMORY_SHARE`` of the available memory; returns ``nbytes``."""
    have = available_memory()
    if have and nbytes > MEMORY_SHARE * have:
        raise ConfigError(f"{what} needs about {format_bytes(nbytes)} of memory; {format_bytes(have)} is available",
                          hint=hint)
    return nbytes


def require_time(what: str, seconds: float, hint: str, limit_hours: float | None = None) -> float:
    """ConfigError when the estimate for ``what`` exceeds the limit (``limit_hours``, else ``max_hours()``)."""
    limit = max_hours() if limit_hours is None else limit_hours
    if seconds > limit * 3600:
        raise ConfigError(f"{what} would take about {format_seconds(seconds)}; the limit is {limit:g} h",
                          hint=f"{hint}, or raise the limit (TRUSTLAB_MAX_HOURS)" if limit_hours is None else hint)
    return seconds


def model_context(model: Any = None, tokenizer: Any = None) -> int | None:
    """Positions the model can attend to: ``max_position_embeddings`` (or ``n_positions``/``max_seq_len``) of its
    config, capped by the tokenizer's ``model_max_length`` when that is a real number; None when neither says."""
    sizes = []
    config = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            sizes.append(value)
            break
    tmax = getattr(tokenizer, "model_max_length", None)
    if isinstance(tmax, int) and 0 < tmax < 10**8:  # transformers' "no limit" sentinel is ~1e30
        sizes.append(tmax)
    return min(sizes) if sizes else None


def require_context(what: str, tokens: int, context: int | None, model_name: str, hint: str) -> None:
    """ConfigError when ``tokens`` positions do not fit the model's ``context``."""
    if context is not None and tokens > context:
        raise ConfigError(f"{what} needs {tokens:,} positions but model {model_name!r} has a context of "
                          f"{context:,} tokens", hint=hint)
