"""SmolLM2-135M-Instruct at the preset (spec §7 CI checks 1-3, slow): N = 16 perinucleus fingerprints,
stop_after_full_match = 3."""

from __future__ import annotations

import pytest

from trustlab.fingerprint.robustness import foreign_model, measure

pytestmark = pytest.mark.slow


def test_smollm2_preset_checks_1_to_3(smollm2_embedded):
    fps, res, base, tok = (smollm2_embedded[k] for k in ("fps", "result", "base", "tok"))
    probs = [f.base_prob for f in fps.fingerprints]
    assert all(p <= 1 - 0.8 for p in probs)  # check 2
    assert 0.002 <= sum(probs) / len(probs) <= 0.05  # check 2 (spec measured mean 0.0069)
    assert res.settings["preset"] == "smollm2" and (res.settings["lr"], res.settings["lambda_wa"]) == (1e-3, 0.75)
    owned = measure(res.model, tok, fps, label="fingerprinted")
    assert owned["m"] >= 15 and owned["decision"] == "OWNED"  # check 3 (spec measured 16/16)
    b = measure(base, tok, fps, label="base")
    assert b["m"] == 0 and b["decision"] == "not owned"  # check 1
    assert measure(foreign_model(base, seed=1), tok, fps, label="foreign")["decision"] == "not owned"
