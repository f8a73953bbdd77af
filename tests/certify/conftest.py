import os

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TRUSTLAB_QUIET", "1")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    from trustlab.runtime import configure_threads

    configure_threads(1)


@pytest.fixture(scope="session")
def digits_split():
    from trustlab.data import load, stratified_split

    d = load("digits")
    tr, te = stratified_split(d.y, 0.2, 0)
    return d.x[tr], d.y[tr], d.x[te], d.y[te]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


class Result:
    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err

    def __repr__(self):
        return f"exit {self.code}\nstdout: {self.out}\nstderr: {self.err}"


@pytest.fixture
def cli(capsys):
    """Run ``trustlab certify ARGS`` through the real entry point (``trustlab.cli.main.main``); return its exit code,
    stdout and stderr."""
    from trustlab.cli.main import main

    def run(*args):
        capsys.readouterr()
        try:
            main(["certify", *map(str, args)])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        cap = capsys.readouterr()
        return Result(code, cap.out, cap.err)

    return run


def one_error(res, code=2):
    """The documented failure shape: exit ``code``, one ``error:`` line, a ``hint:`` line, no traceback."""
    lines = res.err.strip().splitlines()
    assert res.code == code, res
    assert "Traceback" not in res.err and "Traceback" not in res.out, res
    assert sum(line.startswith("error: ") for line in lines) == 1, res
    assert any(line.startswith("hint: ") for line in lines), res
    return next(line for line in lines if line.startswith("error: "))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A small Gaussian-trained digits MLP (3 epochs, 16 units) written by `certify train`."""
    from typer.testing import CliRunner

    from trustlab.certify.cli import app

    out = tmp_path_factory.mktemp("certify-model") / "train"
    res = CliRunner().invoke(app, ["train", "--epochs", "3", "--hidden", "16", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out / "model"
