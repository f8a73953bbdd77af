"""Backends: transformers on a tiny random R1-like model; the OpenAI-compatible client against the fake server
(retries, no retries on 4xx, bounded concurrency over two servers, dead servers, the exact strings on the wire)."""

import pytest

from trustlab.runtime.errors import BackendError, ConfigError, MissingDependencyError
from trustlab.safety.backends.base import GenParams, messages_for
from trustlab.safety.backends.hf import HFBackend
from trustlab.safety.backends.openai_compat import OpenAIBackend
from trustlab.safety.config import BackendConfig, Sampling, Thinking
from trustlab.safety.thinking import generate_samples

from .conftest import PLAIN_TEMPLATE, Rec, tiny_r1_model

PROMPTS = ["hi", "tell me a story about a cat", "x", "what is two plus two, and why?", "ok go"]


# --- transformers -----------------------------------------------------------------------------------------------
def test_hf_batched_greedy_equals_one_at_a_time(tiny_r1):
    model, tok = tiny_r1
    b4, b1 = HFBackend(model, tok, batch_size=4), HFBackend(model, tok, batch_size=1)
    rendered = [b4.render(messages_for(p)) for p in PROMPTS]
    params = GenParams(max_tokens=24)
    batched, single = b4.complete(rendered, params), b1.complete(rendered, params)
    assert [(c.text, c.tokens, c.finish_reason) for c in batched] == [(c.text, c.tokens, c.finish_reason)
                                                                      for c in single]
    assert all(c.tokens <= 24 for c in batched)


