"""Fingerprints and the fingerprint file (``fingerprints.json``, schema ``trustlab.fingerprint/1``).

A ``FingerprintSet`` holds keys, responses and public parameters but never the secret: only its
``secret_commitment``. ``set_digest`` = sha256 of the canonical JSON (sorted keys, no spaces) of the strategy,
params, base model, commitment and every fingerprint's (id, key_ids, response_ids); it is published at release and
checked on every load (a mismatch is a DataError naming ``set_digest``). ``null_p`` is the per-key hit rate of a
model that never saw the fingerprints (1/k for perinucleus); ``null_p_heuristic`` marks the ``english`` guess.

    fps = FingerprintSet.load("fp.json")        # validated; errors name the field
    fps.subset([0, 3, 5]); fps.sample(16, seed=0)  # recorded subsets for verification
    fps.save("fp.json")
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from trustlab.runtime.errors import DataError, ModelError
from trustlab.runtime.files import read_text
from trustlab.runtime.io import write_json_atomic

from . import SCHEMA, STRATEGIES

VERSION = 1


@dataclass(frozen=True)
class Fingerprint:
    """One (key, response) pair. ``candidates``/``boundary_rank`` are set by perinucleus only."""

    id: int
    key_text: str
    key_ids: tuple[int, ...]
    response_text: str
    response_ids: tuple[int, ...]
    base_prob: Optional[float] = None  # base model's q(y1) after the key
    candidates: Optional[tuple[int, ...]] = None  # perinucleus C (token ids)
    boundary_rank: Optional[int] = None  # perinucleus b


@dataclass(frozen=True)
class FingerprintSet:
    """A fingerprint file's content (no secret). Build with ``FingerprintSet.create(...)`` to fill the digest."""

    strategy: str
    params: dict[str, Any]
    base_model: dict[str, Any]
    key_model: Optional[str]
    tokenizer: dict[str, Any]
    secret_commitment: str
    null_p: Optional[float]
    fingerprints: tuple[Fingerprint, ...]
    set_digest: str = ""
    null_p_heuristic: bool = False
    created: str = ""
    subset_of: Optional[str] = None  # digest of the full set this subset was drawn from
    schema: str = SCHEMA
    version: int = VERSION

    # --- construction -----------------------------------------------------------------------
    @classmethod
    def create(cls, **kwargs: Any) -> "FingerprintSet":
        """A set with ``set_digest`` computed (and ``created`` stamped when not given)."""
        if not kwargs.get("created"):
            from trustlab.runtime.rundir import utc_now

            kwargs["created"] = utc_now()
        kwargs["fingerprints"] = tuple(kwargs["fingerprints"])
        fps = cls(**{**kwargs, "set_digest": ""})
        return dataclasses.replace(fps, set_digest=fps.compute_digest())

    def compute_digest(self) -> str:
        """sha256 over the canonical JSON of strategy, params, base model, commitment and (id, key, response) ids."""
        body = {"schema": self.schema, "strategy": self.strategy, "params": self.params,
                "base_model": self.base_model, "secret_commitment": self.secret_commitment,
                "null_p": self.null_p, "subset_of": self.subset_of,
                "fingerprints": [[f.id, list(f.key_ids), list(f.response_ids)] for f in self.fingerprints]}
        blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def __len__(self) -> int:
        return len(self.fingerprints)

    @property
    def ids(self) -> list[int]:
        return [f.id for f in self.fingerprints]

    @property
    def response_length(self) -> int:
        return int(self.params.get("response_length", 1))

    @property
    def prompt_format(self) -> str:
        return str(self.params.get("prompt_format", "raw"))

    # --- subsets -----------------------------------------------------------------------------
    def subset(self, ids: Iterable[int]) -> "FingerprintSet":
        """The fingerprints with these ids (in the given order), recorded as a subset of this set's digest."""
        by_id = {f.id: f for f in self.fingerprints}
        chosen = []
        for i in ids:
            if i not in by_id:
                raise DataError(f"fingerprint id {i} is not in the set (ids 0..{max(by_id)})",
                                hint="pick ids listed by `trustlab fingerprint inspect`")
            chosen.append(by_id[i])
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields.update(fingerprints=tuple(chosen), subset_of=self.subset_of or self.set_digest, created=self.created)
        return FingerprintSet.create(**fields)

    def sample(self, m: int, seed: int = 0) -> "FingerprintSet":
        """A seeded random subset of ``m`` fingerprints (all of them when m >= N), ids kept in file order."""
        import numpy as np

        if m >= len(self):
            return self
        pick = np.random.default_rng(seed).choice(len(self), size=m, replace=False)
        return self.subset(self.fingerprints[i].id for i in sorted(pick.tolist()))

    # --- JSON ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "fingerprints"}
        d["fingerprints"] = [dataclasses.asdict(fp) for fp in self.fingerprints]
        return json.loads(json.dumps(d))  # tuples -> lists

    def save(self, path: str | Path) -> Path:
        write_json_atomic(path, self.to_dict())
        return Path(path)

    @classmethod
    def from_dict(cls, d: Any, where: str = "fingerprint file") -> "FingerprintSet":
        """Validate and build; every problem is a DataError naming the field (``fingerprints[3].key_ids``)."""
        if not isinstance(d, dict):
            raise DataError(f"{where} must hold a JSON object, got {type(d).__name__}", hint=_HINT)
        if d.get("schema") != SCHEMA:
            raise DataError(f"{where}: field 'schema' must be {SCHEMA!r}, got {d.get('schema')!r}", hint=_HINT)
        _field(d, "version", int, where)
        _field(d, "strategy", str, where)
        if d["strategy"] not in STRATEGIES:
            raise DataError(f"{where}: field 'strategy' must be one of {', '.join(STRATEGIES)}, got {d['strategy']!r}",
                            hint=_HINT)
        for name, tp in (("params", dict), ("base_model", dict), ("tokenizer", dict), ("secret_commitment", str),
                         ("set_digest", str), ("fingerprints", list)):
            _field(d, name, tp, where)
        for name, tp in (("key_model", str), ("null_p", float), ("created", str), ("subset_of", str)):
            _field(d, name, tp, where, optional=True)
        fps = []
        for i, raw in enumerate(d["fingerprints"]):
            at = f"fingerprints[{i}]"
            if not isinstance(raw, dict):
                raise DataError(f"{where}: field '{at}' must be an object", hint=_HINT)
            _field(raw, "id", int, where, at)
            _field(raw, "key_text", str, where, at)
            _field(raw, "response_text", str, where, at)
            ids = {name: _id_list(raw, name, where, at) for name in ("key_ids", "response_ids")}
            _field(raw, "base_prob", float, where, at, optional=True)
            _field(raw, "boundary_rank", int, where, at, optional=True)
            cand = raw.get("candidates")
            fps.append(Fingerprint(id=raw["id"], key_text=raw["key_text"], key_ids=ids["key_ids"],
                                   response_text=raw["response_text"], response_ids=ids["response_ids"],
                                   base_prob=None if raw.get("base_prob") is None else float(raw["base_prob"]),
                                   candidates=None if cand is None else _id_list(raw, "candidates", where, at),
                                   boundary_rank=raw.get("boundary_rank")))
        if len({f.id for f in fps}) != len(fps):
            raise DataError(f"{where}: field 'fingerprints' has duplicate ids", hint=_HINT)
        known = {f.name for f in dataclasses.fields(cls)}
        fpset = cls(**{k: v for k, v in d.items() if k in known and k != "fingerprints"}, fingerprints=tuple(fps))
        if fpset.null_p is not None:
            object.__setattr__(fpset, "null_p", float(fpset.null_p))
        if fpset.compute_digest() != fpset.set_digest:
            raise DataError(f"{where}: field 'set_digest' does not match the content (file edited or corrupt)",
                            hint="restore the file as written by `trustlab fingerprint generate`")
        return fpset

    @classmethod
    def load(cls, path: str | Path) -> "FingerprintSet":
        text = read_text(path, what="fingerprint file")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"fingerprint file {str(path)!r} is not valid JSON (line {exc.lineno}: {exc.msg})",
                            hint=_HINT) from None
        return cls.from_dict(data, where=f"fingerprint file {str(path)!r}")

    # --- tokenizer compatibility -----------------------------------------------------------------
    def check_tokenizer(self, tokenizer: Any) -> None:
        """Refuse exact local matching when ``tokenizer`` is not the one the set was built with (ModelError)."""
        mine = tokenizer_info(tokenizer)
        want = self.tokenizer
        if want.get("vocab_sha256") and mine["vocab_sha256"] != want["vocab_sha256"]:
            raise ModelError(f"the model's tokenizer differs from the fingerprint file's (vocab size "
                             f"{mine['vocab_size']} vs {want.get('vocab_size')})",
                             hint="exact token matching needs the same tokenizer; use --match lenient (text match)")
        for fp in self.fingerprints:
            if list(tokenizer.encode(fp.key_text, add_special_tokens=False)) != list(fp.key_ids):
                raise ModelError(f"fingerprint {fp.id}: key_ids do not re-encode with this tokenizer",
                                 hint="exact token matching needs the same tokenizer; use --match lenient")


