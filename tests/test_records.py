"""The one stamped record store (``trustlab.runtime.records``): stamps refused or discarded by name, torn last lines
repaired, done-keys and newest-record-wins, foreign files refused and left byte for byte as they were."""

import json

import pytest

from trustlab.runtime import ConfigError, DataError, RecordStore, read_records
from trustlab.runtime.config import config_hash

SETTINGS = {"model": {"name": "m", "digest": "ab12"}, "sampling": {"temperature": 0.0, "seed": 0}}
OTHER = {"model": {"name": "m", "digest": "ab12"}, "sampling": {"temperature": 0.7, "seed": 0}}


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_a_new_store_is_stamped_with_the_hash_of_its_settings(tmp_path):
    p = tmp_path / "r.jsonl"
    s = RecordStore(p, SETTINGS)
    assert not p.exists() and s.records() == []  # stamped by its first append
    s.append([{"key": "a", "v": 1}])
    head, rec = _rows(p)
    assert head["trustlab_stamp"] == config_hash(SETTINGS) and head["settings"] == SETTINGS
    assert rec == {"key": "a", "v": 1}
    assert RecordStore(p, SETTINGS).records() == [rec]
    assert read_records(p) == (SETTINGS, [rec])


def test_other_settings_are_refused_naming_them_or_discarded_on_request(tmp_path):
    p = tmp_path / "r.jsonl"
    RecordStore(p, SETTINGS).append([{"key": "a"}])
    before = p.read_bytes()
    with pytest.raises(ConfigError) as exc:
        RecordStore(p, OTHER, what="generations file")
    assert "differing: sampling.temperature" in exc.value.message and "generations file" in exc.value.message
    assert "model" not in exc.value.message.split("differing:")[1] and "--no-resume" in exc.value.hint
    assert p.read_bytes() == before  # a refusal changes nothing
    ignored = RecordStore(p, OTHER, on_stale="ignore")  # a reader that must not write
    assert ignored.records() == [] and p.read_bytes() == before
    with pytest.raises(ConfigError):
        ignored.append([{"key": "b"}])
    s = RecordStore(p, OTHER, on_stale="discard")
    assert s.records() == [] and not p.exists()
    s.append([{"key": "b"}])
    assert _rows(p)[0]["settings"] == OTHER and RecordStore(p, OTHER).done_keys() == {"b"}
    assert RecordStore(p, OTHER, resume=False).records() == [] and not p.exists()  # --no-resume starts afresh


def test_a_torn_last_line_is_repaired_and_the_next_append_starts_on_a_fresh_line(tmp_path):
    p = tmp_path / "r.jsonl"
    RecordStore(p, SETTINGS).append([{"key": "a"}, {"key": "b"}])
    with open(p, "a") as fh:
        fh.write('{"key": "c", "v": "torn by a cra')  # a crash mid-write
    assert read_records(p)[1] == [{"key": "a"}, {"key": "b"}]  # a reader sees the finished records, changes nothing
    assert p.read_text().endswith("cra")
    s = RecordStore(p, SETTINGS)
    assert s.done_keys() == {"a", "b"} and p.read_text().endswith("}\n")
    s.append([{"key": "c"}])
    assert [r.get("key") for r in _rows(p)] == [None, "a", "b", "c"]
    # a header torn while it was written: nothing was recorded, the store starts afresh
    q = tmp_path / "q.jsonl"
    q.write_text('{"trustlab_stamp": "12')
    assert RecordStore(q, SETTINGS).records() == [] and q.read_text() == ""


def test_done_keys_and_the_newest_record_of_a_key_wins(tmp_path):
    p = tmp_path / "r.jsonl"
    s = RecordStore(p, SETTINGS, key=lambda r: (r["strategy"], r["key"]))
    s.append([{"strategy": "d", "key": "p1", "status": "error"}, {"strategy": "d", "key": "p2", "status": "ok"},
              {"strategy": "z", "key": "p1", "status": "ok"}])
    s.append([{"strategy": "d", "key": "p1", "status": "ok", "retry": 1}])  # a retry appends anew
    s = RecordStore(p, SETTINGS, key=lambda r: (r["strategy"], r["key"]))
    assert len(s) == 4 and len(s.latest()) == 3
    assert s.latest()[0] == {"strategy": "d", "key": "p1", "status": "ok", "retry": 1}  # first-appearance order
    assert s.done_keys() == {("d", "p1"), ("d", "p2"), ("z", "p1")}
    s.append([{"strategy": "d", "key": "p2", "status": "error"}])
    assert s.done_keys(redo=lambda r: r["status"] == "error") == {("d", "p1"), ("z", "p1")}


@pytest.mark.parametrize("text", ['{"key": "a"}\n{"key": "b"}\n', "prompt,category\nhello,c\n", "not json at all",
                                  "\x00\x01binary"])
def test_a_foreign_unstamped_file_is_refused_and_never_truncated(tmp_path, text):
    p = tmp_path / "r.jsonl"
    p.write_text(text)
    for kw in ({}, {"on_stale": "discard"}, {"resume": False}):
        with pytest.raises(ConfigError, match="carries no stamp"):
            RecordStore(p, SETTINGS, **kw)
        assert p.read_text() == text
    with pytest.raises(ConfigError, match="carries no stamp"):
        read_records(p)


def test_a_corrupt_complete_line_is_refused_not_cut(tmp_path):
    p = tmp_path / "r.jsonl"
    RecordStore(p, SETTINGS).append([{"key": "a"}, {"key": "b"}])
    lines = p.read_text().splitlines(keepends=True)
    text = lines[0] + '{"key": "a", garbled\n' + lines[2]
    p.write_text(text)
    with pytest.raises(DataError, match="line 2 .* is not JSON"):
        RecordStore(p, SETTINGS)
    assert p.read_text() == text


def test_older_headers_stay_readable(tmp_path):
    stamp = config_hash(SETTINGS)
    certify = tmp_path / "c.jsonl"  # certify's header before the one store
    certify.write_text(json.dumps({"trustlab_stamp": stamp, "settings": SETTINGS}) + '\n{"idx": 0}\n')
    assert RecordStore(certify, SETTINGS, key=lambda r: r["idx"]).done_keys() == {0}
    safety = tmp_path / "s.jsonl"  # safety's header before the one store
    safety.write_text(json.dumps({"trustlab_store": "trustlab.safety.store/1", "fingerprint": stamp,
                                  "identity": SETTINGS}) + '\n{"key": "a"}\n')
    assert RecordStore(safety, SETTINGS).done_keys() == {"a"}
    with pytest.raises(ConfigError, match="differing: sampling.temperature"):
        RecordStore(safety, OTHER)
