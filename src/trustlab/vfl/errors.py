"""Remote-party failures (exit 4): each names the party, and where known its address, phase and step."""

from __future__ import annotations

from trustlab.runtime.errors import BackendError


class PartyError(BackendError):
    """A party raised an exception while handling a message."""

    def __init__(self, message: str, hint: str | None = None, party: int | None = None, address: str | None = None,
                 epoch: int | None = None, step: int | None = None):
        super().__init__(message, hint or "check the party's log and fix its data or setup; then resume the run with --resume")
        self.party, self.address, self.epoch, self.step = party, address, epoch, step


class MalformedMessageError(PartyError):
    """A message failed validation: wrong dtype, shape, bit count, padding, non-finite values or echo."""

    def __init__(self, party: int | None, field: str, expected: object, got: object, address: str | None = None):
        who = f"party {party}" if party is not None else "message"
        where = f" ({address})" if address else ""
        super().__init__(f"{who}{where} sent a malformed message: {field}: expected {expected}, got {got}",
                         hint="the party runs another trustlab version or is misbehaving; check its log",
                         party=party, address=address)
        self.field, self.expected, self.got = field, expected, got


class ProtocolMismatchError(PartyError):
    """Duplicate ids, a wrong party id, or a version/config-hash mismatch at hello."""


class PartyTimeoutError(PartyError):
    """No reply within the deadline, or the party is gone / unreachable."""

    def __init__(self, message: str, hint: str | None = None, **kw):
        super().__init__(message, hint or "is the party running and reachable? check its TLS certificates", **kw)


class TLSRefusedError(PartyTimeoutError):
    """A party refused our TLS connection (or we refused its certificate): named at connect, within seconds."""
