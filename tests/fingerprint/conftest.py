"""Session fixtures of the fingerprint lab: the pretrained ``fp-tiny`` model, a fingerprint set, an embedded model.

``fp-tiny`` is built once into ``$TRUSTLAB_CACHE`` (about 25 s on one thread) and reused by later sessions.
Fixtures that hand out models give a fresh load each time, so a test may train it in place.
"""

from __future__ import annotations

import pytest

SECRET = bytes(range(32))


@pytest.fixture(scope="session")
def fp_tiny_path():
    from trustlab.fingerprint.tiny import prepare_tiny

    return prepare_tiny()


@pytest.fixture()
def fp_tiny(fp_tiny_path):
    """(model, tokenizer): a fresh load of fp-tiny (eval mode, float32)."""
    from trustlab.models import load_causal_lm

    return load_causal_lm(str(fp_tiny_path))


@pytest.fixture(scope="session")
def tiny_fps(fp_tiny_path):
    """32 perinucleus fingerprints of fp-tiny under SECRET."""
    from trustlab.fingerprint.config import GenerateConfig
    from trustlab.fingerprint.keys import generate_fingerprints
    from trustlab.models import load_causal_lm

    lm = load_causal_lm(str(fp_tiny_path))
    return generate_fingerprints(GenerateConfig(model="fp-tiny", num_fingerprints=32), SECRET, lm=lm,
                                 model_ref="fp-tiny")


@pytest.fixture(scope="session")
def tiny_embedded(fp_tiny_path, tiny_fps, tmp_path_factory):
    """fp-tiny with ``tiny_fps`` embedded at the tiny preset: {"fps", "model_dir", "result", "run_dir"}."""
    from trustlab.fingerprint.config import EmbedConfig
    from trustlab.fingerprint.train import embed
    from trustlab.models import load_causal_lm

    model, tok = load_causal_lm(str(fp_tiny_path))
    run = tmp_path_factory.mktemp("tiny-embed")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = embed(model, tok, tiny_fps, EmbedConfig(model="fp-tiny", save_every=0), out_dir=run,
                       model_ref="fp-tiny")
    return {"fps": tiny_fps, "model_dir": run / "model", "result": result, "run_dir": run}


@pytest.fixture(scope="session")
def smollm2_embedded(tmp_path_factory):
    """SmolLM2-135M-Instruct with 16 perinucleus fingerprints at the preset, stop_after_full_match = 3 (slow: a few
    minutes on 2 cores): {"fps", "model_dir", "result", "run_dir", "base", "tok"} (base = the untouched model)."""
    import warnings

    from trustlab.fingerprint.config import EmbedConfig, GenerateConfig
    from trustlab.fingerprint.keys import generate_fingerprints
    from trustlab.fingerprint.train import embed
    from trustlab.models import load_causal_lm

    ref = "smollm2-135m-instruct"
    base, tok = load_causal_lm(ref)
    fps = generate_fingerprints(GenerateConfig(model=ref, num_fingerprints=16), SECRET, lm=(base, tok), model_ref=ref)
    run = tmp_path_factory.mktemp("smollm2-embed")
    fps.save(run / "fingerprints.json")
    model, _ = load_causal_lm(ref)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = embed(model, tok, fps, EmbedConfig(model=ref, stop_after_full_match=3, save_every=0), out_dir=run,
                       model_ref=ref)
    return {"fps": fps, "model_dir": run / "model", "result": result, "run_dir": run, "base": base, "tok": tok}
