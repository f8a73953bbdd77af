"""Stamped record stores: append-only JSONL files whose records survive crashes and never mix two configs.

A record file is one header line and then one JSON object per record::

    {"trustlab_stamp": H, "settings": {...}, "format": "trustlab.records/1"}
    {"key": ..., ...}
    ...

``settings`` are the settings the records depend on and ``H = config_hash(settings)``. Opening a file stamped with
another H is refused with a ConfigError naming the differing settings, or (``on_stale="discard"``) the file is removed
and the store starts afresh; ``resume=False`` starts afresh too. A file that carries no stamp (not written by a
trustlab store) is refused whatever the caller asks, and is never truncated or removed. Every ``append`` is flushed
and fsynced (``io.append_jsonl``); a torn last line (a crash mid-write) is cut off on open (``io.read_jsonl``), so the
next append starts on a fresh line. A complete line that is not JSON is corruption, not a crash: refused, untouched.

Records are keyed (``key``, default ``record["key"]``): ``done_keys`` are the keys already stored, and the newest
record of a key wins (a retry appends anew; nothing is rewritten).

**What belongs in ``settings``.** Exactly the settings that change what a record *says*: the model's identity, the
decoding settings of each strategy, sampling and its seed, the dataset's identity and columns, the think format, a
certifier's parameters, the digests of the weights and inputs. Settings that only decide *which* records a run holds
or what is computed from them stay out: how many prompts or inputs (limit, start, shard), how they are summarised
(bootstrap replicates, tie rule, primary judge, reference), which judges label them (a label names its judge), and
how they are produced (batch size, concurrency, threads, timeouts, retries, ``--retry-errors``). A run can
therefore be extended by those settings: a ``--limit 4`` run on a ``--limit 2`` folder appends the two missing
prompts and ends with exactly the records of a fresh ``--limit 4`` run.

Users: safety's ``generations.jsonl`` / ``labels.jsonl``, certify's certificate files, vfl's sweep cells
(``cells.jsonl``) and attacks (``attacks.jsonl``).

Two older headers stay readable: certify's ``{"trustlab_stamp", "settings"}`` (the same shape, without ``format``)
and safety's ``{"trustlab_store", "fingerprint", "identity"}``, whose fingerprint is the same hash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

from .config import config_diff, config_hash, to_dict
from .errors import ConfigError, DataError
from .files import at_path
from .io import append_jsonl, read_jsonl

STAMP_KEY = "trustlab_stamp"
FORMAT = "trustlab.records/1"
_LEGACY_SAFETY = "trustlab_store"  # safety's header before the one store: {"trustlab_store", "fingerprint", "identity"}
_HEADER_STARTS = (b'{"' + STAMP_KEY.encode() + b'"', b'{"' + _LEGACY_SAFETY.encode() + b'"')
FRESH_HINT = "pass --no-resume to start afresh, or choose another --out folder"


def header(settings: Any) -> dict[str, Any]:
    """The header line of a record file written under ``settings``."""
    s = to_dict(settings)
    return {STAMP_KEY: config_hash(s), "settings": s, "format": FORMAT}


def parse_header(row: Any) -> Optional[tuple[str, dict[str, Any]]]:
    """(stamp, settings) of a header line (current or older format); None when ``row`` is not a header."""
    if isinstance(row, dict):
        if STAMP_KEY in row:
            return str(row[STAMP_KEY]), row.get("settings") if isinstance(row.get("settings"), dict) else {}
        if _LEGACY_SAFETY in row:
            return str(row.get("fingerprint")), row.get("identity") if isinstance(row.get("identity"), dict) else {}
    return None


def _scan(path: Path, what: str) -> tuple[list[Any], bool]:
    """(rows, torn) of a file without changing it: every complete line parsed; ``torn`` when an unfinished last line
    follows them. A file that does not open with a stamped header is refused (a ConfigError naming it); a complete
    line that is not JSON is a DataError naming the line."""
    with at_path(path, what):
        raw = path.read_bytes()
    *complete, tail = raw.split(b"\n")
    first = next((ln for ln in complete if ln.strip()), None)
    if (first is None and tail.strip() and not any(h.startswith(tail[:len(h)]) for h in _HEADER_STARTS)) or (
            first is not None and not first.lstrip().startswith(_HEADER_STARTS)):
        raise ConfigError(f"{what} {str(path)!r} carries no stamp: it was not written by a trustlab record store; "
                          "it is left untouched", hint="move it away, or choose another --out folder")
    rows = read_jsonl(path, repair=False)  # stops at the first line that does not parse
    n_complete = sum(1 for ln in complete if ln.strip())
    if len(rows) < n_complete:
        bad = [i for i, ln in enumerate(complete, 1) if ln.strip()][len(rows)]
        raise DataError(f"line {bad} of {what} {str(path)!r} is not JSON (a complete line, so not a torn write)",
                        hint=FRESH_HINT)
    if rows and parse_header(rows[0]) is None:
        raise ConfigError(f"{what} {str(path)!r} carries no stamp: its first line is not a trustlab header; it is "
                          "left untouched", hint="move it away, or choose another --out folder")
    for i, r in enumerate(rows[1:], 2):
        if not isinstance(r, dict) or parse_header(r) is not None:
            raise DataError(f"line {i} of {what} {str(path)!r} is not a record", hint=FRESH_HINT)
    return rows, bool(tail)


def read_records(path: str | Path, what: str = "record file") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header settings, records) of a record file, whatever its stamp (readers that merge, compare or plot
    finished runs). Changes nothing: a torn last line is left for the writer to cut."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} {str(path)!r} does not exist", hint="pass a run folder written by trustlab")
    rows, _ = _scan(path, what)
    if not rows:
        raise DataError(f"{what} {str(path)!r} holds no header line", hint="pass a file written by trustlab")
    return parse_header(rows[0])[1], rows[1:]


def default_key(rec: Mapping[str, Any]) -> str:
    return str(rec["key"])


class RecordStore:
    """The records of ``path`` written under ``settings`` (see the module docstring for what belongs there).

    ``resume=False`` starts afresh; a file stamped under other settings is refused naming them
    (``on_stale="refuse"``), removed (``"discard"``), or (``"ignore"``) left as it is and read as empty, for a
    reader that must not write (several processes reading one folder). ``hint`` replaces the refusal's hint."""

    def __init__(self, path: str | Path, settings: Any, *, key: Callable[[Mapping[str, Any]], Any] = default_key,
                 what: str = "record file", resume: bool = True, on_stale: str = "refuse",
                 hint: Optional[str] = None):
        if on_stale not in ("refuse", "discard", "ignore"):
            raise ValueError(f"on_stale must be 'refuse', 'discard' or 'ignore', got {on_stale!r}")
        self.path, self.what, self.key = Path(path), what, key
        self.settings = to_dict(settings)
        self.stamp = config_hash(self.settings)
        self.stale = False  # an "ignore" store over a file of other settings: nothing may be appended
        self._records: list[dict[str, Any]] = self._open(resume, on_stale, hint or FRESH_HINT)

    def _open(self, resume: bool, on_stale: str, hint: str) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        rows, torn = _scan(self.path, self.what)
        if not rows:  # empty, or a header torn while being written: nothing was recorded
            if torn:
                read_jsonl(self.path, repair=True)
            return []
        stamp, old = parse_header(rows[0])
        if stamp != self.stamp or not resume:
            if resume and on_stale == "refuse":
                differing = config_diff(old, self.settings) if old else []
                raise ConfigError(f"{self.what} {str(self.path)!r} was written with other settings ("
                                  + (f"differing: {', '.join(differing)}" if differing else
                                     f"stamp {stamp}, now {self.stamp}") + ")", hint=hint)
            if resume and on_stale == "ignore":
                self.stale = True
                return []
            self.path.unlink()  # a stamped record file of another config, or --no-resume: ours to discard
            return []
        if torn:
            read_jsonl(self.path, repair=True)  # cut the torn last line: the next append starts on a fresh line
        return rows[1:]

    # --- reading ----------------------------------------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        """Every record in file order (superseded ones included)."""
        return list(self._records)

    def latest(self) -> list[dict[str, Any]]:
        """The newest record of each key, in first-appearance order."""
        last: dict[Any, dict[str, Any]] = {}
        for r in self._records:
            last[self.key(r)] = r
        return list(last.values())

    def done_keys(self, redo: Optional[Callable[[Mapping[str, Any]], bool]] = None) -> set[Any]:
        """Keys already stored, less those whose newest record ``redo`` says to do again (e.g. stored errors)."""
        return {self.key(r) for r in self.latest() if redo is None or not redo(r)}

    def __len__(self) -> int:
        return len(self._records)

    # --- writing ----------------------------------------------------------------------------------------------------
    def begin(self) -> "RecordStore":
        """Write the header now if the file is new (a store is otherwise stamped by its first append)."""
        if self.stale:
            raise ConfigError(f"{self.what} {str(self.path)!r} belongs to other settings; it is read-only here",
                              hint=FRESH_HINT)
        with at_path(self.path, self.what, ConfigError):
            if not self.path.exists() or self.path.stat().st_size == 0:
                append_jsonl(self.path, [header(self.settings)])
        return self

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append records (one flush + fsync per call); the header goes first into a new file."""
        records = [dict(r) for r in records]
        if not records:
            return
        self.begin()
        with at_path(self.path, self.what, ConfigError):
            append_jsonl(self.path, records)
        self._records.extend(records)
