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
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lnsync import certs, rpc
from lnsync.config import TlsSettings
from lnsync.v1 import (
    lookup_pb2,
    lookup_pb2_grpc,
    persistence_pb2,
    persistence_pb2_grpc,
    snapshots_pb2,
    snapshots_pb2_grpc,
)
from tests.conftest import free_port
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


async def _code(call: Any) -> grpc.StatusCode:
    """The status a call ends with (OK if it succeeds); streams are read to the end."""
    try:
        result = call
        if hasattr(result, "__aiter__"):
            async for _ in result:
                pass
        else:
            await result
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def _probe(target: dict[str, str]) -> dict[str, grpc.StatusCode]:
    """Store gossip (a header-only Ingest stream), regenerate, list snapshots, read persistence's
    sync state: how each ends."""
    header = persistence_pb2.IngestRequest(header=persistence_pb2.StreamHeader(peer_id="import:probe"))
    async with rpc.channel(target["persistence"]) as p, rpc.channel(target["snapshotter"]) as s:
        store = persistence_pb2_grpc.PersistenceStub(p)
        snaps = snapshots_pb2_grpc.SnapshotsStub(s)
        return {
            "Ingest": await _code(store.Ingest(iter([header]), timeout=10)),
            "Regenerate": await _code(snaps.Regenerate(snapshots_pb2.RegenerateRequest(), timeout=10)),
            "ListSnapshots": await _code(
                snaps.ListSnapshots(snapshots_pb2.ListSnapshotsRequest(), timeout=10)
            ),
            "GetSyncStatus": await _code(
                store.GetSyncStatus(persistence_pb2.GetSyncStatusRequest(), timeout=10)
            ),
        }


@pytest.mark.timeout(180)
async def test_default_up_authenticates_and_authorises_every_call(short_tmp: Path) -> None:
    """Finding 3: without tls.enabled any local process could store gossip and regenerate
    snapshots. `lnsync up` now runs mutual TLS by default with a certificate per role: a plaintext
    client gets nothing through, the gateway's identity cannot store gossip or regenerate, an
    import can store and not regenerate, an operator can regenerate and not store."""
    ports = {name: free_port() for name in ("persistence", "lookup", "snapshotter", "downloader", "gateway")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("LNSYNC_")}
    for name in ("persistence", "lookup", "snapshotter", "downloader"):
        env[f"LNSYNC_{name.upper()}__LISTEN"] = f"127.0.0.1:{ports[name]}"
    data = short_tmp / "data"
    log_path = short_tmp / "up.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, watched through its log
            [sys.executable, "-m", "lnsync", "up", "--plain", "--data-dir", str(data), "--network", "regtest",
             "--peer", "02" + "11" * 32 + "@127.0.0.1:1", "--http-port", str(ports["gateway"])],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    target = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    tls_dir = data / "tls"
    try:

        async def healthy() -> bool:
            if "all services healthy" in log_path.read_text(errors="replace"):
                return True
            assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
            return False

        await until(healthy, 120, "lnsync up to be healthy")
        assert (tls_dir / "operator.key").stat().st_mode & 0o077 == 0
        seen = {"plaintext": await _probe(target)}
        for role in ("gateway", "import", "operator"):
            rpc.configure_tls(certs.settings_for(tls_dir, role))
            seen[role] = await _probe(target)
        rpc.configure_tls(TlsSettings())
        denied, unavailable = grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAVAILABLE
        assert set(seen["plaintext"].values()) == {unavailable}
        assert seen["gateway"] == {
            "Ingest": denied,
            "Regenerate": denied,
            "ListSnapshots": grpc.StatusCode.OK,
            "GetSyncStatus": denied,  # the gateway reaches lookup and the snapshotter only
        }
        assert seen["import"]["Ingest"] == grpc.StatusCode.OK
        assert seen["import"]["Regenerate"] == denied and seen["import"]["ListSnapshots"] == denied
        assert seen["operator"]["Ingest"] == denied
        assert seen["operator"]["GetSyncStatus"] == grpc.StatusCode.OK
        assert seen["operator"]["Regenerate"] == grpc.StatusCode.FAILED_PRECONDITION  # allowed; not synced
        # `lnsync status` beside it finds the operator's certificate through the run file.
        status = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "lnsync", "status", "--json", "--data-dir", str(data)],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert '"persistence": "serving"' in status.stdout, status.stdout + status.stderr
    finally:
        rpc.configure_tls(TlsSettings())
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    assert "Traceback" not in log_path.read_text(errors="replace")
