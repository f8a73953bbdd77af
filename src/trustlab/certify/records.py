"""Stamped certificate files and content digests.

A certificate file (``<certifier>/{clean,triggered}.jsonl``) starts with one header line
``{"trustlab_stamp": H, "settings": {...}}``: the settings its records depend on (certifier parameters, noise seed,
the sha256 of the model's weights and of the inputs) and H = ``config_hash(settings)``. Records follow, one per input,
appended and flushed per chunk. A file whose stamp differs from the current settings is never trusted: it is refused
(naming the differing settings) or discarded, as the caller chooses. Batch size and the time budget are not settings:
results do not depend on them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from trustlab.runtime import ConfigError, DataError, append_jsonl, config_diff, config_hash, read_jsonl

STAMP_KEY = "trustlab_stamp"


def array_digest(*arrays: Any) -> str:
    """sha256 (16 hex digits) of the dtypes, shapes and bytes of numpy arrays / tensors."""
    h = hashlib.sha256()
    for a in arrays:
        if hasattr(a, "detach"):
            a = a.detach().cpu().numpy()
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def model_digest(model) -> str:
    """sha256 (16 hex digits) of a module's state dict: names, dtypes, shapes and values."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(array_digest(t).encode())
    return h.hexdigest()[:16]


def read_records(path: str | Path) -> list[dict]:
    """The records of a certificate file (header skipped); [] when it does not exist."""
    try:
        lines = read_jsonl(path)
    except OSError as exc:
        from trustlab.runtime.files import os_error

        raise os_error(path, exc, "certificate file") from None
    return [r for r in lines if STAMP_KEY not in r]


def open_records(path: str | Path, settings: dict, *, resume: bool = True, on_stale: str = "refuse") -> list[dict]:
    """Finished records of ``path`` if it was written under ``settings``; otherwise start it afresh.

    ``resume=False`` always starts afresh. A file written under other settings (or without a stamp) is refused with a
    ConfigError naming the differing settings (``on_stale="refuse"``) or removed (``"discard"``)."""
    path = Path(path)
    stamp = config_hash(settings)
    lines = read_jsonl(path) if resume and path.exists() else []
    if lines:
        head = lines[0]
        if not isinstance(head, dict) or head.get(STAMP_KEY) != stamp:
            if on_stale == "refuse":
                old = head.get("settings") if isinstance(head, dict) and STAMP_KEY in head else None
                differing = config_diff(old, settings) if isinstance(old, dict) else []
                raise ConfigError(
                    f"certificate file {str(path)!r} was written with other settings "
                    f"({'differing: ' + ', '.join(differing) if differing else 'it carries no stamp'})",
                    hint="pass --no-resume to start afresh, or choose another --out folder")
            lines = []
        else:
            recs = lines[1:]
            if any(not isinstance(r, dict) or "idx" not in r for r in recs):
                raise DataError(f"certificate file {str(path)!r} holds a line that is not a record",
                                hint="pass --no-resume to start afresh, or choose another --out folder")
            return recs
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    append_jsonl(path, [{STAMP_KEY: stamp, "settings": settings}])
    return []


def append_records(path: str | Path, records: Iterable[dict]) -> None:
    append_jsonl(path, records)


# --- path layout of a run ------------------------------------------------------------------------------------------
def model_folder(seed_dir: str | Path, track: str, model: str) -> Path:
    """``seed<S>/<track>/<model>/``: model.pt, train.json and one folder per certifier."""
    return Path(seed_dir) / track / model


def cert_file(folder: str | Path, certifier: str, which: str) -> Path:
    """``<model folder>/<certifier>/<clean|triggered>.jsonl``: the stamped certificates of one input set."""
    return Path(folder) / certifier / f"{which}.jsonl"
