"""Issue 17: vfl's attacks on the one stamped record store. Each finished attack is a record of the run's
attacks.jsonl; an interrupted evaluation resumes with the attacks it has not finished and ends with the numbers of
an uninterrupted one; --no-resume (resume=False) runs them all again; a retrained run's records are not reused."""

import json

import pytest

from trustlab.runtime.records import read_records
from trustlab.vfl.config import load_config
from trustlab.vfl.evaluate import evaluate
from trustlab.vfl.train import train

ATTACKS = ("inverse", "whitebox", "label", "decode", "detect")


@pytest.fixture
def run_dir(tmp_path):
    cfg = load_config(None, {"data": {"name": "wine"}, "train": {"epochs": 2, "batch_size": 16},
                             "attack": {"inv_epochs": 3, "wb_steps": 10, "n_targets": 20}})
    train(cfg, tmp_path / "r", log=lambda *_: None)
    return tmp_path / "r"


def _numbers(ev):
    return json.loads(json.dumps({"attacks": ev.attacks, "detection": ev.detection}))


def test_interrupted_attacks_resume_and_give_the_uninterrupted_numbers(run_dir, monkeypatch):
    from trustlab.vfl.attacks import inverse_net, whitebox

    calls = []
    real_inverse, real_whitebox = inverse_net.inverse_attack, whitebox.whitebox_invert

    def counted(*a, **k):
        calls.append("inverse")
        return real_inverse(*a, **k)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(inverse_net, "inverse_attack", counted)
    monkeypatch.setattr(whitebox, "whitebox_invert", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate(run_dir, ATTACKS, plots=False)
    assert [r["key"] for r in read_records(run_dir / "attacks.jsonl")[1]] == ["inverse_net"] and calls == ["inverse"]
    monkeypatch.setattr(whitebox, "whitebox_invert", real_whitebox)
    resumed = evaluate(run_dir, ATTACKS, plots=False)
    assert calls == ["inverse"]  # read back, not run again
    keys = [r["key"] for r in read_records(run_dir / "attacks.jsonl")[1]]
    assert keys == ["inverse_net", "whitebox", "decoded_class_mean", "label_leak", "detection"]
    fresh = evaluate(run_dir, ATTACKS, plots=False, resume=False)  # --no-resume: every attack again
    assert calls == ["inverse", "inverse"]
    assert _numbers(resumed) == _numbers(fresh) and resumed.attacks["inverse_net"]["mse"] > 0
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["attacks"] == _numbers(fresh)["attacks"]
    # other attack settings (or a retrained run) are another stamp: nothing is reused
    from dataclasses import replace

    ac = load_config(None, {"data": {"name": "wine"}, "attack": {"inv_epochs": 2, "wb_steps": 10,
                                                                 "n_targets": 20}}).attack
    evaluate(run_dir, ("inverse",), ac, plots=False)
    assert calls == ["inverse"] * 3
    assert [r["key"] for r in read_records(run_dir / "attacks.jsonl")[1]] == ["inverse_net"]
    evaluate(run_dir, ("inverse",), replace(ac), plots=False)
    assert calls == ["inverse"] * 3
