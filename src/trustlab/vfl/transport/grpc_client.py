"""gRPC transport (label party side): generic unary bytes calls to ``/trustlab.vfl.Party/<Method>``.

``connect`` waits until every channel is ready (up to ``connect_timeout_s``), so start-up never counts against a
message deadline; a party that refuses our TLS connection is named within a few seconds (``TLSRefusedError``).
Each call then has ``timeout=message_timeout_s``; ``hello`` and ``align``, which build the party's model and hash
its ids once, get ``connect_timeout_s`` on top. UNAVAILABLE is retried only at hello (steps are not idempotent).
Parties are called concurrently with ``.future()`` and joined in party order; on any failure pending calls are
cancelled. Status codes map to: UNAVAILABLE/DEADLINE_EXCEEDED -> PartyTimeoutError, INTERNAL ("Type: message"
from the party) -> PartyError/ProtocolMismatchError, anything else -> PartyError.
"""

from __future__ import annotations

import time
import warnings

from trustlab.runtime import ConfigError, require

from ..errors import PartyError, PartyTimeoutError, TLSRefusedError
from .address import parse_address
from .base import METHODS, Transport, remote_error
from .tls import channel_credentials, diagnose_tls, is_loopback

SERVICE = "trustlab.vfl.Party"
INSTALL = "pip install grpcio cryptography"
TLS_MARKERS = ("ssl", "tls", "handshake", "certificate", "socket closed", "alert")
SETUP_KINDS = ("hello", "align")  # one-time work at the party: model build, id hashing, checkpoint load


class GrpcTransport(Transport):
    def __init__(self, endpoints, tcfg, ca=None, cert=None, key=None, insecure: bool = False, channel_factory=None):
        """``endpoints``: [(party id, address, ca, cert, key)] (per-party TLS overrides may be None)."""
        self.grpc = require("grpc", INSTALL)
        self.ids = [e[0] for e in endpoints]
        self.addresses = [e[1] for e in endpoints]
        self.cfg = tcfg
        mb = int(tcfg.max_message_mb) * 2 ** 20
        opts = [("grpc.max_send_message_length", mb), ("grpc.max_receive_message_length", mb)]
        self.channels, self.calls, self.tls = [], [], []
        for pid, addr, p_ca, p_cert, p_key in endpoints:
            host, _ = parse_address(addr, f"party {pid} address")
            tls = None
            if channel_factory is not None:
                ch = channel_factory(addr)
            elif insecure:
                if not is_loopback(host):
                    raise ConfigError(f"--insecure is allowed on loopback only, not for {addr}",
                                      hint="use mutual TLS (ca, cert, key in parties.yaml)")
                warnings.warn(f"party {pid} at {addr}: plaintext gRPC on loopback (--insecure)", stacklevel=2)
                ch = self.grpc.insecure_channel(addr, options=opts)
            else:
                require("cryptography", INSTALL)
                tls = (p_ca or ca, p_cert or cert, p_key or key)
                creds = channel_credentials(*tls)
                ch = self.grpc.secure_channel(addr, creds, options=opts)
            self.channels.append(ch)
            self.tls.append(tls)
            self.calls.append({k: ch.unary_unary(f"/{SERVICE}/{m}") for k, m in METHODS.items()})

    def connect(self) -> None:
        """Wait for every channel to be ready within ``connect_timeout_s``; a TLS refusal is raised at once."""
        grpc = self.grpc
        t0 = time.monotonic()
        deadline = t0 + self.cfg.connect_timeout_s
        futures = [grpc.channel_ready_future(ch) for ch in self.channels]
        pending = list(range(len(self.channels)))
        strikes = [0] * len(self.channels)
        try:
            while pending:
                for i in list(pending):
                    left = deadline - time.monotonic()
                    try:
                        futures[i].result(timeout=max(0.0, min(0.5, left)))
                        pending.remove(i)
                        continue
                    except grpc.FutureTimeoutError:
                        pass
                    reason = self._tls_failure(i)
                    strikes[i] = strikes[i] + 1 if reason else 0
                    if strikes[i] >= 2:  # twice in a row: not a party that is just starting
                        pid, addr = self.ids[i], self.addresses[i]
                        raise TLSRefusedError(
                            f"party {pid} ({addr}) refused the TLS connection after "
                            f"{time.monotonic() - t0:.1f} s: {reason}",
                            hint="A's certificate must be signed by the CA the party trusts (--client-ca) and have "
                                 "the clientAuth usage; the party's must be signed by the CA in parties.yaml, have "
                                 "serverAuth and name its address (see `trustlab vfl pki --help`)",
                            party=pid, address=addr)
                if pending and time.monotonic() >= deadline:
                    break
        finally:
            for f in futures:
                f.cancel()
        if pending:
            missing = [f"party {self.ids[i]} ({self.addresses[i]})" for i in pending]
            raise PartyTimeoutError(f"{', '.join(missing)} unreachable after {self.cfg.connect_timeout_s:g} s: "
                                    "not running, or TLS refused",
                                    hint="start `trustlab vfl party` there and check that its certificate is "
                                         "signed by the federation CA and names its address",
                                    party=self.ids[pending[0]] if len(pending) == 1 else None)

    def _tls_failure(self, i: int) -> str | None:
        """A one-line TLS reason if channel i cannot connect because of TLS, else None (not running, starting)."""
        if self.tls[i] is not None:
            return diagnose_tls(self.addresses[i], *self.tls[i])
        grpc = self.grpc
        try:  # a fail-fast call reports the channel's last connection error
            self.channels[i].unary_unary(f"/{SERVICE}/Probe")(b"", timeout=2, wait_for_ready=False)
        except grpc.RpcError as err:
            details = (err.details() or "") if hasattr(err, "details") else ""
            if err.code() == grpc.StatusCode.UNAVAILABLE and any(m in details.lower() for m in TLS_MARKERS):
                return f"the TLS connection failed ({details.rsplit(': ', 1)[-1]})"
        except Exception:  # noqa: BLE001 - a fake or closed channel: no diagnosis
            return None
        return None

    def exchange(self, kind, requests, epoch=None, step=None):
        grpc = self.grpc
        attempts = self.cfg.connect_retries if kind == "hello" else 1
        for attempt in range(attempts):
            timeout = self._timeout(kind)
            futures = [None if req is None else self.calls[i][kind].future(req, timeout=timeout)
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

    def _timeout(self, kind: str) -> float:
        return self.cfg.message_timeout_s + (self.cfg.connect_timeout_s if kind in SETUP_KINDS else 0.0)

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
                e = PartyTimeoutError(f"party {pid} ({addr}) sent no reply within {self._timeout(kind):g} s "
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
