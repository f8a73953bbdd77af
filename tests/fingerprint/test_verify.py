"""verify(): verdicts over an endpoint (scripted fake) and local models; matching rules; partial results."""

import json

import pytest

from trustlab.fingerprint.backends import HFBackend, OpenAIBackend
from trustlab.fingerprint.config import VerifyConfig
from trustlab.models.llm.fake_server import FakeServer
from trustlab.fingerprint.verify import exact_text_hit, lenient_hit, normalize, verify
from trustlab.runtime.errors import BackendError, ConfigError, DataError, ModelError

from .helpers import SECRET, make_set

KEYS = [(f"the key sentence number {i} goes here", f" word{i}") for i in range(24)]


@pytest.fixture(scope="module")
def fps(tiny_lm):
    return make_set(tiny_lm[1], KEYS)


def served(fps, owned_ids):
    table = {fp.key_text: fp.response_text for fp in fps.fingerprints if fp.id in owned_ids}
    return lambda prompt: table.get(prompt, " other")


def http(url, **kw):
    return OpenAIBackend(url, "suspect", sleep=lambda s: None, backoff_s=0.0, **kw)


def test_owned_over_an_endpoint(fps):
    with FakeServer(models=("suspect",), check_model=True, answer=served(fps, set(range(24)))) as srv:
        res = verify(fps, http(srv.url), VerifyConfig(endpoint=srv.url, served_model="suspect"))
    assert res.owned and res.decision.m == 24 and res.decision.M == 24
    assert res.line.startswith("OWNED 24/24 matched p=") and "2509.26598" in res.decision.caveat
    d = res.to_dict()
    assert d["decision"] == "OWNED" and d["fingerprints"][0]["hit"] is True and d["bound_assumes_exact"]
    assert SECRET.hex() not in json.dumps(d)


def test_chance_level_hits_are_not_owned(fps):
    with FakeServer(models=("suspect",), check_model=True,
                    answer=served(fps, set(range(0, 24, 3)))) as srv:  # 8/24 = p0
        res = verify(fps, http(srv.url), VerifyConfig(endpoint=srv.url, served_model="suspect"))
    assert not res.owned and res.decision.m == 8 and res.line.startswith("not owned 8/24")


def test_partial_results_are_kept_and_named(fps):
    with FakeServer(models=("suspect",), check_model=True, answer=served(fps, set(range(24))), fail_after=2,
                    fail_status=503) as srv:
        res = verify(fps, http(srv.url, batch_size=8, max_retries=1),
                     VerifyConfig(endpoint=srv.url, served_model="suspect", batch_size=8))
    assert res.answered == 16 and res.unanswered == tuple(range(16, 24))
    assert res.owned and res.decision.M == 16
    assert "16 of 24 keys answered; the verdict covers those only" in res.line
    assert "HTTP 503" in res.to_dict()["unanswered_reasons"]["16"]


def test_dead_endpoint_raises_exit_4(fps):
    with FakeServer(models=("suspect",), check_model=True, answer=lambda p: "", fail_after=0, fail_status=502) as srv:
        with pytest.raises(BackendError) as exc:
            verify(fps, http(srv.url, max_retries=1), VerifyConfig(endpoint=srv.url, served_model="suspect"))
    assert exc.value.exit_code == 4


def test_subset_is_seeded_and_recorded(fps):
    with FakeServer(models=("suspect",), check_model=True, answer=served(fps, set(range(24)))) as srv:
        cfg = VerifyConfig(endpoint=srv.url, served_model="suspect", num_queries=10, seed=3)
        a, b = verify(fps, http(srv.url), cfg), verify(fps, http(srv.url), cfg)
    assert a.subset_ids == b.subset_ids and len(a.subset_ids) == 10 and a.decision.M == 10
    assert a.set_digest == fps.set_digest  # the full set's digest, the one published


@pytest.mark.parametrize("output,response,lenient,exact", [
    (" Paris.", " Paris", True, True), ("paris", " Paris", True, False), ("PARIS!", "paris", True, False),
    ("Paris", "Paris", True, True), (" Paris", "Paris", True, True), ("Par", "Paris", False, False),
    ("ｐａｒｉｓ", "paris", True, False), ("  ", " ", False, False), ("anything", "...", False, False),
    ("Straße", "STRASSE", True, False), ("Lon don", "London", True, False),
    ("their", "the", True, False), (" words", " word", True, False), (" word.", " word", True, True),
    (" the end", "the", True, True), ("ing", "ing", True, True)])
def test_matching_rules(output, response, lenient, exact):
    assert lenient_hit(output, response) is lenient
    assert exact_text_hit(output, response) is exact


