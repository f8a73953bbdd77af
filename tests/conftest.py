"""Session-wide test set-up: one thread, no progress bars, no network, tiny fixtures built once."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ["TRUSTLAB_QUIET"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    from trustlab.runtime import configure_threads

    configure_threads(1)


@pytest.fixture(scope="session")
def tiny_lm():
    """The ~1M-parameter random Llama and its byte tokenizer, built once per session."""
    from trustlab.models import load_causal_lm

    return load_causal_lm("tiny-llama")


@pytest.fixture(scope="session")
def digits():
    from trustlab.data import load

    return load("digits")


@pytest.fixture
def cli(capsys):
    """Run ``trustlab ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from trustlab.cli.main import main

    def run(*args: str):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
