"""User models for `certify eval` (issue 11 item 5): TorchScript, module:function factory + checkpoint, torchvision
name + checkpoint (its missing-dependency error), input normalization, opt-in autocast, and every bad value."""

import importlib.util
import json
import textwrap

import numpy as np
import pytest
import torch
import torch.nn as nn

from tests.certify.conftest import one_error
from trustlab.certify.loading import (load_state_strict, load_user_model, parse_normalize, parse_spec,
                                      with_autocast)
from trustlab.runtime import ConfigError, MissingDependencyError, ModelError

FACTORY = """
import torch.nn as nn

from trustlab.models import mlp


def digits_mlp(num_classes=10):
    return mlp((1, 8, 8), (16,), num_classes)


def cifar_like(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(num_classes))


def not_a_module():
    return 42
"""


@pytest.fixture
def factory(tmp_path, monkeypatch):
    """A user module ``tl_user_archs`` importable from sys.path; returns its folder."""
    d = tmp_path / "pkg"
    d.mkdir()
    (d / "tl_user_archs.py").write_text(textwrap.dedent(FACTORY))
    monkeypatch.syspath_prepend(str(d))
    return d


@pytest.fixture
def lab_weights(model_dir, tmp_path):
    """The session's digits MLP (written by `certify train`) as a plain state-dict checkpoint."""
    from trustlab.certify.store import load_model_dir

    model, _ = load_model_dir(model_dir)
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    return model, path


def _x(n=5, seed=0):
    return torch.as_tensor(np.random.default_rng(seed).random((n, 1, 8, 8), dtype=np.float32))


# --- the three loaders ------------------------------------------------------------------------------------------
def test_factory_with_checkpoint_loads_the_weights(factory, lab_weights):
    lab, path = lab_weights
    m = load_user_model("factory:tl_user_archs:digits_mlp", path, num_classes=10)
    assert not m.training
    with torch.no_grad():
        assert torch.equal(m(_x()), lab(_x()))


@pytest.mark.parametrize("prefix", ["module.", "1.", "1.module."])
def test_dataparallel_prefixes_are_stripped(factory, lab_weights, tmp_path, prefix):
    """torch.nn.DataParallel's ``module.``, and Cohen et al.'s ``1.`` (CIFAR: Sequential(normalize, model)) and
    ``1.module.`` (ImageNet: Sequential(normalize, DataParallel(model))), inside an {'arch', 'state_dict'} checkpoint
    as their train.py writes it."""
    lab, _ = lab_weights
    path = tmp_path / "dp.pt"
    torch.save({"arch": "digits_mlp", "state_dict": {prefix + k: v for k, v in lab.state_dict().items()}}, path)
    m = load_user_model("factory:tl_user_archs:digits_mlp", path)
    with torch.no_grad():
        assert torch.equal(m(_x()), lab(_x()))


def test_strict_mismatch_names_missing_and_unexpected_keys(factory, tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"1.weight": torch.zeros(16, 64), "1.bias": torch.zeros(16), "5.weight": torch.zeros(10, 16),
                "5.bias": torch.zeros(10)}, path)
    with pytest.raises(ModelError) as exc:
        load_user_model("factory:tl_user_archs:digits_mlp", path)
    msg = exc.value.message
    assert "\n" not in msg and "missing" in msg and "unexpected" in msg and "3.weight" in msg and "5.bias" in msg
    # same keys, other shapes: still one line, naming the parameter
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(64, 17), nn.ReLU(), nn.Linear(17, 10)).state_dict(), path)
    with pytest.raises(ModelError, match="size mismatch") as exc:
        load_state_strict(load_user_model.__globals__["_factory"]("tl_user_archs:digits_mlp", None),
                          torch.load(path, weights_only=True), "ckpt")
    assert "\n" not in exc.value.message


def test_checkpoint_that_needs_code_is_refused(factory, tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"state_dict": {}, "obj": nn.Linear(2, 2)}, path)  # a module object: not weights-only loadable
    with pytest.raises(Exception) as exc:
        load_user_model("factory:tl_user_archs:digits_mlp", path)
    assert getattr(exc.value, "exit_code", None) == 2 and "refused" in exc.value.message


