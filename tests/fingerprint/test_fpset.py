"""Fingerprint file: round trip, digest stability, schema validation naming the field, subsets (spec §6, §8)."""

from __future__ import annotations

import hashlib
import json

import pytest

from trustlab.fingerprint.fpset import Fingerprint, FingerprintSet
from trustlab.fingerprint.secret import commitment
from trustlab.runtime.errors import DataError

SECRET = bytes(range(32))


def make_set(n=5, **over):
    fps = [Fingerprint(id=i, key_text=f"key {i}", key_ids=(1 + i, 2, 3), response_text=" y", response_ids=(9,),
                       base_prob=0.01 * (i + 1), candidates=(9, 10, 11), boundary_rank=4) for i in range(n)]
    kw = dict(strategy="perinucleus", params={"key_length": 3, "response_length": 1, "nucleus_t": 0.8,
                                              "nucleus_k": 3, "prompt_format": "raw"},
              base_model={"ref": "tiny", "weights_sha256": "ab" * 32}, key_model=None,
              tokenizer={"name": "t", "vocab_size": 20, "vocab_sha256": "cd" * 32},
              secret_commitment=commitment(SECRET), null_p=1 / 3, fingerprints=fps, created="2026-01-01T00:00:00Z")
    kw.update(over)
    return FingerprintSet.create(**kw)


def test_round_trip_and_digest(tmp_path):
    fps = make_set()
    path = fps.save(tmp_path / "fp.json")
    back = FingerprintSet.load(path)
    assert back == fps
    assert back.set_digest == fps.compute_digest() and len(back.set_digest) == 64
    # stable: the same content gives the same digest whenever it is built
    assert make_set().set_digest == fps.set_digest
    # and it covers content: another response id changes it
    other = make_set(fingerprints=[Fingerprint(0, "key 0", (1, 2, 3), " z", (8,))])
    assert other.set_digest != fps.set_digest
    assert SECRET.hex() not in path.read_text()


def test_digest_mismatch_names_the_field(tmp_path):
    d = make_set().to_dict()
    d["fingerprints"][2]["response_ids"] = [7]
    (tmp_path / "x.json").write_text(json.dumps(d))
    with pytest.raises(DataError, match="'set_digest'"):
        FingerprintSet.load(tmp_path / "x.json")


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.pop("secret_commitment"), "'secret_commitment' is missing"),
    (lambda d: d.__setitem__("schema", "other/2"), "'schema'"),
    (lambda d: d.__setitem__("strategy", "magic"), "'strategy'"),
    (lambda d: d["fingerprints"][1].pop("key_ids"), r"'fingerprints\[1\].key_ids' is missing"),
    (lambda d: d["fingerprints"][0].__setitem__("key_ids", ["a"]), r"'fingerprints\[0\].key_ids'"),
    (lambda d: d["fingerprints"][0].__setitem__("base_prob", "high"), r"'fingerprints\[0\].base_prob'"),
    (lambda d: d.__setitem__("params", []), "'params'"),
])
def test_schema_errors_name_the_field(tmp_path, mutate, field):
    d = make_set().to_dict()
    mutate(d)
    (tmp_path / "x.json").write_text(json.dumps(d))
    with pytest.raises(DataError, match=field) as e:
        FingerprintSet.load(tmp_path / "x.json")
    assert e.value.exit_code == 2 and e.value.hint


