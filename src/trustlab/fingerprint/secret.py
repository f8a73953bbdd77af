"""The owner's secret: 32 random bytes, stored as hex in a 0600 file that is never overwritten.

- ``commitment(secret) = sha256("trustlab-fp-v1|" + secret)`` (hex) is published at release; revealing the
  secret later lets anyone check it and re-derive every secret choice.
- ``hmac_uniform(secret, label)`` = the first 8 bytes of HMAC-SHA256(secret, label), big-endian: all secret
  randomness of the lab comes from it, so each choice is a deterministic function of (secret, label).
- The secret itself never enters an artefact, a log or a report.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from pathlib import Path

from trustlab.runtime.errors import ConfigError
from trustlab.runtime.files import read_text, write_secret

SECRET_BYTES = 32
COMMIT_PREFIX = b"trustlab-fp-v1|"
_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


class SecretMismatch(ConfigError):
    """The secret does not match the commitment recorded in a fingerprint file (exit 2)."""


def new_secret() -> bytes:
    """32 bytes from the OS's cryptographic random source."""
    return os.urandom(SECRET_BYTES)


def create_secret(path: str | Path) -> bytes:
    """Write a fresh secret to ``path`` (hex, mode 0600); an existing file is never overwritten (ConfigError)."""
    secret = new_secret()
    write_secret(path, secret.hex().encode() + b"\n")
    return secret


def load_secret(path: str | Path) -> bytes:
    """The secret stored in ``path``; missing or malformed files are a ConfigError naming the path."""
    text = read_text(path, what="secret file", error=ConfigError).strip()
    if not _HEX.match(text):
        raise ConfigError(f"secret file {str(path)!r} must hold 64 hex digits (32 bytes), got {len(text)} characters",
                          hint="pass the file written by `trustlab fingerprint generate --secret FILE`")
    return bytes.fromhex(text)


def load_or_create_secret(path: str | Path) -> tuple[bytes, bool]:
    """(secret, created): ``generate`` creates the file when absent and reads it otherwise."""
    if Path(path).exists():
        return load_secret(path), False
    return create_secret(path), True


def commitment(secret: bytes) -> str:
    """sha256("trustlab-fp-v1|" + secret), hex: publishable, binds the owner to this secret."""
    _check(secret)
    return hashlib.sha256(COMMIT_PREFIX + secret).hexdigest()


def check_commitment(secret: bytes, expected: str, where: str = "fingerprint file") -> None:
    """Raise SecretMismatch when ``secret`` does not open ``expected``."""
    if not hmac.compare_digest(commitment(secret), expected):
        raise SecretMismatch(f"the secret does not match the commitment in the {where} ({expected[:12]}...)",
                             hint="use the secret file that generated these fingerprints")


def hmac_uniform(secret: bytes, label: str) -> int:
    """u(label): first 8 bytes of HMAC-SHA256(secret, label) as a big-endian integer in [0, 2**64)."""
    _check(secret)
    return int.from_bytes(hmac.new(secret, label.encode("utf-8"), hashlib.sha256).digest()[:8], "big")


def hmac_choice(secret: bytes, label: str, n: int) -> int:
    """u(label) mod n: a secret-keyed index in [0, n) (bias < n / 2**64)."""
    if n < 1:
        raise ValueError(f"hmac_choice needs n >= 1, got {n}")
    return hmac_uniform(secret, label) % n


def _check(secret: bytes) -> None:
    if not isinstance(secret, (bytes, bytearray)) or len(secret) != SECRET_BYTES:
        raise ConfigError(f"a fingerprint secret must be {SECRET_BYTES} bytes, got "
                          f"{len(secret) if isinstance(secret, (bytes, bytearray)) else type(secret).__name__}",
                          hint="load it with trustlab.fingerprint.secret.load_secret(path)")
