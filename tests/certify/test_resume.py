"""Issue 7, certify: nothing on disk is unpickled, stale files are never trusted, Ctrl-C prints a resume command that
works, and every printed hint names flags that exist."""

import json
import pickle
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.certify.conftest import one_error
from trustlab.runtime import ConfigError, save_stamped

EVAL = ["--n0", "20", "--n", "200", "--max-inputs", "24", "--inputs", "clean"]


class Evil:
    """Unpickling this creates ``marker``: the proof of concept of issue 7."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _train_run_folder(out):
    """``out`` claimed as a certify train run folder (marker, no config yet): the next train resumes it."""
    from trustlab.runtime.rundir import RunDir

    RunDir.open(out, "certify", "train").close()
    return out


def _copy_model(model_dir, dst):
    shutil.copytree(model_dir, dst)
    return dst


# --- security ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["torch", "raw-pickle"])
def test_crafted_checkpoint_on_resume_is_refused_and_runs_no_code(tmp_path, cli, fmt):
    marker = tmp_path / "pwned"
    out = _train_run_folder(tmp_path / "run")
    (out / "model").mkdir(parents=True)
    ckpt = out / "model" / "ckpt.pt"
    if fmt == "torch":
        torch.save({"model": Evil(marker)}, ckpt)
    else:
        ckpt.write_bytes(pickle.dumps(Evil(marker), protocol=2))
    res = cli("train", "--epochs", "2", "--hidden", "16", "--out", out)
    line = one_error(res, 2)
    assert "ckpt.pt" in line and "refused" in line
    assert not marker.exists()


def test_crafted_model_pt_is_refused_by_eval(tmp_path, cli, model_dir):
    marker = tmp_path / "pwned"
    m = _copy_model(model_dir, tmp_path / "m")
    torch.save(Evil(marker), m / "model.pt")
    line = one_error(cli("eval", m, *EVAL, "--out", tmp_path / "e"), 2)
    assert "model.pt" in line
    assert not marker.exists()


def test_truncated_checkpoint_and_model_give_exit_2_with_one_line(tmp_path, cli, model_dir):
    out = _train_run_folder(tmp_path / "run")
    (out / "model").mkdir(parents=True)
    blob = tmp_path / "full.pt"
    save_stamped({"model": {"w": torch.zeros(100, 100)}, "epoch": 5}, blob, "any")
    (out / "model" / "ckpt.pt").write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])
    line = one_error(cli("train", "--epochs", "2", "--hidden", "16", "--out", out), 2)
    assert "ckpt.pt" in line
    m = _copy_model(model_dir, tmp_path / "m")
    data = (m / "model.pt").read_bytes()
    (m / "model.pt").write_bytes(data[: len(data) // 2])
    line = one_error(cli("eval", m, *EVAL, "--out", tmp_path / "e"), 2)
    assert "model.pt" in line


# --- stale results ------------------------------------------------------------------------------------------------
def _records(folder, cert="smoothing", which="clean"):
    lines = (Path(folder) / cert / f"{which}.jsonl").read_text().splitlines()
    return [json.loads(s) for s in lines]


def test_eval_no_resume_never_reports_certificates_of_another_sigma(tmp_path, cli, model_dir):
    d = tmp_path / "d"
    assert cli("eval", model_dir, *EVAL, "--sigma", "0.25", "--out", d).code == 0
    old = _records(d)
    # resuming with another sigma is refused, naming the differing setting
    line = one_error(cli("eval", model_dir, *EVAL, "--sigma", "0.5", "--out", d), 2)
    assert "smoothing.sigma" in line
    # --no-resume starts afresh: exactly the certificates of a fresh sigma = 0.5 run
    assert cli("eval", model_dir, *EVAL, "--sigma", "0.5", "--out", d, "--no-resume").code == 0
    assert cli("eval", model_dir, *EVAL, "--sigma", "0.5", "--out", tmp_path / "fresh").code == 0
    new, fresh = _records(d), _records(tmp_path / "fresh")
    assert new == fresh and new[0]["settings"]["sigma"] == 0.5
    assert [r["p_lower"] for r in new[1:]] != [r["p_lower"] for r in old[1:]]
    res = json.loads((d / "results.json").read_text())
    assert res["by_inputs"]["clean_inputs"]["n"] == 24


def test_eval_resume_refuses_records_of_a_model_changed_in_place(tmp_path, cli, model_dir):
    m = _copy_model(model_dir, tmp_path / "m")
    d = tmp_path / "d"
    assert cli("eval", m, *EVAL, "--out", d).code == 0
    blob = torch.load(m / "model.pt", weights_only=True)
    blob["state"]["1.weight"] += 0.01  # same stamp and train.json, other weights
    torch.save(blob, m / "model.pt")
    line = one_error(cli("eval", m, *EVAL, "--out", d), 2)
    assert "differing: model" in line
    assert cli("eval", m, *EVAL, "--out", d, "--no-resume").code == 0


def test_certify_inputs_refuses_or_discards_records_of_other_settings(tmp_path):
    from trustlab.certify.config import SmoothingConfig
    from trustlab.certify.smoothing import certify_inputs

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x = np.random.default_rng(0).random((10, 1, 4, 4)).astype(np.float32)
    path = tmp_path / "rs.jsonl"
    a, b = SmoothingConfig(n=100, n0=10, sigma=0.25), SmoothingConfig(n=100, n0=10, sigma=0.5)
    certify_inputs(m, x[:5], a, seed=0, K=3, records=path)
    with pytest.raises(ConfigError, match="differing: .*sigma"):
        certify_inputs(m, x, b, seed=0, K=3, records=path)
    fresh = certify_inputs(m, x, b, seed=0, K=3)
    assert certify_inputs(m, x, b, seed=0, K=3, records=path, on_stale="discard") == fresh
    assert certify_inputs(m, x, b, seed=1, K=3, records=path, resume=False) != fresh
    path.write_text("".join(json.dumps(r) + "\n" for r in fresh))  # an unstamped (old) file
    with pytest.raises(ConfigError, match="carries no stamp"):
        certify_inputs(m, x, b, seed=0, K=3, records=path)


def test_train_discards_a_checkpoint_of_other_settings(tmp_path, digits_split):
    from trustlab.certify.config import TrainConfig
    from trustlab.certify.train import train
    from trustlab.models import mlp

    x, y = digits_split[0][:128], digits_split[1][:128]

    def fresh_model():
        torch.manual_seed(0)
        return mlp((1, 8, 8), (16,), 10)

    class Stop(Exception):
        pass

    calls = {"n": 0}

    def hook(model, xb, gen):
        calls["n"] += 1
        if calls["n"] == 5:  # in epoch 3 (2 steps per epoch): the epoch-2 checkpoint is on disk
            raise Stop
        return 0.0

    a = TrainConfig(procedure="standard", epochs=4, ckpt_every=1, lr=1e-3)
    m = fresh_model()
    with pytest.raises(Stop):
        train(m, x, y, a, seed=0, ckpt_dir=tmp_path, hook=hook)
    assert (tmp_path / "ckpt.pt").is_file()
    b = TrainConfig(procedure="standard", epochs=4, ckpt_every=1, lr=3e-3)
    resumed = fresh_model()
    s = train(resumed, x, y, b, seed=0, ckpt_dir=tmp_path)
    ref = fresh_model()
    train(ref, x, y, b, seed=0)
    assert s.resumed_from_epoch == 0
    for k, v in ref.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_train_model_never_reuses_a_model_of_other_settings(tmp_path):
    import dataclasses

    from trustlab.certify.config import AttackConfig, ExperimentConfig, ModelConfig, Track, TrainConfig
    from trustlab.certify.data import prepare_data
    from trustlab.certify.store import train_model

    track = Track(model=ModelConfig(hidden=(8,)), train=TrainConfig(procedure="standard", epochs=1), certifiers=())
    cfg = ExperimentConfig(tracks=(track,), attacks=(AttackConfig(kind="label-noise"),))
    data = prepare_data(cfg, 0)
    folder = tmp_path / "clean"
    m1, meta1 = train_model(folder, track, data.x_train, data.y_train, data, 0, "cpu")
    (folder / "smoothing").mkdir()
    (folder / "smoothing" / "clean.jsonl").write_text("{}\n")
    again, meta = train_model(folder, track, data.x_train, data.y_train, data, 0, "cpu")
    assert meta == meta1 and (folder / "smoothing").is_dir()  # same settings: reused
    two = dataclasses.replace(track, train=dataclasses.replace(track.train, epochs=2))
    m2, meta2 = train_model(folder, two, data.x_train, data.y_train, data, 0, "cpu")
    assert meta2["epochs"] == 2 and meta2["stamp"] != meta1["stamp"]
    assert not (folder / "smoothing").exists()  # certificates of the replaced model are gone
    assert not all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


# --- Ctrl-C --------------------------------------------------------------------------------------------------------
def _resume_args(res):
    hint = next(line for line in res.err.splitlines() if line.startswith("hint: resume with: "))
    args = shlex.split(hint.split("resume with: ", 1)[1])
    assert args[:2] == ["trustlab", "certify"] and "--no-resume" not in args
    return args[2:]


def test_ctrl_c_in_eval_resumes_with_the_printed_command_to_identical_records(tmp_path, cli, model_dir, monkeypatch):
    import trustlab.certify.smoothing as sm

    real = sm._certify_chunk
    calls = {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # chunk 1 of 3 is on disk
            raise KeyboardInterrupt
        return real(*a, **k)

    d = tmp_path / "d"
    monkeypatch.setattr(sm, "CHUNK_FORWARDS", 1)  # chunks of 8 inputs at this small N
    monkeypatch.setattr(sm, "_certify_chunk", dying)
    res = cli("eval", model_dir, *EVAL, "--sigma", "0.5", "--batch", "500", "--out", d, "--no-resume")
    assert res.code == 130 and "error: interrupted" in res.err, res
    monkeypatch.setattr(sm, "_certify_chunk", real)
    assert len(_records(d)) == 1 + 8
    events = [json.loads(s) for s in (d / "events.jsonl").read_text().splitlines()]
    assert any(e.get("status") == "interrupted" for e in events)
    args = _resume_args(res)
    assert cli(*args).code == 0
    assert cli("eval", model_dir, *EVAL, "--sigma", "0.5", "--out", tmp_path / "fresh").code == 0
    key = lambda r: r.get("idx", -1)  # noqa: E731
    assert sorted(_records(d), key=key) == sorted(_records(tmp_path / "fresh"), key=key)


def test_ctrl_c_in_train_resumes_with_the_printed_command_to_identical_weights(tmp_path, cli, monkeypatch):
    import trustlab.certify.train as tr

    real = tr._ce
    calls = {"n": 0}

    def dying(*a):
        calls["n"] += 1
        if calls["n"] == 23 * 5 + 3:  # digits: 23 steps per epoch; the epoch-5 checkpoint is on disk
            raise KeyboardInterrupt
        return real(*a)

    args = ["train", "--epochs", "6", "--hidden", "16", "--attack", "max-entropy"]
    monkeypatch.setattr(tr, "_ce", dying)
    res = cli(*args, "--out", tmp_path / "d")
    assert res.code == 130, res
    monkeypatch.setattr(tr, "_ce", real)
    assert (tmp_path / "d" / "model" / "ckpt.pt").is_file()
    resumed = cli(*_resume_args(res))
    assert resumed.code == 0, resumed
    assert cli(*args, "--out", tmp_path / "fresh").code == 0
    a = torch.load(tmp_path / "d" / "model" / "model.pt", weights_only=True)["state"]
    b = torch.load(tmp_path / "fresh" / "model" / "model.pt", weights_only=True)["state"]
    assert all(torch.equal(a[k], b[k]) for k in b)
    meta = json.loads((tmp_path / "d" / "model" / "train.json").read_text())
    assert meta["resumed_from_epoch"] == 5


# --- hints name flags that exist -------------------------------------------------------------------------------
def _options():
    import typer

    from trustlab.certify.cli import app

    group = typer.main.get_command(app)
    return {name: {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} for name, cmd in group.commands.items()}


FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def test_every_flag_named_in_certify_messages_exists():
    """Grep the certify sources: every --flag written in a message or hint is an option of some certify command."""
    import trustlab.certify as pkg

    known = set().union(*_options().values()) | {"--help"}
    root = Path(pkg.__file__).parent
    named = {}
    for f in root.rglob("*.py"):
        for flag in FLAG.findall(f.read_text()):
            named.setdefault(flag, f.name)
    unknown = {k: v for k, v in named.items() if k not in known}
    assert not unknown, unknown


def test_printed_hints_parse_as_options_of_their_command(tmp_path, cli, model_dir):
    opts = _options()
    cases = [
        ("eval", cli("eval", model_dir, "--n", "1e12", "--out", tmp_path / "a")),
        ("train", cli("train", "--hidden", "abc", "--out", tmp_path / "b")),
        ("eval", cli("eval", model_dir, "--n", "many", "--out", tmp_path / "c")),
        ("stats", cli("stats", "--alpha", "nan")),
    ]
    assert cli("eval", model_dir, *EVAL, "--out", tmp_path / "d").code == 0
    cases.append(("eval", cli("eval", model_dir, *EVAL, "--sigma", "0.5", "--out", tmp_path / "d")))
    for verb, res in cases:
        one_error(res, 2)
        hint = next(line for line in res.err.splitlines() if line.startswith("hint: "))
        for flag in FLAG.findall(hint):
            assert flag in opts[verb] | {"--help"}, (verb, flag, hint)
    assert {"--n", "--max-hours"} <= set(FLAG.findall(cases[0][1].err))
    assert "--no-resume" in cases[-1][1].err


@pytest.mark.parametrize("verb,pos,flags", [
    ("demo", (), {"out": "runs/d", "full": True, "threads": 1}),
    ("run", ("demo_digits",), {"out": "runs/r", "device": "cpu", "seeds": "0,1", "threads": 2}),
    ("sweep", ("sweep_digits",), {"grid": ["attack.rate=0,0.01", "smoothing.sigma=0.25"], "out": "o", "threads": 1}),
    ("defend", ("runs/r",), {"defence": "strip,fine-pruning", "out": "o", "threads": 1}),
    ("train", (), {"hidden": "16,16", "attack": "max-entropy", "trigger_size": 2, "out": "o b", "device": "auto"}),
    ("eval", ("m",), {"n0": 100, "n": 1000, "max_inputs": None, "predict": True, "max_hours": 1.0, "out": "o"}),
])
def test_resume_commands_parse_with_their_verb(verb, pos, flags):
    """The resume hint of every long verb is a command line that the verb's own parser accepts, flags included."""
    import typer

    from trustlab.certify.cli import app, resume_command

    args = shlex.split(resume_command(verb, *pos, **flags))
    assert args[:3] == ["trustlab", "certify", verb]
    cmd = typer.main.get_command(app).commands[verb]
    ctx = cmd.make_context(verb, args[3:])
    assert str(ctx.params["out"]) == flags["out"]
    if verb == "demo":
        assert ctx.params["quick"] is False
    if verb == "eval":
        assert ctx.params["predict"] is True and ctx.params["max_inputs"] is None
