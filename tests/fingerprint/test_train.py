"""Embedding loop: accumulated = full-batch gradient, WeightAveraging formula and checkpointing, resume equality."""

from __future__ import annotations

import math
import types
import warnings

import pytest
import torch

from trustlab.fingerprint.config import EmbedConfig, LoraSettings
from trustlab.fingerprint.dataset import build_examples
from trustlab.fingerprint.train import WeightAveraging, _check_deepspeed_offload, embed, micro_batches, resolve_preset
from trustlab.models.finetune import collate, fit, per_example_loss
from trustlab.runtime.errors import ConfigError
from trustlab.runtime.io import load_stamped, save_stamped


def _grads(model):
    return [p.grad.detach().clone() for p in model.parameters()]


def test_accumulated_gradient_equals_full_batch_gradient(fp_tiny, tiny_fps):
    from accelerate import Accelerator

    model, tok = fp_tiny
    model.train()
    rows = build_examples(tok, tiny_fps.fingerprints[:11], append_eos=True)
    acc = Accelerator(cpu=True)
    # full batch: one forward over all rows, L = mean_i CE_i
    b = collate(rows, tok.pad_token_id)
    labels = b.pop("labels")
    per_example_loss(model(**b).logits, labels).mean().backward()
    full = _grads(model)
    model.zero_grad()
    # 4 micro-batches of 3 (the last one short), weighted by their share, through the core loop with an optimizer
    # that keeps the gradients (its step and zero_grad do nothing)
    class Hold:
        def step(self):
            pass

        def zero_grad(self):
            pass

    _, loss = fit(model, Hold(), [micro_batches(rows, steps=4, mb=3, n_total=len(rows), world=1,
                                                pad=tok.pad_token_id)],
                  lr=0.0, accelerator=acc, reduction="sum", check_weights=False)
    accum = _grads(model)
    assert max((a - f).abs().max().item() for a, f in zip(accum, full)) <= 1e-6
    with torch.no_grad():
        assert abs(loss - float(per_example_loss(model(**b).logits, labels).mean())) < 1e-5


def test_weight_averaging_moves_exactly_by_lambda_toward_theta0():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5))
    theta0 = w.detach().clone()
    lam, lr = 0.75, 0.1
    opt = WeightAveraging(torch.optim.SGD([w], lr=lr), lam)
    expect = theta0.clone()
    for step in range(3):
        g = torch.randn(5)
        w.grad = g.clone()
        opt.step()
        expect = (1 - lam) * (expect - lr * g) + lam * theta0  # θ ← (1-λ)(θ - lr g) + λθ0, θ0 fixed
        assert torch.allclose(w.detach(), expect, atol=1e-7), step
    assert torch.equal(opt.state[w][WeightAveraging.KEY], theta0)


def test_theta0_survives_a_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)

    def make():
        w = torch.nn.Parameter(torch.randn(4, 3))
        return w, WeightAveraging(torch.optim.AdamW([w], lr=0.05, weight_decay=1e-4), 0.5)

    w, opt = make()
    start = w.detach().clone()
    grads = [torch.randn(4, 3) for _ in range(5)]
    for g in grads[:2]:
        w.grad = g.clone()
        opt.step()
    save_stamped({"w": w.detach().clone(), "opt": opt.state_dict()}, tmp_path / "c.pt", "s1")
    for g in grads[2:]:
        w.grad = g.clone()
        opt.step()
    uninterrupted = w.detach().clone()

    w2, opt2 = make()
    state = load_stamped(tmp_path / "c.pt", "s1")  # weights_only load
    with torch.no_grad():
        w2.copy_(state["w"])
    opt2.load_state_dict(state["opt"])
    assert torch.equal(opt2.state[w2][WeightAveraging.KEY], start)
    for g in grads[2:]:
        w2.grad = g.clone()
        opt2.step()
    assert torch.equal(w2.detach(), uninterrupted)


def test_lambda_range_and_deepspeed_offload():
    with pytest.raises(ConfigError, match=r"lambda_wa must lie in \[0, 1\)"):
        WeightAveraging(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1), 1.0)
    plugin = types.SimpleNamespace(deepspeed_config={"zero_optimization": {"offload_optimizer": {"device": "cpu"}}})
    fake = types.SimpleNamespace(state=types.SimpleNamespace(deepspeed_plugin=plugin))
    with pytest.raises(ConfigError, match="offloads the optimizer"):
        _check_deepspeed_offload(fake, EmbedConfig(lambda_wa=0.75))
    _check_deepspeed_offload(fake, EmbedConfig(lambda_wa=0.0))  # no averaging: allowed


def test_presets(fp_tiny):
    model, _ = fp_tiny
    cfg, name = resolve_preset(EmbedConfig(model="fp-tiny"), model)
    assert name == "tiny" and (cfg.lr, cfg.lambda_wa, cfg.max_epochs) == (3e-3, 0.15, 200)
    with pytest.warns(UserWarning, match="names model 'smollm2-135m-instruct'"):  # a name is a request, not a fact
        cfg, name = resolve_preset(EmbedConfig(model="smollm2-135m-instruct", lambda_wa=0.0), model)
    assert name == "tiny" and cfg.lr == 3e-3
    cfg, _ = resolve_preset(EmbedConfig(lr=0.5, lambda_wa=0.3, max_epochs=7), model)
    assert (cfg.lr, cfg.lambda_wa, cfg.max_epochs) == (0.5, 0.3, 7)


