"""OpenAIBackend against the scripted fake server: batching, fallback, retry with backoff, partial and dead."""

import socket

import pytest

from trustlab.fingerprint.backends import Completion, HFBackend, OpenAIBackend
from trustlab.models.llm.fake_server import FakeServer
from trustlab.runtime.errors import BackendError, ConfigError

pytestmark = pytest.mark.net


def answer(prompt: str) -> str:
    return " reply-" + prompt.split()[-1]


def backend(url, sleeps=None, **kw):
    kw.setdefault("backoff_s", 0.01)
    return OpenAIBackend(url, "suspect", sleep=(sleeps.append if sleeps is not None else (lambda s: None)), **kw)


PROMPTS = [f"key number {i}" for i in range(20)]


def test_batches_of_batch_size_in_order():
    with FakeServer(models=("suspect",), check_model=True, answer=answer) as srv:
        b = backend(srv.url, batch_size=8)
        out = b.generate(PROMPTS, 1)
    assert [o[0].text for o in out] == [answer(p) for p in PROMPTS]
    assert [len(r["prompt"]) if isinstance(r["prompt"], list) else 1 for r in srv.posts()] == [8, 8, 4]
    assert b.batched is True and b.failures == {}


def test_refused_lists_fall_back_to_one_prompt_per_request():
    with FakeServer(models=("suspect",), check_model=True, answer=answer, refuse_lists=True) as srv:
        b = backend(srv.url, batch_size=8, concurrency=3)
        out = b.generate(PROMPTS, 1)
        again = b.generate(PROMPTS[:4], 1)  # remembered: no second refused batch
    assert [o[0].text for o in out] == [answer(p) for p in PROMPTS]
    assert [o[0].text for o in again] == [answer(p) for p in PROMPTS[:4]]
    assert b.batched is False
    assert sum(isinstance(r["prompt"], list) for r in srv.posts()) == 1  # only the first refused batch
    assert sum(isinstance(r["prompt"], str) for r in srv.posts()) == 24


def test_a_500_on_the_first_list_falls_back_to_one_prompt_per_request_without_retrying_it():
    """llama.cpp's server answers a list of prompts with HTTP 500: the first list is not retried."""
    sleeps = []
    with FakeServer(models=("suspect",), check_model=True, answer=answer, refuse_lists=500) as srv:
        b = backend(srv.url, sleeps, batch_size=8, concurrency=2)
        out = b.generate(PROMPTS, 1)
    assert [o[0].text for o in out] == [answer(p) for p in PROMPTS]
    assert b.batched is False and b.failures == {} and sleeps == []
    assert sum(isinstance(r["prompt"], list) for r in srv.posts()) == 1


def test_429_is_retried_with_exponential_backoff_and_retry_after():
    sleeps = []
    with FakeServer(models=("suspect",), check_model=True, answer=answer, fail_first=[429, 503, 502]) as srv:
        b = backend(srv.url, sleeps, batch_size=16, backoff_s=0.05)
        out = b.generate(PROMPTS[:5], 1)
    assert [o[0].text for o in out] == [answer(p) for p in PROMPTS[:5]]
    # jittered exponential backoff: the n-th wait lies in [cap/2, cap], cap = 0.05 * 2**n
    assert len(sleeps) == 3 and b.retries == 3
    assert all(cap / 2 <= s <= cap for s, cap in zip(sleeps, [0.05, 0.1, 0.2])), sleeps
    sleeps.clear()
    with FakeServer(models=("suspect",), check_model=True, answer=answer, fail_first=[429], retry_after_ms=30) as srv:
        backend(srv.url, sleeps, backoff_s=0.5).generate(PROMPTS[:2], 1)
    assert sleeps == pytest.approx([0.03])  # the server's Retry-After wins over our schedule


def test_partial_failure_keeps_answers_and_names_the_unanswered():
    with FakeServer(models=("suspect",), check_model=True, answer=answer, fail_after=2, fail_status=500) as srv:
        b = backend(srv.url, batch_size=4, max_retries=2)
        out = b.generate(PROMPTS[:12], 1)
    assert [o[0].text for o in out[:8]] == [answer(p) for p in PROMPTS[:8]]
    assert all(o == [] for o in out[8:]) and sorted(b.failures) == list(range(8, 12))
    assert "HTTP 500" in b.failures[8] and "after 3 attempts" in b.failures[8]


def test_partial_failure_in_one_per_request_mode():
    with FakeServer(models=("suspect",), check_model=True, answer=answer, refuse_lists=True, fail_after=5) as srv:
        b = backend(srv.url, batch_size=4, max_retries=1, concurrency=1)
        out = b.generate(PROMPTS[:10], 1)
    assert sum(bool(o) for o in out) == 5 and len(b.failures) == 5


def test_fewer_completions_than_prompts_is_an_error():
    with FakeServer(models=("suspect",), check_model=True, answer=answer, drop_one=True) as srv:
        with pytest.raises(BackendError, match="only 3 completion"):
            backend(srv.url).generate(PROMPTS[:4], 1)