_HINT = "pass a fingerprints.json written by `trustlab fingerprint generate`"
_JSON_TYPES = {int: "an integer", float: "a number", str: "a string", dict: "an object", list: "a list"}


def _field(d: dict, name: str, tp: type, where: str, at: str = "", optional: bool = False) -> None:
    full = f"{at}.{name}" if at else name
    if name not in d:
        if optional:
            return
        raise DataError(f"{where}: field '{full}' is missing", hint=_HINT)
    v = d[name]
    if v is None and optional:
        return
    ok = (isinstance(v, (int, float)) and not isinstance(v, bool)) if tp is float else \
        (isinstance(v, int) and not isinstance(v, bool)) if tp is int else isinstance(v, tp)
    if not ok:
        raise DataError(f"{where}: field '{full}' must be {_JSON_TYPES[tp]}, got {v!r:.60}", hint=_HINT)


def _id_list(raw: dict, name: str, where: str, at: str) -> tuple[int, ...]:
    _field(raw, name, list, where, at)
    v = raw[name]
    if not v or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v):
        raise DataError(f"{where}: field '{at}.{name}' must be a non-empty list of token ids", hint=_HINT)
    return tuple(v)


def tokenizer_info(tokenizer: Any) -> dict[str, Any]:
    """Name, vocab size and sha256 of the sorted vocabulary: enough to tell two tokenizers apart."""
    vocab = tokenizer.get_vocab()
    blob = json.dumps(sorted(vocab.items()), ensure_ascii=True).encode()
    return {"name": getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__,
            "vocab_size": len(vocab), "vocab_sha256": hashlib.sha256(blob).hexdigest(),
            "bos_added": adds_bos(tokenizer)}


def adds_bos(tokenizer: Any) -> bool:
    """True when the tokenizer prepends its BOS token to plain text (``encode(text)`` with special tokens)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer.encode("a", add_special_tokens=True)
    return bool(ids) and ids[0] == bos
