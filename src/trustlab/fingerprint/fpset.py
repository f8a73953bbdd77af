"""Fingerprints and the fingerprint file (``fingerprints.json``, schema ``trustlab.fingerprint/1``).

A ``FingerprintSet`` holds keys, responses and public parameters but never the secret: only its
``secret_commitment``. ``set_digest`` (file version 2) = sha256 of the canonical JSON (sorted keys, no spaces,
ASCII) of the **whole content except the digests themselves and the ``created`` time**: strategy, params, base
model, tokenizer block, null settings, commitment and every field of every fingerprint (texts, ids, candidates,
...). Generation is deterministic, so regenerating with the same config, secret and model gives the same digest.
Verification reads only fields the digest covers, so an edited file can never prove ownership: every load recomputes
the digest and a mismatch is a DataError (exit 2) naming the file and, from ``field_digests`` (a short hash per
field, diagnostic only), the first field that changed. Version-1 files digested token ids only; they are refused
with a hint to regenerate. ``set_digest`` is published at release: an auditor compares the digest a verdict reports
with it.

``null_p`` is the per-key hit rate of a model that never saw the fingerprints (1/k for perinucleus, pool^-L for
english_random and random_word); ``null_p_heuristic`` marks the ``english`` guess. A file whose null settings
contradict its strategy (perinucleus with null_p != 1/nucleus_k, candidates that are not k tokens holding the
response) is refused at load even when its digest holds.

    fps = FingerprintSet.load("fp.json")        # validated; errors name the field
    fps.subset([0, 3, 5]); fps.sample(16, seed=0)  # recorded subsets for verification
    fps.save("fp.json")
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from trustlab.runtime.errors import DataError, ModelError
from trustlab.runtime.files import read_text
from trustlab.runtime.io import write_json_atomic

from . import SCHEMA, STRATEGIES

VERSION = 2  # 2: set_digest covers the whole content; 1: token ids and params only (refused at load)
# what the digest does not cover: the digests themselves and the creation time (no verdict reads it, and leaving it
# out makes the digest a function of (config, secret, model): regenerating reproduces the published digest)
UNDIGESTED = ("set_digest", "field_digests", "created")


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
    field_digests: dict[str, str] = field(default_factory=dict, compare=False)  # diagnostic, see digest_problem

    # --- construction -----------------------------------------------------------------------
    @classmethod
    def create(cls, *, base_identity: Any = None, **kwargs: Any) -> "FingerprintSet":
        """A set with ``set_digest`` and ``field_digests`` computed (and ``created`` stamped when not given);
        an empty set or null settings that contradict the strategy are a DataError. ``base_identity`` (a
        ``trustlab.models.identity.ModelIdentity`` of the model the keys were drawn on) fills the base model block,
        which the digest covers: ``ref`` becomes the object's ``name_or_path``, never a config's default name."""
        if base_identity is not None:
            ident = base_identity.to_dict() if hasattr(base_identity, "to_dict") else dict(base_identity)
            kwargs["base_model"] = {**(kwargs.get("base_model") or {}), **ident,
                                    "ref": ident["name_or_path"] or (kwargs.get("base_model") or {}).get("ref")}
        if not kwargs.get("created"):
            from trustlab.runtime.rundir import utc_now

            kwargs["created"] = utc_now()
        kwargs["fingerprints"] = tuple(kwargs["fingerprints"])
        kwargs = {k: v for k, v in kwargs.items() if k not in ("set_digest", "field_digests")}
        fps = cls(**{**kwargs, "version": VERSION})
        if not fps.fingerprints:
            raise DataError("a fingerprint set needs at least one fingerprint (got none)",
                            hint="generate fingerprints with `trustlab fingerprint generate -n 32`")
        problem = fps.consistency_problem()
        if problem:
            raise DataError(f"fingerprint set: {problem}", hint=_HINT)
        return dataclasses.replace(fps, set_digest=fps.compute_digest(), field_digests=fps.compute_field_digests())

    def digest_body(self) -> dict[str, Any]:
        """Everything the digest covers: the file's content minus ``set_digest``, ``field_digests``, ``created``."""
        return {k: v for k, v in self.to_dict().items() if k not in UNDIGESTED}

    def compute_digest(self) -> str:
        """sha256 over the canonical JSON of the whole content (every field verification reads) minus the digest."""
        return hashlib.sha256(canonical_json(self.digest_body())).hexdigest()

    def compute_field_digests(self) -> dict[str, str]:
        """A 16-hex-digit hash per top-level field and per fingerprint column (``fingerprints[*].response_text``),
        in file order: it names the first field an edit changed. Diagnostic only: ``set_digest`` is the check."""
        body = self.digest_body()
        out = {name: _short(value) for name, value in body.items() if name != "fingerprints"}
        columns = [f.name for f in dataclasses.fields(Fingerprint)]
        for name in columns:
            out[f"fingerprints[*].{name}"] = _short([fp.get(name) for fp in body["fingerprints"]])
        return out

    def legacy_digest(self) -> str:
        """The version-1 digest (token ids and params only), to recognise files written before version 2."""
        body = {"schema": self.schema, "strategy": self.strategy, "params": self.params,
                "base_model": self.base_model, "secret_commitment": self.secret_commitment,
                "null_p": self.null_p, "subset_of": self.subset_of,
                "fingerprints": [[f.id, list(f.key_ids), list(f.response_ids)] for f in self.fingerprints]}
        blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def digest_problem(self) -> Optional[str]:
        """None when ``set_digest`` holds, else what is wrong (a version-1 file, or the first field changed)."""
        if self.set_digest == self.compute_digest():
            return None
        if self.version < VERSION or self.set_digest == self.legacy_digest():
            return (f"was written before set_digest covered the whole file (version {self.version}: token ids "
                    f"only), so its texts, tokenizer block, candidates and null settings are unprotected")
        stated = self.field_digests if isinstance(self.field_digests, dict) else {}
        for name, value in self.compute_field_digests().items():
            if name in stated and stated[name] != value:
                return (f"field 'set_digest' does not match the content: field '{name}' was changed after the "
                        f"digest was computed (file edited or corrupt)")
        return "field 'set_digest' does not match the content (file edited or corrupt)"

    def check_integrity(self, where: str = "fingerprint set") -> None:
        """DataError (exit 2) unless the set is non-empty, its digest holds and its null settings agree with the
        strategy: what ``load`` checks, for a set built or changed in memory (``verify`` calls it)."""
        if not self.fingerprints:
            raise DataError(f"{where} holds no fingerprints",
                            hint="generate fingerprints with `trustlab fingerprint generate -n 32`")
        problem = self.digest_problem()
        if problem is not None and problem.startswith("was written before"):
            raise DataError(f"{where} {problem}", hint=_LEGACY_HINT)
        problem = problem or self.consistency_problem()
        if problem is not None:
            raise DataError(f"{where}: {problem}", hint=_EDITED_HINT)

    def consistency_problem(self) -> Optional[str]:
        """None when the null settings and candidates agree with the strategy, else the first contradiction."""
        if self.null_p is not None and not (math.isfinite(self.null_p) and 0.0 < self.null_p < 1.0):
            return f"field 'null_p' must lie in (0, 1), got {self.null_p!r}"
        if self.null_p_heuristic and self.strategy != "english":
            return f"field 'null_p_heuristic' is true, but strategy {self.strategy!r} has a proven null rate"
        if self.strategy == "english" and self.null_p is not None and not self.null_p_heuristic:
            return "field 'null_p_heuristic' is false, but strategy 'english' has no proven null rate"
        p0 = proven_null_p(self)
        if p0 is not None and self.null_p is not None and not math.isclose(self.null_p, p0, rel_tol=1e-9):
            return (f"field 'null_p' is {self.null_p!r}, but strategy {self.strategy!r} with these params has the "
                    f"proven null rate {p0:.6g}")
        k = self.params.get("nucleus_k")
        if self.strategy == "perinucleus" and _is_int(k):
            for i, fp in enumerate(self.fingerprints):
                if fp.candidates is None:
                    continue
                if len(fp.candidates) != k or len(set(fp.candidates)) != k:
                    return (f"field 'fingerprints[{i}].candidates' must hold nucleus_k = {k} distinct token ids, "
                            f"got {len(fp.candidates)}")
                if fp.response_ids[0] not in fp.candidates:
                    return f"field 'fingerprints[{i}].response_ids' does not start with one of its candidates"
        return None

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
    def from_dict(cls, d: Any, where: str = "fingerprint file", check_digest: bool = True) -> "FingerprintSet":
        """Validate and build; every problem is a DataError naming the field (``fingerprints[3].key_ids``).
        ``check_digest=False`` skips only the digest check (``inspect`` reports it instead)."""
        if not isinstance(d, dict):
            raise DataError(f"{where} must hold a JSON object, got {type(d).__name__}", hint=_HINT)
        if d.get("schema") != SCHEMA:
            raise DataError(f"{where}: field 'schema' must be {SCHEMA!r}, got {d.get('schema')!r}", hint=_HINT)
        _field(d, "version", int, where)
        if not 1 <= d["version"] <= VERSION:
            raise DataError(f"{where}: field 'version' must be 1..{VERSION}, got {d['version']!r}",
                            hint="a newer trustlab wrote this file; upgrade trustlab" if d["version"] > VERSION
                            else _HINT)
        _field(d, "strategy", str, where)
        if d["strategy"] not in STRATEGIES:
            raise DataError(f"{where}: field 'strategy' must be one of {', '.join(STRATEGIES)}, got {d['strategy']!r}",
                            hint=_HINT)
        for name, tp in (("params", dict), ("base_model", dict), ("tokenizer", dict), ("secret_commitment", str),
                         ("set_digest", str), ("fingerprints", list)):
            _field(d, name, tp, where)
        for name, tp in (("key_model", str), ("null_p", float), ("created", str), ("subset_of", str),
                         ("field_digests", dict)):
            _field(d, name, tp, where, optional=True)
        if "null_p_heuristic" in d and not isinstance(d["null_p_heuristic"], bool):
            raise DataError(f"{where}: field 'null_p_heuristic' must be true or false, "
                            f"got {d['null_p_heuristic']!r:.60}", hint=_HINT)
        if not d["fingerprints"]:
            raise DataError(f"{where} holds no fingerprints (field 'fingerprints' is empty)",
                            hint="generate fingerprints with `trustlab fingerprint generate -n 32` and pass that file")
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
        if fpset.field_digests is None:
            object.__setattr__(fpset, "field_digests", {})
        if check_digest:
            problem = fpset.digest_problem()
            if problem is not None and problem.startswith("was written before"):
                raise DataError(f"{where} {problem}", hint=_LEGACY_HINT)
            if problem is not None:
                raise DataError(f"{where}: {problem}", hint=_EDITED_HINT)
        problem = fpset.consistency_problem()
        if problem is not None:
            raise DataError(f"{where}: {problem}", hint=_EDITED_HINT)
        return fpset

    @classmethod
    def load(cls, path: str | Path, check_digest: bool = True) -> "FingerprintSet":
        """Read, validate and check the digest of a fingerprint file (DataError naming the file and field)."""
        text = read_text(path, what="fingerprint file")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"fingerprint file {str(path)!r} is not valid JSON (line {exc.lineno}: {exc.msg})",
                            hint=_HINT) from None
        return cls.from_dict(data, where=f"fingerprint file {str(path)!r}", check_digest=check_digest)

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
_EDITED_HINT = ("an edited fingerprint file cannot prove ownership: restore the file as written by `trustlab "
                "fingerprint generate` (its set_digest is the published one)")
