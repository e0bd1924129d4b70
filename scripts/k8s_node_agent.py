"""The two things a bare test cluster lacks, for scripts/k8s-cluster.sh: cluster DNS and volumes.

A stand-in for CoreDNS and for a volume provisioner (neither is packaged where this project builds,
see docs/kubernetes.md), kept small and honest about what it answers:

* **DNS** (dnslib) on the node address, which the kubelet hands pods as their nameserver:
  ``<service>.<namespace>.svc.cluster.local`` A records — the ClusterIP, or for a headless Service
  its ready endpoints (every endpoint with ``publishNotReadyAddresses``) — and
  ``<hostname>.<service>.<namespace>.svc.cluster.local`` for StatefulSet pods. Anything else is
  NXDOMAIN at once (there is no upstream: the cluster is offline). TTL 5 s, refreshed from the API
  every second, so a rollout's new endpoints are seen as CoreDNS would see them.
* **Volumes**: a PersistentVolumeClaim of the ``local`` StorageClass gets a hostPath
  PersistentVolume in a directory of its own (mode 0777: hostPath volumes ignore fsGroup), bound to
  it; a released one is deleted with its directory (reclaim policy Delete).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import shutil
import socketserver
import threading
import time
from pathlib import Path
from typing import Any

from dnslib import QTYPE, RCODE, RR, A, DNSRecord
from kubernetes import client, config

DOMAIN = "svc.cluster.local."
PROVISIONER = "lnsync.dev/hostpath"
STORAGE_CLASS = "local"
TTL = 5

log = logging.getLogger("node-agent")


class Records:
    """Name → addresses, rebuilt from Services and Endpoints."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._names: dict[str, list[str]] = {}

    def replace(self, names: dict[str, list[str]]) -> None:
        with self._lock:
            self._names = names

    def lookup(self, name: str) -> list[str] | None:
        with self._lock:
            return self._names.get(name.lower())


def build_records(services: list[Any], endpoints: list[Any]) -> dict[str, list[str]]:
    eps = {(e.metadata.namespace, e.metadata.name): e for e in endpoints}
    names: dict[str, list[str]] = {}
    for svc in services:
        ns, name = svc.metadata.namespace, svc.metadata.name
        fqdn = f"{name}.{ns}.{DOMAIN}"
        if svc.spec.cluster_ip and svc.spec.cluster_ip != "None":
            names[fqdn] = [svc.spec.cluster_ip]
            continue
        ep = eps.get((ns, name))
        ips: list[str] = []
        for subset in (ep.subsets or []) if ep else []:
            addresses = list(subset.addresses or [])
            if svc.spec.publish_not_ready_addresses:
                addresses += list(subset.not_ready_addresses or [])
            for addr in addresses:
                ips.append(addr.ip)
                if addr.hostname:
                    names[f"{addr.hostname}.{fqdn}"] = [addr.ip]
        names[fqdn] = sorted(set(ips))
    return names


def refresh(core: client.CoreV1Api, records: Records) -> None:
    while True:
        try:
            services = core.list_service_for_all_namespaces(_request_timeout=5).items
            endpoints = core.list_endpoints_for_all_namespaces(_request_timeout=5).items
            records.replace(build_records(services, endpoints))
        except Exception as exc:  # the API restarting must not stop DNS
            log.warning("refreshing DNS records: %s", exc)
        time.sleep(1.0)


def answer(records: Records, data: bytes) -> bytes:
    request = DNSRecord.parse(data)
    reply = request.reply()
    qname = str(request.q.qname)
    qtype = request.q.qtype
    addresses = records.lookup(qname) if qname.lower().endswith(DOMAIN) else None
    if addresses is None:
        reply.header.rcode = RCODE.NXDOMAIN
    elif qtype in (QTYPE.A, QTYPE.ANY):
        for ip in addresses:
            reply.add_answer(RR(qname, QTYPE.A, rdata=A(ip), ttl=TTL))
    # Other types of a known name: NOERROR with no answer (AAAA lookups must not fail the name).
    return bytes(reply.pack())


def serve_dns(listen: str, records: Records) -> None:
    host, port = listen.rsplit(":", 1)
    ipaddress.ip_address(host)

    class Udp(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            try:
                sock.sendto(answer(records, data), self.client_address)
            except Exception as exc:
                log.debug("bad DNS query: %s", exc)

    class Tcp(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            try:
                size = int.from_bytes(self.rfile.read(2), "big")
                out = answer(records, self.rfile.read(size))
                self.wfile.write(len(out).to_bytes(2, "big") + out)
            except Exception as exc:
                log.debug("bad DNS query over TCP: %s", exc)

    socketserver.ThreadingUDPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    udp = socketserver.ThreadingUDPServer((host, int(port)), Udp)
    tcp = socketserver.ThreadingTCPServer((host, int(port)), Tcp)
    threading.Thread(target=tcp.serve_forever, daemon=True).start()
    log.info("DNS on %s (udp, tcp)", listen)
    udp.serve_forever()


def provision(core: client.CoreV1Api, root: Path) -> None:
    while True:
        try:
            _provision_once(core, root)
        except Exception as exc:
            log.warning("provisioning volumes: %s", exc)
        time.sleep(1.0)


def _provision_once(core: client.CoreV1Api, root: Path) -> None:
    volumes = {pv.metadata.name: pv for pv in core.list_persistent_volume().items}
    for pvc in core.list_persistent_volume_claim_for_all_namespaces().items:
        if pvc.spec.storage_class_name != STORAGE_CLASS or pvc.spec.volume_name:
            continue
        name = f"pvc-{pvc.metadata.uid}"
        if name in volumes:
            continue
        path = root / name
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)
        core.create_persistent_volume(
            client.V1PersistentVolume(
                metadata=client.V1ObjectMeta(
                    name=name, annotations={"pv.kubernetes.io/provisioned-by": PROVISIONER}
                ),
                spec=client.V1PersistentVolumeSpec(
                    capacity=pvc.spec.resources.requests,
                    access_modes=pvc.spec.access_modes,
                    persistent_volume_reclaim_policy="Delete",
                    storage_class_name=STORAGE_CLASS,
                    host_path=client.V1HostPathVolumeSource(path=str(path), type="Directory"),
                    claim_ref=client.V1ObjectReference(
                        kind="PersistentVolumeClaim",
                        namespace=pvc.metadata.namespace,
                        name=pvc.metadata.name,
                        uid=pvc.metadata.uid,
                    ),
                ),
            )
        )
        log.info("volume %s for %s/%s", name, pvc.metadata.namespace, pvc.metadata.name)
    for pv in volumes.values():
        owned = (pv.metadata.annotations or {}).get("pv.kubernetes.io/provisioned-by") == PROVISIONER
        if owned and pv.status.phase in ("Released", "Failed"):
            shutil.rmtree(root / pv.metadata.name, ignore_errors=True)
            core.delete_persistent_volume(pv.metadata.name)
            log.info("volume %s deleted", pv.metadata.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--dns-listen", required=True, metavar="IP:PORT")
    parser.add_argument("--volumes", required=True, type=Path, metavar="DIR")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    core = client.CoreV1Api(config.new_client_from_config(args.kubeconfig))
    records = Records()
    threading.Thread(target=refresh, args=(core, records), daemon=True).start()
    threading.Thread(target=provision, args=(core, args.volumes), daemon=True).start()
    serve_dns(args.dns_listen, records)


if __name__ == "__main__":
    main()
