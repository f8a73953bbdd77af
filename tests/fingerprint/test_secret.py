"""Secret file, commitment and HMAC choices (spec §2 Secret, §9)."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat

import numpy as np
import pytest
from scipy import stats

from trustlab.fingerprint import secret as S
from trustlab.runtime.errors import ConfigError

FIXED = bytes(range(32))


def test_commitment_is_stable_and_matches_formula():
    assert S.commitment(FIXED) == hashlib.sha256(b"trustlab-fp-v1|" + FIXED).hexdigest()
    # pinned: a change of the formula would break every commitment already published
    assert S.commitment(FIXED) == "27e3b4f7c2d8311c457329b4b775c54c7f30c4bb61b251fdc8581a4710e24c74"
    assert S.commitment(FIXED) != S.commitment(bytes(32))


def test_hmac_uniform_is_first_8_bytes_big_endian_and_deterministic():
    want = int.from_bytes(hmac.new(FIXED, b"pn|hello", hashlib.sha256).digest()[:8], "big")
    assert S.hmac_uniform(FIXED, "pn|hello") == want
    assert S.hmac_uniform(FIXED, "pn|hello") == S.hmac_uniform(bytes(FIXED), "pn|hello")
    assert S.hmac_uniform(FIXED, "pn|hello") != S.hmac_uniform(FIXED, "pn|hello!")
    assert S.hmac_uniform(FIXED, "x") != S.hmac_uniform(bytes(32), "x")


def test_hmac_choices_uniform_by_chi_square():
    k, n = 3, 3000
    counts = np.bincount([S.hmac_choice(FIXED, f"pn|key {i}", k) for i in range(n)], minlength=k)
    assert counts.sum() == n
    p = stats.chisquare(counts).pvalue
    assert p > 1e-3, counts
    # and a coarser check on 16 bins of the raw 64-bit value
    bins = np.bincount([S.hmac_uniform(FIXED, f"l{i}") >> 60 for i in range(n)], minlength=16)
    assert stats.chisquare(bins).pvalue > 1e-3


def test_secret_file_mode_0600_hex_and_never_overwritten(tmp_path):
    path = tmp_path / "owner.secret"
    sec, created = S.load_or_create_secret(path)
    assert created and len(sec) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text().strip() == sec.hex()
    again, created2 = S.load_or_create_secret(path)
    assert again == sec and not created2
    with pytest.raises(ConfigError, match="already exists"):
        S.create_secret(path)
    assert S.load_secret(path) == sec


def test_bad_secret_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        S.load_secret(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.write_text("zz")
    with pytest.raises(ConfigError, match="64 hex digits"):
        S.load_secret(bad)
    with pytest.raises(ConfigError, match="32 bytes"):
        S.commitment(b"short")


def test_secret_mismatch():
    S.check_commitment(FIXED, S.commitment(FIXED))
    with pytest.raises(S.SecretMismatch) as e:
        S.check_commitment(bytes(32), S.commitment(FIXED))
    assert e.value.exit_code == 2 and e.value.hint