def test_not_json_and_missing(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        FingerprintSet.load(tmp_path / "x.json")
    with pytest.raises(DataError, match="does not exist"):
        FingerprintSet.load(tmp_path / "none.json")


def test_subset_and_sample():
    fps = make_set(8)
    sub = fps.subset([5, 1])
    assert sub.ids == [5, 1] and sub.subset_of == fps.set_digest and sub.set_digest == sub.compute_digest()
    s1, s2 = fps.sample(3, seed=4), fps.sample(3, seed=4)
    assert s1.ids == s2.ids and len(s1) == 3 and s1.ids == sorted(s1.ids)
    assert fps.sample(99) is fps
    with pytest.raises(DataError, match="id 42"):
        fps.subset([42])


# --- issue 16 §2: the digest covers every field verification reads -----------------------------------------
def _edits():
    """(path in the file, new value): one edit per field that verification or the verdict reads."""
    return [
        ("fingerprints.1.response_text", " the"), ("fingerprints.1.key_text", "another key"),
        ("fingerprints.1.key_ids", [1, 2]), ("fingerprints.1.response_ids", [10]),
        ("fingerprints.1.candidates", [10, 9, 11]), ("fingerprints.1.boundary_rank", 7),
        ("fingerprints.1.base_prob", 0.5), ("fingerprints.1.id", 17), ("tokenizer.vocab_sha256", "00" * 32),
        ("tokenizer.name", "other"),
        ("params.nucleus_t", 0.5), ("params.prompt_format", "chat"), ("params.response_length", 2),
        ("base_model.ref", "other"), ("key_model", "other"), ("strategy", "english_random"),
        ("null_p_heuristic", True), ("secret_commitment", "ef" * 32), ("subset_of", "12" * 32),
        ("null_p", 0.25),
    ]


def _set_path(d, dotted, value):
    *parents, last = dotted.split(".")
    for p in parents:
        d = d[int(p)] if p.isdigit() else d[p]
    d[int(last) if last.isdigit() else last] = value


@pytest.mark.parametrize("dotted, value", _edits(), ids=[e[0] for e in _edits()])
def test_every_edit_breaks_the_digest_and_the_error_names_file_and_field(tmp_path, dotted, value):
    fps = make_set()
    d = fps.to_dict()
    _set_path(d, dotted, value)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(d))
    with pytest.raises(DataError) as e:
        FingerprintSet.load(path)
    msg = e.value.message
    assert str(path) in msg and "'set_digest'" in msg and e.value.exit_code == 2
    top, *rest = dotted.split(".")
    field = f"fingerprints[*].{rest[1]}" if top == "fingerprints" else top
    assert f"field '{field}' was changed" in msg, msg
    assert "cannot prove ownership" in e.value.hint
    # the digest itself differs from the one the untouched content gives
    loose = FingerprintSet.from_dict(d, check_digest=False) if top not in ("strategy", "null_p_heuristic", "null_p") \
        else None
    if loose is not None:
        assert loose.compute_digest() != fps.set_digest and loose.digest_problem() is not None


def test_digest_is_of_the_whole_content_and_canonical():
    from trustlab.fingerprint.fpset import UNDIGESTED, canonical_json

    fps = make_set()
    body = {k: v for k, v in fps.to_dict().items() if k not in UNDIGESTED}
    assert fps.set_digest == hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                                       ensure_ascii=True).encode()).hexdigest()
    assert fps.version == 2 and fps.digest_problem() is None
    # the creation time is the one field left out: regenerating the same set reproduces the published digest
    assert make_set(created="2030-01-01T00:00:00Z").set_digest == fps.set_digest
    # key order and indentation of the file do not matter; non-finite floats hash as tagged objects, never null
    assert canonical_json({"b": 1, "a": [1.5, (2, 3)]}) == b'{"a":[1.5,[2,3]],"b":1}'
    assert canonical_json({"t": float("inf"), "n": float("nan")}) == b'{"n":{"$float":"nan"},"t":{"$float":"inf"}}'
    inf = make_set(params={"key_length": 3, "response_length": 1, "nucleus_t": 0.8, "nucleus_k": 3,
                           "key_temperature": float("inf")})
    assert inf.set_digest == inf.compute_digest() and inf.set_digest != fps.set_digest


def test_file_layout_does_not_change_the_digest(tmp_path):
    fps = make_set()
    d = fps.to_dict()
    (tmp_path / "a.json").write_text(json.dumps(dict(reversed(list(d.items()))), indent=4))
    assert FingerprintSet.load(tmp_path / "a.json") == fps


def test_version_1_file_is_refused_with_the_regenerate_hint(tmp_path):
    fps = make_set()
    d = dict(fps.to_dict(), version=1, set_digest=fps.legacy_digest())
    d.pop("field_digests")
    (tmp_path / "old.json").write_text(json.dumps(d))
    with pytest.raises(DataError, match="written before set_digest covered the whole file") as e:
        FingerprintSet.load(tmp_path / "old.json")
    assert "old.json" in e.value.message and "trustlab fingerprint generate" in e.value.hint
    # an old file that verifies under the full-content digest keeps working
    (tmp_path / "old.json").write_text(json.dumps(_redigested(d)))
    assert FingerprintSet.load(tmp_path / "old.json").version == 1


def test_future_version_is_refused(tmp_path):
    d = make_set().to_dict()
    d["version"] = 3
    (tmp_path / "new.json").write_text(json.dumps(d))
    with pytest.raises(DataError, match="'version'") as e:
        FingerprintSet.load(tmp_path / "new.json")
    assert "upgrade" in e.value.hint


