"""llama.cpp's OpenAI-compatible server (``python -m llama_cpp.server``) on a GGUF file, as a context manager.

    with LlamaServer(gguf, threads=1) as srv:
        client = OpenAI(base_url=srv.base_url, api_key="x")   # srv.model_id is what /v1/models lists

The server binds a free 127.0.0.1 port, is ready when ``/v1/models`` answers with a model (polled, never a fixed
sleep), writes its stdout/stderr to a log file, and is stopped on exit (terminate, then kill). A server that exits
before it is ready raises ``BackendError`` carrying the tail of that log.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Sequence

from trustlab.runtime.errors import BackendError, ConfigError, MissingDependencyError

LLAMACPP_VERSION = "0.3.36"
INSTALL = ("make llamacpp (or: CMAKE_ARGS=\"-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON "
           "-DGGML_F16C=ON -DGGML_BMI2=ON -DLLAVA_BUILD=OFF\" pip install --no-cache-dir "
           f"'llama-cpp-python[server]=={LLAMACPP_VERSION}')")
# the modules ``python -m llama_cpp.server`` imports beyond llama_cpp itself (the [server] extra)
SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")
LOG_TAIL = 2000


def require_llamacpp_server() -> None:
    """Raise MissingDependencyError (one line, with the install command) unless the server can be started."""
    missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(f"llama.cpp's server needs llama-cpp-python[server]; not importable: "
                                     f"{', '.join(missing)}", hint=INSTALL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model_id(url: str) -> str | None:
    """The first model id ``/v1/models`` lists, or None while the server is not (yet) answering sensibly."""
    try:
        with urllib.request.urlopen(url + "/v1/models", timeout=5) as resp:
            body = json.loads(resp.read(1 << 20))
        mid = body["data"][0]["id"]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    return mid if isinstance(mid, str) and mid else None


class LlamaServer:
    """A running ``llama_cpp.server`` on ``gguf_path``; ``base_url`` ends in ``/v1``; ``model_id`` is its model id.

    ``threads`` sets llama.cpp's generation and batch threads (and OMP_NUM_THREADS of the child); ``n_ctx`` the
    context size; ``chat_format`` overrides the chat template read from the GGUF (e.g. ``"chatml"``); ``alias`` the
    model id the server reports (default: the file path); ``extra_args`` are appended to the command line.
    ``log_path`` keeps the server log there (default: a temporary folder removed on exit). ``start_timeout`` only
    bounds a start-up that hangs; the server is used as soon as it answers.
    """

    def __init__(self, gguf_path: str | os.PathLike, *, threads: int = 1, n_ctx: int = 2048,
                 chat_format: str | None = None, alias: str | None = None, extra_args: Sequence[str] = (),
                 log_path: str | os.PathLike | None = None, start_timeout: float = 600.0):
        self.gguf_path = Path(gguf_path)
        if not self.gguf_path.is_file():
            raise ConfigError(f"GGUF file {str(self.gguf_path)!r} does not exist",
                              hint="pass the path of a .gguf model file")
        if threads < 1 or n_ctx < 1:
            raise ConfigError(f"threads={threads}, n_ctx={n_ctx}: both must be positive")
        self.threads, self.n_ctx, self.chat_format, self.alias = threads, n_ctx, chat_format, alias
        self.extra_args = tuple(str(a) for a in extra_args)
        self.start_timeout = start_timeout
        self._log_arg = Path(log_path) if log_path is not None else None
        self._tmpdir: str | None = None
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.port: int | None = None
        self.model_id: str | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("LlamaServer is not running; use it as a context manager")
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self, port: int) -> list[str]:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf_path), "--host", "127.0.0.1",
               "--port", str(port), "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads),
               "--n_ctx", str(self.n_ctx)]
        if self.chat_format:
            cmd += ["--chat_format", self.chat_format]
        if self.alias:
            cmd += ["--model_alias", self.alias]
        return cmd + list(self.extra_args)

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL:] if self.log_path else ""
        except OSError:
            return ""

    def start(self) -> "LlamaServer":
        require_llamacpp_server()
        if self._log_arg is None:
            self._tmpdir = tempfile.mkdtemp(prefix="trustlab-llamacpp-")
            self.log_path = Path(self._tmpdir) / "server.log"
        else:
            self.log_path = self._log_arg
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads))
        for attempt in range(3):  # a free port can be taken between our probe and the server's bind
            port = free_port()
            try:
                with open(self.log_path, "w") as fh:
                    self.proc = subprocess.Popen(self.command(port), stdout=fh, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL, env=env)
                self.port = port
                self._wait_ready()
                return self
            except BackendError:
                self.stop(remove_log=False)
                if attempt == 2 or "address already in use" not in self.log_tail().lower():
                    self._cleanup_tmp()
                    raise
            except BaseException:  # Ctrl-C while waiting, or the child could not be started: leave nothing behind
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _wait_ready(self) -> None:
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise BackendError(f"llama.cpp server on {self.gguf_path.name} exited with code "
                                   f"{self.proc.returncode} before it was ready; log tail: {self.log_tail()!r}",
                                   hint=f"read the log {self.log_path}" if self._tmpdir is None else None)
            mid = _model_id(url)
            if mid is not None:
                self.model_id = mid
                return
            if time.monotonic() > deadline:
                raise BackendError(f"llama.cpp server on {self.gguf_path.name} did not answer /v1/models within "
                                   f"{self.start_timeout:.0f} s; log tail: {self.log_tail()!r}")
            time.sleep(0.2)

    def stop(self, remove_log: bool = True) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.port = None
        if remove_log:
            self._cleanup_tmp()

    def _cleanup_tmp(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)  # only the folder this object created
            self._tmpdir = None

    def __enter__(self) -> "LlamaServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
