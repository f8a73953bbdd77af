"""An in-process OpenAI-compatible server on 127.0.0.1 for protocol tests, with scripted replies and faults.

    with FakeOpenAIServer({"rules": [{"match": "bomb", "reply": "I cannot help."}]}, latency_s=0.05) as srv:
        OpenAI(base_url=srv.base_url, api_key="x").completions.create(model="m", prompt="a bomb", max_tokens=5)
        srv.requests[-1]["body"]["prompt"], srv.max_in_flight

Serves ``GET /v1/models``, ``POST /v1/completions``, ``/v1/chat/completions`` (a rule's ``reasoning`` comes back as
``message.reasoning_content``) and ``/v1/moderations``. Replies follow ``backends.scripted`` rules: whitespace
tokens, ``stop`` (earliest, excluded), ``max_tokens`` (``finish_reason="length"``), ``n`` choices, ``seed`` (a
list reply picks ``reply[(seed + choice) % len]``), ``usage.completion_tokens``.

Faults: ``fail_first=N`` answers the first N POSTs with ``fail_status`` (default 500); ``faults=[429, 500, ...]``
answers successive POSTs with those statuses (0 = serve normally); ``hang_first=N`` delays the first N POSTs by
``hang_s`` (a client timeout); ``context_len`` answers 400 when prompt words + max_tokens exceed it;
``completions=False`` answers 404 on ``/v1/completions``; a rule with ``status`` answers that status.
Every request is recorded in ``requests`` (path, body, time); ``max_in_flight`` is the peak of concurrent POSTs.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional, Sequence

from trustlab.safety.backends.scripted import Script, apply_limits, count_words


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


class FakeOpenAIServer:
    def __init__(self, rules: Any = None, latency_s: float = 0.0, fail_first: int = 0, fail_status: int = 500,
                 context_len: Optional[int] = None, faults: Sequence[int] = (), hang_first: int = 0,
                 hang_s: float = 5.0, completions: bool = True, model: str = "fake-model", port: int = 0):
        self.script = Script.from_data(rules)
        self.latency_s = latency_s
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.context_len = context_len
        self.faults = list(faults)
        self.hang_first = hang_first
        self.hang_s = hang_s
        self.completions = completions
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._posts = 0
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", port), self._handler())
        self._thread: Optional[threading.Thread] = None

    # --- lifecycle ----------------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "FakeOpenAIServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="fake-openai")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def posts(self, path_suffix: str = "") -> list[dict[str, Any]]:
        """Recorded POST bodies whose path ends with ``path_suffix``."""
        return [r["body"] for r in self.requests if r["method"] == "POST" and r["path"].endswith(path_suffix)]

    # --- request handling ---------------------------------------------------------------------------------------
    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                with server._lock:
                    server.requests.append({"method": "GET", "path": self.path, "body": None, "t": time.time()})
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model",
                                                                 "owned_by": "trustlab"}]})
                else:
                    self._send(404, _error("not found", 404))

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    self._send(400, _error("invalid JSON body", 400))
                    return
                with server._lock:
                    server.requests.append({"method": "POST", "path": self.path, "body": body, "t": time.time()})
                    index = server._posts
                    server._posts += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    status, obj = server._answer(self.path, body, index)
                finally:
                    with server._lock:
                        server.in_flight -= 1
                self._send(status, obj)

        return Handler

    def _answer(self, path: str, body: dict, index: int) -> tuple[int, Any]:
        if self.latency_s:
            time.sleep(self.latency_s)
        if index < self.hang_first:
            time.sleep(self.hang_s)
        if index < self.fail_first:
            return self.fail_status, _error(f"injected failure {index + 1}/{self.fail_first}", self.fail_status)
        if index < len(self.faults) and self.faults[index]:
            return self.faults[index], _error(f"injected status {self.faults[index]}", self.faults[index])
        route = path.split("?")[0].rstrip("/")
        if route.endswith("/chat/completions"):
            return self._chat(body)
        if route.endswith("/completions"):
            if not self.completions:
                return 404, _error("this server has no /v1/completions", 404)
            return self._completions(body)
        if route.endswith("/moderations"):
            return self._moderations(body)
        return 404, _error(f"unknown route {route}", 404)

    def _limits(self, body: dict) -> tuple[list[str], int, int, int]:
        stop = body.get("stop") or []
        stop = [stop] if isinstance(stop, str) else list(stop)
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        return stop, max_tokens, int(body.get("n") or 1), int(body.get("seed") or 0)

    def _too_long(self, prompt_words: int, max_tokens: int) -> Optional[tuple[int, Any]]:
        if self.context_len is not None and prompt_words + max_tokens > self.context_len:
            return 400, _error(f"This model's maximum context length is {self.context_len} tokens; the request "
                               f"needs {prompt_words + max_tokens}", 400)
        return None

    def _completions(self, body: dict) -> tuple[int, Any]:
        prompts = body.get("prompt", "")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        stop, max_tokens, n, seed = self._limits(body)
        choices, used, prompt_words = [], 0, 0
        for p in prompts:
            prompt_words += count_words(p)
            bad = self._too_long(count_words(p), max_tokens)
            if bad:
                return bad
            for c in range(n):
                reply, rule = self.script.reply(p, "completions", seed + c)
                if rule is not None and rule.status is not None:
                    return rule.status, _error("scripted status", rule.status)
                text, tokens, finish = apply_limits(reply, stop, max_tokens)
                used += tokens
                choices.append({"index": len(choices), "text": text, "finish_reason": finish, "logprobs": None})
        return 200, {"id": f"cmpl-{len(self.requests)}", "object": "text_completion", "created": int(time.time()),
                     "model": body.get("model", self.model), "choices": choices,
                     "usage": {"prompt_tokens": prompt_words, "completion_tokens": used,
                               "total_tokens": prompt_words + used}}

    def _chat(self, body: dict) -> tuple[int, Any]:
        messages = body.get("messages") or []
        text = "\n".join(str(m.get("content", "")) for m in messages)
        stop, max_tokens, n, seed = self._limits(body)
        bad = self._too_long(count_words(text), max_tokens)
        if bad:
            return bad
        choices, used = [], 0
        for c in range(n):
            reply, rule = self.script.reply(text, "chat", seed + c)
            if rule is not None and rule.status is not None:
                return rule.status, _error("scripted status", rule.status)
            content, tokens, finish = apply_limits(reply, stop, max_tokens)
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if rule is not None and rule.reasoning is not None:
                message["reasoning_content"] = rule.reasoning
                tokens += count_words(rule.reasoning)
            used += tokens
            choices.append({"index": c, "message": message, "finish_reason": finish, "logprobs": None})
        return 200, {"id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion",
                     "created": int(time.time()), "model": body.get("model", self.model), "choices": choices,
                     "usage": {"prompt_tokens": count_words(text), "completion_tokens": used,
                               "total_tokens": count_words(text) + used}}

    def _moderations(self, body: dict) -> tuple[int, Any]:
        inputs = body.get("input", "")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        results = []
        for text in inputs:
            rule = self.script.rule_for(str(text), "moderations")
            flagged = bool(rule and rule.flagged)
            cats = set(rule.categories) if rule else set()
            names = sorted(cats | {"harassment", "violence", "self-harm", "illicit"})
            results.append({"flagged": flagged, "categories": {c: flagged and c in cats for c in names},
                            "category_scores": {c: (0.9 if flagged and c in cats else 0.01) for c in names}})
        return 200, {"id": f"modr-{len(self.requests)}", "model": body.get("model", "omni-moderation-latest"),
                     "results": results}


def _error(message: str, status: int) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error" if status < 500 else "server_error",
                      "code": status}}


def serve(script_path: Optional[str], host: str = "127.0.0.1", port: int = 0, latency_s: float = 0.0):
    """Run a FakeOpenAIServer until Ctrl-C (``trustlab safety fake-server``); loopback only."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        from trustlab.runtime.errors import ConfigError

        raise ConfigError(f"the fake server binds loopback only, got host {host!r}", hint="use --host 127.0.0.1")
    script = Script.load(script_path) if script_path else Script()
    return FakeOpenAIServer(script, latency_s=latency_s, port=port)
