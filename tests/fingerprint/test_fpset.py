"""Fingerprint file: round trip, digest stability, schema validation naming the field, subsets (spec §6, §8)."""

from __future__ import annotations

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
