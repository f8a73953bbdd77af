"""Certificate files (the one stamped record store, ``runtime.RecordStore``), their path layout, content digests.

A certificate file (``<certifier>/{clean,triggered}.jsonl``) is a record store keyed by input ``idx``: a header line
``{"trustlab_stamp": H, "settings": {...}}`` holding the settings its records depend on (certifier parameters, noise
seed, the model's weights digest (``trustlab.models.identity.weights_digest``, the one digest every lab records) and the
inputs' digest), then one record per input, appended and flushed per chunk.
A file whose stamp differs from the current settings is never trusted: it is refused (naming the differing settings)
or discarded, as the caller chooses. Batch size and the time budget are not settings: results do not depend on them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from trustlab.runtime import ConfigError, DataError, RecordStore, append_jsonl
from trustlab.runtime.records import read_records as read_stamped


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


OLD_DIGEST_LEN = 16  # certify's own model digest before the one weights digest: 16 hex digits


def _refuse_old_digest(path: Path, settings: dict) -> None:
    """A certificate file stamped with certify's former 16-hex-digit model digest is refused with a message that
    says so (its records may be right, but no stamp written today can vouch for them)."""
    try:
        old, _ = read_stamped(path, "certificate file")
    except (ConfigError, DataError):
        return  # RecordStore names the problem
    model = old.get("model")
    if isinstance(model, str) and len(model) == OLD_DIGEST_LEN and model != settings.get("model"):
        raise ConfigError(f"certificate file {str(path)!r} was stamped by an older trustlab (its model digest "
                          f"{model} has {OLD_DIGEST_LEN} hex digits; certificates now record the full weights digest "
                          "of trustlab.models.identity)",
                          hint="certify again: add --no-resume, or choose another --out")


def read_records(path: str | Path) -> list[dict]:
    """The records of a certificate file (header skipped); [] when it does not exist."""
    path = Path(path)
    return read_stamped(path, "certificate file")[1] if path.exists() else []


def open_records(path: str | Path, settings: dict, *, resume: bool = True, on_stale: str = "refuse") -> list[dict]:
    """Finished records of ``path`` if it was written under ``settings``; otherwise start it afresh (the header is
    written at once). ``resume=False`` always starts afresh; a file of other settings is refused naming them
    (``on_stale="refuse"``) or removed (``"discard"``); an unstamped file is refused (``runtime.RecordStore``)."""
    if resume and on_stale == "refuse" and Path(path).is_file():
        _refuse_old_digest(Path(path), settings)
    store = RecordStore(path, settings, key=_idx, what="certificate file", resume=resume, on_stale=on_stale)
    store.done_keys()  # every line must be a record of one input (an idx)
    return store.begin().records()


def stamped_records(path: str | Path, settings: dict, on_stale: str = "refuse") -> list[dict]:
    """Records of ``path`` when it carries the stamp of ``settings``, without writing anything: [] when absent or
    (``on_stale`` other than ``"refuse"``) of other settings; a file of other settings under ``"refuse"`` is refused
    naming them. Several ranks may call it on one file at once."""
    if not Path(path).is_file():
        return []
    if on_stale == "refuse":
        _refuse_old_digest(Path(path), settings)
    store = RecordStore(path, settings, key=_idx, what="certificate file",
                        on_stale="refuse" if on_stale == "refuse" else "ignore")
    store.done_keys()
    return store.records()


def append_records(path: str | Path, records: Iterable[dict]) -> None:
    append_jsonl(path, records)


def _idx(rec: dict) -> int:
    if "idx" not in rec:
        raise DataError("a certificate file holds a line that is not a record (no idx)",
                        hint="pass --no-resume to start afresh, or choose another --out folder")
    return int(rec["idx"])


# --- path layout of a run ------------------------------------------------------------------------------------------
def model_folder(seed_dir: str | Path, track: str, model: str) -> Path:
    """``seed<S>/<track>/<model>/``: model.pt, train.json and one folder per certifier."""
    return Path(seed_dir) / track / model


def cert_file(folder: str | Path, certifier: str, which: str) -> Path:
    """``<model folder>/<certifier>/<clean|triggered>.jsonl``: the stamped certificates of one input set."""
    return Path(folder) / certifier / f"{which}.jsonl"
