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