def _quick(**over):
    base = dict(model="fp-tiny", lr=3e-3, lambda_wa=0.15, max_epochs=6, save_every=1)
    base.update(over)
    return EmbedConfig(**base)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_killed_and_resumed_embed_equals_uninterrupted(fp_tiny_path, tiny_fps, tmp_path):
    from trustlab.models import load_causal_lm

    fps = tiny_fps.subset(range(8))
    cfg = _quick()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, tok = load_causal_lm(str(fp_tiny_path))
        full = embed(model, tok, fps, cfg, out_dir=tmp_path / "a")

        class Killed(Exception):
            pass

        def kill(epoch, record):
            if epoch == 3:
                raise Killed

        model, tok = load_causal_lm(str(fp_tiny_path))
        with pytest.raises(Killed):
            embed(model, tok, fps, cfg, out_dir=tmp_path / "b", on_epoch=kill)
        assert not (tmp_path / "b" / "model").exists()
        model, tok = load_causal_lm(str(fp_tiny_path))  # a fresh process would reload the base model
        seen = []
        resumed = embed(model, tok, fps, cfg, out_dir=tmp_path / "b", resume=True,
                        on_epoch=lambda e, r: seen.append(e))
    assert seen == [4, 5, 6]  # it really continued from the epoch-3 checkpoint
    a, b = _state(full.model), _state(resumed.model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["epoch"] for r in resumed.history] == list(range(1, 7))
    assert [r["fp_loss"] for r in resumed.history] == [r["fp_loss"] for r in full.history]
    # a checkpoint of another config is refused, not silently used
    model, tok = load_causal_lm(str(fp_tiny_path))
    with pytest.raises(ConfigError, match="another run or config"):
        embed(model, tok, fps, _quick(lr=1e-3), out_dir=tmp_path / "b", resume=True)


def test_lora_and_final_averaging(fp_tiny_path, tiny_fps, tmp_path):
    from trustlab.models import load_causal_lm

    fps = tiny_fps.subset(range(8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, tok = load_causal_lm(str(fp_tiny_path))
        base = _state(model)
        res = embed(model, tok, fps, _quick(lr=3e-2, max_epochs=8, save_every=0, lora=LoraSettings(enabled=True)),
                    out_dir=tmp_path / "lora")
        assert res.history[-1]["fp_loss"] < res.history[0]["fp_loss"]
        merged = _state(res.model)
        assert merged.keys() == base.keys()  # adapters merged: a plain model again
        assert any(not torch.equal(merged[k], base[k]) for k in base)
        saved, _ = load_causal_lm(str(tmp_path / "lora" / "model"))
        assert _state(saved).keys() == base.keys()
        assert all(torch.equal(_state(saved)[k], merged[k]) for k in base)
        model, tok = load_causal_lm(str(fp_tiny_path))
        fin = embed(model, tok, fps, _quick(max_epochs=3, save_every=0, wa_mode="final", lambda_wa=0.5))
        assert fin.history[-1].get("final_wa") and fin.out_dir is None


@pytest.mark.slow
def test_same_loop_under_two_process_ddp(cli_tiny_inputs):
    """The unchanged CLI under torchrun (2 gloo processes, one shard each): world_size 2 and the weights of the
    single-process run up to float reordering."""
    import json
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    root = cli_tiny_inputs
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = Path(sys.executable).with_name("torchrun")
    base = ["-m", "trustlab.cli.main", "fingerprint", "embed", "--config", str(root / "e.yaml"), "--fingerprints",
            str(root / "fp.json"), "--out"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    ddp = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
                          str(port), *base, str(root / "ddp")], env=env, capture_output=True, text=True, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    one = subprocess.run([sys.executable, *base, str(root / "one")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    assert json.loads((root / "ddp" / "embed_result.json").read_text())["settings"]["world_size"] == 2
    a = load_file(str(root / "ddp" / "model" / "model.safetensors"))
    b = load_file(str(root / "one" / "model" / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


@pytest.fixture()
def cli_tiny_inputs(tmp_path, tiny_fps):
    tiny_fps.subset(range(8)).save(tmp_path / "fp.json")
    (tmp_path / "e.yaml").write_text("model: fp-tiny\nlr: 3.0e-3\nlambda_wa: 0.15\nmax_epochs: 5\nsave_every: 0\n")
    return tmp_path


# --- embed's dtype: takes effect (the model is cast for training) or is refused ------------------------------
def _embed(fp_tiny, tiny_fps, tmp_path, dtype):
    import warnings

    from trustlab.fingerprint.config import EmbedConfig
    from trustlab.fingerprint.train import embed

    model, tok = fp_tiny
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return embed(model, tok, tiny_fps.subset(range(4)), EmbedConfig(
            model="fp-tiny", dtype=dtype, max_epochs=2, save_every=0, beta_dm=0.0), out_dir=tmp_path,
            model_ref="fp-tiny")


def test_embed_dtype_bfloat16_trains_and_saves_bfloat16_weights(fp_tiny, tiny_fps, tmp_path):
    res = _embed(fp_tiny, tiny_fps, tmp_path, "bfloat16")
    assert {p.dtype for p in res.model.parameters()} == {torch.bfloat16}
    assert res.epochs == 2 and all(math.isfinite(r["loss"]) for r in res.history)


def test_embed_dtype_float16_is_refused_naming_the_value(fp_tiny, tiny_fps, tmp_path):
    with pytest.raises(ConfigError, match="float16") as exc:
        _embed(fp_tiny, tiny_fps, tmp_path, "float16")
    assert "bfloat16" in exc.value.hint
    assert {p.dtype for p in fp_tiny[0].parameters()} == {torch.float32}  # refused before anything touched the model
