"""The llama.cpp server launcher: bad input errors in one line; a real server is ready, answers and is stopped."""

from __future__ import annotations

import importlib.util
import json
import urllib.request

import pytest

from trustlab.models.llm import llamacpp_server as ls
from trustlab.runtime.errors import BackendError, ConfigError, MissingDependencyError


def test_missing_gguf_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        ls.LlamaServer(tmp_path / "nope.gguf")


def test_missing_server_extra_names_install(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(ls.importlib.util, "find_spec", lambda m: None if m == "uvicorn" else real(m))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(MissingDependencyError) as err:
        ls.LlamaServer(gguf).start()
    assert "uvicorn" in str(err.value) and "make llamacpp" in err.value.hint


def test_command_line(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    cmd = ls.LlamaServer(gguf, threads=2, n_ctx=512, chat_format="chatml", alias="suspect",
                         extra_args=("--seed", 3)).command(1234)
    assert cmd[1:3] == ["-m", "llama_cpp.server"]
    for flag, value in [("--port", "1234"), ("--host", "127.0.0.1"), ("--n_threads", "2"), ("--n_ctx", "512"),
                        ("--chat_format", "chatml"), ("--model_alias", "suspect"), ("--seed", "3")]:
        assert cmd[cmd.index(flag) + 1] == value


@pytest.mark.llamacpp
def test_server_that_dies_reports_log_tail(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"this is not a gguf file")
    server = ls.LlamaServer(bad, log_path=tmp_path / "server.log")
    with pytest.raises(BackendError, match="exited with code") as err:
        server.start()
    assert "log tail" in str(err.value) and server.proc is None
    assert (tmp_path / "server.log").stat().st_size > 0  # a log the caller asked for is kept


@pytest.mark.llamacpp
def test_real_server_ready_and_stopped():
    from trustlab.models.causal_lm import smollm2_gguf_path

    with ls.LlamaServer(smollm2_gguf_path(), alias="suspect", n_ctx=256) as srv:
        assert srv.model_id == "suspect" and srv.base_url.startswith("http://127.0.0.1:")
        proc, url = srv.proc, srv.base_url
        req = urllib.request.Request(url + "/completions", data=json.dumps(
            {"model": "suspect", "prompt": "Hello", "max_tokens": 2, "temperature": 0}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as resp:
            assert json.loads(resp.read())["usage"]["completion_tokens"] <= 2
    assert proc.poll() is not None and srv.proc is None
    with pytest.raises(RuntimeError):
        srv.base_url
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/models", timeout=5)
