"""Append-only, stamped JSONL record files (``generations.jsonl``, ``labels.jsonl``) that survive crashes.

The first line is a header ``{"trustlab_store": ..., "fingerprint": ..., "identity": {...}}``: the hash of the
settings the records depend on and those settings themselves. Opening a file stamped with another fingerprint is
a ConfigError naming the differing keys (``runtime.config_diff``), so a resume never mixes two configs' records.
Every ``append`` is flushed and fsynced (``runtime.io.append_jsonl``); a torn last line (a crash mid-write) is cut
off on open (``runtime.io.read_jsonl``), and the keys already present are skipped by the caller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

from trustlab.runtime.config import config_diff
from trustlab.runtime.errors import ConfigError, DataError
from trustlab.runtime.io import append_jsonl, read_jsonl

HEADER = "trustlab_store"
FORMAT = "trustlab.safety.store/1"


def default_key(rec: Mapping[str, Any]) -> str:
    return str(rec["key"])


def generation_key(rec: Mapping[str, Any]) -> str:
    """``<strategy>/<prompt_id>#<sample>``."""
    return f"{rec.get('strategy', 'default')}/{rec['key']}"


def label_key(rec: Mapping[str, Any]) -> str:
    """``<strategy>/<prompt_id>#<sample>|<judge>|<part>``."""
    return f"{rec.get('strategy', 'default')}/{rec['key']}|{rec['judge']}|{rec['part']}"


class JsonlStore:
    """Records keyed by ``key_fn(record)``; the newest record of a key wins (``--retry-errors`` appends anew)."""

    def __init__(self, path: str | Path, fingerprint: str, identity: Optional[Mapping[str, Any]] = None,
                 key_fn: Callable[[Mapping[str, Any]], str] = default_key, what: str = "record file"):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.identity = dict(identity or {})
        self.key_fn = key_fn
        self.what = what
        self._records: list[dict[str, Any]] = []
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        from trustlab.runtime.files import at_path

        with at_path(self.path, self.what):
            rows = read_jsonl(self.path, repair=True)  # a torn last line is cut off here
        if not rows:
            return
        head, *rest = rows
        if HEADER not in head:
            raise DataError(f"{self.what} {str(self.path)!r} has no trustlab header line",
                            hint="it was not written by trustlab; move it away or pass --no-resume")
        if head.get("fingerprint") != self.fingerprint:
            diff = config_diff(head.get("identity") or {}, self.identity) if self.identity else []
            raise ConfigError(f"{self.what} {str(self.path)!r} was written under another config (fingerprint "
                              f"{head.get('fingerprint')}, now {self.fingerprint}); differing keys: "
                              f"{', '.join(diff) or 'unknown'}",
                              hint="pass --no-resume to start afresh, or choose a new --out folder")
        self._records = rest

    # --- reading --------------------------------------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        """Every record in file order (superseded ones included)."""
        return list(self._records)

    def latest(self) -> list[dict[str, Any]]:
        """The newest record of each key, in first-appearance order."""
        last: dict[str, dict[str, Any]] = {}
        for r in self._records:
            last[self.key_fn(r)] = r
        return list(last.values())

    def done_keys(self, include_errors: bool = True) -> set[str]:
        """Keys already stored; without ``include_errors``, keys whose newest record failed are left to redo."""
        return {self.key_fn(r) for r in self.latest() if include_errors or r.get("status", "ok") not in ("error",
                                                                                                         "filtered")}

    def __len__(self) -> int:
        return len(self._records)

    # --- writing --------------------------------------------------------------------------------------------------
    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append records (one flush + fsync per call); the header goes first into a new file."""
        records = [dict(r) for r in records]
        if not records:
            return
        from trustlab.runtime.files import at_path

        with at_path(self.path, self.what, ConfigError):
            if not self.path.exists() or self.path.stat().st_size == 0:
                append_jsonl(self.path, [{HEADER: FORMAT, "fingerprint": self.fingerprint,
                                          "identity": self.identity}])
            append_jsonl(self.path, records)
        self._records.extend(records)

    def reset(self) -> None:
        self.path.unlink(missing_ok=True)
        self._records = []


def read_records(path: str | Path, what: str = "record file") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, records) of a store file without checking its fingerprint (merge, compare, metrics)."""
    from trustlab.runtime.files import at_path

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {str(path)!r} does not exist", hint="pass a run folder written by trustlab safety")
    with at_path(path, what):
        rows = read_jsonl(path, repair=False)
    if not rows or HEADER not in rows[0]:
        raise DataError(f"{what} {str(path)!r} has no trustlab header line", hint="pass a file written by trustlab")
    return rows[0], rows[1:]
