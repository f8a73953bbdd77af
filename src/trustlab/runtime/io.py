"""Crash-safe file helpers: atomic JSON, append-only JSONL that tolerates a truncated last line."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


class NonFiniteValueError(ValueError):
    """A NaN or +-inf on its way into a JSON file; ``where`` is its key path (``metrics.fp_loss``)."""

    def __init__(self, where: str, value: float):
        super().__init__(f"{where or 'the value'} is {value}")
        self.where, self.value = where, value


def _jsonable(obj: Any, where: str = "") -> Any:
    """numpy scalars/arrays and Paths to plain JSON values; NaN and +-inf raise NonFiniteValueError naming their key
    path (JSON has no such numbers: written as null they would read back as a different value)."""
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return _jsonable(obj.tolist(), where)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v, f"{where}.{k}" if where else str(k)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        raise NonFiniteValueError(where, obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def to_json(obj: Any, path: str | Path = "JSON", **kw: Any) -> str:
    """``json.dumps`` of ``obj`` with ``allow_nan=False``; a NaN or +-inf is a DataError naming ``path`` and the
    key that holds it, never ``NaN`` (invalid JSON) or ``null``."""
    return json.dumps(_checked(obj, path), allow_nan=False, **kw)


def _checked(obj: Any, path: str | Path) -> Any:
    from .errors import DataError

    try:
        return _jsonable(obj)
    except NonFiniteValueError as exc:
        raise DataError(f"refusing to write {str(path)!r}: {exc.where or 'a value'} is {exc.value}, which JSON "
                        f"cannot hold", hint="a computation diverged or a setting was infinite; check the inputs "
                        "and settings that produce it") from None


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON to a temp file in the same folder, fsync, then rename: readers never see half a file.

    A NaN or +-inf anywhere in ``obj`` is a DataError naming the key, before anything is written."""
    path = Path(path)
    text = to_json(obj, path, indent=2, sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; run artefacts follow the user's umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def append_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Append records, one JSON object per line, and flush to disk before returning. A NaN or +-inf in any record
    is a DataError naming the key, and then no record is written."""
    path = Path(path)
    lines = [to_json(rec, path) + "\n" for rec in records]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        for line in lines:
            fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | Path, repair: bool = True) -> list[dict[str, Any]]:
    """Read a JSONL file; a truncated last line (a crash mid-write) is dropped and, with ``repair``, cut off.

    Empty lines are skipped."""
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    records, good_end = [], 0
    for line in _lines(raw):
        if not line.strip():
            good_end += len(line) + 1
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
        good_end += len(line) + 1
    if repair and good_end < len(raw):
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
    return records


def _lines(raw: bytes) -> Iterator[bytes]:
    """Complete lines only: a last line without its newline is an interrupted write."""
    *complete, _tail = raw.split(b"\n")
    yield from complete


def save_stamped(state: Any, path: str | Path, stamp: str) -> None:
    """Save ``state`` (tensors, numbers, strings, lists, dicts) atomically with ``stamp``, the hash of the
    settings it depends on (``runtime.config_hash``) plus anything else that identifies the run."""
    save_torch_atomic({"trustlab_stamp": stamp, "state": state}, path)


def load_stamped(path: str | Path, stamp: str, what: str = "checkpoint", fresh_hint: str | None = None) -> Any:
    """The state saved by ``save_stamped`` under the same ``stamp``; None when ``path`` does not exist.

    Loads with ``weights_only=True`` (nothing is unpickled). A corrupt, truncated, crafted or foreign file is a
    DataError (exit 2) naming the path; a file stamped by another run or config is a ConfigError naming both stamps.
    """
    from .errors import ConfigError, DataError

    path = Path(path)
    if not path.exists():
        return None
    blob = load_torch(path, what)
    if not isinstance(blob, dict) or "trustlab_stamp" not in blob:
        raise DataError(f"{what} {str(path)!r} carries no trustlab stamp",
                        hint=fresh_hint or "delete it, or start afresh with --no-resume")
    if blob["trustlab_stamp"] != stamp:
        raise ConfigError(f"{what} {str(path)!r} belongs to another run or config (stamp {blob['trustlab_stamp']}, "
                          f"this run {stamp})",
                          hint=fresh_hint or "start afresh with --no-resume, or choose another --out folder")
    return blob["state"]


def load_torch(path: str | Path, what: str = "checkpoint", map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: a pickle that needs code, or a truncated or corrupt file, is a
    DataError (exit 2) naming the path; never executes anything from the file."""
    import pickle

    import torch

    from .errors import DataError
    from .files import at_path

    with at_path(path, what):
        fh = open(path, "rb")
    with fh:
        try:
            return torch.load(fh, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unpickling refused"
            raise DataError(f"{what} {str(path)!r} is refused: it is not plain tensor state ({first[:160]})",
                            hint="load only checkpoints written by trustlab or torch.save of a state dict") from None
        except (OSError, RuntimeError, EOFError, ValueError, KeyError, IndexError, AttributeError,
                TypeError) as exc:  # a truncated zip surfaces as OSError(EINVAL) or RuntimeError inside torch
            raise DataError(f"{what} {str(path)!r} is truncated or corrupt ({type(exc).__name__})",
                            hint="delete it and rerun, or start afresh with --no-resume") from None


def save_torch_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file beside ``path``, fsync, then rename: a crash never leaves half a checkpoint."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