def test_auth_error_and_unknown_model_fail_fast():
    with FakeServer(models=("suspect",), check_model=True, answer=answer, api_key="right") as srv:
        b = backend(srv.url, api_key="wrong")
        with pytest.raises(BackendError, match="credentials") as exc:
            b.generate(PROMPTS[:3], 1)
        assert "OPENAI_API_KEY" in exc.value.hint and len(srv.posts()) == 1
    with FakeServer(check_model=True, answer=answer, models=("base", "other")) as srv:
        with pytest.raises(BackendError, match="does not serve model 'suspect'") as exc:
            backend(srv.url).generate(PROMPTS[:3], 1)
        assert "served models: base, other" in exc.value.hint and len(srv.posts()) == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dead_endpoint_is_a_backend_error_exit_4():
    sleeps = []
    b = backend(f"http://127.0.0.1:{free_port()}/v1", sleeps, max_retries=2, timeout_s=5)
    with pytest.raises(BackendError, match="answered none") as exc:
        b.generate(PROMPTS[:3], 1)
    assert exc.value.exit_code == 4 and "reachable" in exc.value.hint and len(sleeps) == 2


def test_chat_api_and_samples():
    with FakeServer(models=("suspect",), check_model=True, answer=answer) as srv:
        b = backend(srv.url, api="chat", concurrency=2)
        out = b.generate(PROMPTS[:3], 1, temperature=0.7, n=3, seed=1)
    assert [len(o) for o in out] == [3, 3, 3] and out[2][1].text == answer(PROMPTS[2])
    assert all(r["path"].endswith("/chat/completions") and r["body"]["n"] == 3 and r["body"]["seed"] == 1
               for r in srv.requests if r["method"] == "POST")


@pytest.mark.parametrize("kw,match", [({"api": "rest"}, "api"), ({"base_url": "localhost:8000"}, "http"),
                                      ({"model": ""}, "served-model"), ({"batch_size": 0}, "batch_size")])
def test_bad_backend_settings(kw, match):
    args = {"base_url": "http://127.0.0.1:1/v1", "model": "suspect", **kw}
    with pytest.raises(ConfigError, match=match):
        OpenAIBackend(**args)


def test_bad_generate_arguments():
    b = OpenAIBackend("http://127.0.0.1:1/v1", "suspect")
    with pytest.raises(ConfigError, match="samples > 1 needs temperature"):
        b.generate(["a"], 1, n=2)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        b.generate(["a"], 0)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_hf_backend_left_padding_matches_unbatched_greedy(tiny_lm, batch_size):
    model, tok = tiny_lm
    prompts = [tok("hello there")["input_ids"], tok("a much longer prompt for padding")["input_ids"], [65, 66, 67]]
    out = HFBackend(model, tok, batch_size=batch_size).generate(prompts, 4)
    single = [HFBackend(model, tok, batch_size=1).generate([p], 4)[0][0] for p in prompts]
    assert [o[0].token_ids for o in out] == [s.token_ids for s in single]
    assert all(isinstance(o[0], Completion) and len(o[0].token_ids) <= 4 for o in out)


def test_hf_backend_sampling_is_seeded(tiny_lm):
    model, tok = tiny_lm
    b = HFBackend(model, tok, batch_size=2)
    a1 = b.generate(["abc", "defg"], 3, temperature=1.0, n=2, seed=5)
    a2 = b.generate(["abc", "defg"], 3, temperature=1.0, n=2, seed=5)
    assert a1 == a2 and [len(x) for x in a1] == [2, 2]


def test_failed_keys_do_not_end_querying_until_three_requests_in_a_row_fail():
    """Issue 18 §4: a server that errors on chosen keys leaves only those unanswered; three failed requests in a
    row count as a dead endpoint (the rest is named 'not sent')."""
    bad = {PROMPTS[i] for i in (1, 4, 5)}
    with FakeServer(models=("suspect",), check_model=True, answer=answer,
                    fail_prompt=lambda p: 500 if p in bad else 0) as srv:
        b = backend(srv.url, batch_size=1, max_retries=0)
        out = b.generate(PROMPTS[:8], 1)
    assert sorted(b.failures) == [1, 4, 5] and all(out[i] for i in (0, 2, 3, 6, 7))
    dead = {PROMPTS[i] for i in range(2, 20)}
    with FakeServer(models=("suspect",), check_model=True, answer=answer,
                    fail_prompt=lambda p: 503 if p in dead else 0) as srv:
        b = backend(srv.url, batch_size=1, max_retries=0)
        out = b.generate(PROMPTS[:10], 1)
        assert len(srv.posts("/completions")) == 5  # two answered, three failed, then nothing more sent
    assert [i for i, o in enumerate(out) if o] == [0, 1]
    assert all("not sent" in b.failures[i] for i in range(5, 10)) and "503" in b.failures[2]
