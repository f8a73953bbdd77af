"""End to end: the quick demo writes every section-6 artefact and shows the attacks; eval resume; 3-seed fidelity."""

import dataclasses
import json

import pytest
from typer.testing import CliRunner

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from trustlab.certify.cli import run_demo

    return run_demo(tmp_path_factory.mktemp("certify") / "demo", quick=True)


def test_demo_quick_writes_all_artefacts_and_shows_the_attacks(demo_run):
    run = demo_run
    for f in ("config.yaml", "config_hash", "summary.json", "report.md", "report.html", "seed0/results.json"):
        assert (run / f).is_file(), f
    res = json.loads((run / "results.json").read_text())
    assert res["lab"] == "certify" and res["schema"] == "trustlab.certify/1" and "reconstructed" in res["caveat"]
    for track, cert in (("rs", "smoothing"), ("ibp", "ibp")):
        for m in ("clean", "label-noise", "max-entropy"):
            d = run / "seed0" / track / m
            assert (d / "model.pt").is_file() and (d / "train.json").is_file()
            assert (d / cert / "clean.jsonl").is_file() and (d / cert / "triggered.jsonl").is_file()
        bm = res["certifiers"][track][cert]["by_model"]
        eff = res["certifiers"][track][cert]["attack_effect"]
        assert bm["clean"]["clean_inputs"]["clean_acc"] >= 0.95
        assert bm["max-entropy"]["triggered_inputs"]["abstain_rate"] >= (0.70 if track == "rs" else 0.80)
        # a difference of two rates over the same 200 inputs: within 1e-9 of 0.05 it is exactly 10/200 (float
        # rounding of the two means gives 0.04999999999999999 on some CPUs' instruction sets)
        assert eff["label-noise"]["triggered_abstain_delta"] >= 0.05 - 1e-9
        for a in ("label-noise", "max-entropy"):
            assert abs(eff[a]["clean_abstain_delta"]) <= 0.06
        # A's poisons without the trigger: the baseline that isolates the trigger's share of attack A's effect
        assert (run / "seed0" / track / "label-noise-untriggered" / cert / "triggered.jsonl").is_file()
        assert (bm["label-noise-untriggered"]["triggered_inputs"]["abstain_rate"]
                < bm["label-noise"]["triggered_inputs"]["abstain_rate"])
    assert set(res["defences"]) == {"strip", "fine-pruning"}
    assert res["defences"]["strip"]["max-entropy"]["rs"]["smoothing"]["verdict"] in ("insufficient", "effective")
    pngs = {p.name for p in (run / "plots").glob("*.png")}
    assert {"rs_smoothing_abstain.png", "ibp_ibp_certified_acc.png", "trigger_examples.png", "defences.png"} <= pngs
    assert "reconstructed from the paper's abstract" in (run / "report.md").read_text()


def test_demo_run_again_gives_the_same_numbers(demo_run):
    """Issue 17: the quick demo run again into its folder (a resume: every stamped model and certificate reused)
    gives the same numbers in results.json, clocks aside (benchmarks/demo_same_numbers.py also compares a second
    fresh run: 4033 numbers, none differ)."""
    import importlib.util
    from pathlib import Path

    from trustlab.certify.cli import run_demo

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "demo_same_numbers.py"
    spec = importlib.util.spec_from_file_location("demo_same_numbers", path)
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    before = json.loads((demo_run / "results.json").read_text())
    assert run_demo(demo_run, quick=True) == demo_run
    after = json.loads((demo_run / "results.json").read_text())
    assert sum(1 for _ in m.numbers(before)) > 1000 and m.diff(before, after) == []


