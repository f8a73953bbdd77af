"""Transport interface: one request per party, sent concurrently, replies joined in party order."""

from __future__ import annotations

from ..errors import PartyError, ProtocolMismatchError

METHODS = {"hello": "Hello", "align": "Align", "step": "Step", "embed": "Embed", "checkpoint": "Checkpoint",
           "state": "State"}


def remote_error(type_name: str, message: str, party: int, address: str, kind: str, epoch=None, step=None):
    """An exception raised inside a party -> the PartyError (or subclass) A raises, naming party and phase."""
    where = f"{kind}" + (f" epoch {epoch} step {step}" if epoch is not None else "")
    text = f"party {party} ({address}) failed in {where}: {type_name}: {message}"
    if type_name == "ProtocolMismatchError":
        return ProtocolMismatchError(text, party=party, address=address, epoch=epoch, step=step)
    return PartyError(text, party=party, address=address, epoch=epoch, step=step)


class Transport:
    """``exchange(kind, requests, epoch, step) -> replies`` plus ``close()``; ``ids``/``addresses`` in order."""

    ids: list[int]
    addresses: list[str]

    def exchange(self, kind: str, requests: list[bytes | None], epoch=None, step=None) -> list[bytes | None]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


__all__ = ["METHODS", "Transport", "remote_error"]
