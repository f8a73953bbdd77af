"""Mutual-TLS material for the transport: check credentials where they enter (a missing, non-PEM or wrong-usage
file is a ConfigError naming it, exit 2; PEM files are read by ``vfl.pki``), name a TLS failure when a party refuses
us, and a throwaway test PKI."""

from __future__ import annotations

from pathlib import Path

from trustlab.runtime import ConfigError

# reading PEM material is the PKI module's job; load_certificate / read_pem are re-exported for the transport's users
from ..pki import build_certificate, load_certificate, load_private_key, read_pem, write_pair

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def usages(cert) -> set[str] | None:
    """The certificate's extended key usages (serverAuth, clientAuth, ...); None when it has no such extension
    (then TLS libraries accept it for any role)."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID as E

    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    names = {E.SERVER_AUTH: "serverAuth", E.CLIENT_AUTH: "clientAuth"}
    return {names.get(o, o.dotted_string) for o in eku}


def check_identity(cert_path, key_path, usage: str, role: str) -> None:
    """The certificate parses, the key is its key, and its usage allows ``usage`` (serverAuth for a party server,
    clientAuth for the label party)."""
    from cryptography.hazmat.primitives import serialization

    cert = load_certificate(cert_path)
    key = load_private_key(key_path)
    fmt = (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*fmt) != key.public_key().public_bytes(*fmt):
        raise ConfigError(f"TLS key {str(key_path)!r} does not belong to certificate {str(cert_path)!r}",
                          hint="pass the key that was made with this certificate")
    have = usages(cert)
    if have is not None and usage not in have:
        cmd = "pki party --ca-dir CA_DIR --id ID --host HOST" if usage == "serverAuth" else "pki label --ca-dir CA_DIR"
        raise ConfigError(f"certificate {str(cert_path)!r} is not valid for {role}: its extended key usage is "
                          f"{', '.join(sorted(have)) or 'empty'}, and {role} needs {usage}",
                          hint=f"make the right one, e.g. trustlab vfl {cmd} --out DIR")


def server_credentials(cert: str, key: str, client_ca: str):
    """Party side: present ``cert``; require a client certificate signed by ``client_ca``."""
    import grpc

    check_identity(cert, key, "serverAuth", "a party server")
    load_certificate(client_ca, "client CA")
    return grpc.ssl_server_credentials([(read_pem(key, "TLS key"), read_pem(cert, "TLS certificate"))],
                                       root_certificates=read_pem(client_ca, "client CA"),
                                       require_client_auth=True)


def channel_credentials(ca: str, cert: str, key: str):
    """Label-party side: verify the party against ``ca`` (its subjectAltName must name its address) and present
    A's CA-signed certificate."""
    import grpc

    load_certificate(ca, "CA certificate")
    check_identity(cert, key, "clientAuth", "the label party")
    return grpc.ssl_channel_credentials(root_certificates=read_pem(ca, "CA certificate"),
                                        private_key=read_pem(key, "TLS key"),
                                        certificate_chain=read_pem(cert, "TLS certificate"))


def diagnose_tls(address: str, ca: str, cert: str, key: str, timeout: float = 3.0) -> str | None:
    """Why a TLS connection to ``address`` fails, in one line; None when it is not a TLS problem (nothing listens
    there yet, or the handshake and the party's acceptance of our certificate both succeed).

    gRPC reports a refused client certificate only as "Socket closed"; a plain TLS 1.3 handshake with the same
    files tells the cases apart: the handshake fails (the party's certificate is bad for us), or the party closes
    the connection right after it (it refused ours)."""
    import socket
    import ssl

    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_verify_locations(ca)
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError):
        return None  # the files were checked before; nothing more to learn here
    ctx.set_alpn_protocols(["h2"])
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError:
        return None
    with sock:
        try:
            tls = ctx.wrap_socket(sock, server_hostname=host)
        except ssl.SSLCertVerificationError as exc:
            return f"its certificate failed verification: {exc.verify_message}"
        except ssl.SSLError as exc:
            return f"the TLS handshake failed: {exc.reason or exc}"
        except OSError as exc:
            return f"it closed the connection during the TLS handshake ({exc.__class__.__name__})"
        with tls:
            try:
                data = tls.recv(9)
            except ssl.SSLError as exc:
                return f"it refused our client certificate ({exc.reason or exc})"
            except socket.timeout:
                return None
            except OSError as exc:
                return f"it closed the connection after the TLS handshake: it refused our client certificate " \
                       f"({exc.__class__.__name__})"
    if not data:
        return "it closed the connection right after the TLS handshake: it refused our client certificate"
    return None


def is_loopback(host: str) -> bool:
    return host.strip("[]") in ("127.0.0.1", "localhost", "::1")


def make_test_pki(out: str | Path, party_ids=(0, 1), hosts=("127.0.0.1", "localhost"), days: int = 2) -> dict:
    """A throwaway federation (overwritten on reuse): a CA, one certificate per party (SAN = ``hosts``), A's
    client certificate, and a self-signed rogue one. Returns {name: path}: ca, label.crt/key, party{i}.crt/key,
    rogue.crt/key."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = build_certificate("trustlab-vfl test CA", ca=True, days=days)
    paths = {"ca": write_pair(out, "ca", ca_key, ca_cert, overwrite=True)[0]}
    for pid in party_ids:
        k, c = build_certificate(f"party{pid}", ca_key, ca_cert.subject, usage="serverAuth", hosts=hosts, days=days)
        paths[f"party{pid}.crt"], paths[f"party{pid}.key"] = write_pair(out, f"party{pid}", k, c, overwrite=True)
    k, c = build_certificate("label-party", ca_key, ca_cert.subject, usage="clientAuth", hosts=("label-party",),
                             days=days)
    paths["label.crt"], paths["label.key"] = write_pair(out, "label", k, c, overwrite=True)
    k, c = build_certificate("rogue", usage="clientAuth", hosts=("rogue",), days=days)
    paths["rogue.crt"], paths["rogue.key"] = write_pair(out, "rogue", k, c, overwrite=True)
    return {k: str(v) for k, v in paths.items()}
