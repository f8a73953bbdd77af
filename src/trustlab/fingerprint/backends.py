"""Where completions come from: a local model (``HFBackend``) or any OpenAI-compatible endpoint (``OpenAIBackend``).

Both follow one protocol: ``generate(prompts, max_new_tokens, *, temperature, n, seed)`` returns, per prompt, a
list of ``n`` completions; a prompt the endpoint never answered (retries spent) gets an empty list and is named in
``backend.failures`` (index -> reason), so callers keep partial results and say which keys went unanswered.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from trustlab.models.llm.local import Completion  # noqa: F401 - the one completion type (text, token_ids, ...)
from trustlab.runtime.errors import BackendError, ConfigError

Prompt = Sequence[int] | str
STOP_AFTER = 3  # requests in a row that failed (retries spent or reply refused) before an endpoint counts as down


class Backend(Protocol):
    """Anything that completes prompts; ``failures`` maps unanswered prompt indices to a reason."""

    failures: dict[int, str]

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int, *, temperature: float = 0.0, n: int = 1,
                 seed: int | None = None) -> list[list[Completion]]: ...


def _check_args(max_new_tokens: int, temperature: float, n: int) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}",
                          hint="the response length L of the fingerprint file")
    if not isinstance(temperature, (int, float)) or not 0.0 <= float(temperature) <= 10.0:
        raise ConfigError(f"temperature must lie in [0, 10], got {temperature!r}", hint="0 means greedy decoding")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"samples (n) must be an integer >= 1, got {n!r}", hint="set samples to 1 or more")
    if n > 1 and temperature == 0:
        raise ConfigError("samples > 1 needs temperature > 0 (greedy samples are identical)",
                          hint="set temperature, e.g. 0.7, or samples to 1")


# --------------------------------------------------------------------------------------------------------------
# Local model
# --------------------------------------------------------------------------------------------------------------
@dataclass
class HFBackend:
    """A local causal LM through the shared ``trustlab.models.llm.local.LocalLM``: left-padded batches of
    ``batch_size``, greedy or sampled (batch ``b`` seeded ``seed + b * batch_size``); completions carry their token
    ids up to and including EOS. The caller's tokenizer and the global torch RNG are left as they were.

    ``logits_processor`` (callables ``(input_ids, scores) -> scores``) is how a host's decoding-time attack is
    applied to the suspect (see ``robustness``)."""

    model: Any
    tokenizer: Any
    batch_size: int = 16
    logits_processor: Sequence[Callable] = ()
    failures: dict[int, str] = field(default_factory=dict)

    def __post_init__(self):
        from trustlab.models.llm.local import LocalLM

        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {self.batch_size!r}", hint="16 is the default")
        self.lm = LocalLM(self.model, self.tokenizer, self.batch_size, self.logits_processor)

    @property
    def pad_id(self) -> int:
        return self.lm.pad_id

    def encode(self, prompt: Prompt) -> list[int]:
        return self.lm.encode(prompt)

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int, *, temperature: float = 0.0, n: int = 1,
                 seed: int | None = None) -> list[list[Completion]]:
        from trustlab.models.llm.local import Decoding

        _check_args(max_new_tokens, temperature, n)
        self.failures = {}
        sampled = temperature > 0
        dec = Decoding(max_new_tokens=max_new_tokens, temperature=float(temperature) if sampled else 0.0, n=n)
        return self.lm.generate(prompts, dec, seed=int(seed) if sampled and seed is not None else None)


# --------------------------------------------------------------------------------------------------------------
# OpenAI-compatible endpoint
# --------------------------------------------------------------------------------------------------------------
class _Exhausted(Exception):
    """Retries ran out on a retryable failure (429, 5xx, timeout, connection)."""


class _ListRefused(Exception):
    """The first list of prompts a server got failed with a plain 500 (llama.cpp's server): not retried."""


@dataclass
class OpenAIBackend:
    """An OpenAI-compatible server (``completions`` or ``chat`` API) through the shared client
    ``trustlab.models.llm.openai_client``: one retry policy, a total deadline of ``timeout_s`` per request, checked
    replies, daemon threads (Ctrl-C abandons requests in flight).

    - completions: ``batch_size`` prompts per request; a server that refuses a list of prompts (HTTP 400, as
      ``transformers serve`` does, or fails the first list it gets, as llama.cpp's server does with a 500: that
      first list is sent once, unretried) is queried one prompt per request, ``concurrency`` requests at a time.
    - 429, 5xx, timeouts and refused connections are retried ``max_retries`` times with jittered exponential
      backoff (``backoff_s`` doubling up to ``max_backoff_s``; a Retry-After header is honoured up to that cap).
      When they run out the remaining prompts are left unanswered and named in ``failures``; nothing answered at
      all is a BackendError (exit 4).
    - authentication errors, unknown models and other 4xx fail at once; a malformed reply (non-JSON, wrong types,
      fewer completions than prompts, oversized, impossible usage) leaves the keys it carried unanswered, its reason
      (naming the URL) in ``failures``.
    - a hostile server may fail some keys on purpose: querying goes on past a failed request, and stops only after
      ``STOP_AFTER`` requests in a row failed (the rest: "not sent"); nothing answered is a BackendError (exit 4).
    ``worst_case_s()`` states the longest one request can take."""

    base_url: str
    model: str
    api: str = "completions"
    api_key: str | None = None
    batch_size: int = 16
    max_retries: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    timeout_s: float = 120.0
    concurrency: int = 4
    sleep: Callable[[float], None] | None = None  # None: interruptible waits; tests pass a recorder
    failures: dict[int, str] = field(default_factory=dict)
    batched: bool | None = None  # None: not yet known; False once the server refused a list of prompts
    requests: int = 0
    retries: int = 0
    on_answer: Callable[[int], None] | None = None  # called with the number of prompts each reply answered

    def __post_init__(self):
        if self.api not in ("completions", "chat"):
            raise ConfigError(f"api must be completions or chat; got {self.api!r}", hint="--api completions")
        if not self.model:
            raise ConfigError("an endpoint needs the served model name", hint="pass --served-model NAME")
        for name in ("batch_size", "concurrency"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}", hint=f"set {name} to 1 or more")
        from trustlab.models.llm.openai_client import OpenAIClient
        from trustlab.models.llm.retry import RetryPolicy

        policy = RetryPolicy(self.max_retries, self.backoff_s, max(self.backoff_s, self.max_backoff_s))
        self._http = OpenAIClient(self.base_url, self.api_key, timeout_s=self.timeout_s, policy=policy,
                                  sleep=self.sleep, what="endpoint")
        self.base_url = self._http.base_url

    def worst_case_s(self) -> float:
        """The longest one request can wait (every attempt at its deadline, every backoff at its cap)."""
        return self._http.worst_case_s()

    def close(self) -> None:
        """Abandon requests in flight and end backoff waits at once."""
        self._http.close()

    # -- one request, retried -------------------------------------------------------------------------------------
    def _call(self, route: str, payload: dict, expect: int, what: str, *, list_probe: bool = False):
        from trustlab.models.llm.retry import RequestError

        http = self._http

        def attempt(_: int):
            try:
                return http.generation_once(route, payload, expect)
            except RequestError as exc:
                if list_probe and exc.kind == "status" and exc.status == 500:
                    raise _ListRefused(exc.message) from None  # not retried: lists are not served here
                raise

        try:
            return http.run(attempt)
        except RequestError as exc:
            if exc.kind == "status" and exc.status in (401, 403):
                raise BackendError(f"endpoint {self.base_url} refused the credentials ({exc.status}): "
                                   f"{exc.message}", hint="set the key in the variable named by api_key_env "
                                                          "(default OPENAI_API_KEY)") from None
            if exc.kind == "status" and exc.status == 404:
                raise BackendError(f"endpoint {self.base_url} does not serve model {self.model!r} or this API "
                                   f"({exc.status}): {exc.message}", hint=self._models_hint()) from None
            if exc.retryable:
                raise _Exhausted(f"{what}: {exc.message}") from None
            if exc.kind == "status":
                raise _BadRequest(exc.status, exc.message) from None
            if exc.kind == "malformed":  # this reply is refused; the keys it carried stay unanswered, named
                raise _Exhausted(exc.message) from None
            raise  # cancelled (Ctrl-C): exit 130
        finally:
            self.requests, self.retries = http.requests, http.retries

    def _models_hint(self) -> str:
        try:
            ids = self._http.models(retry_timeouts=False)[:10]
        except Exception:  # noqa: BLE001 - the hint is best effort
            ids = []
        served = f"served models: {', '.join(ids)}" if ids else "check --served-model"
        return f"{served}; the endpoint should end in /v1 (e.g. http://127.0.0.1:8000/v1)"

    # -- the two APIs ----------------------------------------------------------------------------------------------
    def _completions(self, prompts: list[str], max_tokens: int, temperature: float, n: int, seed: int | None,
                     *, list_probe: bool = False):
        extra = {} if seed is None else {"seed": int(seed)}
        prompt: Any = prompts if len(prompts) > 1 else prompts[0]
        payload = {"model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": float(temperature),
                   "n": n, **extra}
        reply = self._call("/completions", payload, len(prompts) * n,
                           f"completions request for {len(prompts)} prompt(s)", list_probe=list_probe)
        grouped: list[list[Completion]] = [[] for _ in prompts]
        ordered = sorted(reply.choices, key=lambda c: c.index or 0)
        for pos, ch in enumerate(ordered[:len(prompts) * n]):
            idx = ch.index
            slot = (idx if idx is not None and 0 <= idx < len(prompts) * n else pos) // n
            grouped[slot].append(Completion(ch.text))
        if any(len(g) != n for g in grouped):
            raise BackendError(f"endpoint {self.base_url} returned completions with inconsistent indices",
                               hint="try --batch-size 1")
        return grouped

    def _chat(self, prompt: str | list[dict], max_tokens: int, temperature: float, n: int, seed: int | None):
        extra = {} if seed is None else {"seed": int(seed)}
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        payload = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                   "temperature": float(temperature), "n": n, **extra}
        reply = self._call("/chat/completions", payload, n, "chat request")
        return [Completion(c.text) for c in reply.choices[:n]]

    # -- the protocol --------------------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int, *, temperature: float = 0.0, n: int = 1,
                 seed: int | None = None) -> list[list[Completion]]:
        _check_args(max_new_tokens, temperature, n)
        for p in prompts:
            if not isinstance(p, (str, list)):
                raise ConfigError(f"an endpoint takes text prompts, got {type(p).__name__}",
                                  hint="pass key_text, not key_ids")
        self.failures = {}
        self._down = 0
        results: list[list[Completion]] = [[] for _ in prompts]
        if self.api == "completions" and self.batched is not False and len(prompts) > 1:
            todo = self._batched_pass(prompts, results, max_new_tokens, temperature, n, seed)
        else:
            todo = list(range(len(prompts)))
        if todo:
            self._single_pass(prompts, todo, results, max_new_tokens, temperature, n, seed)
        if len(self.failures) == len(prompts):
            first = next(iter(self.failures.values()))
            raise BackendError(f"endpoint {self.base_url} answered none of {len(prompts)} prompt(s): {first}",
                               hint="check that the server is running and reachable, e.g. curl "
                                    f"{self.base_url.rstrip('/')}/models")
        return results

    def _batched_pass(self, prompts, results, max_tokens, temperature, n, seed) -> list[int]:
        """Batches of ``batch_size`` prompts; returns the indices left for one-per-request (after a refusal)."""
        for start in range(0, len(prompts), self.batch_size):
            idx = list(range(start, min(start + self.batch_size, len(prompts))))
            probe = self.batched is None and len(idx) > 1
            try:
                got = self._completions([prompts[i] for i in idx], max_tokens, temperature, n, seed,
                                        list_probe=probe)
            except (_BadRequest, _ListRefused) as exc:
                if len(idx) == 1:
                    raise exc.as_backend_error(self.base_url, self._models_hint()) from None
                # transformers serve: 400 "prompt must be a string"; llama.cpp's server: 500 on its first list
                self.batched = False
                return list(range(start, len(prompts)))
            except _Exhausted as exc:
                for i in idx:
                    self.failures[i] = str(exc)
                self._down += 1
                if self._down >= STOP_AFTER:
                    for i in range(idx[-1] + 1, len(prompts)):
                        self.failures[i] = _NOT_SENT
                    return []
                continue
            self._down = 0
            self.batched = True
            for i, g in zip(idx, got):
                results[i] = g
            if self.on_answer is not None:
                self.on_answer(len(idx))
        return []

    def _single_pass(self, prompts, todo, results, max_tokens, temperature, n, seed) -> None:
        from trustlab.models.llm.bounded import daemon_map

        stop, lock = threading.Event(), threading.Lock()

        def one(i: int) -> None:
            if stop.is_set():
                self.failures[i] = _NOT_SENT
                return
            try:
                if self.api == "chat":
                    results[i] = self._chat(prompts[i], max_tokens, temperature, n, seed)
                else:
                    results[i] = self._completions([prompts[i]], max_tokens, temperature, n, seed)[0]
                with lock:
                    self._down = 0
                if self.on_answer is not None:
                    self.on_answer(1)
            except _Exhausted as exc:
                self.failures[i] = str(exc)
                with lock:
                    self._down += 1
                    if self._down >= STOP_AFTER:
                        stop.set()

        try:
            daemon_map(one, todo, self.concurrency)
        except _BadRequest as exc:
            raise exc.as_backend_error(self.base_url, self._models_hint()) from None


_NOT_SENT = f"not sent: the endpoint had stopped answering ({STOP_AFTER} requests in a row failed)"


class _BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message

    def as_backend_error(self, url: str, models_hint: str) -> BackendError:
        return BackendError(f"endpoint {url} rejected the request ({self.status}): {self.message}",
                            hint=f"check --api (completions or chat) and --served-model ({models_hint})")


def endpoint_plan(backend: Any, n_keys: int, timeout_s: float | None = None) -> tuple[Any, str | None]:
    """For an endpoint suspect: the backend with its per-request deadline set to ``timeout_s`` (when given), and
    the line that states the worst-case wait before any request is sent; a local backend is returned as is."""
    if not isinstance(backend, OpenAIBackend):
        return backend, None
    import dataclasses

    from trustlab.models.llm.retry import describe_wait

    if timeout_s is not None:
        backend = dataclasses.replace(backend, timeout_s=timeout_s)
    per = describe_wait(backend.worst_case_s())
    return backend, (f"querying {backend.base_url} for {n_keys} key(s): each request waits at most {per} "
                     f"(--timeout {backend.timeout_s:g} s x {backend.max_retries + 1} attempt(s) plus backoff)")
