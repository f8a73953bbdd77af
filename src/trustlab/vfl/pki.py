"""A federation's certificates, made with ``cryptography``: one CA, a server certificate per party (extended key
usage serverAuth, subjectAltName = the hosts A dials) and the label party's client certificate (clientAuth).

Mutual TLS needs both usages to match the role: a party's gRPC server presents a serverAuth certificate and
requires a client certificate signed by the CA; the label party presents a clientAuth one. Private keys are
written with mode 0600 and never overwritten (``runtime.files.write_secret``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from trustlab.runtime import ConfigError, read_bytes, require, write_secret

INSTALL = "pip install grpcio cryptography"
ROLES = {"party": "serverAuth", "label": "clientAuth"}
MAKE = "see `trustlab vfl pki --help` to make one"


def read_pem(path: str | Path | None, what: str) -> bytes:
    if path is None:
        raise ConfigError(f"no {what} given", hint=f"pass the {what} file (or --insecure on loopback)")
    data = read_bytes(path, f"{what} file", ConfigError)
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{what} file {str(path)!r} is not PEM (no '-----BEGIN' line)",
                          hint=f"give a PEM file; {MAKE}")
    return data


def load_certificate(path, what: str = "TLS certificate"):
    from cryptography import x509

    data = read_pem(path, what)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise ConfigError(f"{what} file {str(path)!r} is not a valid PEM certificate ({exc})".splitlines()[0],
                          hint=MAKE) from None


def load_private_key(path, what: str = "TLS key"):
    from cryptography.hazmat.primitives import serialization

    data = read_pem(path, what)
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{what} file {str(path)!r} is not an unencrypted PEM private key ({exc})".splitlines()[0],
                          hint=MAKE) from None


def _x509():
    require("cryptography", INSTALL)
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


def _san(hosts):
    x509 = _x509()[0]
    out = []
    for h in hosts:
        h = str(h).strip("[]")
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            out.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(out)


def build_certificate(cn: str, issuer_key=None, issuer_name=None, ca: bool = False, usage: str | None = None,
                      hosts=(), days: int = 365):
    """(key, certificate): an EC P-256 key and an X.509 certificate signed by ``issuer_key`` (self-signed if
    None), with the CA flag, the extended key usage ``usage`` (serverAuth|clientAuth) and SANs ``hosts``."""
    x509, hashes, _, ec, EKU, NameOID = _x509()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, encipher_only=False, decipher_only=False),
                            critical=True)
    if usage:
        oid = {"serverAuth": EKU.SERVER_AUTH, "clientAuth": EKU.CLIENT_AUTH}[usage]
        b = b.add_extension(x509.ExtendedKeyUsage([oid]), critical=False)
    if hosts:
        b = b.add_extension(_san(hosts), critical=False)
    return key, b.sign(issuer_key or key, hashes.SHA256())


def _pem(key, cert) -> tuple[bytes, bytes]:
    _, _, ser, *_ = _x509()
    return (key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()),
            cert.public_bytes(ser.Encoding.PEM))


def write_pair(out: Path, stem: str, key, cert, overwrite: bool = False) -> tuple[Path, Path]:
    """``stem.key`` (0600) and ``stem.crt``; with ``overwrite`` False an existing file is a ConfigError."""
    out = Path(out)
    kp, cp = out / f"{stem}.key", out / f"{stem}.crt"
    kb, cb = _pem(key, cert)
    if not overwrite:
        for p in (kp, cp):
            if p.exists():
                raise ConfigError(f"{str(p)!r} already exists; certificates and keys are never overwritten",
                                  hint="choose another --out folder, or delete the old files first")
    else:
        kp.unlink(missing_ok=True)
    write_secret(kp, kb)
    cp.write_bytes(cb)
    return cp, kp


def make_ca(out: str | Path, name: str = "trustlab-vfl federation CA", days: int = 3650,
            overwrite: bool = False) -> tuple[Path, Path]:
    """The federation CA: ``ca.crt`` (give it to every party and to A) and ``ca.key`` (keep it offline)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    key, cert = build_certificate(name, ca=True, days=days)
    return write_pair(out, "ca", key, cert, overwrite)


def load_ca(ca_dir: str | Path):
    """(key, certificate) of the CA in ``ca_dir`` (ca.key, ca.crt); ConfigError naming a missing or bad file."""
    ca_dir = Path(ca_dir)
    cert = load_certificate(ca_dir / "ca.crt", "CA certificate")
    key = load_private_key(ca_dir / "ca.key", "CA key")
    return key, cert


def issue(ca_dir: str | Path, out: str | Path, role: str, stem: str, hosts=(), days: int = 825,
          overwrite: bool = False) -> tuple[Path, Path]:
    """A certificate for ``role`` (party: serverAuth + SAN ``hosts``; label: clientAuth) signed by the CA."""
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}", hint="party or label")
    if role == "party" and not hosts:
        raise ConfigError("a party certificate needs the host name(s) or IP(s) the label party dials",
                          hint="pass --host, e.g. --host 10.0.0.5 --host party1.example.org")
    ca_key, ca_cert = load_ca(ca_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    key, cert = build_certificate(stem, ca_key, ca_cert.subject, usage=ROLES[role],
                                  hosts=hosts if role == "party" else (stem,), days=days)
    return write_pair(out, stem, key, cert, overwrite)
