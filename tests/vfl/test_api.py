"""The verbs as functions returning result objects, and the sweep with a subset of attacks."""

import json

from trustlab.vfl.config import load_config
from trustlab.vfl.evaluate import EvalResult, evaluate
from trustlab.vfl.train import TrainResult, train


def test_train_and_evaluate_return_results_in_memory(tmp_path):
    cfg = load_config(None, {"data": {"name": "wine"}, "train": {"epochs": 3, "batch_size": 16}})
    tr = train(cfg, tmp_path / "r", log=lambda *_: None)
    assert isinstance(tr, TrainResult) and tr.run_dir == tmp_path / "r"
    assert tr.test_acc == tr.results["train"]["test_acc"] and len(tr.history) == 3
    assert set(tr.messages) == {"train", "aux", "test"} and len(tr.messages["test"]) == 2
    assert tr.codes is not None and tr.codes.shape == (3, 16)
    # evaluate works on the object: the saved messages are not read back (delete them to show it)
    for f in (tmp_path / "r" / "messages").iterdir():
        f.unlink()
    ev = evaluate(tr, ("label", "decode", "detect"), plots=False)
    assert isinstance(ev, EvalResult)
    assert 0 <= ev.attacks["label_leak"]["acc"] <= 1 and "decoded_class_mean" in ev.attacks
    assert "inverse_net" not in ev.attacks and set(ev.detection) == {"uniform", "swap"}
    saved = json.loads((tmp_path / "r" / "results.json").read_text())
    assert saved["attacks"] == ev.results["attacks"] and saved["status"] == "ok"


def test_sweep_with_a_subset_of_attacks(tmp_path, cli):
    """Once a KeyError: the sweep's plots assumed the inverse-network attack had run."""
    out = tmp_path / "sw"
    code, stdout, err = cli("vfl", "sweep", "--config", "digits", "--defences", "none,hash", "--seeds", "0",
                            "--epochs", "2", "--attacks", "label,decode", "--out", str(out))
    assert code == 0, err
    rows = {r["label"]: r for r in json.loads((out / "sweep.json").read_text())["rows"]}
    assert rows["hash"]["label_leak"]["mean"] is not None and rows["hash"]["decode_acc"]["mean"] is not None
    assert rows["none"]["inverse_mse"]["mean"] is None and rows["hash"]["decoded_mse"]["mean"] is not None
    assert (out / "plots" / "recon_grid.png").is_file()  # the decoded-class-mean row stands in for the inverse net
    code, _, err = cli("vfl", "sweep", "--attacks", "label,bogus", "--out", str(tmp_path / "bad"))
    assert code == 2 and "bogus" in err


def test_out_and_resume_style_with_the_old_spellings(tmp_path, cli):
    """--out and --resume/--no-resume (default resume), as in certify; --run-dir and --force still work."""
    from .helpers import assert_flags_exist, hint_command, hint_of

    d = str(tmp_path / "r")
    wine = ("vfl", "train", "--config", "wine", "--epochs", "1")
    assert cli(*wine, "--run-dir", d)[0] == 0  # the deprecated spelling of --out
    code, _, err = cli(*wine[:-1], "2", "--out", d)  # resuming (the default) cannot change the config
    assert code == 2 and "train.epochs" in err
    assert_flags_exist(hint_of(err))
    assert hint_command(hint_of(err)) == ["vfl", "train", "--out", d] and "--no-resume" in hint_of(err)
    code, out, _ = cli(*wine[:-1], "2", "--out", d, "--no-resume")
    assert code == 0 and json.loads((tmp_path / "r" / "results.json").read_text())["config"]["train"]["epochs"] == 2
    code, out, _ = cli(*wine[:-1], "3", "--out", d, "--force")  # the deprecated spelling of --no-resume
    assert code == 0 and len(json.loads((tmp_path / "r" / "results.json").read_text())["train"]["history"]) == 3
    code, _, err = cli("vfl", "attack")
    assert code == 2 and "--out" in err


def test_docs_python_example_runs(tmp_path, monkeypatch, capsys):
    import re
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "vfl.md"
    block = re.search(r"Python \(the verbs the CLI calls.*?```python\n(.*?)```", doc.read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(block, str(doc), "exec"), ns)
    assert "test acc" in capsys.readouterr().out
    assert ns["tr"].test_acc >= 0.8 and (tmp_path / "runs" / "vfl-wine" / "results.json").is_file()
    assert ns["ev"].attacks["inverse_net"]["mse"] is not None


def test_train_without_a_folder_uses_a_scratch_one_removed_with_the_result():
    import gc

    cfg = load_config(None, {"data": {"name": "wine"}, "train": {"epochs": 2, "batch_size": 16}})
    tr = train(cfg, log=lambda *_: None)
    folder = tr.run_dir
    assert folder.is_dir() and len(tr.history) == 2
    ev = evaluate(tr, ("label",), plots=False)  # still works in memory (and records into the scratch folder)
    assert ev.attacks["label_leak"]["k"] == 4
    del tr
    gc.collect()
    assert not folder.exists()
