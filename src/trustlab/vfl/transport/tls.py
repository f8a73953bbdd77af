"""Mutual-TLS material: read credentials (a missing file is a ConfigError naming it) and a throwaway test PKI."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from trustlab.runtime import ConfigError

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def read_pem(path: str | Path | None, what: str) -> bytes:
    if path is None:
        raise ConfigError(f"no {what} given", hint=f"pass the {what} file (or --insecure on loopback)")
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} file {str(p)!r} does not exist", hint=f"check the {what} path")
    return p.read_bytes()


def server_credentials(cert: str, key: str, client_ca: str):
    """Party side: present ``cert``; require a client certificate signed by ``client_ca``."""
    import grpc

    return grpc.ssl_server_credentials([(read_pem(key, "TLS key"), read_pem(cert, "TLS certificate"))],
                                       root_certificates=read_pem(client_ca, "client CA"),
                                       require_client_auth=True)


def channel_credentials(ca: str, cert: str, key: str):
    """Label-party side: verify the party against ``ca`` (its subjectAltName must name its address) and present
    A's CA-signed certificate."""
    import grpc

    return grpc.ssl_channel_credentials(root_certificates=read_pem(ca, "CA certificate"),
                                        private_key=read_pem(key, "TLS key"),
                                        certificate_chain=read_pem(cert, "TLS certificate"))


def is_loopback(host: str) -> bool:
    return host.strip("[]") in ("127.0.0.1", "localhost", "::1")


def make_test_pki(out: str | Path, party_ids=(0, 1), hosts=("127.0.0.1", "localhost"), days: int = 2) -> dict:
    """A federation CA, one certificate per party (SAN = ``hosts``), A's client certificate, and a self-signed
    rogue one. Returns {name: path}: ca, label.crt/key, party{i}.crt/key, rogue.crt/key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)

    def name(cn: str):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(stem: str, key, cert) -> tuple[Path, Path]:
        kp, cp = out / f"{stem}.key", out / f"{stem}.crt"
        kp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        kp.chmod(0o600)
        cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cp, kp

    def issue(cn: str, issuer_key, issuer_name, ca: bool, usage, sans=()):
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(issuer_name or name(cn))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if usage:
            b = b.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        if sans:
            alt = []
            for s in sans:
                try:
                    alt.append(x509.IPAddress(ipaddress.ip_address(s)))
                except ValueError:
                    alt.append(x509.DNSName(s))
            b = b.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        return key, b.sign(issuer_key or key, hashes.SHA256())

    ca_key, ca_cert = issue("trustlab-vfl test CA", None, None, True, None)
    paths = {"ca": write("ca", ca_key, ca_cert)[0]}
    for pid in party_ids:
        k, c = issue(f"party{pid}", ca_key, ca_cert.subject, False, [ExtendedKeyUsageOID.SERVER_AUTH], hosts)
        paths[f"party{pid}.crt"], paths[f"party{pid}.key"] = write(f"party{pid}", k, c)
    k, c = issue("label-party", ca_key, ca_cert.subject, False, [ExtendedKeyUsageOID.CLIENT_AUTH], ("label-party",))
    paths["label.crt"], paths["label.key"] = write("label", k, c)
    k, c = issue("rogue", None, None, False, [ExtendedKeyUsageOID.CLIENT_AUTH], ("rogue",))
    paths["rogue.crt"], paths["rogue.key"] = write("rogue", k, c)
    return {k: str(v) for k, v in paths.items()}