def test_torchscript_file_runs_as_saved(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    path = tmp_path / "m.ts"
    torch.jit.save(torch.jit.script(net), str(path))
    m = load_user_model(f"torchscript:{path}")
    with torch.no_grad():
        assert torch.equal(m(_x()), net(_x()))
    with pytest.raises(ConfigError, match="--checkpoint does not apply"):
        load_user_model(f"torchscript:{path}", checkpoint=path)
    with pytest.raises(ModelError, match="does not exist"):
        load_user_model(f"torchscript:{tmp_path / 'none.ts'}")
    (tmp_path / "junk.ts").write_bytes(b"not an archive")
    with pytest.raises(ModelError, match="not a loadable TorchScript"):
        load_user_model(f"torchscript:{tmp_path / 'junk.ts'}")


def test_torch_export_archives_are_refused_before_loading(tmp_path, monkeypatch):
    """torch.export.load unpickles .pt2 weights with weights_only=False: the file is refused unread."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(net, (_x(),)), str(path))
    monkeypatch.setattr(torch.export, "load", lambda *a, **k: pytest.fail("torch.export.load was called"))
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: pytest.fail("torch.jit.load was called"))
    for spec in (f"torchscript:{path}", f"export:{path}", f"pt2:{path}"):
        with pytest.raises(ConfigError, match="weights_only=False") as exc:
            load_user_model(spec)
        assert "factory:" in exc.value.hint and "\n" not in exc.value.message


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed here")
def test_torchvision_absent_is_a_missing_dependency_with_the_pip_command(tmp_path):
    with pytest.raises(MissingDependencyError) as exc:
        load_user_model("torchvision:resnet18", tmp_path / "w.pt", num_classes=10)
    assert exc.value.exit_code == 3 and "pip install" in exc.value.hint and "torchvision" in exc.value.hint


def test_specs_parse_or_fail_naming_the_value():
    assert parse_spec("factory:a.b:fn") == ("factory", "a.b:fn")
    assert parse_spec("torchscript:/x/m.ts") == ("torchscript", "/x/m.ts")
    for bad in ("pytorch:x", "factory:nofunction", "factory:mod:", "torchvision:", "factory:a:b-c"):
        with pytest.raises(ConfigError, match="model"):
            parse_spec(bad)


# --- normalization and autocast ---------------------------------------------------------------------------------
def test_normalize_parses_and_is_the_first_layer(factory, lab_weights):
    assert parse_normalize("0.4914,0.4822,0.4465/0.2023,0.1994,0.2010") == ((0.4914, 0.4822, 0.4465),
                                                                          (0.2023, 0.1994, 0.2010))
    assert parse_normalize(None) is None and parse_normalize("none") is None
    for bad in ("0.5", "0.5,0.5/0.2", "a/b", "0.5/0", "0.5/-1", "/", "0.5/nan"):
        with pytest.raises(ConfigError, match="--normalize"):
            parse_normalize(bad)
    lab, path = lab_weights
    m = load_user_model("factory:tl_user_archs:digits_mlp", path, "0.5/0.25")
    x = _x()
    with torch.no_grad():
        # noise is added to x in [0, 1] pixel space by the smoother; the model normalizes what it receives
        assert torch.allclose(m(x), lab((x - 0.5) / 0.25), atol=1e-6)
    from trustlab.certify.boundnet import BoundNet

    BoundNet.from_module(m, (1, 8, 8))  # still a Sequential of supported layers: bound certifiers take it


def test_autocast_bf16_on_cpu_and_fp16_refused(lab_weights):
    from trustlab.models.identity import weights_digest

    lab, _ = lab_weights
    assert with_autocast(lab, "off", "cpu") is lab
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        with_autocast(lab, "fp16", "cpu")
    with pytest.raises(ConfigError, match="--autocast"):
        with_autocast(lab, "int8", "cpu")
    m = with_autocast(lab, "bf16", "cpu")
    x = _x(64)
    with torch.no_grad():
        out, ref = m(x), lab(x)
    assert out.dtype == torch.float32 and not torch.equal(out, ref)  # computed in bf16 ...
    assert torch.allclose(out, ref, atol=0.1, rtol=0.05)  # ... to about bf16's 3 significant digits
    assert weights_digest(m) != weights_digest(lab)  # the records' stamp tells an autocast model apart


# --- the CLI ------------------------------------------------------------------------------------------------------
EVAL = ["--n", "100", "--n0", "20", "--max-inputs", "8", "--inputs", "clean"]


def test_cli_factory_model_gives_the_lab_models_certificates(cli, factory, model_dir, lab_weights, tmp_path):
    """The same weights through factory: + --checkpoint on the same data, split seed and noise seed certify
    exactly as the lab model folder does (same stamp, same records)."""
    _, path = lab_weights
    lab_out, user_out = tmp_path / "lab", tmp_path / "user"
    assert cli("eval", model_dir, *EVAL, "--out", lab_out).code == 0
    res = cli("eval", "factory:tl_user_archs:digits_mlp", "--checkpoint", path, "--data", "digits", "--sigma",
              "0.25", "--seed", "0", *EVAL, "--out", user_out)
    assert res.code == 0, res
    lab_lines = (lab_out / "smoothing" / "clean.jsonl").read_text()
    assert (user_out / "smoothing" / "clean.jsonl").read_text() == lab_lines
    results = json.loads((user_out / "results.json").read_text())
    assert results["config"]["model"] == "factory:tl_user_archs:digits_mlp" and results["by_inputs"]["clean_inputs"]


def test_cli_torchscript_with_normalize_and_bf16(cli, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "m.ts"
    torch.jit.save(torch.jit.trace(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), _x(1)), str(path))
    out = tmp_path / "e"
    res = cli("eval", f"torchscript:{path}", "--data", "digits", "--sigma", "0.5", "--normalize", "0.5/0.5",
              "--autocast", "bf16", *EVAL, "--out", out)
    assert res.code == 0, res
    recs = (out / "smoothing" / "clean.jsonl").read_text().splitlines()
    assert len(recs) == 9 and json.loads(recs[0])["settings"]["sigma"] == 0.5
    cfg = (out / "config.yaml").read_text()
    assert "autocast: bf16" in cfg and "normalize: 0.5/0.5" in cfg


def _bad_cases(tmp_path, model_dir, ts, ckpt, ts3):
    user = ["--data", "digits", "--sigma", "0.25", "--n", "50", "--out", tmp_path / "e"]
    return {
        "no --sigma": (["eval", f"torchscript:{ts}", "--data", "digits", "--n", "50"], 2, "--sigma"),
        "no --data": (["eval", f"torchscript:{ts}", "--sigma", "0.25"], 2, "--data"),
        "typo kind": (["eval", f"torchscrpt:{ts}"], 2, "torchscrpt"),
        "no checkpoint": (["eval", "factory:tl_user_archs:digits_mlp", *user], 2, "--checkpoint"),
        "missing checkpoint": (["eval", "factory:tl_user_archs:digits_mlp", "--checkpoint", tmp_path / "no.pt",
                                *user], 2, "no.pt"),
        "no module": (["eval", "factory:no_such_mod_xyz:fn", "--checkpoint", ckpt, *user], 2, "no_such_mod_xyz"),
        "no function": (["eval", "factory:tl_user_archs:nope", "--checkpoint", ckpt, *user], 2, "nope"),
        "not a module": (["eval", "factory:tl_user_archs:not_a_module", "--checkpoint", ckpt, *user], 2,
                         "not an nn.Module"),
        "checkpoint of another arch": (["eval", "factory:tl_user_archs:cifar_like", "--checkpoint", ckpt, *user], 2,
                              "does not fit"),
        "3-channel model on 1-channel data": (["eval", f"torchscript:{ts3}", *user], 2,
                                              "fails on one input of shape [1, 8, 8]"),
        "bad --normalize": (["eval", f"torchscript:{ts}", "--normalize", "0.5,0.5", *user], 2, "--normalize"),
        "channels": (["eval", f"torchscript:{ts}", "--normalize", "0.5,0.5,0.5/0.2,0.2,0.2", *user], 2,
                     "channel"),
        "fp16 on cpu": (["eval", f"torchscript:{ts}", "--autocast", "fp16", *user], 2, "fp16"),
        "bad --autocast": (["eval", f"torchscript:{ts}", "--autocast", "fp8", *user], 2, "--autocast"),
        "autocast + ibp": (["eval", f"torchscript:{ts}", "--autocast", "bf16", "--certifier", "ibp", *user], 2,
                           "--autocast"),
        "--num-classes 1": (["eval", "factory:tl_user_archs:digits_mlp", "--checkpoint", ckpt, "--num-classes",
                             "1", *user], 2, "--num-classes"),
        "--num-classes vs logits": (["eval", f"torchscript:{ts}", "--num-classes", "7", *user], 2, "--num-classes"),
        "lab dir + --normalize": (["eval", model_dir, "--normalize", "0.5/0.5"], 2, "--normalize"),
        "lab dir + --checkpoint": (["eval", model_dir, "--checkpoint", ckpt], 2, "--checkpoint"),
        "bad data": (["eval", f"torchscript:{ts}", "--data", "npz:/no/such.npz", "--sigma", "0.25"], 2,
                     "/no/such.npz"),
        "--device": (["eval", f"torchscript:{ts}", "--device", "tpu", *user], 2, "tpu"),
    }


def test_cli_bad_values_one_line_error_and_hint(cli, factory, model_dir, lab_weights, tmp_path):
    torch.manual_seed(0)
    ts = tmp_path / "m.ts"
    torch.jit.save(torch.jit.trace(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), _x(1)), str(ts))
    ts3 = tmp_path / "m3.ts"
    torch.jit.save(torch.jit.script(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())), str(ts3))
    _, ckpt = lab_weights
    for name, (args, code, needle) in _bad_cases(tmp_path, model_dir, ts, ckpt, ts3).items():
        line = one_error(cli(*args), code)
        assert needle in line, (name, line)


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed here")
def test_cli_torchvision_without_torchvision_exits_3(cli, lab_weights, tmp_path):
    _, ckpt = lab_weights
    line = one_error(cli("eval", "torchvision:resnet18", "--checkpoint", ckpt, "--num-classes", "10", "--data",
                         "digits", "--sigma", "0.25", "--n", "50", "--out", tmp_path / "e"), 3)
    assert "torchvision" in line


def test_a_factory_that_fails_is_one_error(tmp_path, monkeypatch):
    (tmp_path / "tl_broken_archs.py").write_text("def boom():\n    raise RuntimeError('no GPU here\\nsecond line')\n")
    (tmp_path / "tl_syntax_archs.py").write_text("def f(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelError, match="raised RuntimeError: no GPU here ") as exc:
        load_user_model("factory:tl_broken_archs:boom", tmp_path / "w.pt")
    assert "second line" not in exc.value.message
    with pytest.raises(ConfigError, match="cannot be imported: SyntaxError"):
        load_user_model("factory:tl_syntax_archs:f", tmp_path / "w.pt")
