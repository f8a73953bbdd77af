"""The fake OpenAI-compatible server itself: the SDK talks to it, and it honours stop, max_tokens, n and seed."""

import pytest


@pytest.fixture
def client():
    from openai import OpenAI

    def make(srv):
        return OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)

    return make


def test_completions_honour_stop_max_tokens_n_and_seed(fake_server, client):
    srv = fake_server({"rules": [{"match": "q", "reply": ["a b STOP c", "d e f g h", "i"]}]})
    c = client(srv)
    r = c.completions.create(model="m", prompt="q", max_tokens=10, stop=["STOP"], seed=0)
    assert r.choices[0].text == "a b " and r.choices[0].finish_reason == "stop" and r.usage.completion_tokens == 2
    r = c.completions.create(model="m", prompt="q", max_tokens=3, seed=1)
    assert r.choices[0].text == "d e f" and r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3
    r = c.completions.create(model="m", prompt="q", max_tokens=10, n=3, seed=0)
    assert [ch.text for ch in r.choices] == ["a b STOP c", "d e f g h", "i"] and r.usage.completion_tokens == 10
    assert srv.posts("/v1/completions")[0]["stop"] == ["STOP"]


def test_chat_reasoning_models_and_moderation(fake_server, client):
    srv = fake_server({"rules": [{"match": "hi", "kind": "chat", "reply": "Hello.", "reasoning": "greet back"},
                                 {"match": "bad", "kind": "moderations", "flagged": True, "categories": ["violence"]}],
                       "default": "?"})
    c = client(srv)
    m = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=5).choices[0]
    assert m.message.content == "Hello." and m.message.reasoning_content == "greet back"
    assert c.models.list().data[0].id == "fake-model"
    res = c.moderations.create(model="omni-moderation-latest", input=["a bad thing", "fine"]).results
    assert res[0].flagged and res[0].categories.violence and not res[1].flagged


def test_faults_and_in_flight_accounting(fake_server, client):
    import openai
    from concurrent.futures import ThreadPoolExecutor

    srv = fake_server({"default": "ok"}, faults=[429, 0, 400], latency_s=0.05)
    c = client(srv)
    with pytest.raises(openai.RateLimitError):
        c.completions.create(model="m", prompt="x", max_tokens=2)
    assert c.completions.create(model="m", prompt="x", max_tokens=2).choices[0].text == "ok"
    with pytest.raises(openai.BadRequestError):
        c.completions.create(model="m", prompt="x", max_tokens=2)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: c.completions.create(model="m", prompt="x", max_tokens=2), range(8)))
    assert 2 <= srv.max_in_flight <= 4 and len(srv.posts()) == 11


def test_context_length_and_missing_completions(fake_server, client):
    import openai

    c = client(fake_server({"default": "x"}, context_len=5))
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        c.completions.create(model="m", prompt="one two three", max_tokens=3)
    c2 = client(fake_server({"default": "x"}, completions=False))
    with pytest.raises(openai.NotFoundError):
        c2.completions.create(model="m", prompt="x", max_tokens=1)


def test_script_rules_are_checked():
    from trustlab.runtime.errors import ConfigError
    from trustlab.safety.backends.scripted import Script

    with pytest.raises(ConfigError, match="unknown key"):
        Script.from_data({"rules": [{"match": "a", "replly": "b"}]})


def test_fake_server_command_serves_a_script(tmp_path):
    import json
    import subprocess
    import sys
    import urllib.request

    script = tmp_path / "rules.yaml"
    script.write_text("rules:\n  - {match: bomb, reply: \"I cannot help.\"}\ndefault: Sure.\n")
    proc = subprocess.Popen([sys.executable, "-m", "trustlab.cli.main", "safety", "fake-server", "--script",
                             str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # readiness: the server prints its URL once it listens
        assert line.startswith("serving http://127.0.0.1:"), proc.stderr.read() if proc.poll() is not None else line
        url = line.split()[1]
        body = json.dumps({"model": "m", "prompt": "a bomb", "max_tokens": 5}).encode()
        req = urllib.request.Request(url + "/completions", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert json.loads(resp.read())["choices"][0]["text"] == "I cannot help."
    finally:
        proc.terminate()
        proc.wait(timeout=60)


# --- the one shared fake (trustlab.models.llm.fake_server): readiness, the fingerprint knobs, hostile modes -------
def _post(srv, path, body, headers=None):
    import http.client
    import json

    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.request("POST", "/v1" + path, json.dumps(body), {"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    return resp.status, dict(resp.getheaders()), resp.read()


def test_the_shared_fake_listens_before_it_is_started():
    import socket

    from trustlab.models.llm.fake_server import FakeServer

    srv = FakeServer({"default": "x"})
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5):
            pass  # the constructor bound and listened: a started server is ready
    finally:
        srv.start().stop()


def test_the_shared_fake_has_the_fingerprint_knobs():
    from trustlab.models.llm.fake_server import FakeServer

    body = {"model": "suspect", "prompt": ["a", "b"], "max_tokens": 2}
    with FakeServer(answer=lambda p: p.upper(), models=("suspect",), check_model=True, api_key="k",
                    refuse_lists=True, fail_first=[0, 0, 0, 429], retry_after_s=7) as srv:
        assert _post(srv, "/completions", body)[0] == 401
        assert _post(srv, "/completions", {**body, "model": "other"}, {"Authorization": "Bearer k"})[0] == 404
        assert _post(srv, "/completions", body, {"Authorization": "Bearer k"})[0] == 400  # a list of prompts
        status, headers, _ = _post(srv, "/completions", {**body, "prompt": "a"}, {"Authorization": "Bearer k"})
        assert status == 429 and headers["retry-after"] == "7"
        status, _, raw = _post(srv, "/completions", {**body, "prompt": "a"}, {"Authorization": "Bearer k"})
        assert status == 200 and b'"text": "A"' in raw


@pytest.mark.parametrize("mode,check", [
    ("non_json", lambda raw: raw.startswith(b"<html>")),
    ("non_utf8", lambda raw: b"\xff" in raw),
    ("wrong_type", lambda raw: b'"text": 12345' in raw),
    ("negative_usage", lambda raw: b"-1000000" in raw),
    ("empty_choices", lambda raw: b'"choices": []' in raw),
    ("oversized", lambda raw: len(raw) > 100_000),
])
def test_the_shared_fake_hostile_bodies(mode, check):
    from trustlab.models.llm.fake_server import FakeServer

    with FakeServer({"default": "fine"}, mode=mode, oversize_bytes=200_000) as srv:
        status, _, raw = _post(srv, "/completions", {"model": "m", "prompt": "a", "max_tokens": 2})
    assert status == 200 and check(raw)


def test_the_shared_fake_drips_at_the_stated_rate():
    import time

    from trustlab.models.llm.fake_server import FakeServer

    with FakeServer({"default": "fine"}, mode="drip", drip_bps=40.0) as srv:
        t0 = time.monotonic()
        status, _, raw = _post(srv, "/completions", {"model": "m", "prompt": "a", "max_tokens": 2})
        took = time.monotonic() - t0
    assert status == 200 and took >= len(raw) / 40.0 * 0.9  # never faster than the rate (slower is fine)
