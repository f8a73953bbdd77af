"""Where built and converted models are cached: ``$TRUSTLAB_CACHE`` (default ``~/.cache/trustlab``)/models/<name>."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("TRUSTLAB_CACHE", Path.home() / ".cache" / "trustlab"))


def cached_dir(name: str) -> Path:
    return cache_root() / "models" / name
