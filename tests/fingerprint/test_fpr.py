"""The false-positive experiment in small (benchmarks/fingerprint/fpr_experiment.py is the full one): fresh secrets
over fp-tiny's 32 generated keys, verified through verify() locally and through the shared fake server."""

import numpy as np
import pytest

from trustlab.fingerprint.backends import OpenAIBackend
from trustlab.fingerprint.config import VerifyConfig
from trustlab.fingerprint.fpr import CachedHF, binomial_limit, forger_table, fresh_set, run_trials, summarize
from trustlab.fingerprint.secret import commitment, hmac_choice
from trustlab.models.llm.fake_server import FakeServer

TRIALS = 30


def test_fresh_set_follows_the_perinucleus_choice(tiny_fps, fp_tiny):
    secret = bytes(range(1, 33))
    fps = fresh_set(tiny_fps, secret, [4, 9, 2], fp_tiny[1])
    assert fps.secret_commitment == commitment(secret) and len(fps) == 3
    for fp, src in zip(fps.fingerprints, (tiny_fps.fingerprints[i] for i in (4, 9, 2))):
        assert fp.response_ids == (src.candidates[hmac_choice(secret, "pn|" + src.key_text, 3)],)
        assert fp.candidates == src.candidates and fp.key_text == src.key_text


def test_binomial_limit():
    assert binomial_limit(200, 0.05) == 22 and binomial_limit(200, 0.001) == 4


def test_wrong_owned_stays_within_alpha_for_innocent_suspects(tiny_fps, fp_tiny):
    """A random init of fp-tiny (local, token ids) and a forger answering the candidates that match most (server,
    lenient text: its hit rate sits at the per-key null, the worst case H0 allows) never exceed the binomial limit."""
    from trustlab.fingerprint.attacks import foreign_model

    model, tok = fp_tiny
    stranger = foreign_model(model, seed=1)
    rows = run_trials(tiny_fps, tok, lambda: CachedHF(stranger, tok), VerifyConfig(model="stranger"),
                      trials=TRIALS, keys_per_set=16, seed=1)
    s = summarize(rows)
    assert s["trials"] == TRIALS and all(a["new_ok"] for a in s["alphas"].values())
    table = forger_table(tiny_fps, tok, "lenient")
    with FakeServer(models=("suspect",), check_model=True, answer=lambda p: table[p]) as srv:
        rows = run_trials(tiny_fps, tok, lambda: OpenAIBackend(srv.url, "suspect"),
                          VerifyConfig(endpoint=srv.url, served_model="suspect", match="lenient"), trials=TRIALS,
                          keys_per_set=16, seed=2)
    s = summarize(rows)
    assert all(a["new_ok"] for a in s["alphas"].values())
    # the forger hits at the null rate: its mean hit rate is within 3 sigma of the mean p0, and above 1/3 - 3 sigma
    sigma = np.sqrt(s["mean_p0"] * (1 - s["mean_p0"]) / (TRIALS * 16))
    assert s["mean_hits"] == pytest.approx(s["mean_p0"], abs=3 * sigma)
