"""In-process transport: calls ``FeatureParty.handle`` on the encoded bytes (same path as gRPC)."""

from __future__ import annotations

from trustlab.runtime import ConfigError, DataError, TrustlabError

from .base import Transport, remote_error


class InprocTransport(Transport):
    def __init__(self, parties):
        self.parties = list(parties)
        self.ids = [p.id for p in self.parties]
        self.addresses = ["inproc"] * len(self.parties)

    def exchange(self, kind, requests, epoch=None, step=None):
        out = []
        for p, req in zip(self.parties, requests):
            if req is None:
                out.append(None)
                continue
            try:
                out.append(p.handle(req))
            except (ConfigError, DataError) as exc:  # a bad local file or setting of this process: exit 2
                raise type(exc)(f"party {p.id} (inproc) in {kind}: {exc.message}", hint=exc.hint) from None
            except (TrustlabError, Exception) as exc:  # a party failure, exactly as gRPC reports it
                msg = exc.message if isinstance(exc, TrustlabError) else str(exc)
                raise remote_error(type(exc).__name__, msg, p.id, "inproc", kind, epoch, step) from exc
        return out
