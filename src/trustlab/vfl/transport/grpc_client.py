"""gRPC transport (label party side): generic unary bytes calls to ``/trustlab.vfl.Party/<Method>``.

Each call has ``timeout=message_timeout_s``; UNAVAILABLE is retried only at connect (steps are not idempotent).
Parties are called concurrently with ``.future()`` and joined in party order; on any failure pending calls are
cancelled. Status codes map to: UNAVAILABLE/DEADLINE_EXCEEDED -> PartyTimeoutError, INTERNAL ("Type: message"
from the party) -> PartyError/ProtocolMismatchError, anything else -> PartyError.
"""

from __future__ import annotations

import time
import warnings

from trustlab.runtime import ConfigError, require

from ..errors import PartyError, PartyTimeoutError
from .base import METHODS, Transport, remote_error
from .tls import channel_credentials, is_loopback

SERVICE = "trustlab.vfl.Party"


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"party address {address!r} is not HOST:PORT")
    return host, int(port)


class GrpcTransport(Transport):
    def __init__(self, endpoints, tcfg, ca=None, cert=None, key=None, insecure: bool = False, channel_factory=None):
        """``endpoints``: [(party id, address, ca, cert, key)] (per-party TLS overrides may be None)."""
        self.grpc = require("grpc", "pip install 'trustlab[net]'  (or: pip install grpcio cryptography)")
        self.ids = [e[0] for e in endpoints]
        self.addresses = [e[1] for e in endpoints]
        self.cfg = tcfg
        mb = int(tcfg.max_message_mb) * 2 ** 20
        opts = [("grpc.max_send_message_length", mb), ("grpc.max_receive_message_length", mb)]
        self.channels, self.calls = [], []
        for pid, addr, p_ca, p_cert, p_key in endpoints:
            host, _ = _split(addr)
            if channel_factory is not None:
                ch = channel_factory(addr)
            elif insecure:
                if not is_loopback(host):
                    raise ConfigError(f"--insecure is allowed on loopback only, not for {addr}",
                                      hint="use mutual TLS (ca, cert, key in parties.yaml)")
                warnings.warn(f"party {pid} at {addr}: plaintext gRPC on loopback (--insecure)", stacklevel=2)
                ch = self.grpc.insecure_channel(addr, options=opts)
            else:
                creds = channel_credentials(p_ca or ca, p_cert or cert, p_key or key)
                ch = self.grpc.secure_channel(addr, creds, options=opts)
            self.channels.append(ch)
            self.calls.append({k: ch.unary_unary(f"/{SERVICE}/{m}") for k, m in METHODS.items()})

    def connect(self) -> None:
        """Wait for every channel to be ready within ``connect_timeout_s``."""
        deadline = time.monotonic() + self.cfg.connect_timeout_s
        futures = [self.grpc.channel_ready_future(ch) for ch in self.channels]
        missing = []
        for pid, addr, fut in zip(self.ids, self.addresses, futures):
            try:
                fut.result(timeout=max(0.0, deadline - time.monotonic()))
            except self.grpc.FutureTimeoutError:
                missing.append(f"party {pid} ({addr})")
        if missing:
            for f in futures:
                f.cancel()
            raise PartyTimeoutError(f"{', '.join(missing)} unreachable after {self.cfg.connect_timeout_s:g} s: "
                                    "not running, or TLS refused",
                                    hint="start `trustlab vfl party` there and check that its certificate is "
                                         "signed by the federation CA and names its address",
                                    party=self.ids[0] if len(missing) == 1 else None)

    def exchange(self, kind, requests, epoch=None, step=None):
        grpc = self.grpc
        attempts = self.cfg.connect_retries if kind == "hello" else 1
        for attempt in range(attempts):
            futures = [None if req is None else self.calls[i][kind].future(req, timeout=self.cfg.message_timeout_s)
                       for i, req in enumerate(requests)]
            out = []
            try:
                for i, fut in enumerate(futures):
                    out.append(None if fut is None else self._result(fut, i, kind, epoch, step))
                return out
            except PartyTimeoutError as exc:
                for f in futures:
                    if f is not None:
                        f.cancel()
                if getattr(exc, "code", None) == grpc.StatusCode.UNAVAILABLE and attempt + 1 < attempts:
                    time.sleep(0.5)
                    continue
                raise
            except BaseException:
                for f in futures:
                    if f is not None:
                        f.cancel()
                raise
        raise AssertionError("unreachable")

    def _result(self, fut, i, kind, epoch, step):
        grpc = self.grpc
        pid, addr = self.ids[i], self.addresses[i]
        where = f"{kind}" + (f" epoch {epoch} step {step}" if epoch is not None else "")
        try:
            return fut.result()
        except grpc.RpcError as err:
            code, details = err.code(), err.details() or ""
            kw = dict(party=pid, address=addr, epoch=epoch, step=step)
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                e = PartyTimeoutError(f"party {pid} ({addr}) sent no reply within {self.cfg.message_timeout_s:g} s "
                                      f"in {where}", **kw)
            elif code == grpc.StatusCode.UNAVAILABLE:
                e = PartyTimeoutError(f"party {pid} ({addr}) is gone or unreachable in {where}: {details}", **kw)
            elif code == grpc.StatusCode.INTERNAL and ": " in details:
                type_name, _, msg = details.partition(": ")
                e = remote_error(type_name, msg, pid, addr, kind, epoch, step)
            elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                e = PartyError(f"party {pid} ({addr}) in {where}: message too large: {details}",
                               hint="raise transport.max_message_mb", **kw)
            else:
                e = PartyError(f"party {pid} ({addr}) failed in {where}: {code.name}: {details}", **kw)
            e.code = code
            raise e from None

    def close(self) -> None:
        for ch in self.channels:
            ch.close()
        self.channels = []
