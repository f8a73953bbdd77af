"""A scripted OpenAI-compatible server on 127.0.0.1 for fault injection (batching, 429, 5xx, short replies).

Real-server behaviour is tested against ``transformers serve``; this fake only plays the failures a real server
cannot be made to produce on demand. ``FakeOpenAI(answer=fn)`` answers ``/v1/completions`` and
``/v1/chat/completions`` with ``fn(prompt_text)``; the failure knobs are plain attributes, changeable mid-test.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class FakeOpenAI:
    answer: Callable[[str], str] = lambda prompt: ""
    models: tuple[str, ...] = ("suspect",)
    api_key: str | None = None            # require "Authorization: Bearer <api_key>"
    refuse_lists: bool = False            # 400 "prompt must be a string" for a list of prompts (transformers serve)
    fail_first: list[int] = field(default_factory=list)  # statuses for the first requests, then normal
    fail_after: int | None = None         # after this many answered requests, every request fails ...
    fail_status: int = 500                # ... with this status
    retry_after_ms: int | None = 1        # header sent with 429s
    drop_one: bool = False                # one completion fewer than asked for
    requests: list[dict] = field(default_factory=list)
    answered: int = 0

    def __post_init__(self):
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in fake.models]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                status, payload, headers = fake._respond(self.path, body, self.headers.get("Authorization"))
                self._send(status, payload, headers)

            def _send(self, status: int, payload: Any, headers: dict | None = None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # bound (and so ready) on return
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> "FakeOpenAI":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _respond(self, path: str, body: dict, auth: str | None):
        with self._lock:
            self.requests.append({"path": path, **body})
            if self.api_key is not None and auth != f"Bearer {self.api_key}":
                return 401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}, {}
            if body.get("model") not in self.models:
                return 404, {"error": {"message": f"The model {body.get('model')!r} does not exist"}}, {}
            if self.fail_first:
                status = self.fail_first.pop(0)
                hdr = {"retry-after-ms": str(self.retry_after_ms)} if status == 429 and self.retry_after_ms else {}
                return status, {"error": {"message": f"scripted {status}"}}, hdr
            if self.fail_after is not None and self.answered >= self.fail_after:
                return self.fail_status, {"error": {"message": f"scripted {self.fail_status}"}}, {}
            chat = path.rstrip("/").endswith("/chat/completions")
            prompts = [body["messages"][-1]["content"]] if chat else body.get("prompt")
            if isinstance(prompts, list) and not chat and self.refuse_lists:
                return 400, {"error": {"message": "prompt must be a string"}}, {}
            if isinstance(prompts, str):
                prompts = [prompts]
            n = int(body.get("n") or 1)
            self.answered += 1
        choices = []
        for i, p in enumerate(prompts):
            for j in range(n):
                text = self.answer(p)
                choice = {"index": i * n + j, "finish_reason": "length", "logprobs": None}
                choices.append({**choice, "message": {"role": "assistant", "content": text}} if chat
                               else {**choice, "text": text})
        if self.drop_one:
            choices = choices[:-1]
        obj = "chat.completion" if chat else "text_completion"
        return 200, {"id": "fake", "object": obj, "created": int(time.time()), "model": body["model"],
                     "choices": choices}, {}
