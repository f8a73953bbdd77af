"""The top-r verifier through an OpenAI-compatible server reporting logprobs (the shared FakeServer, with logprobs
added by a subclass in this file only)."""

from __future__ import annotations

import pytest

from trustlab.fingerprint.topr_remote import RemoteTopR, reported_hit, text_null
from trustlab.models.llm.fake_server import FakeServer
from trustlab.models.llm.openai_client import OpenAIClient
from trustlab.models.llm.retry import RetryPolicy
from trustlab.runtime.errors import BackendError, ConfigError

pytestmark = pytest.mark.net


class LogprobServer(FakeServer):
    """FakeServer whose replies carry ``logprobs(prompt) -> {token text: logprob}`` (or a raw object)."""

    def __init__(self, logprobs, **kw):
        super().__init__(answer=lambda p: "x", **kw)
        self.logprobs = logprobs

    def _completions(self, body):
        status, out = super()._completions(body)
        for ch in out.get("choices", []):
            got = self.logprobs(body.get("prompt"))
            ch["logprobs"] = got if not isinstance(got, dict) else {"tokens": ["x"], "token_logprobs": [-0.1],
                                                                    "top_logprobs": [got]}
        return status, out

    def _chat(self, body):
        status, out = super()._chat(body)
        prompt = body["messages"][-1]["content"]
        for ch in out.get("choices", []):
            top = [{"token": t, "logprob": v, "bytes": None} for t, v in self.logprobs(prompt).items()]
            ch["logprobs"] = {"content": [{"token": "x", "logprob": -0.1, "top_logprobs": top}]}
        return status, out


@pytest.fixture(scope="module")
def keyed(tiny_fps, fp_tiny_path):
    from trustlab.models import load_causal_lm

    _, tok = load_causal_lm(str(fp_tiny_path))
    fps = tiny_fps.sample(12, seed=0)  # 12 keys: (2/3)^12 = 0.008 < alpha = 0.01 at r = 2
    return fps, tok, {fp.key_text: fp for fp in fps.fingerprints}


def _verify(srv, tok, fps, r, api="completions"):
    client = OpenAIClient(srv.base_url, timeout_s=30.0, policy=RetryPolicy(1, 0.01, 0.02))
    return RemoteTopR(client, "fake-model", tok, api=api).verify(fps, r, alpha=0.01)


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_a_server_ranking_the_response_second_is_owned_at_r2_only(keyed, api):
    fps, tok, by_key = keyed

    def lp(prompt):
        fp = by_key[prompt]
        other = [c for c in fp.candidates if c != fp.response_ids[0]][0]
        return {tok.decode([other]): -0.2, tok.decode([fp.response_ids[0]]): -1.5, "zzz": -4.0}

    with LogprobServer(lp) as srv:
        r1, r2 = _verify(srv, tok, fps, 1, api), _verify(srv, tok, fps, 2, api)
    assert r1.m == 0 and r1.decision == "not owned"
    assert r2.m == r2.M == len(fps) and r2.decision == "OWNED" and r2.p_value == pytest.approx((2 / 3) ** len(fps))


def test_an_innocent_or_hostile_server_is_not_owned(keyed):
    fps, tok, by_key = keyed

    def all_candidates_tied(prompt):  # every candidate at once, tied: the response never ranks within r
        return {tok.decode([c]): -1.0 for c in by_key[prompt].candidates}

    def first_candidates(prompt):  # the lowest-id candidates, whichever the secret chose: a hit rate of r/k
        fp = by_key[prompt]
        return {tok.decode([c]): -1.0 - i for i, c in enumerate(sorted(fp.candidates))}

    with LogprobServer(all_candidates_tied) as srv:
        res = _verify(srv, tok, fps, 2)
    assert res.m == 0 and res.decision == "not owned"
    with LogprobServer(first_candidates) as srv:
        res = _verify(srv, tok, fps, 1)
    assert res.decision == "not owned" and res.M == len(fps)


def test_malformed_logprobs_leave_keys_unanswered(keyed):
    fps, tok, by_key = keyed
    bad = {0: None, 1: {"top_logprobs": "nope"}, 2: {"top_logprobs": [{"a": 1.5}]}}

    def lp(prompt):
        i = list(by_key).index(prompt)
        return bad.get(i % 4, {tok.decode([by_key[prompt].response_ids[0]]): -0.1})

    with LogprobServer(lp) as srv:
        client = OpenAIClient(srv.base_url, timeout_s=30.0, policy=RetryPolicy(1, 0.01, 0.02))
        v = RemoteTopR(client, "fake-model", tok)
        res = v.verify(fps, 1)
    assert res.M == len(fps) // 4 and res.m == res.M and len(v.failures) == len(fps) - res.M
    assert any("logprobs" in why for why in v.failures.values())
    with LogprobServer(lambda p: None) as srv:
        with pytest.raises(BackendError, match="none of"):
            _verify(srv, tok, fps, 1)
    with pytest.raises(ConfigError, match="1..20"):
        RemoteTopR(None, "m", tok).verify(fps, 0)


def test_text_null_groups_candidates_that_decode_alike():
    class Tok:
        def decode(self, ids):
            return {1: "a", 2: "a", 3: "b", 4: "c"}[ids[0]]

    assert text_null((1, 2, 3, 4), Tok(), 1) == 0.5 and text_null((1, 2, 3, 4), Tok(), 2) == 0.75
    assert text_null((1, 3, 4), Tok(), 3) == 1.0
    assert reported_hit({"a": -1.0, "b": -1.0}, "a", 1) is False and reported_hit({"a": -1.0, "b": -2}, "a", 1)
