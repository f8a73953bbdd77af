"""One retry policy for every remote LLM call: jittered exponential backoff on transient failures.

Guarantees: a failure is retried only when it is transient (HTTP 429, HTTP 5xx, a timeout, a refused or dropped
connection); any other failure (other 4xx, a malformed reply) ends at once. The n-th backoff is uniform in
``[cap/2, cap]`` with ``cap = min(backoff_max_s, backoff_min_s * 2**n)``; a server's Retry-After wins but is capped at
``backoff_max_s``. Setting ``stop`` ends a backoff sleep at once. ``worst_case_s`` bounds the whole wait.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Callable, Optional, TypeVar

from trustlab.runtime.errors import BackendError, ConfigError

T = TypeVar("T")


class RequestError(BackendError):
    """One request that failed (exit 4). ``kind``: status | timeout | connection | malformed | cancelled."""

    def __init__(self, message: str, hint: Optional[str] = None, *, url: str = "", kind: str = "connection",
                 status: Optional[int] = None, retry_after: Optional[float] = None):
        super().__init__(message, hint)
        self.url, self.kind, self.status, self.retry_after = url, kind, status, retry_after
        self.attempts = 1

    @property
    def retryable(self) -> bool:
        if self.kind == "status":
            return self.status == 429 or (self.status or 0) >= 500
        return self.kind in ("timeout", "connection")


@dataclass(frozen=True)
class RetryPolicy:
    """How many times and how long to wait between attempts of one request."""

    max_retries: int = 6
    backoff_min_s: float = 1.0
    backoff_max_s: float = 60.0

    def __post_init__(self):
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError(f"max_retries must be an integer >= 0, got {self.max_retries!r}",
                              hint="e.g. --max-retries 5")
        if not (0 <= self.backoff_min_s <= self.backoff_max_s < float("inf")):
            raise ConfigError(f"backoff must satisfy 0 <= min <= max < inf, got {self.backoff_min_s!r} and "
                              f"{self.backoff_max_s!r}", hint="e.g. retry_min_s 1, retry_max_s 60")

    def cap(self, attempt: int) -> float:
        return min(self.backoff_max_s, self.backoff_min_s * 2 ** attempt)

    def delay(self, attempt: int, rng: random.Random, retry_after: Optional[float] = None) -> float:
        """The wait after failed attempt ``attempt`` (0-based)."""
        if retry_after is not None:
            return min(max(0.0, retry_after), self.backoff_max_s)
        cap = self.cap(attempt)
        return cap * (0.5 + 0.5 * rng.random())

    def worst_case_s(self, timeout_s: float) -> float:
        """The longest one request can take: every attempt hits its deadline and every backoff its cap."""
        return (self.max_retries + 1) * timeout_s + sum(self.cap(a) for a in range(self.max_retries))

    def run(self, attempt: Callable[[int], T], *, stop: Optional[threading.Event] = None,
            rng: Optional[random.Random] = None, sleep: Optional[Callable[[float], None]] = None,
            retry_timeouts: bool = True, on_retry: Optional[Callable[[RequestError], None]] = None) -> T:
        """``attempt(n)`` until it returns, retrying transient RequestErrors. The last error is raised with
        ``attempts`` set and ``(after N attempts)`` appended when more than one was made."""
        rng = rng or random.Random()
        for n in range(self.max_retries + 1):
            try:
                return attempt(n)
            except RequestError as exc:
                exc.attempts = n + 1
                last = n == self.max_retries or not exc.retryable or (exc.kind == "timeout" and not retry_timeouts)
                if last:
                    if n > 0:
                        exc.message = f"{exc.message} (after {n + 1} attempts)"
                        exc.args = (exc.message,)
                    raise
                if on_retry is not None:
                    on_retry(exc)
                wait = self.delay(n, rng, exc.retry_after)
                if sleep is not None:
                    sleep(wait)
                if stop is not None and (stop.is_set() or (sleep is None and stop.wait(wait))):
                    raise RequestError(f"{exc.message} (cancelled: the client was closed)", exc.hint, url=exc.url,
                                       kind="cancelled") from None
                if stop is None and sleep is None:
                    threading.Event().wait(wait)
        raise AssertionError("unreachable")


def describe_wait(seconds: float) -> str:
    """``4263 s`` as ``1 h 11 min`` for a CLI line."""
    s = int(round(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {(s % 3600) // 60} min"
