"""``HOST:PORT`` as given on the command line or in parties.yaml: checked where it enters, never reinterpreted."""

from __future__ import annotations

from trustlab.runtime import ConfigError


def parse_address(text: object, what: str = "address", allow_zero: bool = False) -> tuple[str, int]:
    """``"host:port"`` -> (host, port) with port in 1..65535 (0 = any free port, where ``allow_zero``).

    IPv6 hosts are written in brackets: ``[::1]:7443``. A ConfigError names ``what`` and the value otherwise."""
    lo = 0 if allow_zero else 1
    example = "0.0.0.0:7443" if allow_zero else "10.0.0.5:7443"
    if not isinstance(text, str):
        raise ConfigError(f"{what} must be HOST:PORT, got {text!r}", hint=f"e.g. {example}")
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"{what} {text!r} is not HOST:PORT", hint=f"e.g. {example}")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ConfigError(f"{what} {text!r}: write an IPv6 host in brackets", hint="e.g. [::1]:7443")
    num = int(port)
    if not lo <= num <= 65535:
        rng = "0..65535 (0 picks a free port)" if allow_zero else "1..65535"
        raise ConfigError(f"{what} {text!r}: port {num} is outside {rng}", hint=f"e.g. {example}")
    return host, num


def check_bindable(host: str, port: int, what: str = "--listen") -> None:
    """Fail fast (before loading anything heavy) when ``host:port`` cannot be bound here: in use, or not an
    address of this host. The server binds it again; this only moves the error to where the value enters."""
    import socket

    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"{what} {host}:{port}: unknown host ({exc.strerror})",
                          hint="give an address of this host, e.g. 0.0.0.0 or 127.0.0.1") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does: TIME_WAIT is not "in use"
        try:
            s.bind(addr)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                              hint=f"choose another port, e.g. {what} {host}:0 for any free one") from None
