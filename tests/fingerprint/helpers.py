"""Fingerprint sets built by hand for verification tests (no generation or training needed)."""

from __future__ import annotations

from trustlab.fingerprint.fpset import Fingerprint, FingerprintSet, tokenizer_info
from trustlab.fingerprint.secret import commitment

SECRET = bytes(range(32))


def make_set(tok, pairs, *, prompt_format="raw", null_p=1 / 3, strategy="perinucleus", info=None):
    """A FingerprintSet from (key_text, response_text) or (key_text, response_text, response_ids) tuples."""
    fps = []
    for i, (key, resp, *rid) in enumerate(pairs):
        fps.append(Fingerprint(id=i, key_text=key, key_ids=tuple(tok.encode(key, add_special_tokens=False)),
                               response_text=resp,
                               response_ids=tuple(rid[0]) if rid else tuple(tok.encode(resp, add_special_tokens=False)),
                               base_prob=0.01))
    params = {"response_length": max(len(f.response_ids) for f in fps), "prompt_format": prompt_format,
              "nucleus_t": 0.8, "nucleus_k": 3}
    return FingerprintSet.create(strategy=strategy, params=params, base_model={"ref": "test"}, key_model=None,
                                 tokenizer=info or tokenizer_info(tok), secret_commitment=commitment(SECRET),
                                 null_p=null_p, fingerprints=fps)