def test_empty_set_is_no_fingerprints_at_load_and_create(tmp_path):
    d = make_set().to_dict()
    d["fingerprints"] = []
    (tmp_path / "empty.json").write_text(json.dumps(d))
    with pytest.raises(DataError, match="holds no fingerprints") as e:
        FingerprintSet.load(tmp_path / "empty.json")
    assert "empty.json" in e.value.message and e.value.exit_code == 2
    with pytest.raises(DataError, match="at least one fingerprint"):
        make_set(fingerprints=[])


def _redigested(d):
    """A forger's file: the content edited and the digest recomputed to match."""
    from trustlab.fingerprint.fpset import UNDIGESTED, canonical_json

    body = {k: v for k, v in d.items() if k not in UNDIGESTED}
    return {**body, "set_digest": hashlib.sha256(canonical_json(body)).hexdigest()}


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.__setitem__("null_p", 1e-6), "'null_p' is 1e-06"),
    (lambda d: d.__setitem__("null_p", 1.5), "'null_p' must lie in"),
    (lambda d: d["params"].__setitem__("nucleus_k", 5), "'null_p' is 0.333"),
    (lambda d: d.__setitem__("null_p_heuristic", True), "'null_p_heuristic' is true"),
    (lambda d: d["fingerprints"][2].__setitem__("candidates", [1, 2, 3]), r"'fingerprints\[2\].response_ids'"),
    (lambda d: d["fingerprints"][0].__setitem__("candidates", [9, 10]), r"'fingerprints\[0\].candidates'"),
    (lambda d: d["fingerprints"][0].__setitem__("candidates", [9, 9, 10]), r"'fingerprints\[0\].candidates'"),
])
def test_null_settings_must_agree_with_the_strategy_even_with_a_matching_digest(tmp_path, mutate, field):
    d = make_set().to_dict()
    mutate(d)
    (tmp_path / "x.json").write_text(json.dumps(_redigested(d)))
    with pytest.raises(DataError, match=field) as e:
        FingerprintSet.load(tmp_path / "x.json")
    assert "x.json" in e.value.message and e.value.hint


def test_english_sets_must_stay_heuristic(tmp_path):
    d = make_set(strategy="english", null_p=1 / 3, null_p_heuristic=True).to_dict()
    assert FingerprintSet.from_dict(d).null_p_heuristic
    d["null_p_heuristic"] = False
    (tmp_path / "x.json").write_text(json.dumps(_redigested(d)))
    with pytest.raises(DataError, match="'null_p_heuristic' is false"):
        FingerprintSet.load(tmp_path / "x.json")


def test_proven_null_rates():
    from trustlab.fingerprint.fpset import proven_null_p

    assert proven_null_p(make_set()) == pytest.approx(1 / 3)
    rw = make_set(strategy="english_random", null_p=1 / 50, fingerprints=[Fingerprint(0, "k", (1,), " y", (9,))],
                  params={"response_length": 1, "pool_size": 50})
    assert proven_null_p(rw) == pytest.approx(1 / 50)
    assert proven_null_p(make_set(strategy="english", null_p=None)) is None


def test_subset_keeps_a_valid_full_content_digest(tmp_path):
    sub = make_set(8).subset([5, 1])
    back = FingerprintSet.load(sub.save(tmp_path / "sub.json"))
    assert back.digest_problem() is None and back.subset_of == make_set(8).set_digest


def test_base_identity_fills_the_digested_base_model_block(tmp_path):
    """Issue 17: the model's identity (name_or_path + weights digest) is part of the digested base model block; a set
    written without it (same version) still loads."""
    from trustlab.models.identity import ModelIdentity

    ident = ModelIdentity(name_or_path="/models/mine", weights_sha256="ef" * 32, architecture="LlamaForCausalLM",
                          n_params=1234)
    fps = make_set(base_identity=ident)
    assert fps.base_model == {"ref": "/models/mine", **ident.to_dict()}
    assert fps.set_digest != make_set().set_digest
    d = FingerprintSet.load(fps.save(tmp_path / "fp.json")).to_dict()
    d["base_model"]["n_params"] = 99
    (tmp_path / "edited.json").write_text(json.dumps(d))
    with pytest.raises(DataError, match="field 'base_model' was changed"):
        FingerprintSet.load(tmp_path / "edited.json")
    assert FingerprintSet.load(make_set().save(tmp_path / "old.json")).base_model["ref"] == "tiny"
