"""The one HTTP client every lab uses for an OpenAI-compatible server (vLLM, SGLang, llama.cpp, transformers
serve, the OpenAI API): completions, chat, the model list and moderations, through the ``openai`` SDK with the
SDK's own retries off.

    client = OpenAIClient("http://127.0.0.1:8000/v1", timeout_s=60, policy=RetryPolicy(max_retries=5))
    reply = client.completions({"model": "m", "prompt": "Hi", "max_tokens": 8})
    reply.choices[0].text, reply.completion_tokens

Guarantees:
- a malformed URL (scheme, host, a port outside 0-65535) is a ConfigError (exit 2) at construction;
- every request has a TOTAL deadline of ``timeout_s`` (a server dripping one byte a second is cut off), and reads
  at most ``replies.reply_cap(max_tokens)`` bytes: a larger body is refused and never stored;
- transient failures are retried by the one ``RetryPolicy``; a failure that outlasts it, and every malformed reply,
  is a ``RequestError`` (a BackendError, exit 4) naming the URL and what was wrong;
- requests run on daemon threads and waits are sliced, so Ctrl-C and ``close()`` abandon work in flight at once;
- ``worst_case_s`` states the longest one request can take, for the CLI to print before it starts.
Labs keep only payload building and the parsing of their own result types.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

from trustlab.runtime.errors import ConfigError

from .bounded import call_with_deadline
from .replies import Reply, decode, malformed, parse_generation, parse_models, parse_moderation, reply_cap
from .retry import RequestError, RetryPolicy

MODELS_CAP = 4 * 1024 * 1024
MODERATION_CAP_PER_INPUT = 16 * 1024
UNREACHABLE_HINT = "start the server, or fix the base URL (it usually ends in /v1); finished records are kept"


def check_url(url: Any, what: str = "base URL") -> str:
    """``url`` without a trailing slash, or a ConfigError naming what is wrong with it."""
    hint = "e.g. http://127.0.0.1:8000/v1"
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ConfigError(f"{what} must be an http(s) URL, got {url!r}", hint=hint)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port outside 0-65535 or not a number
    except ValueError as exc:
        raise ConfigError(f"{what} {url!r} is malformed: {exc}", hint=hint) from None
    if not parts.hostname or any(c.isspace() for c in url):
        raise ConfigError(f"{what} {url!r} is malformed: no host name", hint=hint)
    return url.rstrip("/")


def _status_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        msg = (err.get("message") or err.get("detail")) if isinstance(err, dict) else err
        if msg:
            return str(msg).splitlines()[0][:300]
    return (str(getattr(exc, "message", exc)).splitlines() or [""])[0][:300]


def _retry_after(headers: Any) -> Optional[float]:
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name) if hasattr(headers, "get") else None
        if value is not None:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                pass
    return None


class OpenAIClient:
    """One OpenAI-compatible server. Thread-safe; ``stop`` (shared with the caller) cancels waits and retries."""

    def __init__(self, base_url: str, api_key: Optional[str] = None, *, timeout_s: float = 600.0,
                 policy: Optional[RetryPolicy] = None, stop: Optional[threading.Event] = None,
                 sleep: Optional[Callable[[float], None]] = None, seed: Optional[int] = None,
                 what: str = "base URL"):
        self.base_url = check_url(base_url, what)
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < 1e6:
            raise ConfigError(f"timeout must be a number of seconds in (0, 1e6), got {timeout_s!r}",
                              hint="e.g. --timeout 60")
        self.api_key = api_key
        self.timeout_s = float(timeout_s)
        self.policy = policy or RetryPolicy()
        self.stop = stop or threading.Event()
        self.sleep = sleep
        self.requests = 0
        self.retries = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._sdk = None

    # --- plumbing -----------------------------------------------------------------------------------------------
    @property
    def sdk(self):
        with self._lock:
            if self._sdk is None:
                from trustlab.runtime.errors import require

                openai = require("openai", "pip install openai")
                self._sdk = openai.OpenAI(base_url=self.base_url, api_key=self.api_key or "EMPTY", max_retries=0,
                                          timeout=self.timeout_s)
            return self._sdk

    def worst_case_s(self, attempts_timeout_s: Optional[float] = None) -> float:
        """The longest one request can take under the retry policy."""
        return self.policy.worst_case_s(attempts_timeout_s or self.timeout_s)

    def _open(self, route: str, payload: dict, timeout: float):
        sdk = self.sdk
        if route == "/models":
            return sdk.models.with_streaming_response.list(timeout=timeout)
        if route == "/completions":
            return sdk.completions.with_streaming_response.create(**payload, timeout=timeout)
        if route == "/chat/completions":
            return sdk.chat.completions.with_streaming_response.create(**payload, timeout=timeout)
        if route == "/moderations":
            return sdk.moderations.with_streaming_response.create(**payload, timeout=timeout)
        raise ValueError(f"unknown route {route}")

    def _exchange(self, route: str, payload: dict, cap: int, deadline: float) -> bytes:
        """One HTTP exchange: the body's bytes, read under the deadline and the byte cap."""
        import openai

        url = self.base_url
        try:
            with self._open(route, payload, max(0.05, deadline - time.monotonic())) as resp:
                length = resp.headers.get("content-length")
                if length is not None and length.isdigit() and int(length) > cap:
                    raise malformed(url, route, f"the body is {int(length)} bytes, over the {cap}-byte cap for "
                                                "this request")
                chunks, size = [], 0
                for chunk in resp.iter_bytes():  # as the bytes arrive: the deadline is checked per read
                    size += len(chunk)
                    if size > cap:
                        raise malformed(url, route, f"the body is over the {cap}-byte cap for this request")
                    if time.monotonic() > deadline:
                        raise RequestError(f"no complete reply from {url} ({route}) within the {self.timeout_s:g} s "
                                           "deadline (the body was still arriving)",
                                           "raise --timeout if the server is just slow, or check that it is healthy",
                                           url=url, kind="timeout")
                    chunks.append(chunk)
                return b"".join(chunks)
        except RequestError:
            raise
        except openai.APIStatusError as exc:
            retry_after = _retry_after(getattr(exc.response, "headers", {}))
            raise RequestError(f"HTTP {exc.status_code} from {url} ({route}): {_status_message(exc)}",
                               "check the server log, the model name and the API key", url=url, kind="status",
                               status=exc.status_code, retry_after=retry_after) from None
        except openai.APITimeoutError:
            raise RequestError(f"no complete reply from {url} ({route}) within the {self.timeout_s:g} s deadline",
                               "raise --timeout if the server is just slow, or check that it is healthy",
                               url=url, kind="timeout") from None
        except openai.APIConnectionError as exc:
            raise RequestError(f"OpenAI-compatible server {url} is unreachable: {exc}".splitlines()[0],
                               UNREACHABLE_HINT, url=url, kind="connection") from None
        except Exception as exc:  # noqa: BLE001 - transport errors while reading the body
            kind = "timeout" if "timeout" in type(exc).__name__.lower() else "connection"
            raise RequestError(f"{url} ({route}) failed while sending its reply: {type(exc).__name__}: {exc}"
                               .splitlines()[0][:300], UNREACHABLE_HINT, url=url, kind=kind) from None

    def once(self, route: str, payload: dict, cap: int) -> Any:
        """One attempt: the decoded JSON body, or a RequestError. Bounded by ``timeout_s`` whatever the server
        does; the request runs on a daemon thread that is abandoned at the deadline."""
        with self._lock:
            self.requests += 1
        deadline = time.monotonic() + self.timeout_s
        body = call_with_deadline(lambda: self._exchange(route, payload, cap, deadline), self.timeout_s + 0.5,
                                  self.stop, url=self.base_url, what=route, shown_s=self.timeout_s)
        return decode(body, self.base_url, route)

    def run(self, attempt: Callable[[int], Any], *, retry_timeouts: bool = True,
            policy: Optional[RetryPolicy] = None) -> Any:
        """``attempt(n)`` under the retry policy (shared by callers that pick a server per attempt)."""
        def counted(exc: RequestError) -> None:
            with self._lock:
                self.retries += 1

        return (policy or self.policy).run(attempt, stop=self.stop, rng=self._rng, sleep=self.sleep,
                                           retry_timeouts=retry_timeouts, on_retry=counted)

    # --- the endpoints ------------------------------------------------------------------------------------------
    def generation_once(self, route: str, payload: dict, expect: int = 1) -> Reply:
        """One attempt at ``/completions`` or ``/chat/completions``, checked against ``payload['max_tokens']``."""
        max_tokens = int(payload.get("max_tokens") or 16)
        obj = self.once(route, payload, reply_cap(max_tokens, expect * int(payload.get("n") or 1)))
        return parse_generation(obj, self.base_url, route, chat=route == "/chat/completions",
                                max_tokens=max_tokens, expect=expect)

    def completions(self, payload: dict, expect: int = 1) -> Reply:
        return self.run(lambda _: self.generation_once("/completions", payload, expect))

    def chat(self, payload: dict, expect: int = 1) -> Reply:
        return self.run(lambda _: self.generation_once("/chat/completions", payload, expect))

    def models(self, retry_timeouts: bool = True, policy: Optional[RetryPolicy] = None) -> list[str]:
        return self.run(lambda _: parse_models(self.once("/models", {}, MODELS_CAP), self.base_url),
                        retry_timeouts=retry_timeouts, policy=policy)

    def moderate(self, model: str, inputs: list[str]) -> list[dict]:
        cap = MODELS_CAP + MODERATION_CAP_PER_INPUT * len(inputs)
        return self.run(lambda _: parse_moderation(self.once("/moderations", {"model": model, "input": inputs}, cap),
                                                   self.base_url, len(inputs)))

    def probe(self) -> Optional[list[str]]:
        """The pre-flight check: ``/models`` once more at most (two attempts), never past ``2 * timeout_s`` plus
        one backoff; a timeout is not retried. Returns the served ids, or None where the server has no model list
        (HTTP 404); anything else is a RequestError (exit 4) naming the URL."""
        try:
            return self.models(retry_timeouts=False, policy=RetryPolicy(
                max_retries=min(1, self.policy.max_retries), backoff_min_s=self.policy.backoff_min_s,
                backoff_max_s=self.policy.backoff_max_s))
        except RequestError as exc:
            if exc.kind == "status" and exc.status == 404:
                return None
            raise

    def close(self) -> None:
        """Cancel waits and retries; requests in flight are abandoned (their daemon threads are never joined)."""
        self.stop.set()


__all__ = ["OpenAIClient", "RequestError", "RetryPolicy", "check_url"]
