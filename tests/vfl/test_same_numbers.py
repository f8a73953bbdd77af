"""Issue 17 "the demos give the same numbers for the same seeds": the sweep engine behind `vfl demo` run into a
fresh folder, into a second fresh folder and resumed into the first gives the same numbers in results.json
(benchmarks/demo_same_numbers.py compares the same way, on the demo itself)."""

import importlib.util
import json
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]


def same_numbers():
    spec = importlib.util.spec_from_file_location("demo_same_numbers", ROOT / "benchmarks" / "demo_same_numbers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_comparison_sees_a_changed_number_and_ignores_clocks():
    m = same_numbers()
    a = {"metrics": {"acc": 0.9, "n": 3, "ok": True}, "train": {"seconds": 1.5, "history": [{"loss": 0.1}]},
         "started": "x", "environment": {"torch": "2"}}
    b = json.loads(json.dumps(a))
    b["train"]["seconds"], b["environment"]["cpus"] = 9.0, 4
    assert m.diff(a, b) == []
    b["train"]["history"][0]["loss"] = 0.1000001
    assert m.diff(a, b) == ["train.history[0].loss: 0.1 != 0.1000001"]
    del b["metrics"]["acc"]
    assert "metrics.acc: 0.9 != '<absent>'" in m.diff(a, b)


def test_sweep_fresh_twice_and_resumed_gives_the_same_numbers(tmp_path):
    from trustlab.vfl.config import load_config
    from trustlab.vfl.sweep import SweepConfig, run_sweep

    m = same_numbers()
    sc = SweepConfig(load_config("wine", {"train": {"epochs": 2}}), ("none", "hash"), (0,),
                     attacks=("label", "decode"))
    quiet = lambda msg: None  # noqa: E731
    run_sweep(sc, tmp_path / "a", log=quiet)
    fresh = json.loads((tmp_path / "a" / "results.json").read_text())
    run_sweep(sc, tmp_path / "b", log=quiet)
    second = json.loads((tmp_path / "b" / "results.json").read_text())
    log = []
    run_sweep(sc, tmp_path / "a", log=log.append)
    resumed = json.loads((tmp_path / "a" / "results.json").read_text())
    assert sum(1 for _ in m.numbers(fresh)) > 50
    assert m.diff(fresh, second) == [] and m.diff(fresh, resumed) == []
    assert sum("done, skipped" in line for line in log) == 2  # the resumed run read its records
