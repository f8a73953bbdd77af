"""The fingerprint CLI: YAML gives the API's results, the secret stays out of run folders, spec §8 bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest
import torch

from trustlab.cli.main import main
from trustlab.fingerprint.config import EmbedConfig, GenerateConfig
from trustlab.fingerprint.fpset import FingerprintSet
from trustlab.fingerprint.keys import generate_fingerprints
from trustlab.fingerprint.secret import load_secret
from trustlab.fingerprint.train import embed
from trustlab.runtime.config import load_config


def run_cli(capsys, *args):
    """(exit code, stdout, stderr) of ``trustlab fingerprint ARGS`` through the real entry point."""
    code = 0
    try:
        main(["fingerprint", *map(str, args)])
    except SystemExit as exc:
        code = exc.code or 0
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def one_line_error(err: str, *needles: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith(("Loading", "Writing"))]
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_help_does_not_import_torch():
    code = "import sys, trustlab.fingerprint.cli; assert 'torch' not in sys.modules, 'torch imported'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).returncode == 0


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, fp_tiny_path):
    """generate + embed through the CLI from YAML files (save_every 1: checkpoints are written too)."""
    root = tmp_path_factory.mktemp("cli")
    (root / "gen.yaml").write_text("model: fp-tiny\nnum_fingerprints: 8\nseed: 3\n")
    (root / "embed.yaml").write_text("model: fp-tiny\nlr: 3.0e-3\nlambda_wa: 0.15\nmax_epochs: 12\nsave_every: 1\n"
                                     "seed: 1\n")
    args = [["generate", "--config", root / "gen.yaml", "--secret", root / "owner.secret", "--out",
             root / "fp.json", "--run-dir", root / "runs" / "gen"],
            ["embed", "--config", root / "embed.yaml", "--fingerprints", root / "fp.json", "--out",
             root / "runs" / "emb"]]
    for a in args:
        try:
            main(["fingerprint", *map(str, a)])
        except SystemExit as exc:
            assert not exc.code, exc.code
    return root


def test_cli_yaml_gives_the_api_results(cli_run, fp_tiny_path):
    from safetensors.torch import load_file

    from trustlab.models import load_causal_lm

    root = cli_run
    secret = load_secret(root / "owner.secret")
    cli_fps = FingerprintSet.load(root / "fp.json")
    lm = load_causal_lm(str(fp_tiny_path))
    api_fps = generate_fingerprints(load_config(GenerateConfig, root / "gen.yaml"), secret, lm=lm)
    assert [(f.key_ids, f.response_ids) for f in api_fps.fingerprints] == \
        [(f.key_ids, f.response_ids) for f in cli_fps.fingerprints]
    assert api_fps.secret_commitment == cli_fps.secret_commitment
    model, tok = load_causal_lm(str(fp_tiny_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = embed(model, tok, cli_fps, load_config(EmbedConfig, root / "embed.yaml"))
    saved = load_file(str(root / "runs" / "emb" / "model" / "model.safetensors"))
    mine = res.model.state_dict()
    assert saved.keys() <= mine.keys() and all(torch.equal(saved[k], mine[k]) for k in saved)
    results = json.loads((root / "runs" / "emb" / "results.json").read_text())
    assert results["metrics"]["accuracy"] == res.accuracy and results["lab"] == "fingerprint"


def test_secret_bytes_appear_in_no_file_of_a_run_directory(cli_run):
    root = cli_run
    secret = load_secret(root / "owner.secret")
    needles = [secret, secret.hex().encode(), secret.hex().upper().encode()]
    files = [p for p in (root / "runs").rglob("*") if p.is_file()] + [root / "fp.json"]
    assert any(p.suffix == ".pt" for p in files) and any(p.name == "model.safetensors" for p in files)
    for p in files:
        blob = p.read_bytes()
        assert not any(n in blob for n in needles), p


def test_existing_output_same_hash_skips_other_hash_errors(cli_run, capsys):
    root = cli_run
    gen = ["generate", "--config", root / "gen.yaml", "--secret", root / "owner.secret", "--out", root / "fp.json"]
    code, out, _ = run_cli(capsys, *gen)
    assert code == 0 and "skipping" in out
    code, _, err = run_cli(capsys, *gen, "-n", "9")
    assert code == 2
    one_line_error(err, "exists and was made with another config or secret")
    assert "--overwrite" in err
    emb = ["embed", "--config", root / "embed.yaml", "--fingerprints", root / "fp.json", "--out", root / "runs" / "emb"]
    code, out, _ = run_cli(capsys, *emb)
    assert code == 0 and "skipping" in out
    code, _, err = run_cli(capsys, *emb, "--max-epochs", "13")
    assert code == 2
    one_line_error(err, "another config", "max_epochs")


def test_inspect_never_prints_the_secret_and_checks_it(cli_run, capsys, tmp_path):
    root = cli_run
    secret = load_secret(root / "owner.secret")
    code, out, _ = run_cli(capsys, "inspect", root / "fp.json", "--secret", root / "owner.secret", "--json")
    info = json.loads(out)
    assert code == 0 and info["secret_matches_commitment"] and secret.hex() not in out
    assert "key_text" not in out and info["num_fingerprints"] == 8
    code, out, _ = run_cli(capsys, "inspect", root / "runs" / "emb" / "model", "--json")
    assert code == 0 and json.loads(out)["set_digest"] == info["set_digest"]
    (tmp_path / "other.secret").write_text("ab" * 32)
    code, _, err = run_cli(capsys, "inspect", root / "fp.json", "--secret", tmp_path / "other.secret")
    assert code == 2
    one_line_error(err, "does not match the commitment")


@pytest.mark.parametrize("args, needles", [
    (["embed", "--lambda-wa", "1"], ["lambda_wa must lie in [0.0, 1.0)", "got 1.0"]),
    (["embed", "--lambda-wa", "-0.1"], ["lambda_wa"]),
    (["embed", "--beta-dm", "1"], ["beta_dm must lie in [0.0, 1.0)"]),
    (["generate", "--secret", "{tmp}/s", "--nucleus-t", "1"], ["nucleus_t must lie in (0.0, 1.0)"]),
    (["generate", "--secret", "{tmp}/s", "--nucleus-t", "0"], ["nucleus_t"]),
    (["generate", "--secret", "{tmp}/s", "--nucleus-k", "0"], ["nucleus_k must lie in [1, inf)"]),
    (["generate", "--secret", "{tmp}/s", "--strategy", "english_random", "--response-length", "2"],
     ["english_random takes response_length 1"]),
    (["generate", "--secret", "{tmp}/s", "--strategy", "magic"], ["strategy must be one of"]),
    (["embed", "--config", "{tmp}/unknown.yaml"], ["unknown key(s) 'lamda'"]),
    (["embed", "--config", "{tmp}/yaml11.yaml"], ["lr must be"]),
    (["embed", "--model", "fp-tiny", "--fingerprints", "{tmp}/missing.json", "--out", "{tmp}/o"], ["missing.json", "does not exist"]),
    (["embed", "--model", "fp-tiny", "--fingerprints", "{tmp}/tampered.json", "--out", "{tmp}/o"], ["'set_digest'"]),
    (["embed", "--model", "fp-tiny", "--out", "{tmp}/o"], ["embed needs the fingerprint file"]),
    (["generate", "--secret", "{tmp}/bad.secret", "--model", "fp-tiny", "--out", "{tmp}/f.json"], ["64 hex digits"]),
    (["inspect", "{tmp}/missing.json", "--secret", "{tmp}/nosecret"], ["does not exist"]),
])
def test_bad_inputs_one_line_error_hint_exit_2(capsys, tmp_path, cli_run, args, needles):
    (tmp_path / "unknown.yaml").write_text("model: fp-tiny\nlamda: 0.5\n")
    (tmp_path / "yaml11.yaml").write_text("lr: 1e-3\n")
    (tmp_path / "bad.secret").write_text("not hex")
    d = json.loads((cli_run / "fp.json").read_text())
    d["fingerprints"][0]["response_ids"] = [d["fingerprints"][0]["response_ids"][0] + 1]
    (tmp_path / "tampered.json").write_text(json.dumps(d))
    code, _, err = run_cli(capsys, *[a.replace("{tmp}", str(tmp_path)) for a in args])
    assert code == 2, err
    one_line_error(err, *needles)
    if "unknown" in args[-1]:
        assert "hint: valid keys: model, fingerprints, out_dir, lr, lambda_wa" in err
    if "yaml11" in args[-1]:
        assert "YAML 1.1" in err


def test_shipped_configs_load():
    from importlib.resources import files

    import yaml

    from trustlab.fingerprint.config import GenerateConfig

    root = files("trustlab") / "configs" / "fingerprint"
    names = sorted(p.name for p in root.iterdir() if p.name.endswith(".yaml"))
    assert {"generate_smollm2.yaml", "embed_smollm2.yaml", "embed_tiny.yaml", "embed_lora.yaml"} <= set(names)
    for name in names:
        cls = GenerateConfig if name.startswith("generate") else EmbedConfig
        load_config(cls, root / name)
    for name in ("ddp.yaml", "fsdp.yaml", "zero2.yaml"):
        d = yaml.safe_load((root / "accelerate" / name).read_text())
        assert d["distributed_type"] in ("MULTI_GPU", "FSDP", "DEEPSPEED") and d["num_processes"] == 8


def test_ctrl_c_in_embed_resumes_by_default_with_the_printed_command(cli_run, capsys, monkeypatch):
    """Issue 10, one resume default: embed resumes like every other verb; the Ctrl-C hint is the same command line,
    and pasting it continues from the checkpoint to the weights of the uninterrupted run."""
    import shlex

    from safetensors.torch import load_file

    from trustlab.fingerprint import train as train_mod

    root = cli_run
    args = ["embed", "--config", root / "embed.yaml", "--fingerprints", root / "fp.json", "--out", root / "runs" / "cc"]
    save = train_mod._save_checkpoint

    def save_then_ctrl_c(ckpt, stamp, acc, model, opt, epoch, *rest):
        save(ckpt, stamp, acc, model, opt, epoch, *rest)
        if epoch == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "_save_checkpoint", save_then_ctrl_c)
    code, _, err = run_cli(capsys, *args)
    assert code == 130 and "Traceback" not in err
    hint = next(ln for ln in err.splitlines() if ln.startswith("hint: resume with: "))
    pasted = shlex.split(hint.removeprefix("hint: resume with: "))
    assert pasted[:2] == ["trustlab", "fingerprint"] and "--resume" not in pasted  # resuming is the default
    seen = []
    monkeypatch.setattr(train_mod, "_save_checkpoint", lambda *a: (seen.append(a[5]), save(*a)))
    code, _, err = run_cli(capsys, *pasted[2:])
    assert code == 0, err
    assert seen[0] == 4  # it continued from the epoch-3 checkpoint
    resumed = json.loads((root / "runs" / "cc" / "embed_result.json").read_text())
    full = json.loads((root / "runs" / "emb" / "embed_result.json").read_text())
    assert (resumed["epochs"], resumed["fp_loss"]) == (full["epochs"], full["fp_loss"])
    a, b = (load_file(next((root / "runs" / d / "model").glob("*.safetensors"))) for d in ("emb", "cc"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    code, _, _ = run_cli(capsys, *args, "--no-resume", "--max-epochs", "2")  # another config: starts afresh
    assert code == 0 and json.loads((root / "runs" / "cc" / "embed_result.json").read_text())["epochs"] == 2


def test_ls_lists_every_scheme_and_experiment(capsys):
    from trustlab.fingerprint import STRATEGIES
    from trustlab.fingerprint.config import EXPERIMENTS as CONFIG_EXPERIMENTS
    from trustlab.fingerprint.robustness import EXPERIMENTS
    from trustlab.fingerprint.strategies import SCHEMES

    code, out, _ = run_cli(capsys, "ls")
    assert code == 0, out
    lines = out.splitlines()
    split = lines.index("experiments:")
    assert lines[0] == "schemes:" and [ln.split()[0] for ln in lines[1:split]] == list(STRATEGIES)
    # every name a RobustnessConfig accepts has its experiment, and nothing else is listed
    assert [ln.split()[0] for ln in lines[split + 1:]] == list(CONFIG_EXPERIMENTS)
    for name, summary in [*SCHEMES.listing(), *EXPERIMENTS.listing()]:
        assert summary and any(summary in ln for ln in lines), name
