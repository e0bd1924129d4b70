"""Security properties of the running services.

* gRPC over mutual TLS: persistence and lookup as real processes with certificates generated here
  (the ``cryptography`` library); lookup reaches persistence over mTLS, a plaintext client and a
  client whose certificate another CA signed are refused.
* Database credentials never reach the logs, also when the connection fails.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import sys
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lnsync import rpc
from lnsync.config import TlsSettings
from lnsync.v1 import lookup_pb2, lookup_pb2_grpc
from tests.stack import Stack, until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(directory: Path, prefix: str, dns_names: tuple[str, ...] = ()) -> TlsSettings:
    """A CA and one certificate it signs (server and client use), for ``dns_names`` or else for
    localhost and 127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{prefix} CA"))
        .issuer_name(_name(f"{prefix} CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("lnsync"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in dns_names]
                or [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = {name: directory / f"{prefix}-{name}.pem" for name in ("ca", "cert", "key")}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return TlsSettings(
        enabled=True, cert_file=str(paths["cert"]), key_file=str(paths["key"]), ca_file=str(paths["ca"])
    )


async def lookup_reached_persistence(stack: Stack) -> None:
    """Lookup asked persistence for the sync state (over mTLS when configured): its answer names
    the incomplete sync, not an unreachable persistence."""
    async with rpc.channel(stack.target("lookup")) as ch:
        stub = lookup_pb2_grpc.LookupStub(ch)

        async def gate_answer() -> str:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in stub.ComputeDelta(lookup_pb2.ComputeDeltaRequest(version=2), timeout=10):
                    pass
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            return err.value.details() or ""

        assert "not complete" in await until(gate_answer, 10, "lookup's answer")


async def test_services_talk_mutual_tls_and_refuse_other_clients(database_url: str, short_tmp: Path) -> None:
    tls = make_pki(short_tmp, "cluster")
    other = make_pki(short_tmp, "stranger")
    env = {
        "LNSYNC_TLS__ENABLED": "true",
        "LNSYNC_TLS__CERT_FILE": tls.cert_file,
        "LNSYNC_TLS__KEY_FILE": tls.key_file,
        "LNSYNC_TLS__CA_FILE": tls.ca_file,
    }
    stack = Stack(database_url, short_tmp, extra_env=env)
    try:
        stack.start("persistence")
        stack.start("lookup")
        # Plaintext: not even the health check gets through.
        assert not await rpc.check_health(stack.target("persistence"), timeout=2)
        rpc.configure_tls(tls)
        await stack.wait_healthy("persistence")
        await stack.wait_healthy("lookup")
        await lookup_reached_persistence(stack)
        # A client with a certificate from another CA is refused by the server.
        rpc.configure_tls(other)
        assert not await rpc.check_health(stack.target("persistence"), timeout=2)
    finally:
        rpc.configure_tls(TlsSettings())
        stack.close()
    for p in stack.processes:
        assert "Traceback" not in p.log(), p.log()[-3000:]


async def test_chart_certificate_serves_services_and_the_exec_probe(
    database_url: str, short_tmp: Path
) -> None:
    """The chart's set-up: one certificate naming only ``tls.serverName`` (no address), the
    ``LNSYNC_TLS__*`` env the chart sets, and readiness by ``lnsync healthcheck --target
    127.0.0.1:PORT`` as the kubelet runs it. Without the server name the probe must fail: the
    certificate does not name 127.0.0.1."""
    tls = make_pki(short_tmp, "chart", dns_names=("lnsync-grpc",))
    env = {
        "LNSYNC_TLS__ENABLED": "true",
        "LNSYNC_TLS__CA_FILE": tls.ca_file,
        "LNSYNC_TLS__CERT_FILE": tls.cert_file,
        "LNSYNC_TLS__KEY_FILE": tls.key_file,
        "LNSYNC_TLS__SERVER_NAME": "lnsync-grpc",
    }
    stack = Stack(database_url, short_tmp, extra_env=env)
    try:
        stack.start("persistence")
        stack.start("lookup")  # dials persistence by address, checks the name in the certificate
        target = stack.target("persistence")
        port = target.rsplit(":", 1)[1]

        async def probe(extra: dict[str, str]) -> int:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "lnsync",
                "healthcheck",
                "--target",
                f"127.0.0.1:{port}",
                env={**stack.env, **extra},
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            return await asyncio.wait_for(proc.wait(), 30)

        async def serving() -> bool:
            return await probe({}) == 0

        await until(serving, 60, "the exec probe over mTLS")
        assert await probe({"LNSYNC_TLS__SERVER_NAME": ""}) == 1  # 127.0.0.1 is not in the certificate
        assert await probe({"LNSYNC_TLS__ENABLED": "false"}) == 1  # plaintext is refused
        rpc.configure_tls(tls.model_copy(update={"server_name": "lnsync-grpc"}))
        await stack.wait_healthy("lookup")
        await lookup_reached_persistence(stack)
    finally:
        rpc.configure_tls(TlsSettings())
        stack.close()
    for p in stack.processes:
        assert "Traceback" not in p.log(), p.log()[-3000:]


async def test_database_passwords_never_reach_the_logs(database_url: str, short_tmp: Path) -> None:
    secret = "s3cret-Pa55"  # the fixture's server trusts local connections: any password works
    with_password = database_url.replace("postgresql://postgres@", f"postgresql://postgres:{secret}@")
    assert secret in with_password
    stack = Stack(with_password, short_tmp)
    try:
        await stack.start_healthy("persistence")
        # The same credentials for a server that is not there: connection errors are logged too.
        unreachable = f"postgresql://postgres:{secret}@127.0.0.1:1/nothing"
        failing = stack.start("lookup", "--database-url", unreachable)
        await until(lambda: _logged(failing, "connecting to PostgreSQL failed"), 30, "the retry warning")
    finally:
        stack.close()
    logs = "".join(p.log() for p in stack.processes)
    assert "connecting to postgresql://postgres:***@" in logs
    assert secret not in logs


async def _logged(process, text: str) -> bool:  # type: ignore[no-untyped-def]
    return text in process.log()
