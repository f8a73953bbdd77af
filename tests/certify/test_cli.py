import subprocess
import sys

import pytest
from typer.testing import CliRunner

from trustlab.certify.cli import app

runner = CliRunner()
COMMANDS = ["demo", "run", "sweep", "train", "eval", "defend", "report", "stats"]


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
