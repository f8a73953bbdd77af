"""Any OpenAI-compatible server (vLLM, SGLang, llama.cpp, transformers serve, the OpenAI API) through the shared
client ``trustlab.models.llm.openai_client`` (one retry policy, a total deadline per request, checked replies).

This module keeps only safety's payload building and the parsing into safety ``Completion`` s:
- transient failures (429, 5xx, timeouts, connection errors) are retried by the shared policy (``retry_min_s``..
  ``retry_max_s``, at most ``max_retries`` times), each attempt on the least-busy of ``base_urls`` (servers that
  just failed are avoided while others are healthy);
- other 4xx (bad request, context overflow) and 429/5xx that outlast the retries fail the record:
  ``Completion(finish_reason="error", error=...)`` naming the URL and the status;
- a server that stays unreachable, a request that keeps timing out, and every malformed reply are a
  ``BackendError`` (exit 4) naming the URL: nothing is stored for it, and the run resumes where it stopped;
- ``concurrency`` daemon workers bound the requests in flight; Ctrl-C and ``close()`` abandon them at once;
- forced strategies use ``/v1/completions`` on prompts rendered locally (``tokenizer`` or ``chat_template``);
  ``default`` uses chat, and a returned ``reasoning_content`` / ``reasoning`` is rebuilt as
  ``opening + reasoning + think_end + "\\n\\n" + content``;
- ``top_k`` and ``repetition_penalty`` travel in ``extra_body``, only when not at their defaults; ``n=1``.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Optional, Sequence

from trustlab.models.llm.bounded import daemon_map
from trustlab.models.llm.openai_client import OpenAIClient
from trustlab.models.llm.replies import Reply
from trustlab.models.llm.retry import RequestError, RetryPolicy
from trustlab.runtime.errors import BackendError, ConfigError

from ..config import ThinkFormat
from .base import Completion, GenParams, ParamsArg, failed, per_prompt, render_chat_template


def read_template(spec: Optional[str]) -> Optional[str]:
    """``--chat-template``: a file path (read as UTF-8) or the Jinja text itself."""
    if spec is None:
        return None
    if "{" not in spec and len(spec) < 4096:
        from trustlab.runtime.files import read_text

        return read_text(spec, what="chat template file", error=ConfigError)
    return spec


class OpenAIBackend:
    name = "openai"
    prefers_chat = True

    def __init__(self, model: str, base_urls: Sequence[str], api_key: Optional[str] = None,
                 timeout_s: float = 600.0, max_retries: int = 6, retry_min_s: float = 1.0, retry_max_s: float = 60.0,
                 concurrency: int = 32, tokenizer: Any = None, chat_template: Optional[str] = None,
                 think_format: Optional[ThinkFormat] = None, seed: int = 0):
        if not base_urls:
            raise ConfigError("the openai backend needs at least one base URL", hint="pass --base-url http://HOST:PORT/v1")
        self.model = model
        self.policy = RetryPolicy(max_retries, retry_min_s, retry_max_s)
        self._stop = threading.Event()  # set by close(): waits end, retries stop, requests in flight are abandoned
        self.clients = [OpenAIClient(u, api_key, timeout_s=timeout_s, policy=self.policy, stop=self._stop,
                                     seed=seed + i, what="--base-url") for i, u in enumerate(base_urls)]
        self.base_urls = [c.base_url for c in self.clients]
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.chunk_size = max(8, concurrency)
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.think_format = think_format or ThinkFormat()
        self._busy = [0] * len(self.clients)
        self._strikes = [0] * len(self.clients)
        self.used = [0] * len(self.clients)
        self._lock = threading.Lock()

    def worst_case_s(self) -> float:
        """The longest one request can wait (every attempt at its deadline, every backoff at its cap)."""
        return self.clients[0].worst_case_s()

    @classmethod
    def from_config(cls, cfg, think_format: Optional[ThinkFormat] = None, tokenizer: Any = None,
                    **kwargs) -> "OpenAIBackend":
        if tokenizer is None and cfg.tokenizer:
            from trustlab.models.causal_lm import load_tokenizer

            tokenizer = load_tokenizer(cfg.tokenizer, trust_remote_code=cfg.trust_remote_code)
        return cls(cfg.model, cfg.base_urls, api_key=os.environ.get(cfg.api_key_env), timeout_s=cfg.timeout_s,
                   max_retries=cfg.max_retries, retry_min_s=cfg.retry_min_s, retry_max_s=cfg.retry_max_s,
                   concurrency=cfg.concurrency, tokenizer=tokenizer, chat_template=read_template(cfg.chat_template),
                   think_format=think_format, **kwargs)

    # --- rendering ----------------------------------------------------------------------------------------------
    @property
    def can_render(self) -> bool:
        return self.chat_template is not None or getattr(self.tokenizer, "chat_template", None) is not None

    def render(self, messages: Sequence[dict]) -> str:
        if self.chat_template is not None:
            tok = self.tokenizer
            return render_chat_template(self.chat_template, messages,
                                        bos_token=getattr(tok, "bos_token", None) or "",
                                        eos_token=getattr(tok, "eos_token", None) or "")
        if getattr(self.tokenizer, "chat_template", None) is not None:
            return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        raise ConfigError("forced strategies on the openai backend render prompts locally, but no chat template is "
                          "known", hint="pass --tokenizer NAME_OR_DIR (with a chat template) or --chat-template FILE")

    def count_tokens(self, text: str) -> Optional[int]:
        if self.tokenizer is None:
            return None
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    # --- checks before any generation ---------------------------------------------------------------------------
    def probe(self, completions: bool = False) -> None:
        """Every server answers ``/v1/models`` (a 404 there is fine: some servers list no models); with
        ``completions``, also a one-token ``/v1/completions`` request (a 404 there is a ConfigError: forced
        strategies need it). Bounded: a timeout is not retried, so a silent server is exit 4 within about
        ``timeout_s`` per check; anything else wrong is a BackendError naming the server."""
        probe_policy = RetryPolicy(min(1, self.max_retries), self.policy.backoff_min_s, self.policy.backoff_max_s)
        for client in self.clients:
            url = client.base_url
            try:
                client.probe()
            except RequestError as exc:
                if exc.kind == "status":
                    raise BackendError(f"server {url} answered /models with HTTP {exc.status}",
                                       hint="check --base-url (it usually ends in /v1) and the API key") from None
                raise
            if completions:
                payload = {"model": self.model, "prompt": "Hi", "max_tokens": 1}
                try:
                    client.run(lambda _, c=client: c.generation_once("/completions", payload), retry_timeouts=False,
                               policy=probe_policy)
                except RequestError as exc:
                    if exc.kind == "status" and exc.status == 404:
                        raise ConfigError(f"server {url} has no /v1/completions, which forced strategies need",
                                          hint="use --strategy default there, or a server with /v1/completions "
                                               "(vLLM, SGLang, llama.cpp)") from None
                    if exc.kind == "status":
                        raise BackendError(f"server {url} refused a one-token completion of model {self.model!r}: "
                                           f"{exc.message}", hint="check --model (the served model name) and "
                                                                  "--base-url") from None
                    raise

    # --- the request loop ---------------------------------------------------------------------------------------
    def _pick(self) -> int:
        with self._lock:
            i = min(range(len(self.clients)), key=lambda j: (self._strikes[j] > 0, self._busy[j], self.used[j]))
            self._busy[i] += 1
            self.used[i] += 1
            return i

    def _release(self, i: int, ok: bool) -> None:
        with self._lock:
            self._busy[i] -= 1
            self._strikes[i] = 0 if ok else self._strikes[i] + 1

    def _attempt(self, route: str, payload: dict) -> Reply:
        """One attempt on the least-busy server; a server that answered (even with a 4xx) is healthy."""
        i = self._pick()
        ok = False
        try:
            reply = self.clients[i].generation_once(route, payload)
            ok = True
            return reply
        except RequestError as exc:
            ok = exc.kind in ("status", "malformed") and not exc.retryable
            raise
        finally:
            self._release(i, ok)

    def _request(self, kind: str, payload: dict) -> Completion:
        route = "/chat/completions" if kind == "chat" else "/completions"
        try:
            reply = self.clients[0].run(lambda _: self._attempt(route, payload))
        except RequestError as exc:
            if exc.kind == "status":
                return failed(exc.message)
            if exc.kind == "cancelled":
                return failed(exc.message)
            if exc.kind == "connection" and not all(s > 0 for s in self._strikes):
                return failed(exc.message)  # another server is healthy: this record is retried by --retry-errors
            raise  # unreachable, timing out or malformed: exit 4 naming the URL; finished records are kept
        return self._parse(kind, reply)

    def _parse(self, kind: str, reply: Reply) -> Completion:
        ch = reply.choices[0]
        finish = ch.finish_reason or "stop"
        text = ch.text
        if kind == "chat" and ch.reasoning:
            fmt = self.think_format
            if fmt.has_thoughts:
                text = f"{fmt.opening}{ch.reasoning}{fmt.think_end}\n\n{ch.text}"
        if finish == "content_filter":
            return failed(f"content filter at {reply.url}", "filtered")
        tokens = reply.completion_tokens
        if tokens is None:
            tokens = self.count_tokens(text)
            tokens = len(text.split()) if tokens is None else tokens
        return Completion(text, int(tokens), "length" if finish == "length" else "stop")

    def _payload(self, p: GenParams) -> dict:
        payload: dict[str, Any] = {"model": self.model, "max_tokens": p.max_tokens, "temperature": p.temperature,
                                   "top_p": p.top_p, "n": 1}
        if p.stop:
            payload["stop"] = list(p.stop)
        if p.seed is not None:
            payload["seed"] = p.seed
        extra = {}
        if p.top_k != -1:
            extra["top_k"] = p.top_k
        if p.repetition_penalty != 1.0:
            extra["repetition_penalty"] = p.repetition_penalty
        if extra:
            payload["extra_body"] = extra
        return payload

    def _map(self, fn: Callable[[Any], Completion], items: list) -> list[Completion]:
        """``fn`` over ``items`` on ``concurrency`` daemon workers; a BackendError (a dead server) stops what has
        not started; Ctrl-C returns at once, abandoning requests in flight."""
        return daemon_map(fn, items, self.concurrency, self._stop)

    def complete(self, prompts: Sequence[str], params: ParamsArg) -> list[Completion]:
        items = list(zip(prompts, per_prompt(params, len(prompts))))
        return self._map(lambda it: self._request("completions", {**self._payload(it[1]), "prompt": it[0]}), items)

    def chat(self, convs: Sequence[Sequence[dict]], params: ParamsArg) -> list[Completion]:
        items = list(zip(convs, per_prompt(params, len(convs))))
        return self._map(lambda it: self._request("chat", {**self._payload(it[1]), "messages": list(it[0])}), items)

    def close(self) -> None:
        """Cancel waits and retries at once; requests in flight are abandoned, never joined."""
        self._stop.set()


__all__ = ["OpenAIBackend", "read_template"]
