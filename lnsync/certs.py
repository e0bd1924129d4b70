"""Certificates for mutual TLS between the services, one identity (role) per certificate.

``lnsync up`` keeps a private CA and a certificate per role in ``DATA_DIR/tls/`` (made on first
start, reused after): ``ca.crt`` and ``<role>.crt`` / ``<role>.key``. A certificate's common name
is ``lnsync-<role>``; servers check each call's role against :data:`lnsync.rpc.POLICY`. Every
certificate names ``SERVER_NAME`` (what clients expect), ``localhost`` and the loopback addresses,
and serves as both server and client certificate. Keys are readable by their owner only.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path
from typing import Any

from lnsync.config import TlsSettings

# The identities: each service (the Kubernetes peer controller too), the operators (lnsync status,
# Regenerate, health checks) and the two producers that may store gossip (downloaders and import).
ROLES = (
    "persistence",
    "lookup",
    "snapshotter",
    "gateway",
    "downloader",
    "import",
    "operator",
    "demo-peer",
    "peer-controller",
)
CN_PREFIX = "lnsync-"
SERVER_NAME = "lnsync-grpc"
VALID_DAYS = 3650


def settings_for(directory: Path, role: str) -> TlsSettings:
    """The TLS settings of ``role``'s certificate in ``directory``."""
    return TlsSettings(
        enabled=True,
        cert_file=str(directory / f"{role}.crt"),
        key_file=str(directory / f"{role}.key"),
        ca_file=str(directory / "ca.crt"),
        server_name=SERVER_NAME,
    )


def ensure(directory: Path) -> None:
    """Make the CA and every role's certificate in ``directory`` where missing (idempotent)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    ca_cert_path, ca_key_path = directory / "ca.crt", directory / "ca.key"
    if ca_cert_path.exists() and ca_key_path.exists():
        ca = x509.load_pem_x509_certificate(ca_cert_path.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _certificate(f"{CN_PREFIX}ca", ca_key, None, ca_key, is_ca=True)
        _write_key(ca_key_path, ca_key)
        ca_cert_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        for role in ROLES:  # certificates of an earlier CA are worthless now
            (directory / f"{role}.crt").unlink(missing_ok=True)
    for role in ROLES:
        cert_path, key_path = directory / f"{role}.crt", directory / f"{role}.key"
        if cert_path.exists() and key_path.exists():
            continue
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(CN_PREFIX + role, key, ca, ca_key, is_ca=False)
        _write_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def role_of(common_name: str) -> str | None:
    """The role a certificate's common name stands for, or None (not one of ours)."""
    role = common_name.removeprefix(CN_PREFIX)
    return role if common_name.startswith(CN_PREFIX) and role in ROLES else None


def _certificate(cn: str, key: Any, ca: Any, ca_key: Any, *, is_ca: bool) -> Any:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name if ca is None else ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if not is_ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(SERVER_NAME),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        ).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256())


def _write_key(path: Path, key: Any) -> None:
    from cryptography.hazmat.primitives import serialization

    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
