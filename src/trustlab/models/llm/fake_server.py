"""The one scripted OpenAI-compatible server on 127.0.0.1, for protocol tests and fault injection in every lab.

    with FakeServer({"rules": [{"match": "bomb", "reply": "I cannot help."}]}, latency_s=0.05) as srv:
        OpenAIClient(srv.base_url).completions({"model": "m", "prompt": "a bomb", "max_tokens": 5})
        srv.posts("/completions")[-1]["prompt"], srv.max_in_flight

The socket listens when the constructor returns (connections queue until ``start``), so a started server is ready.
Serves ``GET /v1/models``, ``POST /v1/completions`` (a list of prompts too), ``/v1/chat/completions`` (a rule's
``reasoning`` comes back as ``message.reasoning_content``) and ``/v1/moderations``. Replies follow ``script``
rules (whitespace tokens, ``stop``, ``max_tokens``, ``n``, ``seed``, ``usage``), or ``answer(prompt)`` verbatim.

Knobs: ``latency_s``; ``hang_first=N`` delays the first N POSTs by ``hang_s``; ``fail_first`` (an int N: the first
N POSTs answer ``fail_status``; a list: those statuses in turn) and ``faults`` (statuses, 0 = serve normally);
``fail_after=N`` fails every POST after N answered ones; ``retry_after_ms`` / ``retry_after_s`` headers on 429;
``api_key`` (401 otherwise); ``check_model`` (404 for a model not in ``models``); ``context_len`` (400 when prompt
words + max_tokens exceed it); ``completions=False`` (404 there); ``refuse_lists`` (400 for a list of prompts, or
the status it holds: 500 as llama.cpp's server); ``drop_one`` (one choice fewer); a rule with ``status``;
``fail_prompt(prompt) -> status`` (0 = serve) fails the requests that carry chosen prompts (a server that errors on
some keys every time it is asked).
Hostile ``mode`` (every POST, and GET too with ``hostile_get``): ``drip`` (a valid reply at ``drip_bps`` bytes/s),
``hang`` (never answers), ``close`` (drops the connection), ``oversized`` (a ``oversize_bytes`` text),
``non_json``, ``non_utf8``, ``wrong_type`` (``content``/``text`` 12345), ``bad_usage``
(``completion_tokens: "abc"``), ``negative_usage``, ``ignore_max_tokens``, ``empty_choices``.
``requests`` records every request (method, path, body, time); ``max_in_flight`` is the peak of concurrent POSTs.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, Sequence, Union

from .script import Script, apply_limits, count_words

MODES = ("drip", "hang", "close", "oversized", "non_json", "non_utf8", "wrong_type", "bad_usage", "negative_usage",
         "ignore_max_tokens", "empty_choices")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def handle_error(self, request, client_address):  # a client that hung up mid-reply is expected here
        pass


def _error(message: str, status: int) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error" if status < 500 else "server_error",
                      "code": status}}


class FakeServer:
    def __init__(self, rules: Any = None, *, answer: Optional[Callable[[str], str]] = None,
                 models: Sequence[str] = ("fake-model",), check_model: bool = False, api_key: Optional[str] = None,
                 latency_s: float = 0.0, hang_first: int = 0, hang_s: float = 5.0,
                 fail_first: Union[int, Sequence[int]] = 0, fail_status: int = 500, faults: Sequence[int] = (),
                 fail_after: Optional[int] = None, retry_after_ms: Optional[int] = None,
                 retry_after_s: Optional[float] = None, context_len: Optional[int] = None, completions: bool = True,
                 refuse_lists: bool | int = False, drop_one: bool = False, mode: Optional[str] = None,
                 hostile_get: bool = False, drip_bps: float = 1.0, oversize_bytes: int = 8 * 1024 * 1024,
                 port: int = 0, fail_prompt: Optional[Callable[[str], int]] = None):
        if mode is not None and mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
        self.script = Script.from_data(rules)
        self.answer = answer
        self.models, self.check_model, self.api_key = tuple(models), check_model, api_key
        self.model = self.models[0] if self.models else "fake-model"
        self.latency_s, self.hang_first, self.hang_s = latency_s, hang_first, hang_s
        if isinstance(fail_first, int):
            self.statuses = [fail_status] * fail_first
        else:
            self.statuses = list(fail_first)
        self.faults = list(faults)
        self.fail_after, self.fail_status = fail_after, fail_status
        self.retry_after_ms, self.retry_after_s = retry_after_ms, retry_after_s
        self.context_len, self.completions = context_len, completions
        self.refuse_lists, self.drop_one = refuse_lists, drop_one
        self.fail_prompt = fail_prompt
        self.mode, self.hostile_get, self.drip_bps, self.oversize_bytes = mode, hostile_get, drip_bps, oversize_bytes
        self.log: list[dict[str, Any]] = []
        self.in_flight = self.max_in_flight = self.answered = 0
        self._posts = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd = _Server(("127.0.0.1", port), self._handler())  # listening from here on
        self._thread: Optional[threading.Thread] = None

    # --- lifecycle ----------------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    url = base_url

    def start(self) -> "FakeServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="fake-openai")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> "FakeServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every request received: ``{method, path, body, t}``."""
        return self.log

    def posts(self, path_suffix: str = "") -> list[dict[str, Any]]:
        """Recorded POST bodies whose path ends with ``path_suffix``."""
        return [r["body"] for r in self.log if r["method"] == "POST" and r["path"].endswith(path_suffix)]

    # --- HTTP ---------------------------------------------------------------------------------------------------
    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def send_raw(self, status: int, data: bytes, headers: Optional[dict] = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def do_GET(self):
                with server._lock:
                    server.log.append({"method": "GET", "path": self.path, "body": None, "t": time.time()})
                if server.hostile_get and server.mode in ("hang", "close", "drip"):
                    server._hostile(self, server.mode, server._models_obj())
                elif self.path.rstrip("/").endswith("/models"):
                    self.send_raw(200, json.dumps(server._models_obj()).encode())
                else:
                    self.send_raw(404, json.dumps(_error("not found", 404)).encode())

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    self.send_raw(400, json.dumps(_error("invalid JSON body", 400)).encode())
                    return
                with server._lock:
                    server.log.append({"method": "POST", "path": self.path, "body": body, "t": time.time(),
                                            "auth": self.headers.get("Authorization")})
                    index = server._posts
                    server._posts += 1
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    status, obj, headers = server._answer(self.path, body, index, self.headers.get("Authorization"))
                finally:
                    with server._lock:
                        server.in_flight -= 1
                if status == 200 and server.mode in ("hang", "close", "drip"):
                    server._hostile(self, server.mode, obj)
                else:
                    self.send_raw(status, obj if isinstance(obj, bytes) else json.dumps(obj).encode(), headers)

        return Handler

    def _hostile(self, handler, mode: str, obj: Any) -> None:
        """Answer ``obj`` the hostile way: never, by dropping the connection, or a byte at a time."""
        handler.close_connection = True
        if mode == "hang":
            self._closing.wait()
            return
        if mode == "close":
            return  # the handler returns without a status line; the connection closes
        data = json.dumps(obj).encode()
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.flush()
            for i in range(len(data)):
                if self._closing.wait(1.0 / self.drip_bps):
                    return
                handler.wfile.write(data[i:i + 1])
                handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            return

    def _models_obj(self) -> dict:
        return {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "trustlab"} for m in self.models]}

    def _answer(self, path: str, body: dict, index: int, auth: Optional[str]) -> tuple[int, Any, dict]:
        if self.latency_s:
            time.sleep(self.latency_s)
        if index < self.hang_first:
            self._closing.wait(self.hang_s)
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            return 401, _error("Incorrect API key provided", 401), {}
        route = path.split("?")[0].rstrip("/")
        if self.check_model and not route.endswith("/moderations") and body.get("model") not in self.models:
            return 404, _error(f"The model {body.get('model')!r} does not exist", 404), {}
        status = 0
        with self._lock:
            if index < len(self.statuses):
                status = self.statuses[index]
            elif index < len(self.faults):
                status = self.faults[index]
            elif self.fail_after is not None and self.answered >= self.fail_after:
                status = self.fail_status
        if status:
            headers = {}
            if status == 429 and self.retry_after_ms is not None:
                headers["retry-after-ms"] = str(self.retry_after_ms)
            if status == 429 and self.retry_after_s is not None:
                headers["retry-after"] = str(self.retry_after_s)
            return status, _error(f"injected status {status} (request {index + 1})", status), headers
        if self.fail_prompt is not None:
            status = self._prompt_status(body)
            if status:
                return status, _error(f"injected status {status} for this prompt", status), {}
        if route.endswith("/chat/completions"):
            status, obj = self._chat(body)
        elif route.endswith("/completions"):
            if not self.completions:
                return 404, _error("this server has no /v1/completions", 404), {}
            status, obj = self._completions(body)
        elif route.endswith("/moderations"):
            status, obj = self._moderations(body)
        else:
            return 404, _error(f"unknown route {route}", 404), {}
        if status == 200:
            with self._lock:
                self.answered += 1
            obj = self._corrupt(obj, body)
        return status, obj, {}

    # --- replies ------------------------------------------------------------------------------------------------
    def _prompt_status(self, body: dict) -> int:
        """The first non-zero ``fail_prompt`` status among the request's prompts (or its last chat message)."""
        if "messages" in body:
            msgs = body.get("messages") or []
            prompts = [str(msgs[-1].get("content", ""))] if msgs else []
        else:
            prompts = body.get("prompt", "")
            prompts = [prompts] if isinstance(prompts, str) else [str(x) for x in prompts]
        return next((st for st in (int(self.fail_prompt(p) or 0) for p in prompts) if st), 0)

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

    def _generate(self, prompt: str, kind: str, seed: int, stop, max_tokens: int):
        """(text, tokens, finish, rule) for one choice; ``answer`` wins over the script and is sent verbatim."""
        if self.answer is not None:
            text = self.answer(prompt)
            return text, None, "length", None
        reply, rule = self.script.reply(prompt, kind, seed)
        text, tokens, finish = apply_limits(reply, stop, max_tokens)
        return text, tokens, finish, rule

    def _completions(self, body: dict) -> tuple[int, Any]:
        prompts = body.get("prompt", "")
        if isinstance(prompts, list) and self.refuse_lists:
            status = 400 if self.refuse_lists is True else int(self.refuse_lists)
            return status, _error("prompt must be a string", status)
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        stop, max_tokens, n, seed = self._limits(body)
        choices, used, prompt_words = [], 0, 0
        for p in prompts:
            prompt_words += count_words(p)
            bad = self._too_long(count_words(p), max_tokens)
            if bad:
                return bad
            for c in range(n):
                text, tokens, finish, rule = self._generate(p, "completions", seed + c, stop, max_tokens)
                if rule is not None and rule.status is not None:
                    return rule.status, _error("scripted status", rule.status)
                used += tokens or 0
                choices.append({"index": len(choices), "text": text, "finish_reason": finish, "logprobs": None})
        if self.drop_one:
            choices = choices[:-1]
        out = {"id": f"cmpl-{len(self.log)}", "object": "text_completion", "created": int(time.time()),
               "model": body.get("model", self.model), "choices": choices}
        if self.answer is None:
            out["usage"] = {"prompt_tokens": prompt_words, "completion_tokens": used,
                            "total_tokens": prompt_words + used}
        return 200, out

    def _chat(self, body: dict) -> tuple[int, Any]:
        messages = body.get("messages") or []
        text = "\n".join(str(m.get("content", "")) for m in messages)
        last = str(messages[-1].get("content", "")) if messages else ""
        stop, max_tokens, n, seed = self._limits(body)
        bad = self._too_long(count_words(text), max_tokens)
        if bad:
            return bad
        choices, used = [], 0
        for c in range(n):
            content, tokens, finish, rule = self._generate(last if self.answer else text, "chat", seed + c, stop,
                                                           max_tokens)
            if rule is not None and rule.status is not None:
                return rule.status, _error("scripted status", rule.status)
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if rule is not None and rule.reasoning is not None:
                message["reasoning_content"] = rule.reasoning
                tokens = (tokens or 0) + count_words(rule.reasoning)
            used += tokens or 0
            choices.append({"index": c, "message": message, "finish_reason": finish, "logprobs": None})
        if self.drop_one:
            choices = choices[:-1]
        out = {"id": f"chatcmpl-{len(self.log)}", "object": "chat.completion", "created": int(time.time()),
               "model": body.get("model", self.model), "choices": choices}
        if self.answer is None:
            out["usage"] = {"prompt_tokens": count_words(text), "completion_tokens": used,
                            "total_tokens": count_words(text) + used}
        return 200, out

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
        return 200, {"id": f"modr-{len(self.log)}", "model": body.get("model", "omni-moderation-latest"),
                     "results": results}

    def _corrupt(self, obj: dict, body: dict) -> Any:
        """The reply as a hostile ``mode`` mangles it (bytes for the modes that are not JSON)."""
        mode = self.mode
        if mode == "non_json":
            return b"<html><body>502 Bad Gateway</body></html>"
        if mode == "non_utf8":
            return b'{"choices": [{"index": 0, "text": "\xff\xfe bad", "finish_reason": "stop"}]}'
        choices = obj.get("choices")
        if mode == "empty_choices" and choices is not None:
            obj["choices"] = []
        elif mode == "wrong_type" and choices:
            for ch in choices:
                if "message" in ch:
                    ch["message"]["content"] = 12345
                else:
                    ch["text"] = 12345
        elif mode == "wrong_type" and "results" in obj:
            obj["results"] = [{"flagged": "yes"} for _ in obj["results"]]
        elif mode in ("bad_usage", "negative_usage") and choices is not None:
            bad = "abc" if mode == "bad_usage" else -1000000
            obj["usage"] = {"prompt_tokens": 1, "completion_tokens": bad, "total_tokens": 1}
        elif mode == "ignore_max_tokens" and choices:
            max_tokens = self._limits(body)[1]
            words = max_tokens * 50 + 100
            for ch in choices:
                long = " ".join(["word"] * words)
                if "message" in ch:
                    ch["message"]["content"] = long
                else:
                    ch["text"] = long
            obj["usage"] = {"prompt_tokens": 1, "completion_tokens": words * len(choices),
                            "total_tokens": 1 + words * len(choices)}
        elif mode == "oversized":
            pad = "x" * self.oversize_bytes
            if choices:
                for ch in choices:
                    if "message" in ch:
                        ch["message"]["content"] = pad
                    else:
                        ch["text"] = pad
            else:
                obj["padding"] = pad
        return obj


def serve(script_path: Optional[str], host: str = "127.0.0.1", port: int = 0, latency_s: float = 0.0) -> FakeServer:
    """A FakeServer on a rules YAML for ``trustlab safety fake-server``; loopback only."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        from trustlab.runtime.errors import ConfigError

        raise ConfigError(f"the fake server binds loopback only, got host {host!r}", hint="use --host 127.0.0.1")
    return FakeServer(Script.load(script_path) if script_path else Script(), latency_s=latency_s, port=port)