def test_normalize():
    assert normalize(" Hello, World! ") == "helloworld" and normalize("Ⅻ") == "xii"


def test_lenient_verdict_is_flagged(fps):
    shout = {fp.key_text: fp.response_text.upper() + "!" for fp in fps.fingerprints}
    with FakeServer(models=("suspect",), check_model=True, answer=lambda p: shout[p]) as srv:
        exact = verify(fps, http(srv.url), VerifyConfig(endpoint=srv.url, served_model="suspect"))
        lenient = verify(fps, http(srv.url), VerifyConfig(endpoint=srv.url, served_model="suspect", match="lenient"))
    assert exact.decision.m == 0 and lenient.decision.m == 24 and lenient.owned
    assert not lenient.bound_assumes_exact and "[lenient match]" in lenient.line


def test_samples_report_mean_and_any_rates(fps):
    import itertools

    flip = itertools.cycle([True, False, False])
    table = {fp.key_text: fp.response_text for fp in fps.fingerprints}
    with FakeServer(models=("suspect",), check_model=True, answer=lambda p: table[p] if next(flip) else " no") as srv:
        res = verify(fps, http(srv.url, api="completions"),
                     VerifyConfig(endpoint=srv.url, served_model="suspect", temperature=0.7, samples=3))
    assert res.mean_hit_rate == pytest.approx(1 / 3) and res.any_hit_rate == 1.0


def test_tokenizer_mismatch_refuses_exact_local_matching(tiny_lm, fps):
    model, tok = tiny_lm
    foreign = make_set(tok, KEYS, info={"name": "other", "vocab_size": 999, "vocab_sha256": "0" * 64})
    with pytest.raises(ModelError) as exc:
        verify(foreign, HFBackend(model, tok), VerifyConfig(model="x"))
    assert "--match lenient" in exc.value.hint and exc.value.exit_code == 2


def test_missing_null_rate_is_an_error(tiny_lm):
    fps = make_set(tiny_lm[1], KEYS[:3], null_p=None, strategy="english_random")
    with pytest.raises(ConfigError, match="null_p"):
        verify(fps, OpenAIBackend("http://127.0.0.1:1/v1", "m"), VerifyConfig(endpoint="http://x/v1",
                                                                             served_model="m"))


def test_english_without_null_p_is_heuristic(tiny_lm):
    fps = make_set(tiny_lm[1], KEYS[:6], null_p=None, strategy="english")
    with FakeServer(models=("suspect",), check_model=True, answer=served(fps, set(range(6)))) as srv:
        res = verify(fps, http(srv.url), VerifyConfig(endpoint=srv.url, served_model="suspect"))
    assert res.heuristic_null and res.decision.p0 == pytest.approx(1 / 3) and "[heuristic p0]" in res.line


def _greedy_set(model, tok, keys, take_rank):
    """Fingerprints whose response is the rank-``take_rank`` next token of ``model`` after each key."""
    import torch

    from trustlab.fingerprint.dataset import prompt_ids

    triples = []
    for key in keys:
        ids = prompt_ids(tok, tok.encode(key, add_special_tokens=False), "raw")
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        tid = int(torch.argsort(logits, descending=True)[take_rank])
        triples.append((key, tok.decode([tid]), (tid,)))
    return make_set(tok, triples)


def test_local_model_exact_token_match(tiny_lm):
    model, tok = tiny_lm
    keys = [f"key {i} for the local test" for i in range(12)]
    owned = _greedy_set(model, tok, keys, 0)
    res = verify(owned, HFBackend(model, tok, batch_size=5), VerifyConfig(model="tiny-llama"))
    assert res.owned and res.decision.m == 12
    assert res.per_fingerprint[0]["output_ids"] == list(owned.fingerprints[0].response_ids)
    foreign = _greedy_set(model, tok, keys, 1)  # never the argmax: 0 greedy hits
    res = verify(foreign, HFBackend(model, tok), VerifyConfig(model="tiny-llama"))
    assert not res.owned and res.decision.m == 0


def test_wrapper_changes_the_query(tiny_lm):
    model, tok = tiny_lm
    keys = [f"wrapped key {i}" for i in range(4)]
    fps = _greedy_set(model, tok, keys, 0)
    bare = verify(fps, HFBackend(model, tok), VerifyConfig(model="t"))
    wrapped = verify(fps, HFBackend(model, tok), VerifyConfig(model="t", wrapper=2))
    assert bare.decision.m == 4 and wrapped.wrapper == 2 and wrapped.to_dict()["wrapper"] == 2


