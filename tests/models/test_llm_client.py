"""The one OpenAI-compatible client (``trustlab.models.llm.openai_client``) against the one fake server in every
hostile mode: each malformed reply is a RequestError (exit 4) naming the URL and what was wrong, sent once (never
retried); a dripping or silent server is cut off by the total deadline; the retry policy retries exactly the
transient failures with capped, jittered backoff; ``close()`` and the stop event end waits at once.

Time bounds wait for readiness (the server has the request) and allow a busy machine many times the deadline."""

from __future__ import annotations

import random
import threading
import time

import pytest

from trustlab.models.llm.bounded import daemon_map
from trustlab.models.llm.fake_server import FakeServer
from trustlab.models.llm.openai_client import OpenAIClient, check_url
from trustlab.models.llm.replies import reply_cap
from trustlab.models.llm.retry import RequestError, RetryPolicy
from trustlab.runtime.errors import ConfigError

pytestmark = pytest.mark.net

FAST = RetryPolicy(max_retries=2, backoff_min_s=0.01, backoff_max_s=0.02)
BOUND_S = 30.0  # many times every deadline below: the checks hold on a busy machine
COMPLETION = {"model": "fake-model", "prompt": "hello", "max_tokens": 4}
CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


def client(srv: FakeServer, **kw) -> OpenAIClient:
    kw.setdefault("policy", FAST)
    kw.setdefault("timeout_s", 60.0)  # only the deadline tests below use short ones
    return OpenAIClient(srv.base_url, **kw)


# --- URLs ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("url,word", [("http://127.0.0.1:70000/v1", "port"), ("localhost:8000", "http"),
                                      ("http://:8000/v1", "host"), ("http://127.0.0.1:abc/v1", "port"),
                                      ("ftp://h/v1", "http")])
def test_a_malformed_url_is_exit_2_at_construction(url, word):
    with pytest.raises(ConfigError) as exc:
        OpenAIClient(url)
    assert exc.value.exit_code == 2 and word in exc.value.message.lower() and exc.value.hint


def test_a_good_url_loses_its_trailing_slash():
    assert check_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1"


# --- the endpoints --------------------------------------------------------------------------------------------------
def test_completions_chat_models_and_moderations():
    rules = {"rules": [{"match": "hello", "reply": "one two three", "reasoning": "think"},
                       {"match": "kill", "flagged": True, "categories": ["violence"], "kind": "moderations"}]}
    with FakeServer(rules) as srv:
        c = client(srv)
        r = c.completions(COMPLETION)
        assert (r.choices[0].text, r.choices[0].finish_reason, r.completion_tokens) == ("one two three", "stop", 3)
        ch = c.chat(CHAT)
        assert ch.choices[0].text == "one two three" and ch.choices[0].reasoning == "think"
        assert c.models() == ["fake-model"]
        mods = c.moderate("omni", ["kill it", "a garden"])
        assert [m["flagged"] for m in mods] == [True, False] and mods[0]["categories"]["violence"] is True
        assert c.requests == 4 and c.retries == 0


# --- hostile replies ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,payload,words", [
    ("non_json", COMPLETION, ["not JSON"]),
    ("non_utf8", COMPLETION, ["UTF-8"]),
    ("wrong_type", COMPLETION, ["choices[0].text", "12345"]),
    ("wrong_type", CHAT, ["choices[0].message.content", "12345"]),
    ("bad_usage", COMPLETION, ["usage.completion_tokens", "abc"]),
    ("negative_usage", CHAT, ["negative", "-1000000"]),
    ("ignore_max_tokens", COMPLETION, ["ignores max_tokens", "max_tokens=4"]),
    ("empty_choices", CHAT, ["choices is empty"]),
    ("oversized", COMPLETION, ["cap"]),
], ids=["non-json", "non-utf8", "text-12345", "content-12345", "usage-abc", "negative-usage", "ignores-max-tokens",
        "empty-choices", "oversized"])
def test_every_malformed_reply_is_exit_4_naming_the_url_and_is_not_retried(mode, payload, words):
    with FakeServer({"default": "fine"}, mode=mode, oversize_bytes=4_000_000) as srv:
        c = client(srv)
        call = c.chat if "messages" in payload else c.completions
        with pytest.raises(RequestError) as exc:
            call(payload)
        assert len(srv.posts()) == 1  # a malformed reply is not transient: sent once
    err = exc.value
    assert err.exit_code == 4 and err.kind == "malformed" and srv.base_url in err.message and err.hint
    for w in words:
        assert w in err.message, err.message
    assert "\n" not in err.message


def test_the_reply_cap_follows_max_tokens():
    assert reply_cap(1) < 100_000 < 50_000_000  # a 50 MB body for max_tokens=1 is refused
    assert reply_cap(16000) > 16000 * 16  # a real long answer (16 bytes a token) fits
    assert reply_cap(10, choices=4) > reply_cap(10)


def test_fewer_choices_than_asked_is_malformed():
    with FakeServer({"default": "a"}, drop_one=True) as srv:
        with pytest.raises(RequestError, match="only 1 completion"):
            client(srv).completions({**COMPLETION, "prompt": ["a", "b"]}, expect=2)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["drip", "hang"])
