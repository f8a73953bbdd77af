"""Fixtures the hostile replay shares: one fp-tiny fingerprint file, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fp_file(tmp_path_factory) -> Path:
    """A 4-fingerprint perinucleus set of fp-tiny under a fixed secret."""
    from trustlab.fingerprint.config import GenerateConfig
    from trustlab.fingerprint.keys import generate_fingerprints
    from trustlab.models import load_causal_lm
    from trustlab.models.fp_tiny import prepare_tiny

    lm = load_causal_lm(str(prepare_tiny()))
    fps = generate_fingerprints(GenerateConfig(model="fp-tiny", num_fingerprints=4), bytes(range(32)), lm=lm,
                                model_ref="fp-tiny")
    path = tmp_path_factory.mktemp("fps") / "fp.json"
    fps.save(path)
    return path