# --- issue 16 §2: a user-set null rate never goes below the proven one -------------------------------------
def test_null_p_below_the_proven_null_is_refused(fps):
    """With p0 = 1e-6 one chance hit of 24 would read p = 2.4e-5 (OWNED); the proven null is 1/k = 1/3."""
    with FakeServer(models=("suspect",), check_model=True, answer=served(fps, {0})) as srv:
        with pytest.raises(ConfigError, match=r"null_p 1e-06 is below the proven null hit rate p0 = 1/3") as exc:
            verify(fps, http(srv.url), VerifyConfig(endpoint=srv.url, served_model="suspect", null_p=1e-6))
        assert exc.value.exit_code == 2 and "--null-p" in exc.value.hint
        assert srv.posts() == []  # refused before any key is revealed to the suspect


def test_null_p_equal_to_the_proven_null_is_not_marked(fps):
    with FakeServer(models=("suspect",), check_model=True, answer=served(fps, set(range(24)))) as srv:
        res = verify(fps, http(srv.url), VerifyConfig(endpoint=srv.url, served_model="suspect", null_p=1 / 3))
    assert res.p0_override is None and "overridden" not in res.line and res.p0_proven == pytest.approx(1 / 3)


def test_conservative_null_p_is_marked_in_line_and_results(fps):
    with FakeServer(models=("suspect",), check_model=True, answer=served(fps, set(range(24)))) as srv:
        res = verify(fps, http(srv.url), VerifyConfig(endpoint=srv.url, served_model="suspect", null_p=0.5))
    assert res.decision.p0 == 0.5 and res.owned
    assert res.line.endswith("[p0 overridden by user: 0.5 (proven 1/3)]")
    d = res.to_dict()
    assert d["p0_override"] == "p0 overridden by user: 0.5 (proven 1/3)" and d["line"] == res.line


def test_english_null_p_from_the_user_is_marked(tiny_lm):
    fps = make_set(tiny_lm[1], KEYS[:6], null_p=None, strategy="english")
    with FakeServer(models=("suspect",), check_model=True, answer=served(fps, set(range(6)))) as srv:
        res = verify(fps, http(srv.url), VerifyConfig(endpoint=srv.url, served_model="suspect", null_p=0.01))
    assert "[p0 set by user: 0.01 (strategy english has no proven null rate)]" in res.line


def test_empty_set_is_a_data_error_not_the_suspects_fault(fps):
    import dataclasses

    empty = dataclasses.replace(fps, fingerprints=())
    with FakeServer(models=("suspect",), check_model=True, answer=served(fps, set())) as srv:
        with pytest.raises(DataError, match="no fingerprints") as exc:
            verify(empty, http(srv.url), VerifyConfig(endpoint=srv.url, served_model="suspect"))
    assert exc.value.exit_code == 2


def test_a_set_edited_in_memory_is_refused_by_the_api(fps):
    """verify() re-checks what load checks: a notebook user's dataclasses.replace cannot skip the digest."""
    import dataclasses

    fp0 = dataclasses.replace(fps.fingerprints[0], response_text="the")
    edited = dataclasses.replace(fps, fingerprints=(fp0, *fps.fingerprints[1:]))
    with FakeServer(models=("suspect",), check_model=True, answer=lambda p: "the") as srv:
        with pytest.raises(DataError, match="'fingerprints\\[\\*\\].response_text' was changed") as exc:
            verify(edited, http(srv.url), VerifyConfig(endpoint=srv.url, served_model="suspect"))
        assert exc.value.exit_code == 2 and srv.posts() == []


# --- issue 18: the interface sequential verification builds on --------------------------------------------
def test_verify_given_keys_reports_per_key_hits_and_nulls(fps):
    with FakeServer(models=("suspect",), check_model=True, answer=served(fps, {2, 5})) as srv:
        res = verify(fps, http(srv.url), VerifyConfig(endpoint=srv.url, served_model="suspect"), keys=[5, 2, 7])
        sent = [p["prompt"] for p in srv.posts("/completions")]
    assert res.subset_ids == (5, 2, 7) and res.queried == 3
    assert res.key_hits == {5: True, 2: True, 7: False} and res.key_p0 == {5: 1 / 3, 2: 1 / 3, 7: 1 / 3}
    flat = [x for p in sent for x in (p if isinstance(p, list) else [p])]
    assert sorted(flat) == sorted(fps.fingerprints[i].key_text for i in (2, 5, 7))  # only those keys revealed
    assert res.decision.decision == "INCONCLUSIVE"  # 3 keys at 1/3 can never reach alpha = 1e-3
    with pytest.raises(ConfigError, match="twice"):
        verify(fps, http(srv.url), VerifyConfig(endpoint=srv.url, served_model="suspect"), keys=[1, 1])