def test_a_dripping_or_silent_server_is_cut_at_the_total_deadline(mode):
    with FakeServer({"default": "a b c"}, mode=mode, drip_bps=2.0) as srv:
        c = client(srv, timeout_s=1.0, policy=RetryPolicy(1, 0.01, 0.01))
        t0 = time.monotonic()
        with pytest.raises(RequestError) as exc:
            c.completions(COMPLETION)
        elapsed = time.monotonic() - t0
        assert len(srv.posts()) == 2  # a timeout is transient: retried once, then exit 4
    assert exc.value.kind == "timeout" and "1 s deadline" in exc.value.message and srv.base_url in exc.value.message
    assert "(after 2 attempts)" in exc.value.message and elapsed < BOUND_S


@pytest.mark.timeout(120)
def test_the_probe_is_bounded_and_a_timeout_there_is_not_retried():
    with FakeServer({}, mode="hang", hostile_get=True) as srv:
        c = client(srv, timeout_s=1.0, policy=RetryPolicy(6, 0.01, 0.01))
        t0 = time.monotonic()
        with pytest.raises(RequestError) as exc:
            c.probe()
        assert time.monotonic() - t0 < BOUND_S and len(srv.requests) == 1
    assert exc.value.exit_code == 4 and exc.value.kind == "timeout" and "/models" in exc.value.message


def test_an_empty_model_list_passes_the_probe():
    with FakeServer({}, fail_first=0) as srv:
        srv.models = ()
        assert client(srv).probe() == []


# --- the retry policy -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("statuses,posts,ok", [([500, 503], 3, True), ([429, 502], 3, True), ([400], 1, False),
                                               ([404], 1, False), ([500, 500, 500], 3, False)])
def test_only_transient_statuses_are_retried(statuses, posts, ok):
    with FakeServer({"default": "fine"}, fail_first=statuses) as srv:
        c = client(srv)
        if ok:
            assert c.completions(COMPLETION).choices[0].text == "fine"
        else:
            with pytest.raises(RequestError) as exc:
                c.completions(COMPLETION)
            assert exc.value.status == statuses[-1] and f"HTTP {statuses[-1]}" in exc.value.message
        assert len(srv.posts()) == posts


def test_retry_after_is_honoured_up_to_the_cap():
    sleeps: list[float] = []
    with FakeServer({"default": "fine"}, fail_first=[429, 429], retry_after_s=0.03) as srv:
        client(srv, sleep=sleeps.append, policy=RetryPolicy(3, 1.0, 2.0)).completions(COMPLETION)
    assert sleeps == pytest.approx([0.03, 0.03])
    sleeps.clear()
    with FakeServer({"default": "fine"}, fail_first=[429], retry_after_s=3600) as srv:
        client(srv, sleep=sleeps.append, policy=RetryPolicy(3, 0.1, 0.5)).completions(COMPLETION)
    assert sleeps == pytest.approx([0.5])  # a server asking for an hour gets the cap


def test_backoff_is_jittered_exponential_and_the_worst_case_is_stated():
    policy = RetryPolicy(max_retries=4, backoff_min_s=1.0, backoff_max_s=4.0)
    rng = random.Random(0)
    for attempt, cap in enumerate([1.0, 2.0, 4.0, 4.0]):
        waits = [policy.delay(attempt, rng) for _ in range(200)]
        assert all(cap / 2 <= w <= cap for w in waits) and max(waits) - min(waits) > cap / 4
    assert policy.worst_case_s(10.0) == 5 * 10.0 + 1 + 2 + 4 + 4
    assert OpenAIClient("http://127.0.0.1:1/v1", timeout_s=10.0, policy=policy).worst_case_s() == 61.0


@pytest.mark.timeout(120)
def test_the_stop_event_ends_a_backoff_sleep_at_once():
    with FakeServer({"default": "x"}, fail_first=1000) as srv:
        c = client(srv, policy=RetryPolicy(5, 60.0, 60.0))  # a minute between attempts
        box = {}
        th = threading.Thread(target=lambda: box.setdefault("err", _raises(lambda: c.completions(COMPLETION))))
        th.start()
        while not srv.posts():  # readiness: the first attempt has failed or is failing
            time.sleep(0.01)
        t0 = time.monotonic()
        c.close()
        th.join(BOUND_S)
        assert not th.is_alive() and time.monotonic() - t0 < BOUND_S
    assert box["err"].kind == "cancelled" and len(srv.posts()) == 1


@pytest.mark.timeout(120)
def test_close_abandons_a_request_in_flight():
    with FakeServer({}, mode="hang") as srv:
        c = client(srv, timeout_s=600.0)
        box = {}
        th = threading.Thread(target=lambda: box.setdefault("err", _raises(lambda: c.completions(COMPLETION))))
        th.start()
        while not srv.posts():
            time.sleep(0.01)
        c.close()
        th.join(BOUND_S)
        assert not th.is_alive()
    assert box["err"].kind == "cancelled"


def _raises(fn):
    try:
        fn()
    except RequestError as exc:
        return exc
    raise AssertionError("no RequestError")


# --- daemon workers -------------------------------------------------------------------------------------------------
def test_daemon_map_keeps_order_bounds_workers_and_raises_the_first_error():
    live, peak, lock = [0], [0], threading.Lock()

    def slow(x):
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(0.01)
        with lock:
            live[0] -= 1
        return x * x

    assert daemon_map(slow, range(20), 3) == [x * x for x in range(20)] and 1 < peak[0] <= 3
    started = []

    def boom(x):
        started.append(x)
        if x == 0:
            raise ValueError("first")
        time.sleep(0.05)
        return x

    with pytest.raises(ValueError, match="first"):
        daemon_map(boom, range(50), 2)
    assert len(started) < 50  # what had not started is never sent
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("llm-"))
