"""Any OpenAI-compatible server (vLLM, SGLang, llama.cpp, transformers serve, the OpenAI API) via the ``openai`` SDK.

- The SDK's own retries are off; we retry with jittered exponential backoff (``retry_min_s``..``retry_max_s``,
  1-60 s by default) on 429, 5xx, timeouts and connection errors, at most ``max_retries`` times. Other 4xx
  (bad request, context overflow) fail the record at once: ``Completion(finish_reason="error", error=...)``.
- A pool of ``concurrency`` workers bounds the requests in flight; each request goes to the least-busy of
  ``base_urls`` (servers that just failed are avoided while others are healthy).
- A server that stays unreachable is a ``BackendError`` (exit 4) naming its URL: nothing is stored for it, and the
  run resumes where it stopped.
- Forced strategies use ``/v1/completions`` on prompts rendered locally (``tokenizer`` or ``chat_template``);
  ``default`` uses chat, and a returned ``reasoning_content`` / ``reasoning`` is rebuilt as
  ``opening + reasoning + think_end + "\\n\\n" + content``.
- ``top_k`` and ``repetition_penalty`` travel in ``extra_body``, only when not at their defaults; ``n=1``.
"""

from __future__ import annotations

import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional, Sequence

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
        import openai

        if not base_urls:
            raise ConfigError("the openai backend needs at least one base URL", hint="pass --base-url http://HOST:PORT/v1")
        self._openai = openai
        self.model = model
        self.base_urls = [u.rstrip("/") for u in base_urls]
        self.clients = [openai.OpenAI(base_url=u, api_key=api_key or "EMPTY", max_retries=0, timeout=timeout_s)
                        for u in self.base_urls]
        self.max_retries = max_retries
        self.retry_min_s, self.retry_max_s = retry_min_s, retry_max_s
        self.concurrency = concurrency
        self.chunk_size = max(8, concurrency)
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.think_format = think_format or ThinkFormat()
        self._busy = [0] * len(self.clients)
        self._strikes = [0] * len(self.clients)
        self.used = [0] * len(self.clients)
        self._lock = threading.Lock()
        self._pool: Optional[ThreadPoolExecutor] = None
        self._rng = random.Random(seed)
        self._stop = threading.Event()  # set by close(): backoff sleeps end and no request is retried

    @classmethod
    def from_config(cls, cfg, think_format: Optional[ThinkFormat] = None, tokenizer: Any = None,
                    **kwargs) -> "OpenAIBackend":
        if tokenizer is None and cfg.tokenizer:
            from .hf import load_tokenizer

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
        """Every server answers ``/v1/models`` (else BackendError naming it); with ``completions``, also a
        one-token ``/v1/completions`` request (a 404 there is a ConfigError: forced strategies need it)."""
        oa = self._openai
        for url, client in zip(self.base_urls, self.clients):
            try:
                self._retrying(lambda c=client: c.models.list(), url, attempts=2)
            except BackendError:
                raise
            except oa.APIStatusError as exc:
                if exc.status_code != 404:  # some servers do not list models; the completions probe decides
                    raise BackendError(f"server {url} answered /models with HTTP {exc.status_code}",
                                       hint="check --base-url (it usually ends in /v1) and the API key") from None
            if completions:
                try:
                    self._retrying(lambda c=client: c.completions.create(model=self.model, prompt="Hi", max_tokens=1),
                                   url, attempts=2)
                except oa.NotFoundError:
                    raise ConfigError(f"server {url} has no /v1/completions, which forced strategies need",
                                      hint="use --strategy default there, or a server with /v1/completions "
                                           "(vLLM, SGLang, llama.cpp)") from None
                except oa.APIStatusError as exc:
                    raise BackendError(f"server {url} refused a one-token completion of model {self.model!r}: HTTP "
                                       f"{exc.status_code} {_message(exc)}",
                                       hint="check --model (the served model name) and --base-url") from None

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

    def _delay(self, attempt: int) -> float:
        """Jittered exponential backoff: uniform in [cap/2, cap], cap = min(max, min * 2**attempt)."""
        cap = min(self.retry_max_s, self.retry_min_s * 2 ** attempt)
        with self._lock:
            return cap * (0.5 + 0.5 * self._rng.random())

    def _retrying(self, call: Callable[[], Any], url: str, attempts: Optional[int] = None) -> Any:
        """``call()`` with our retries on transient errors. A connection error that outlasts them is a
        BackendError naming ``url``; other exhausted errors are re-raised."""
        oa = self._openai
        attempts = self.max_retries + 1 if attempts is None else attempts
        for attempt in range(attempts):
            try:
                return call()
            except (oa.APITimeoutError, oa.APIConnectionError) as exc:
                last: Exception = exc
                if attempt + 1 == attempts and not isinstance(exc, oa.APITimeoutError):
                    raise BackendError(f"OpenAI-compatible server {url} is unreachable: {exc}",
                                       hint="start the server, or fix --base-url; finished records are kept, "
                                            "rerun to resume") from None
            except oa.APIStatusError as exc:
                if exc.status_code != 429 and exc.status_code < 500:
                    raise
                last = exc
            if attempt + 1 < attempts:
                time.sleep(self._delay(attempt))
        raise last

    def _request(self, kind: str, payload: dict) -> Completion:
        oa = self._openai
        for attempt in range(self.max_retries + 1):
            i = self._pick()
            url, client = self.base_urls[i], self.clients[i]
            ok = False
            try:
                if kind == "chat":
                    resp = client.chat.completions.create(**payload)
                else:
                    resp = client.completions.create(**payload)
                ok = True
                return self._parse(kind, resp, url)
            except (oa.APITimeoutError, oa.APIConnectionError) as exc:
                err = f"{type(exc).__name__} from {url}: {exc}"
                dead = not isinstance(exc, oa.APITimeoutError)
            except oa.APIStatusError as exc:
                err = f"HTTP {exc.status_code} from {url}: {_message(exc)}"
                if exc.status_code != 429 and exc.status_code < 500:
                    ok = True  # the server is alive; the request itself is bad
                    return failed(err)
                dead = False
            finally:
                self._release(i, ok)
            if attempt < self.max_retries and self._stop.wait(self._delay(attempt)):
                return failed(f"{err} (cancelled: the backend was closed)")
        if dead and all(s > 0 for s in self._strikes):
            raise BackendError(f"OpenAI-compatible server {url} is unreachable after {self.max_retries + 1} "
                               f"attempts: {err}", hint="start the server, or fix --base-url; finished records are "
                                                        "kept, rerun to resume")
        return failed(f"{err} (after {self.max_retries + 1} attempts)")

    def _parse(self, kind: str, resp: Any, url: str) -> Completion:
        choices = getattr(resp, "choices", None) or []
        if not choices:
            return failed(f"malformed reply from {url}: no choices")
        ch = choices[0]
        finish = ch.finish_reason or "stop"
        if kind == "chat":
            msg = ch.message
            content = msg.content or ""
            extra = getattr(msg, "model_extra", None) or {}
            reasoning = getattr(msg, "reasoning_content", None) or extra.get("reasoning_content") \
                or getattr(msg, "reasoning", None) or extra.get("reasoning")
            fmt = self.think_format
            text = f"{fmt.opening}{reasoning}{fmt.think_end}\n\n{content}" if reasoning and fmt.has_thoughts \
                else content
        else:
            text = ch.text or ""
        if finish == "content_filter":
            return failed(f"content filter at {url}", "filtered")
        usage = getattr(resp, "usage", None)
        tokens = getattr(usage, "completion_tokens", None) if usage is not None else None
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
        """``fn`` over ``items`` on the pool; a BackendError (a dead server) cancels what has not started."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="openai")
        futures = [self._pool.submit(fn, it) for it in items]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    def complete(self, prompts: Sequence[str], params: ParamsArg) -> list[Completion]:
        items = list(zip(prompts, per_prompt(params, len(prompts))))
        return self._map(lambda it: self._request("completions", {**self._payload(it[1]), "prompt": it[0]}), items)

    def chat(self, convs: Sequence[Sequence[dict]], params: ParamsArg) -> list[Completion]:
        items = list(zip(convs, per_prompt(params, len(convs))))
        return self._map(lambda it: self._request("chat", {**self._payload(it[1]), "messages": list(it[0])}), items)

    def close(self) -> None:
        self._stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        for c in self.clients:
            c.close()


def _message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
    return str(getattr(exc, "message", exc))[:300]


__all__ = ["OpenAIBackend", "read_template"]