_LEGACY_HINT = ("regenerate it: `trustlab fingerprint generate --overwrite` with the same model, config and secret "
                "rewrites the same fingerprints with a full-content digest (publish the new set_digest)")


def canonical_json(obj: Any) -> bytes:
    """The bytes the digests hash: sorted keys, no spaces, ASCII; tuples as lists; a non-finite float as the tagged
    object ``{"$float": "inf" | "-inf" | "nan"}`` (never the invalid JSON token nor ``null``)."""
    return json.dumps(_tag_nonfinite(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode()


def _tag_nonfinite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"$float": "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")}
    if isinstance(obj, dict):
        return {str(k): _tag_nonfinite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_tag_nonfinite(v) for v in obj]
    return obj


def _short(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()[:16]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def proven_null_p(fps: "FingerprintSet") -> Optional[float]:
    """The per-key null hit rate the set's strategy proves, or None where there is none (``english``).

    Under H0 (the suspect never saw the fingerprints; hits are judged on token ids) a key is matched with probability
    at most: 1/k for perinucleus (the response's first token is one of k candidates chosen by HMAC of the secret),
    |V_w|^-L for english_random and random_word (L tokens drawn by HMAC from the word pool). Taken from ``params``
    (``nucleus_k``, ``pool_size``, ``response_length``) where they are recorded, else the file's ``null_p``."""
    if fps.strategy == "perinucleus":
        k = fps.params.get("nucleus_k")
        return 1.0 / k if _is_int(k) and k >= 1 else fps.null_p
    if fps.strategy in ("english_random", "random_word"):
        pool, length = fps.params.get("pool_size"), fps.params.get("response_length", 1)
        if _is_int(pool) and pool >= 1 and _is_int(length) and length >= 1:
            return float(pool) ** (-length)
        return fps.null_p
    return None
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
