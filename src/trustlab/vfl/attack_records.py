"""The attacks' records: each finished attack of a run is one record of ``attacks.jsonl`` in the run folder, the one
stamped record store (``runtime.RecordStore``), keyed by attack and stamped with the run's stamp (its run id and
config) and the attack settings (``AttackConfig``, target party, the digest of ``--aux-data``). Its reconstructions
are in ``attacks/<key>.npz``, written before the record. An interrupted evaluation run again resumes: the attacks
already recorded are read back, not run again. Records of another run or other attack settings are ours to discard
(they are recomputed); ``resume=False`` (``vfl attack --no-resume``) runs every attack again."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from trustlab.runtime import RecordStore, at_path, to_dict

FILE = "attacks.jsonl"
ARRAYS = "attacks"

Outcome = tuple[dict[str, Any], dict[str, np.ndarray]]


def _file_digest(path: Optional[str]) -> Optional[str]:
    if path is None:
        return None
    h = hashlib.sha256()
    with at_path(Path(path), "--aux-data file"):
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


class AttackRecords:
    """The recorded attacks of ``run`` (a ``load_run`` dict or a ``TrainResult.run``) under ``attack_cfg``."""

    def __init__(self, run: dict, attack_cfg: Any, target_party: int, aux_data: Optional[str], resume: bool = True):
        self.dir = Path(run["dir"])
        settings = {"run": run["stamp"], "attack": to_dict(attack_cfg), "target_party": int(target_party),
                    "aux_data": _file_digest(aux_data)}
        self.store = RecordStore(self.dir / FILE, settings, what="attack records", resume=resume,
                                 on_stale="discard")
        self.done = {r["key"]: r for r in self.store.latest()}

    def _read(self, key: str) -> Optional[Outcome]:
        rec = self.done.get(key)
        if rec is None or not isinstance(rec.get("result"), dict):
            return None
        names = rec.get("arrays") or []
        if not names:
            return rec["result"], {}
        path = self.dir / ARRAYS / f"{key}.npz"
        if not path.is_file():  # the reconstructions went missing: run the attack again
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (ValueError, EOFError, OSError):
            return None
        return (rec["result"], arrays) if sorted(arrays) == sorted(names) else None

    def run(self, key: str, compute: Callable[[], Outcome]) -> Outcome:
        """The recorded outcome of ``key``, else ``compute()`` recorded (arrays first, then the record)."""
        got = self._read(key)
        if got is not None:
            return got
        result, arrays = compute()
        if arrays:
            path = self.dir / ARRAYS / f"{key}.npz"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{key}.tmp.npz")
            np.savez(tmp, **arrays)
            os.replace(tmp, path)
        self.store.append([{"key": key, "result": result, "arrays": sorted(arrays)}])
        return result, arrays
