"""Daemon-thread helpers that never make a process wait for a remote peer.

- ``call_with_deadline(fn, deadline_s, stop)``: ``fn()`` on a daemon thread; the caller gets its result, its
  exception, or a timeout ``RequestError`` once ``deadline_s`` has passed (the thread is abandoned, never joined).
- ``daemon_map(fn, items, workers, stop)``: ``fn`` over ``items`` on at most ``workers`` daemon threads, results in
  order; the first exception stops new items from starting and is raised; Ctrl-C in the caller returns at once.
Both wait in short slices, so KeyboardInterrupt reaches the main thread within ~0.1 s, and interpreter exit never
joins a thread that is still talking to a server (unlike ThreadPoolExecutor's atexit join).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional, Sequence

from .retry import RequestError

SLICE_S = 0.1


def call_with_deadline(fn: Callable[[], Any], deadline_s: float, stop: Optional[threading.Event] = None, *,
                       url: str = "", what: str = "request", shown_s: Optional[float] = None) -> Any:
    box: dict[str, Any] = {}
    done = threading.Event()

    def body():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=body, daemon=True, name="llm-request").start()
    end = time.monotonic() + deadline_s
    while not done.wait(SLICE_S):
        if stop is not None and stop.is_set():
            raise RequestError(f"{what} to {url} cancelled: the client was closed", url=url, kind="cancelled")
        if time.monotonic() >= end:
            raise RequestError(f"no complete reply from {url} ({what}) within the {shown_s or deadline_s:g} s "
                               "deadline",
                               "raise --timeout if the server is just slow, or check that it is healthy",
                               url=url, kind="timeout")
    if "error" in box:
        raise box["error"]
    return box["value"]


def daemon_map(fn: Callable[[Any], Any], items: Sequence[Any], workers: int,
               stop: Optional[threading.Event] = None) -> list:
    items = list(items)
    if not items:
        return []
    results: list[Any] = [None] * len(items)
    errors: list[BaseException] = []
    cancel = threading.Event()
    lock = threading.Lock()
    next_i = [0]
    remaining = [len(items)]
    finished = threading.Event()

    def worker():
        while True:
            with lock:
                if next_i[0] >= len(items) or cancel.is_set() or (stop is not None and stop.is_set()):
                    break
                i = next_i[0]
                next_i[0] += 1
            try:
                results[i] = fn(items[i])
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                with lock:
                    errors.append(exc)
                cancel.set()
            with lock:
                remaining[0] -= 1
        with lock:
            alive[0] -= 1
            if alive[0] == 0 or remaining[0] == 0:
                finished.set()

    n = max(1, min(workers, len(items)))
    alive = [n]
    for _ in range(n):
        threading.Thread(target=worker, daemon=True, name="llm-worker").start()
    try:
        while not finished.wait(SLICE_S):
            pass
    except BaseException:
        cancel.set()
        raise
    if errors:
        raise errors[0]
    if remaining[0]:
        raise RequestError("requests were cancelled: the client was closed", kind="cancelled")
    return results
