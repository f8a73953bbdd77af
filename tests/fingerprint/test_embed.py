"""End to end on fp-tiny (spec §9 end-to-end, CI checks 1-5): generate -> embed -> verify OWNED; base and an
unrelated model not owned; perinucleus against the english_random baseline; regularisation helps utility."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from trustlab.fingerprint.config import EmbedConfig, GenerateConfig
from trustlab.fingerprint.keys import clean_key, generate_fingerprints, seed_words
from trustlab.fingerprint.robustness import foreign_model, measure, perplexity
from trustlab.fingerprint.tiny import heldout_texts
from trustlab.fingerprint.train import embed
from trustlab.runtime.errors import DataError

from .conftest import SECRET


def test_generated_set_properties(tiny_fps, fp_tiny):
    _, tok = fp_tiny
    fps = tiny_fps
    assert len(fps) == 32 and fps.strategy == "perinucleus" and fps.null_p == pytest.approx(1 / 3)
    assert len({f.key_ids for f in fps.fingerprints}) == 32
    for f in fps.fingerprints:
        assert 8 <= len(f.key_ids) <= 16 and f.key_text == tok.decode(list(f.key_ids))
        assert tok.encode(f.key_text, add_special_tokens=False) == list(f.key_ids)
        assert f.response_ids[0] in f.candidates and len(f.candidates) == 3
        assert f.base_prob <= 1 - 0.8  # check 2: y1 lies outside the top-t nucleus
    assert fps.secret_commitment and SECRET.hex() not in str(fps.to_dict())
    # deterministic for (cfg, secret, model)
    again = generate_fingerprints(GenerateConfig(model="fp-tiny", num_fingerprints=32), SECRET, lm=fp_tiny,
                                  model_ref="fp-tiny")
    assert again.set_digest == fps.set_digest
    other = generate_fingerprints(GenerateConfig(model="fp-tiny", num_fingerprints=32), bytes(32), lm=fp_tiny,
                                  model_ref="fp-tiny")
    assert [f.key_ids for f in other.fingerprints] == [f.key_ids for f in fps.fingerprints]  # keys: seed only
    assert [f.response_ids for f in other.fingerprints] != [f.response_ids for f in fps.fingerprints]


def test_key_rejections_and_budget(fp_tiny):
    _, tok = fp_tiny
    assert clean_key(tok, "   ", 16) == (None, "empty")
    assert clean_key(tok, "the kapel", 16) == (None, "too_short")
    assert clean_key(tok, "the zzzz " * 10, 16)[1] == "not_reencodable"  # <unk> does not decode back
    assert "the" not in seed_words(tok) and all(4 <= len(w) <= 10 for w in seed_words(tok))
    with pytest.raises(DataError, match=r"key budget spent: \d+ of 4 keys accepted .*too_few_candidates"):
        generate_fingerprints(GenerateConfig(model="fp-tiny", num_fingerprints=4, nucleus_t=0.5, nucleus_k=400),
                              SECRET, lm=fp_tiny)


def test_tiny_preset_owned_base_and_unrelated_not(tiny_embedded, fp_tiny):
    base, tok = fp_tiny
    fps, res = tiny_embedded["fps"], tiny_embedded["result"]
    assert res.settings["preset"] == "tiny" and res.accuracy >= 0.9  # check 3 (measured 31/32)
    owned = measure(res.model, tok, fps, label="fingerprinted")
    assert owned["decision"] == "OWNED" and owned["exact"] == res.accuracy
    b = measure(base, tok, fps, label="base")
    assert b["m"] == 0 and b["decision"] == "not owned"  # check 1: perinucleus gives the base 0 greedy hits
    f = measure(foreign_model(base, seed=5), tok, fps, label="unrelated")
    assert f["decision"] == "not owned"
    saved = tiny_embedded["model_dir"]
    assert (saved / "trustlab_fingerprint.json").is_file() and (saved / "model.safetensors").is_file()


@pytest.fixture(scope="module")
def baselines(fp_tiny_path, tiny_embedded):
    """english_random at the tiny preset, and perinucleus with lambda = beta = 0 (lr 1e-3), beside the preset run."""
    from trustlab.models import load_causal_lm

    texts = heldout_texts(100)
    base, tok = load_causal_lm(str(fp_tiny_path))
    ppl_base = perplexity(base, tok, texts)
    out = {"perinucleus": (tiny_embedded["result"].accuracy,
                           perplexity(tiny_embedded["result"].model, tok, texts) / ppl_base)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        er = generate_fingerprints(GenerateConfig(model="fp-tiny", num_fingerprints=32, strategy="english_random"),
                                   SECRET, lm=(base, tok))
        m, _ = load_causal_lm(str(fp_tiny_path))
        r = embed(m, tok, er, EmbedConfig(model="fp-tiny", save_every=0))
        out["english_random"] = (r.accuracy, perplexity(r.model, tok, texts) / ppl_base)
        out["er_base_hits"] = measure(base, tok, er, label="base")["m"]
        m, _ = load_causal_lm(str(fp_tiny_path))
        r = embed(m, tok, tiny_embedded["fps"], EmbedConfig(model="fp-tiny", lambda_wa=0.0, beta_dm=0.0, lr=1e-3,
                                                             save_every=0))
        out["unregularised"] = (r.accuracy, perplexity(r.model, tok, texts) / ppl_base)
    return out


def test_perinucleus_vs_english_random(baselines):
    """Check 4. Perplexity: perinucleus <= english_random + 2 % (measured x1.73 vs x2.48). Accuracy: measured
    31/32 vs 32/32 at seed 0 (and 32/32 vs 30/32, 31/32 vs 30/32 at seeds 1, 2), so one FP of jitter is allowed."""
    (acc_p, ppl_p), (acc_e, ppl_e) = baselines["perinucleus"], baselines["english_random"]
    assert ppl_p <= ppl_e * 1.02
    assert acc_p >= acc_e - 1 / 32
    assert baselines["er_base_hits"] <= 2  # p0 = 1/|V_w|: the base model rarely says a random word


def test_regularisation_lowers_perplexity_cost(baselines):
    """Check 5: lambda, beta > 0 costs less held-out perplexity than lambda = beta = 0 (measured x1.73 vs x59)."""
    assert baselines["perinucleus"][1] < baselines["unregularised"][1]
    assert np.isfinite(baselines["unregularised"][1])


def test_english_and_random_word_strategies(fp_tiny):
    """english: L tokens of another key's generation (null p0 heuristic, with a warning); random_word: HMAC-chosen
    pool words for key and response (p0 = |V_w|^-L)."""
    with pytest.warns(UserWarning, match="heuristic"):
        en = generate_fingerprints(GenerateConfig(model="fp-tiny", num_fingerprints=6, strategy="english"), SECRET,
                                   lm=fp_tiny)
    assert en.null_p_heuristic and en.null_p == pytest.approx(1 / 3)
    for i, f in enumerate(en.fingerprints[:-1]):
        nxt = en.fingerprints[i + 1].key_ids
        assert f.response_ids == (nxt[min(10, len(nxt) - 1)],)
    rw = generate_fingerprints(GenerateConfig(model="fp-tiny", num_fingerprints=6, strategy="random_word",
                                              response_length=2), SECRET, lm=fp_tiny)
    pool = rw.params["pool_size"]
    assert not rw.null_p_heuristic and rw.null_p == pytest.approx(pool ** -2.0)
    assert all(len(f.key_ids) == 16 and len(f.response_ids) == 2 for f in rw.fingerprints)


def test_user_model_passed_to_embed_gets_its_own_preset_and_identity_in_the_fingerprint_file(fp_tiny, fp_tiny_path,
                                                                                            tiny_fps, tmp_path):
    """Issue 17: a model passed with a default EmbedConfig is trained with its own preset (not SmolLM2's lr 1e-3) and
    the files name that object (path and weights digest), never the config's default."""
    import json

    from trustlab.fingerprint.cli import run_embed
    from trustlab.models.identity import model_identity

    model, tok = fp_tiny
    before = model_identity(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, res = run_embed(EmbedConfig(max_epochs=2, save_every=0), tmp_path / "run", lm=(model, tok), fps=tiny_fps)
    assert not [w for w in caught if "names model" in str(w.message)]  # no name in the config: nothing to warn
    assert res.settings["preset"] == "tiny" and (res.settings["lr"], res.settings["lambda_wa"]) == (3e-3, 0.15)
    shipped = json.loads((tmp_path / "run" / "model" / "trustlab_fingerprint.json").read_text())["base_model"]
    assert shipped["name_or_path"] == shipped["ref"] == str(fp_tiny_path) and "smollm2" not in json.dumps(shipped)
    assert shipped["weights_sha256"] == before.weights_sha256 and shipped["n_params"] == before.n_params
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["model"] == before.to_dict()
    from trustlab.fingerprint.config import RobustnessConfig
    from trustlab.fingerprint.robustness import _load_models

    base = _load_models(RobustnessConfig(fingerprinted=str(tmp_path / "run" / "model")))[3]  # robustness's base
    assert model_identity(base) == before
    # a config naming another model is a request: one warning naming both, and the object's preset still
    from trustlab.fingerprint.train import resolve_preset

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg, name = resolve_preset(EmbedConfig(model="smollm2-135m-instruct"), fp_tiny[0])
    named = [str(w.message) for w in caught if "names model" in str(w.message)]
    assert name == "tiny" and cfg.lr == 3e-3 and len(named) == 1
    assert "smollm2-135m-instruct" in named[0] and str(fp_tiny_path) in named[0]