def test_interrupted_eval_resumed_equals_fresh(demo_run, tmp_path):
    from trustlab.certify.cli import app

    model_dir = demo_run / "seed0" / "rs" / "max-entropy"
    args = ["eval", str(model_dir), "--certifier", "smoothing", "--n", "300", "--max-inputs", "40"]
    runner = CliRunner()
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "fresh")]).exit_code == 0
    part = tmp_path / "part"
    assert runner.invoke(app, [*args, "--out", str(part), "--inputs", "clean"]).exit_code == 0
    lines = (part / "smoothing" / "clean.jsonl").read_text().splitlines(keepends=True)
    (part / "smoothing" / "clean.jsonl").write_text("".join(lines[:13]) + lines[13][:20])  # crash mid-write
    res = runner.invoke(app, [*args, "--out", str(part), "--inputs", "clean"])
    assert res.exit_code == 0, res.output
    fresh = (tmp_path / "fresh" / "smoothing" / "clean.jsonl").read_text().splitlines()
    resumed = (part / "smoothing" / "clean.jsonl").read_text().splitlines()
    key = lambda s: json.loads(s).get("idx", -1)  # noqa: E731  (the stamp line first)
    assert sorted(resumed, key=key) == sorted(fresh, key=key) and len(fresh) == 1 + 40


def test_report_and_defend_commands(demo_run, tmp_path):
    from trustlab.certify.cli import app

    runner = CliRunner()
    (demo_run / "report.html").unlink()
    res = runner.invoke(app, ["report", str(demo_run)])
    assert res.exit_code == 0 and (demo_run / "report.html").is_file()
    assert "reconstructed from the paper's abstract" in (demo_run / "report.md").read_text()
    # defend reuses the run's trained models and certificates and scores the defence on them
    out = tmp_path / "defended"
    before = json.loads((demo_run / "results.json").read_text())["certifiers"]
    model_pt = demo_run / "seed0" / "rs" / "max-entropy" / "model.pt"
    res = runner.invoke(app, ["defend", str(demo_run), "--defence", "strip", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "seed0" / "rs" / "max-entropy" / "model.pt").read_bytes() == model_pt.read_bytes()
    got = json.loads((out / "results.json").read_text())
    assert got["verb"] == "defend" and set(got["defences"]) == {"strip"}
    assert got["certifiers"] == before  # same models, same certificates
    row = got["defences"]["strip"]["max-entropy"]["rs"]["smoothing"]
    assert row["verdict"] in ("insufficient", "effective") and 0 <= row["strip_tpr_at_frr"] <= 1
    assert row["triggered_fallback_after"] >= row["triggered_fallback_before"]  # fallback = abstain or flagged
    assert (out / "report.md").is_file()


def test_fidelity_digits_three_seeds_reduced():
    """Reduced section-7 run (3 seeds, 120 test inputs, no defences); the full one is benchmarks/certify/fidelity.py."""
    import tempfile

    from trustlab.certify.config import DefenceConfig, load_config, shipped_config
    from trustlab.certify.experiment import run_experiment

    cfg = load_config(shipped_config("fidelity_digits"))
    # no defences and no untriggered-A baseline: nothing below asserts on them (they cost 2 of 8 models per seed)
    cfg = dataclasses.replace(cfg, max_test=120, defences=DefenceConfig(), untriggered_baseline=False)
    with tempfile.TemporaryDirectory() as d:
        run = run_experiment(cfg, d, log=lambda *_: None)
        summ = json.loads((run / "summary.json").read_text())["certifiers"]
    for track, cert in (("rs", "smoothing"), ("ibp", "ibp")):
        bm = summ[track][cert]["by_model"]
        assert bm["clean"]["clean_inputs"]["clean_acc"]["mean"] >= 0.95
        assert bm["max-entropy"]["triggered_inputs"]["abstain_rate"]["mean"] >= (0.70 if track == "rs" else 0.90)
        assert summ[track][cert]["attack_effect"]["label-noise"]["triggered_abstain_delta"]["mean"] > 0
        for a in ("label-noise", "max-entropy"):
            assert abs(summ[track][cert]["attack_effect"][a]["clean_abstain_delta"]["mean"]) <= 0.04
            assert abs(summ[track][cert]["attack_effect"][a]["clean_acc_delta"]["mean"]) <= 0.02
