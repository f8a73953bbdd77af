import subprocess
import sys

import pytest
from typer.testing import CliRunner

from trustlab.certify.cli import app

runner = CliRunner()
COMMANDS = ["demo", "run", "sweep", "train", "eval", "defend", "report", "stats", "ls"]


@pytest.mark.parametrize("cmd", [None, *COMMANDS])
def test_help(cmd):
    res = runner.invoke(app, ["--help"] if cmd is None else [cmd, "--help"])
    assert res.exit_code == 0, res.output
    if cmd is None:
        assert "reconstructed" in res.output


def test_stats_prints_minima_and_radius():
    res = runner.invoke(app, ["stats", "--alpha", "0.001", "--n", "1000", "--sigma", "1"])
    assert res.exit_code == 0
    assert ": 10\n" in res.output and ": 11\n" in res.output and "2.46" in res.output


def _main(args):
    return subprocess.run([sys.executable, "-m", "trustlab.cli.main", "certify", *args], capture_output=True,
                          text=True, timeout=120)


def test_unknown_yaml_key_fails_with_exit_2(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("name: x\nseeds: [0]\nsmoothing_sigma: 0.5\n")
    res = _main(["run", str(cfg), "--out", str(tmp_path / "out")])
    assert res.returncode == 2
    assert "unknown key(s) 'smoothing_sigma'" in res.stderr.split("error: ", 1)[1] and "hint: valid keys:" in res.stderr


def test_main_maps_bad_alpha_to_exit_2():
    res = _main(["stats", "--alpha", "1.5"])
    assert res.returncode == 2 and "--alpha must lie in (0.0, 1.0)" in res.stderr


# --- eval options (issue 11 items 4 and 5) ------------------------------------------------------------------------
def test_eval_help_lists_the_user_model_and_launcher_options():
    res = runner.invoke(app, ["eval", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    for flag in ("--data", "--checkpoint", "--num-classes", "--normalize", "--autocast", "--seed", "--device",
                 "--num-samples", "--bound", "torchscript:PATH", "factory:pkg.mod:fn", "torchvision:NAME"):
        assert flag in res.output, flag


def test_eval_num_samples_is_n(model_dir, tmp_path):
    """--num-samples (the spelling torchrun leaves alone) is --n: same run folder, same records."""
    args = ["eval", str(model_dir), "--n0", "20", "--max-inputs", "4", "--inputs", "clean"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert runner.invoke(app, [*args, "--n", "60", "--out", str(a)]).exit_code == 0
    assert runner.invoke(app, [*args, "--num-samples", "60", "--out", str(b)]).exit_code == 0
    assert (a / "config_hash").read_text() == (b / "config_hash").read_text()
    assert (a / "smoothing" / "clean.jsonl").read_text() == (b / "smoothing" / "clean.jsonl").read_text()


def test_eval_resume_hint_repeats_the_user_model_flags():
    from trustlab.certify.cli import resume_command

    cmd = resume_command("eval", "factory:m:f", checkpoint="w.pt", normalize="0.5/0.5", autocast="bf16", seed=0,
                         data="digits", n=1000, out="runs/e")
    assert cmd == ("trustlab certify eval factory:m:f --checkpoint w.pt --normalize 0.5/0.5 --autocast bf16 --seed 0 "
                   "--data digits --n 1000 --out runs/e")


def test_eval_bound_option(model_dir, tmp_path):
    """--bound passes SmoothingConfig.bound through when that field exists, else it is refused naming it."""
    from tests.certify.conftest import one_error
    from trustlab.certify.cli import _has_bound_option

    args = ["certify", "eval", str(model_dir), "--n", "60", "--n0", "20", "--max-inputs", "4", "--inputs", "clean",
            "--bound", "randomized-cp", "--out", str(tmp_path / "e")]
    if _has_bound_option():
        res = runner.invoke(app, args[1:])
        assert res.exit_code == 0, res.output
        assert "bound: randomized-cp" in (tmp_path / "e" / "config.yaml").read_text()
    else:
        res = subprocess.run([sys.executable, "-m", "trustlab.cli.main", *args], capture_output=True, text=True,
                             timeout=120)

        class R:
            code, out, err = res.returncode, res.stdout, res.stderr
        assert "--bound" in one_error(R, 2)


def test_certify_cli_import_stays_light():
    res = subprocess.run([sys.executable, "-c", "import sys, trustlab.certify.cli; print('torch' in sys.modules)"],
                         capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "False", res.stderr


def test_eval_device_cuda_without_cuda_exits_3(model_dir, tmp_path):
    import torch

    from tests.certify.conftest import one_error

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    res = subprocess.run([sys.executable, "-m", "trustlab.cli.main", "certify", "eval", str(model_dir), "--n", "50",
                          "--device", "cuda", "--out", str(tmp_path / "e")], capture_output=True, text=True,
                         timeout=120)

    class R:
        code, out, err = res.returncode, res.stdout, res.stderr
    assert "--device cuda" in one_error(R, 3)


def test_ls_lists_every_certifier_attack_and_defence():
    from trustlab.certify.catalogue import ATTACKS, SUMMARIES
    from trustlab.certify.config import CERTIFIERS, DEFENCES

    res = runner.invoke(app, ["ls"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    for title in ("certifiers:", "attacks:", "defences:"):
        assert title in lines
    for name in (*CERTIFIERS, *ATTACKS, *DEFENCES):
        assert SUMMARIES[name]
        assert any(line.split()[:1] == [name] and SUMMARIES[name] in line for line in lines), name
