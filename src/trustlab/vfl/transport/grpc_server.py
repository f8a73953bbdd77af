"""Party server: a long-lived gRPC server around one FeatureParty; one call at a time, under a lock.

Exceptions become ``abort(INTERNAL, "Type: message")`` so the label party can name them. SIGTERM stops the
server after the current call.
"""

from __future__ import annotations

import signal
import sys
import threading
import warnings
from concurrent import futures

from trustlab.runtime import ConfigError, TrustlabError, require

from .address import parse_address
from .base import METHODS
from .grpc_client import SERVICE
from .tls import is_loopback, server_credentials


def build_server(party, listen: str, cert=None, key=None, client_ca=None, insecure=False, max_message_mb=64,
                 log=print, start: bool = True):
    """Create the server (checking the TLS files and binding the port) and start it; returns (server, bound port)."""
    grpc = require("grpc", "pip install grpcio cryptography")
    host, _ = parse_address(listen, "--listen", allow_zero=True)
    lock = threading.Lock()

    def make(kind):
        def handler(request: bytes, context) -> bytes:
            with lock:
                if kind == "hello":
                    log(f"party {party.id}: hello received")
                try:
                    reply = party.handle(request)
                except Exception as exc:  # noqa: BLE001 - every failure goes back to A with its type
                    msg = exc.message if isinstance(exc, TrustlabError) else str(exc)
                    log(f"party {party.id}: {kind} failed: {type(exc).__name__}: {msg}")
                    context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {msg}"[:4000])
                return reply
        return grpc.unary_unary_rpc_method_handler(handler)

    handler = grpc.method_handlers_generic_handler(SERVICE, {m: make(k) for k, m in METHODS.items()})
    mb = int(max_message_mb) * 2 ** 20
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[handler],
                         options=[("grpc.max_send_message_length", mb), ("grpc.max_receive_message_length", mb),
                                  ("grpc.so_reuseport", 0)])
    if insecure:
        if not is_loopback(host):
            raise ConfigError(f"--insecure may listen on loopback only, not {host}",
                              hint="use --tls-cert/--tls-key/--client-ca, or --listen 127.0.0.1:PORT")
        warnings.warn("party server without TLS (loopback only)", stacklevel=2)
        creds = None
    else:
        creds = server_credentials(cert, key, client_ca)  # checked files: a bad one is named before binding
    try:
        bound = server.add_insecure_port(listen) if creds is None else server.add_secure_port(listen, creds)
    except RuntimeError:  # grpcio >= 1.5x raises instead of returning 0
        bound = 0
    if not bound:
        raise ConfigError(f"cannot listen on {listen}: the port is in use or the address is not on this host",
                          hint=f"choose another port, e.g. --listen {host}:0 for any free one")
    if start:
        server.start()
    return server, bound


def warm_up() -> None:
    """Load what the first hello needs (torch, the models, the defences), so a party reports ``listening`` only
    once it can answer within the message deadline, however busy the machine is."""
    import torch  # noqa: F401

    from .. import defences, models  # noqa: F401


def serve_party(party, listen: str, cert=None, key=None, client_ca=None, insecure=False, max_message_mb=64) -> None:
    """Serve until SIGTERM/SIGINT; prints ``listening on HOST:PORT`` (flushed) once bound."""
    def log(msg):
        print(msg, flush=True)

    server, port = build_server(party, listen, cert, key, client_ca, insecure, max_message_mb, log, start=False)
    warm_up()  # import torch and the models before serving: the first hello must not pay for it
    server.start()
    host = listen.rpartition(":")[0]
    log(f"party {party.id} listening on {host}:{port}")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=5).wait()
    log(f"party {party.id} stopped after {party.calls} calls")
    sys.stdout.flush()