def test_hf_token_accounting_matches_generated_ids(tiny_r1):
    import torch

    model, tok = tiny_r1
    b = HFBackend(model, tok, batch_size=2)
    prompt = b.render(messages_for("tell me a story"))
    enc = tok([prompt], return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        ids = model.generate(**enc, max_new_tokens=30, do_sample=False, pad_token_id=tok.pad_token_id)[0, enc.input_ids.shape[1]:].tolist()
    eos = ids.index(tok.eos_token_id) if tok.eos_token_id in ids else len(ids)
    full = b.complete([prompt], GenParams(max_tokens=30))[0]
    assert full.tokens == eos and full.text == tok.decode(ids[:eos], skip_special_tokens=True)
    assert full.finish_reason == ("stop" if eos < 30 else "length")
    # a stop string taken from the middle of that output: the text is cut before it and the count covers the ids
    # up to the one completing it
    text = full.text
    stop = text[len(text) // 2: len(text) // 2 + 2]
    cut = b.complete([prompt], GenParams(max_tokens=30, stop=(stop,)))[0]
    assert cut.finish_reason == "stop" and cut.text == text[:text.find(stop)]
    assert stop in tok.decode(ids[:cut.tokens]) and stop not in tok.decode(ids[:cut.tokens - 1])
    short = b.complete([prompt], GenParams(max_tokens=5))[0]
    assert short.tokens == min(5, eos) and short.text == tok.decode(ids[:short.tokens], skip_special_tokens=True)


def test_hf_morethink_budget_20_and_prefilled_template(tiny_r1):
    model, tok = tiny_r1
    b = HFBackend(model, tok, batch_size=4)
    th = Thinking(strategy="morethink", think_budget=20, max_extensions=2, answer_max_tokens=10)
    out = list(generate_samples(b, [Rec("a", "hi"), Rec("b", "tell me more")], th, Sampling(k=2)))
    assert len(out) == 4
    for g in out:
        assert g.prefilled  # the R1-like template ends with <think>\n: not doubled
        assert g.response.startswith("<think>\n") and g.response.count("<think>\n") >= 1
        assert g.calls <= th.max_extensions + 2 and g.answer_tokens <= 10
        assert g.think_tokens <= 20 + th.max_extensions  # each round is capped at the budget left
    default = list(generate_samples(b, [Rec("a", "hi")], Thinking(), Sampling(max_tokens=20)))[0]
    assert default.prefilled and default.response.startswith("<think>\n")


def test_hf_missing_chat_template_hints_flag():
    model, tok = tiny_r1_model()
    tok.chat_template = None
    with pytest.raises(ConfigError, match="no chat template") as exc:
        HFBackend(model, tok).render(messages_for("hi"))
    assert "--chat-template" in exc.value.hint
    assert HFBackend(model, tok, chat_template=PLAIN_TEMPLATE).render(messages_for("hi")) == "<|user|>hi\n<|assistant|>"


def test_vllm_missing_names_the_extra():
    from trustlab.safety.backends.base import make_backend

    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(MissingDependencyError) as exc:
        make_backend(BackendConfig(kind="vllm", model="x"))
    assert exc.value.hint == "pip install 'trustlab[vllm]'" and exc.value.exit_code == 3


# --- OpenAI-compatible ------------------------------------------------------------------------------------------
def _client(*urls, **kw):
    kw.setdefault("retry_min_s", 0.001)
    kw.setdefault("retry_max_s", 0.01)
    return OpenAIBackend("fake-model", urls, **kw)


@pytest.mark.parametrize("faults,posts", [(dict(fail_first=2), 3), (dict(faults=[429, 503]), 3),
                                          (dict(fail_first=1, fail_status=502), 2)])
def test_openai_retries_transient_errors(fake_server, faults, posts):
    srv = fake_server({"default": "fine thanks"}, **faults)
    [c] = _client(srv.base_url, max_retries=3).complete(["hello"], GenParams(max_tokens=5))
    assert c.ok and c.text == "fine thanks" and c.tokens == 2
    assert len(srv.posts("/completions")) == posts


def test_openai_retries_timeouts(fake_server):
    srv = fake_server({"default": "late"}, hang_first=1, hang_s=8.0)
    [c] = _client(srv.base_url, timeout_s=2.0, max_retries=3).complete(["hello"], GenParams(max_tokens=5))
    assert c.ok and c.text == "late" and len(srv.posts("/completions")) >= 2  # the first one timed out


@pytest.mark.parametrize("status", [400, 404, 422])
def test_openai_no_retry_on_other_4xx_and_no_substitute_text(fake_server, status):
    srv = fake_server({"default": "never"}, faults=[status])
    [c] = _client(srv.base_url, max_retries=5).complete(["hello"], GenParams(max_tokens=5))
    assert not c.ok and c.text == "" and c.tokens == 0 and f"HTTP {status}" in c.error
    assert len(srv.posts("/completions")) == 1


def test_openai_persistent_5xx_is_an_error_record(fake_server):
    srv = fake_server({"default": "never"}, fail_first=100)
    [c] = _client(srv.base_url, max_retries=2).complete(["hello"], GenParams(max_tokens=5))
    assert c.finish_reason == "error" and c.text == "" and "after 3 attempts" in c.error
    assert len(srv.posts()) == 3


def test_openai_context_overflow_is_an_error_record(fake_server):
    srv = fake_server({"default": "x"}, context_len=10)
    [c] = _client(srv.base_url).complete(["one two three"], GenParams(max_tokens=50))
    assert not c.ok and "context length" in c.error and len(srv.posts()) == 1


def test_openai_concurrency_bounded_over_two_servers(fake_server):
    a = fake_server({"default": "a"}, latency_s=0.05)
    b = fake_server({"default": "b"}, latency_s=0.05)
    be = _client(a.base_url, b.base_url, concurrency=4)
    outs = be.complete([f"p{i}" for i in range(24)], GenParams(max_tokens=3))
    assert all(o.ok for o in outs)
    assert len(a.posts()) > 0 and len(b.posts()) > 0 and len(a.posts()) + len(b.posts()) == 24
    assert a.max_in_flight + b.max_in_flight <= 4
    assert max(a.max_in_flight, b.max_in_flight) >= 2  # it is concurrent


def test_openai_dead_server_is_backend_error_with_url():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    url = f"http://127.0.0.1:{port}/v1"
    be = _client(url, max_retries=1)
    with pytest.raises(BackendError) as exc:
        be.complete(["hello"], GenParams(max_tokens=5))
    assert url in exc.value.message and exc.value.exit_code == 4
    with pytest.raises(BackendError, match=f"127.0.0.1:{port}"):
        be.probe()


def test_openai_one_dead_server_of_two_fails_over(fake_server):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    s.close()
    live = fake_server({"default": "ok"})
    outs = _client(dead, live.base_url, max_retries=3, concurrency=2).complete(["a", "b", "c"], GenParams(max_tokens=2))
    assert all(o.ok for o in outs)


def test_openai_wire_format_and_extra_body(fake_server):
    srv = fake_server({"default": "a b c d e"})
    be = _client(srv.base_url)
    be.complete(["x"], GenParams(max_tokens=3, stop=("c",), seed=11))
    be.complete(["x"], GenParams(max_tokens=3, top_k=20, repetition_penalty=1.1, temperature=0.6, top_p=0.9))
    first, second = srv.posts("/completions")
    assert first["stop"] == ["c"] and first["seed"] == 11 and first["n"] == 1 and first["max_tokens"] == 3
    assert "top_k" not in first and "repetition_penalty" not in first
    assert second["top_k"] == 20 and second["repetition_penalty"] == 1.1 and second["temperature"] == 0.6


def test_openai_chat_rebuilds_reasoning_content(fake_server):
    srv = fake_server({"rules": [{"match": "hi", "reply": "Hello!", "reasoning": "The user greets me."}]})
    [c] = _client(srv.base_url).chat([messages_for("hi")], GenParams(max_tokens=10))
    assert c.text == "<think>\nThe user greets me.</think>\n\nHello!" and c.tokens == 5


def test_openai_forced_strategy_needs_a_template(fake_server):
    srv = fake_server({"default": "x"})
    with pytest.raises(ConfigError) as exc:
        _client(srv.base_url).render(messages_for("hi"))
    assert "--tokenizer" in exc.value.hint and "--chat-template" in exc.value.hint


def test_openai_probe_missing_completions_endpoint(fake_server):
    srv = fake_server({"default": "x"}, completions=False)
    with pytest.raises(ConfigError, match="has no /v1/completions"):
        _client(srv.base_url).probe(completions=True)


# --- the exact strings on the wire ------------------------------------------------------------------------------
def test_wire_strings_of_each_strategy(fake_server):
    srv = fake_server({"rules": [{"match": "", "endswith": "</think>\n\n", "reply": "No."},
                                 {"match": "", "reply": "hmm ok </think> later"}]})
    be = _client(srv.base_url, chat_template=PLAIN_TEMPLATE)
    rendered = "<|user|>q\n<|assistant|>"
    for strategy in ("zerothink", "lessthink"):
        list(generate_samples(be, [Rec("p", "q")], Thinking(strategy=strategy), Sampling()))
    th = Thinking(strategy="morethink")
    [g] = list(generate_samples(be, [Rec("p", "q")], th, Sampling(seed=3)))
    posts = srv.posts("/completions")
    assert posts[0]["prompt"] == rendered + "<think>\n\n</think>\n\n"
    assert posts[1]["prompt"] == rendered + "<think>\nOkay, the user ask for this, I can answer it without thinking " \
                                            "much. \n</think>\n\n"
    more = posts[2:]
    assert len(more) == th.max_extensions + 2 == 12  # 12 requests per MoreThink sample at the defaults
    assert more[0]["prompt"] == rendered + "<think>\n" and more[0]["stop"] == ["</think>"]
    assert more[0]["max_tokens"] == 10000 and more[1]["max_tokens"] == 9998
    assert more[1]["prompt"].startswith(rendered + "<think>\nhmm ok ")
    assert more[-1]["prompt"].endswith("</think>\n\n") and "stop" not in more[-1] and more[-1]["max_tokens"] == 6000
    assert all(r["seed"] == g.sample_seed for r in more)
    assert g.extensions == 10 and g.think_tokens == 22 and g.answer == "No."


def test_default_strategy_uses_chat_and_k_seeds_on_the_wire(fake_server):
    srv = fake_server({"rules": [{"match": "q", "reply": ["one", "two", "three"]}]})
    out = list(generate_samples(_client(srv.base_url), [Rec("p", "q")], Thinking(), Sampling(k=3, temperature=0.6)))
    chats = srv.posts("/chat/completions")
    assert len(chats) == 3 and not srv.posts("/v1/completions")
    assert sorted(c["seed"] for c in chats) == sorted(g.sample_seed for g in out)  # concurrent: any order
    assert [g.response for g in out] == [["one", "two", "three"][g.sample_seed % 3] for g in out]
    assert chats[0]["messages"] == [{"role": "user", "content": "q"}]


def test_hf_greedy_reruns_are_identical_and_batching_invariant(tiny_r1, tmp_path):
    import json

    from trustlab.safety.config import EvalConfig
    from trustlab.safety.pipeline import generate

    model, tok = tiny_r1
    cfg = EvalConfig(dataset="fixture", limit=3, strategies=("default", "morethink"),
                     thinking=Thinking(think_budget=12, max_extensions=2, answer_max_tokens=6),
                     sampling=Sampling(max_tokens=12))

    def lines(out):
        rows = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()[1:]]
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]

    generate(cfg, tmp_path / "a", backend=HFBackend(model, tok, batch_size=3))
    generate(cfg, tmp_path / "b", backend=HFBackend(model, tok, batch_size=3))
    generate(cfg, tmp_path / "c", backend=HFBackend(model, tok, batch_size=1))
    assert lines(tmp_path / "a") == lines(tmp_path / "b") == lines(tmp_path / "c")
    more = [g for g in lines(tmp_path / "a") if g["strategy"] == "morethink"]
    default = [g for g in lines(tmp_path / "a") if g["strategy"] == "default"]
    assert len(more) == len(default) == 3 and all(g["calls"] <= 4 for g in more)


def test_dead_server_under_concurrency_raises_and_closes(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    s.close()
    be = _client(url, max_retries=2, concurrency=4)
    with pytest.raises(BackendError, match=url.replace(".", r"\.")):
        be.complete([f"p{i}" for i in range(20)], GenParams(max_tokens=2))
    be.close()  # pending requests are cancelled: this returns instead of retrying 20 dead requests
    assert be._stop.is_set()
