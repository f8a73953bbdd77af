"""The revealed-key ledger: which fingerprint keys went to which suspect, when, and through which verb.

Every verification sends keys to the suspect, and a thief who logs the queries can unlearn exactly those keys. The
ledger records each batch *before* it is sent, so later verifications can draw unrevealed keys first and the verdict
can say how many remain. It is kept beside the owner's secret (``<secret>.ledger.jsonl`` by default), mode 0600,
never inside a run folder (run folders are shared with auditors; the ledger maps keys to suspects).

Format: JSON Lines, one record per batch: ``seq`` (0, 1, ...), ``time``, ``verb``, ``mode``, ``run``,
``set_digest``, ``suspect`` (identity or endpoint), ``keys`` (fingerprint ids), ``prev`` (the previous record's
mac) and ``mac`` = HMAC-SHA256(secret, "trustlab-ledger-v1|" + canonical JSON of the rest). The chain makes a torn
write, an edited, reordered or deleted middle record, or a record written under another secret a ``DataError``
naming the line, never a silently shorter history. (Cutting whole records off the end is not detectable from the
file alone; the last record's ``seq`` is printed with each verdict so it can be compared.)
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from trustlab.runtime.errors import ConfigError, DataError
from trustlab.runtime.files import at_path

MAC_PREFIX = b"trustlab-ledger-v1|"
SUFFIX = ".ledger.jsonl"
FIELDS = ("seq", "time", "verb", "mode", "run", "set_digest", "suspect", "keys", "prev", "mac")
_HINT = ("the ledger is append-only and written by trustlab only: restore it from a backup; moving it aside makes "
         "every key look unrevealed, which it is not")


def ledger_path_for(secret_path: str | Path) -> Path:
    """``<secret file>.ledger.jsonl``, beside the secret."""
    p = Path(secret_path)
    return p.with_name(p.name + SUFFIX)


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _in_run_folder(path: Path) -> Path | None:
    from trustlab.runtime.rundir import MARKER

    for parent in path.resolve().parents:
        if (parent / MARKER).exists():
            return parent
    return None


@dataclass
class Ledger:
    """The ledger at ``path``, authenticated with ``secret`` (the owner's 32 bytes)."""

    path: Path
    secret: bytes

    def __post_init__(self):
        self.path = Path(self.path)
        self._outside_runs()

    def _outside_runs(self) -> None:
        run = _in_run_folder(self.path)
        if run is not None:
            raise ConfigError(f"ledger {str(self.path)!r} lies inside the run folder {str(run)!r}",
                              hint="keep the ledger beside the secret, outside every run folder (--ledger PATH)")

    def _mac(self, body: dict) -> str:
        return hmac.new(self.secret, MAC_PREFIX + _canonical(body), hashlib.sha256).hexdigest()

    def _check_mode(self) -> None:
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(f"ledger {str(self.path)!r} is readable or writable by others (mode {mode:04o})",
                              hint=f"chmod 600 {self.path}")

    # -- reading -------------------------------------------------------------------------------------------------
    def records(self) -> list[dict]:
        """Every record, checked (JSON, fields, sequence, chain, mac); [] when the file does not exist yet."""
        if not self.path.exists():
            return []
        with at_path(self.path, "ledger", DataError):
            self._check_mode()
            raw = self.path.read_bytes()
        return self._parse(raw)

    def _parse(self, raw: bytes) -> list[dict]:
        where = f"ledger {str(self.path)!r}"
        if raw and not raw.endswith(b"\n"):
            n = raw.count(b"\n") + 1
            raise DataError(f"{where} line {n} is torn (no end of line: a write was cut short)", hint=_HINT)
        out: list[dict] = []
        prev = ""
        for n, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), 1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where} line {n} is not valid JSON ({exc.msg})", hint=_HINT) from None
            if not isinstance(rec, dict) or set(rec) != set(FIELDS):
                got = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
                raise DataError(f"{where} line {n} must hold the fields {', '.join(FIELDS)}; got {got}", hint=_HINT)
            if rec["seq"] != len(out) or rec["prev"] != prev:
                raise DataError(f"{where} line {n} is out of sequence (seq {rec['seq']!r}, expected {len(out)}): "
                                "a record was removed, reordered or copied in", hint=_HINT)
            body = {k: v for k, v in rec.items() if k != "mac"}
            if not isinstance(rec["mac"], str) or not hmac.compare_digest(rec["mac"], self._mac(body)):
                raise DataError(f"{where} line {n} fails its authentication (edited, or written under another "
                                "secret)", hint=_HINT)
            if not isinstance(rec["keys"], list) or not all(isinstance(k, int) and not isinstance(k, bool)
                                                            for k in rec["keys"]):
                raise DataError(f"{where} line {n}: field 'keys' must be a list of fingerprint ids", hint=_HINT)
            out.append(rec)
            prev = rec["mac"]
        return out

    def revealed(self, set_digest: str) -> dict[int, int]:
        """For the fingerprint set ``set_digest``: key id -> how many times it was sent to a suspect."""
        counts: dict[int, int] = {}
        for rec in self.records():
            if rec["set_digest"] == set_digest:
                for k in rec["keys"]:
                    counts[k] = counts.get(k, 0) + 1
        return counts

    def suspects_of(self, set_digest: str, key: int) -> list[dict]:
        """The suspects key ``key`` of the set was revealed to (with time, verb and run)."""
        return [{k: rec[k] for k in ("time", "verb", "mode", "run", "suspect")} for rec in self.records()
                if rec["set_digest"] == set_digest and key in rec["keys"]]

    # -- writing -------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        import fcntl

        with at_path(self.path, "ledger", ConfigError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # releases the lock

    def append(self, *, set_digest: str, keys: Sequence[int], suspect: dict, verb: str, mode: str,
               run: str | None) -> dict:
        """Record that ``keys`` are about to be sent to ``suspect``; call it *before* sending them. Returns the
        record. The whole file is re-checked under an exclusive lock first, so a bad ledger stops the run before any
        key leaves."""
        from trustlab.runtime.rundir import utc_now

        self._outside_runs()  # again: a run folder may have been claimed around it since
        with self._locked() as fd:
            self._check_mode()
            with at_path(self.path, "ledger", DataError):
                raw = self.path.read_bytes()
            recs = self._parse(raw)
            body = {"seq": len(recs), "time": utc_now(), "verb": verb, "mode": mode, "run": run,
                    "set_digest": set_digest, "suspect": json.loads(json.dumps(suspect)),
                    "keys": [int(k) for k in keys], "prev": recs[-1]["mac"] if recs else ""}
            rec = {**body, "mac": self._mac(body)}
            with at_path(self.path, "ledger", ConfigError):
                os.write(fd, _canonical(rec) + b"\n")
                os.fsync(fd)
        return rec



def open_for(secret_path: str | Path, ledger_path: str | Path | None, fps) -> tuple[bytes, Ledger]:
    """(secret, ledger) for verifying ``fps``: the secret loaded and checked against the set's commitment (exit 2
    otherwise), the ledger (default ``<secret>.ledger.jsonl``) read once, so a damaged one stops the run before the
    suspect is loaded or any key is sent."""
    from .secret import check_commitment, load_secret

    secret = load_secret(secret_path)
    check_commitment(secret, fps.secret_commitment)
    led = Ledger(Path(ledger_path) if ledger_path is not None else ledger_path_for(secret_path), secret)
    led.records()
    return secret, led
