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

from .base import METHODS
from .grpc_client import SERVICE
from .tls import is_loopback, server_credentials


def build_server(party, listen: str, cert=None, key=None, client_ca=None, insecure=False, max_message_mb=64,
                 log=print):
    """Create and start the server; returns (server, bound port)."""
    grpc = require("grpc", "pip install 'trustlab[net]'  (or: pip install grpcio cryptography)")
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--listen {listen!r} is not HOST:PORT", hint="e.g. --listen 0.0.0.0:7443")
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
        bound = server.add_insecure_port(listen)
    else:
        bound = server.add_secure_port(listen, server_credentials(cert, key, client_ca))
    if not bound:
        raise ConfigError(f"cannot listen on {listen}", hint="is the port in use?")
    server.start()
    return server, bound


def serve_party(party, listen: str, cert=None, key=None, client_ca=None, insecure=False, max_message_mb=64) -> None:
    """Serve until SIGTERM/SIGINT; prints ``listening on HOST:PORT`` (flushed) once bound."""
    def log(msg):
        print(msg, flush=True)

    server, port = build_server(party, listen, cert, key, client_ca, insecure, max_message_mb, log)
    host = listen.rpartition(":")[0]
    log(f"party {party.id} listening on {host}:{port}")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=5).wait()
    log(f"party {party.id} stopped after {party.calls} calls")
    sys.stdout.flush()
