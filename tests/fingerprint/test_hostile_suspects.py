"""Issue 18 §4: a suspect that controls its server. Every hostile mode on the shared fake server never yields OWNED
for a model that never saw the fingerprints, each failure is named in the results, and exit 4 (BackendError) comes
only when nothing could be verified. The set is fp-tiny's 32 generated perinucleus fingerprints (stored
candidates, so the text nulls are computed, not assumed)."""

import random
import time

import pytest

from trustlab.fingerprint.backends import OpenAIBackend
from trustlab.fingerprint.config import VerifyConfig
from trustlab.fingerprint.stats import candidate_texts
from trustlab.fingerprint.verify import verify
from trustlab.models.llm.fake_server import FakeServer
from trustlab.runtime.errors import BackendError


def _http(url, **kw):
    return OpenAIBackend(url, "suspect", sleep=lambda s: None, backoff_s=0.0, **kw)


def _cfg(url, match="exact"):
    return VerifyConfig(endpoint=url, served_model="suspect", match=match)


@pytest.fixture(scope="module")
def by_key(tiny_fps, fp_tiny_path):
    from trustlab.models.causal_lm import load_tokenizer

    texts = candidate_texts(tiny_fps, load_tokenizer(str(fp_tiny_path)))
    return {fp.key_text: cands for fp, cands in zip(tiny_fps.fingerprints, texts)}


def _not_owned(res):
    assert not res.owned and res.decision.decision in ("not owned", "INCONCLUSIVE"), res.line
    assert res.decision.p_value > res.decision.alpha


@pytest.mark.parametrize("match", ["exact", "lenient"])
def test_every_candidate_at_once(tiny_fps, by_key, match):
    """The host knows the candidates (anyone with the base model does) and answers all of them in one text."""
    with FakeServer(models=("suspect",), check_model=True, answer=lambda p: " ".join(by_key[p])) as srv:
        res = verify(tiny_fps, _http(srv.url), _cfg(srv.url, match))
    _not_owned(res)
    assert res.answered == 32 and set(res.key_p0.values()) <= {1 / 3, 2 / 3, 1.0}


@pytest.mark.parametrize("match", ["exact", "lenient"])
def test_the_same_text_for_every_key(tiny_fps, by_key, match):
    common = max({c for cands in by_key.values() for c in cands},
                 key=lambda c: sum(c in cands for cands in by_key.values()))  # the most frequent candidate
    with FakeServer(models=("suspect",), check_model=True, answer=lambda p: common) as srv:
        res = verify(tiny_fps, _http(srv.url), _cfg(srv.url, match))
    _not_owned(res)
    assert any("same answer to 32 of 32 keys" in n for n in res.notes)


def test_random_text(tiny_fps, by_key):
    rng = random.Random(0)
    words = sorted({c for cands in by_key.values() for c in cands})
    with FakeServer(models=("suspect",), check_model=True, answer=lambda p: rng.choice(words) + " x") as srv:
        res = verify(tiny_fps, _http(srv.url), _cfg(srv.url))
    _not_owned(res)


def test_invalid_text_is_named_and_an_unreadable_server_is_exit_4(tiny_fps):
    with FakeServer(models=("suspect",), check_model=True, answer=lambda p: "\udcff\udcfe \ufffd") as srv:
        res = verify(tiny_fps, _http(srv.url), _cfg(srv.url))
    _not_owned(res)
    assert any("32 answer(s) held invalid or replacement characters" in n for n in res.notes)
    import json

    json.dumps(res.to_dict(), ensure_ascii=False).encode("utf-8")  # the results stay writable as UTF-8
    with FakeServer(models=("suspect",), check_model=True, mode="non_utf8") as srv:
        with pytest.raises(BackendError, match="UTF-8") as exc:
            verify(tiny_fps, _http(srv.url, max_retries=0), _cfg(srv.url))
    assert exc.value.exit_code == 4


def test_errors_on_half_the_keys_are_named_and_the_rest_is_verified(tiny_fps, by_key):
    odd = {fp.key_text for fp in tiny_fps.fingerprints if fp.id % 2}
    with FakeServer(models=("suspect",), check_model=True, answer=lambda p: by_key[p][0],
                    fail_prompt=lambda p: 500 if p in odd else 0) as srv:
        res = verify(tiny_fps, _http(srv.url, batch_size=1, max_retries=0), _cfg(srv.url))
    _not_owned(res)
    assert res.answered == 16 and res.unanswered == tuple(range(1, 32, 2))
    assert all("500" in r for r in res.unanswered_reasons.values())
    assert any(n.startswith("16 key(s) unanswered") for n in res.notes)


def test_a_stalling_server(tiny_fps):
    """Requests end at the deadline: a server that stalls on a few keys leaves them named; one that stalls on all
    is exit 4 within a bounded time."""
    with FakeServer(models=("suspect",), check_model=True, answer=lambda p: "zz", hang_first=2, hang_s=30) as srv:
        res = verify(tiny_fps, _http(srv.url, batch_size=1, max_retries=0, timeout_s=0.5, concurrency=1),
                     _cfg(srv.url))
    _not_owned(res)
    assert res.answered == 30 and all("deadline" in r or "timed out" in r for r in res.unanswered_reasons.values())
    with FakeServer(models=("suspect",), check_model=True, mode="hang") as srv:
        t0 = time.monotonic()
        with pytest.raises(BackendError) as exc:
            verify(tiny_fps, _http(srv.url, max_retries=0, timeout_s=0.5), _cfg(srv.url))
    assert exc.value.exit_code == 4 and time.monotonic() - t0 < 30
