"""A real OpenAI-compatible server: `transformers serve` (the `serving` extra) on a free loopback port.

The fingerprinted fp-tiny saved in Hugging Face format is served from its folder; `verify --endpoint` must reach
OWNED. The base model served the same way must be judged not owned. transformers serve takes one prompt per
/v1/completions request (a list is refused with 400), so this also exercises the one-key-per-request fallback.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.net, pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("fastapi") is None or
                                 importlib.util.find_spec("uvicorn") is None,
                                 reason='needs the serving extra: pip install "transformers[serving]"')]

READY_DEADLINE_S = 600  # a wait for readiness, not a timing assumption: we poll /health while the server lives


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def transformers_serve(folder: Path, log: Path):
    """Start `transformers serve FOLDER` on 127.0.0.1, wait until /health answers, stop it afterwards."""
    exe = Path(sys.executable).parent / "transformers"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    for attempt in range(3):  # a port taken between probe and bind: try another
        port = _free_port()
        with open(log, "ab") as fh:
            proc = subprocess.Popen([str(exe), "serve", str(folder), "--host", "127.0.0.1", "--port", str(port)],
                                    stdout=fh, stderr=subprocess.STDOUT, env=env)
        start = time.monotonic()
        while proc.poll() is None and time.monotonic() - start < READY_DEADLINE_S:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        if proc.poll() is None:
            break
    else:
        raise RuntimeError(f"transformers serve did not start: {log.read_text()[-2000:]}")
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def served_run(tiny_embedded, fp_tiny_path, tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    fp_file = d / "fingerprints.json"
    tiny_embedded["fps"].save(fp_file)
    return {"fp_file": fp_file, "model": tiny_embedded["model_dir"], "base": Path(fp_tiny_path), "dir": d}


def test_verify_endpoint_owned_then_base_not_owned(served_run, cli):
    d = served_run["dir"]
    for name, folder, want in (("fingerprinted", served_run["model"], "OWNED"),
                               ("base", served_run["base"], "not owned")):
        with transformers_serve(folder, d / f"{name}.log") as url:
            code, out, err = cli("fingerprint", "verify", "--fingerprints", str(served_run["fp_file"]),
                                 "--endpoint", url, "--served-model", str(folder), "--out", str(d / name))
            assert code == 0, err
            res = json.loads((d / name / "verify_result.json").read_text())
            assert res["decision"] == want, out
            assert out.startswith(want + " ") and "caveat:" in out
            assert res["answered"] == res["queried"] == len(res["fingerprints"]) == 32
            if want == "OWNED":
                assert res["m"] >= 0.9 * res["M"]
            else:
                assert res["m"] == 0  # perinucleus responses are never the base model's greedy choice
