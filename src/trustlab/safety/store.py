"""Safety's record files (``generations.jsonl``, ``labels.jsonl``): ``runtime.RecordStore`` with the lab's keys.

The store itself (stamped header, torn-line repair, done-keys, newest record per key, and the rule of what belongs
in the stamp and what only extends a run) is ``trustlab.runtime.records``; this module says how safety keys its
records and which stored records a ``--retry-errors`` run does again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from trustlab.runtime.records import RecordStore

FAILED = ("error", "filtered")


def generation_key(rec: Mapping[str, Any]) -> str:
    """``<strategy>/<prompt_id>#<sample>``."""
    return f"{rec.get('strategy', 'default')}/{rec['key']}"


def label_key(rec: Mapping[str, Any]) -> str:
    """``<strategy>/<prompt_id>#<sample>|<judge>|<part>``."""
    return f"{rec.get('strategy', 'default')}/{rec['key']}|{rec['judge']}|{rec['part']}"


def is_failure(rec: Mapping[str, Any]) -> bool:
    """A record stored as a failure (``--retry-errors`` does it again)."""
    return rec.get("status", "ok") in FAILED


def open_store(path: str | Path, identity: Mapping[str, Any], labels: bool = False) -> RecordStore:
    """The generations (or labels) file ``path`` stamped with ``identity``, the settings generations depend on."""
    return RecordStore(path, dict(identity), key=label_key if labels else generation_key,
                       what="labels file" if labels else "generations file")

