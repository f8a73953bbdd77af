"""Protocol validation errors, partitions, alignment and the bad-input cases of the spec's section 8."""

import warnings

import numpy as np
import pandas as pd
import pytest

from trustlab.runtime import ConfigError, DataError, MissingDependencyError
from trustlab.vfl import protocol as P
from trustlab.vfl.codes import pack_bits
from trustlab.vfl.config import load_config
from trustlab.vfl.data import align, hash_ids, load_party_file, load_vertical
from trustlab.vfl.errors import MalformedMessageError


def test_encode_decode_roundtrip():
    arrays = {"msg": np.arange(6, dtype=np.uint8).reshape(3, 2), "g": np.ones((2, 3), np.float32),
              "pos": np.array([3, 1], np.int64)}
    h, a = P.decode(P.encode({"type": "step", "epoch": 1}, arrays))
    assert h == {"type": "step", "epoch": 1}
    for k in arrays:
        assert a[k].dtype == arrays[k].dtype and np.array_equal(a[k], arrays[k])


@pytest.mark.parametrize("mutate,field", [
    (lambda b: b[:3], "length"),
    (lambda b: b[:4] + b"{not json" + b[13:], "header"),
    (lambda b: b + b"\x00", "trailing bytes"),
    (lambda b: b[:-1], "payload"),
])
def test_decode_rejects_garbage(mutate, field):
    good = P.encode({"type": "step"}, {"msg": np.zeros((2, 2), np.uint8)})
    with pytest.raises(MalformedMessageError, match=field) as e:
        P.decode(mutate(good), party=1)
    assert "party 1" in str(e.value)


def _msg(arr, **h):
    return P.decode(P.encode({"type": "step", "party": 0, "epoch": 0, "step": 1, **h}, {"msg": arr}), 0)


def test_validate_message_errors():
    h = np.where(np.random.default_rng(0).random((4, 12)) < .5, 1, -1)
    _, a = _msg(pack_bits(h))
    assert np.array_equal(P.validate_message(a, 0, "bits", 12, 4), h)
    with pytest.raises(MalformedMessageError, match="msg shape"):  # bit count
        P.validate_message(a, 0, "bits", 16 + 1, 4)
    with pytest.raises(MalformedMessageError, match="msg shape"):  # rows
        P.validate_message(a, 0, "bits", 12, 5)
    bad = pack_bits(h)
    bad[0, 1] |= 1
    with pytest.raises(MalformedMessageError, match="padding"):
        P.validate_message(_msg(bad)[1], 0, "bits", 12, 4)
    with pytest.raises(MalformedMessageError, match="dtype"):
        P.validate_message(_msg(h.astype(np.float32))[1], 0, "bits", 12, 4)
    nan = np.ones((4, 12), np.float32)
    nan[1, 2] = np.nan
    with pytest.raises(MalformedMessageError, match="finite"):
        P.validate_message(_msg(nan)[1], 0, "float32", 12, 4)
    with pytest.raises(MalformedMessageError, match="missing"):
        P.validate_message({}, 0, "float32", 12, 4)
    hdr, _ = _msg(nan)
    with pytest.raises(MalformedMessageError, match="step: expected 2, got 1"):
        P.expect(hdr, 0, type="step", party=0, epoch=0, step=2)
    with pytest.raises(MalformedMessageError, match="range"):
        P.validate_positions({"p": np.array([0, 9])}, "p", 0, 5)


def test_alignment_order_and_errors():
    a_ids = np.array(["a", "b", "c", "d"])
    h = lambda ids: hash_ids(np.array(ids), "salt")  # noqa: E731
    kept, rows = align(h(a_ids), [h(["d", "c", "b", "x"]), h(["b", "c", "d", "a"])])
    assert kept.tolist() == [1, 2, 3]  # A's order; "a" is missing at party 0
    assert rows[0].tolist() == [2, 1, 0] and rows[1].tolist() == [0, 1, 2]
    with pytest.raises(DataError, match="duplicate"):
        align(h(a_ids), [h(["a", "a", "b"])])
    with pytest.raises(DataError, match="do not intersect"):
        align(h(a_ids), [h(["x", "y"])])
    with pytest.warns(UserWarning, match="only 1 of 4"):
        align(h(a_ids), [h(["a", "z"])])


def test_digit_columns_partition_covers_the_image():
    vd = load_vertical(load_config(None))
    assert [p.image_shape for p in vd.parties] == [(1, 8, 4), (1, 8, 4)]
    from trustlab.data import load

    d = load("digits")
    order = vd.parties[0].ids.astype(int)
    full = np.concatenate([vd.parties[0].X.reshape(-1, 8, 4), vd.parties[1].X.reshape(-1, 8, 4)], axis=2)
    assert np.array_equal(full, d.x[order, 0])
    s = vd.splits
    assert not set(s["train"]) & set(s["aux"]) and not set(s["test"]) & set(s["aux"] )
    assert len(s["test"]) == round(0.3 * len(d.y)) or abs(len(s["test"]) - 0.3 * len(d.y)) < 2


def test_table_groups(tmp_path):
    cols = list(load_vertical(load_config(None, {"data": {"name": "wine"}})).parties[0].feature_names)
    assert cols  # default: contiguous halves
    bad = [((["alcohol"], ["alcohol", "ash"]), "disjoint"), ((["alcohol"], ["nope"]), "unknown column 'nope'"),
           ((["alcohol"], []), "empty"), ((["alcohol"], ["ash"]), "unassigned")]
    for groups, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            load_vertical(load_config(None, {"data": {"name": "wine", "groups": groups}}))
    vd = load_vertical(load_config(None, {"data": {"name": "wine", "groups": (["alcohol"], ["ash"]),
                                                   "drop_unassigned": True}}))
    assert [p.d for p in vd.parties] == [1, 1]
    with pytest.raises(ConfigError, match="empty strip"):
        load_vertical(load_config(None, {"data": {"n_parties": 9}}))


def test_csv_onehot_ids_and_bad_files(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"uid": [f"u{i}" for i in range(60)], "age": rng.normal(40, 10, 60),
                       "job": rng.choice(["a", "b", "c"], 60), "y": rng.integers(0, 2, 60)})
    f = tmp_path / "t.csv"
    df.to_csv(f, index=False)
    cfg = load_config(None, {"data": {"name": f"csv:{f}", "label_column": "y", "id_column": "uid"}})
    vd = load_vertical(cfg)
    assert vd.parties[1].onehot == ((0, 1, 2),) and vd.parties[0].ids[0].startswith("u")
    with pytest.raises(DataError, match="available columns"):
        load_vertical(load_config(None, {"data": {"name": f"csv:{f}", "label_column": "nope"}}))
    df.loc[3, "age"] = np.nan
    df.loc[5, "age"] = np.nan
    df.to_csv(f, index=False)
    with pytest.raises(DataError, match="'age'.* 2 missing"):
        load_vertical(cfg)
    df["y"] = 1
    df["age"] = 1.0
    df.to_csv(f, index=False)
    with pytest.raises(DataError, match="single class"):
        load_vertical(cfg)


def test_vfl_npz_and_party_files(tmp_path):
    f = tmp_path / "d.npz"
    np.savez(f, X=np.random.default_rng(0).random((90, 2, 6)).astype(np.float32), y=np.arange(90) % 3,
             image_shape=np.array([1, 2, 6]))
    vd = load_vertical(load_config(None, {"data": {"name": f"npz:{f}"}}))
    assert vd.kind == "images" and vd.parties[0].image_shape == (1, 2, 3)
    np.savez(tmp_path / "bad.npz", X=np.zeros((3, 2)))
    with pytest.raises(DataError, match="lacks y"):
        load_vertical(load_config(None, {"data": {"name": f"npz:{tmp_path / 'bad.npz'}"}}))
    from trustlab.vfl.data import export_parties

    paths = export_parties(load_config(None, {"data": {"name": "wine"}}), tmp_path / "fed")
    p0 = load_party_file(paths[1])
    assert p0.X.shape == (178, 6) and len(p0.ids) == 178


def test_unknown_dataset_lists_registry_and_idx_magic(tmp_path):
    with pytest.raises(ConfigError, match="digits"):
        load_vertical(load_config(None, {"data": {"name": "cifar"}}))
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="magic"):
        load_vertical(load_config(None, {"data": {"name": f"idx:{tmp_path}"}}))


def test_fewer_than_k_warns():
    from trustlab.vfl.attacks.label_leak import k_shot

    with pytest.warns(UserWarning, match="only 2"):
        k_shot(np.array([0, 0, 1, 1, 1, 1]), 4, 0)
