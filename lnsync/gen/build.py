"""Planned messages to wire bytes: encoding and signing, in this process or in worker processes.

Signing dominates the generator's cost (one ECDSA signature per update and node_announcement, four
per channel_announcement), so with ``workers > 1`` batches go to worker processes, two batches
queued per worker, and results come back in order: the output is the same byte for byte whatever
the number of workers. Unsigned output carries a placeholder (all-zero) signature that no
verifier accepts.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from coincurve import PublicKey

from lnsync.gen.history import Job, Planned
from lnsync.gossip import messages as m
from lnsync.gossip.signing import signed_message

PLACEHOLDER_SIGNATURE = bytes(64)
BATCH = 1000


def _pubkey(secret: bytes) -> bytes:
    # Not signing.pubkey_of: nearly every generated key is used once, so caching would only churn.
    return bytes(PublicKey.from_secret(secret).format(compressed=True))


def build_message(job: Job, chain_hash: bytes, signed: bool) -> bytes:
    """The wire message (with its type) a job describes; see :mod:`lnsync.gen.history`."""
    kind = job[0]
    if kind == "u":
        _, secret, scid, ts, flags, cltv, hmin, base, ppm, hmax = job
        body = m.encode_channel_update_body(chain_hash, scid, ts, flags, cltv, hmin, base, ppm, hmax)
        if signed:
            return signed_message(m.CHANNEL_UPDATE, (secret,), body)
        return m.with_type(m.CHANNEL_UPDATE, PLACEHOLDER_SIGNATURE, body)
    if kind == "n":
        _, secret, node_id, ts, features, rgb, alias, addresses = job
        body = m.encode_node_announcement_body(
            node_id, ts, features=features, rgb_color=rgb, alias=alias, addresses=addresses
        )
        if signed:
            return signed_message(m.NODE_ANNOUNCEMENT, (secret,), body)
        return m.with_type(m.NODE_ANNOUNCEMENT, PLACEHOLDER_SIGNATURE, body)
    if kind == "c":
        _, scid, n1, n2, s1, s2, b1, b2 = job
        body = m.encode_channel_announcement_body(chain_hash, scid, n1, n2, _pubkey(b1), _pubkey(b2))
        if signed:
            return signed_message(m.CHANNEL_ANNOUNCEMENT, (s1, s2, b1, b2), body)
        return m.with_type(m.CHANNEL_ANNOUNCEMENT, PLACEHOLDER_SIGNATURE * 4, body)
    raise ValueError(f"unknown job kind {kind!r}")


def build_batch(jobs: list[Job], chain_hash: bytes, signed: bool) -> list[bytes]:
    return [build_message(job, chain_hash, signed) for job in jobs]


def build_stream(
    planned: Iterator[Planned], chain_hash: bytes, *, signed: bool, workers: int
) -> Iterator[tuple[Planned, bytes]]:
    """Each planned message with its bytes, in the order given."""
    if workers <= 1:
        for p in planned:
            yield p, build_message(p.job, chain_hash, signed)
        return
    with _WorkerPool(workers) as pool:
        batches = _batches(planned)
        pending: deque[tuple[int, list[Planned]]] = deque()
        for i in range(_QUEUED * workers):  # each worker gets a batch to start on the next one at once
            batch = next(batches, None)
            if batch is None:
                break
            pool.send(i % workers, batch, chain_hash, signed)
            pending.append((i % workers, batch))
        while pending:
            worker, done = pending.popleft()
            following = next(batches, None)  # planned while the workers sign
            results = pool.receive(worker)
            if following is not None:
                pool.send(worker, following, chain_hash, signed)
                pending.append((worker, following))
            yield from zip(done, results, strict=True)


def _batches(planned: Iterator[Planned]) -> Iterator[list[Planned]]:
    batch: list[Planned] = []
    for p in planned:
        batch.append(p)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


_QUEUED = 2  # batches sent to a worker and not yet collected


class _WorkerPool:
    """Signing processes (``python -m lnsync.gen.worker``) fed over pipes.

    Plain subprocesses rather than multiprocessing: nothing is re-imported from the caller's main
    module and nothing is forked from a process that may run threads. A thread per worker drains
    its replies, so a worker never waits on a full pipe while the parent writes the next request.
    """

    def __init__(self, workers: int) -> None:
        root = str(Path(__file__).resolve().parent.parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH")))))
        argv = [sys.executable, "-m", "lnsync.gen.worker"]
        pipe = subprocess.PIPE
        self._procs = [subprocess.Popen(argv, stdin=pipe, stdout=pipe, env=env) for _ in range(workers)]
        self._replies: list[queue.Queue[list[bytes] | None]] = [queue.Queue() for _ in range(workers)]
        self._readers = [
            threading.Thread(target=self._drain, args=(i,), daemon=True, name=f"gen-worker-{i}")
            for i in range(workers)
        ]
        for reader in self._readers:
            reader.start()

    def _drain(self, worker: int) -> None:
        stdout = self._procs[worker].stdout
        assert stdout is not None
        while len(header := stdout.read(4)) == 4:
            self._replies[worker].put(decode_reply(stdout.read(int.from_bytes(header, "big"))))
        self._replies[worker].put(None)

    def __enter__(self) -> _WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:
            assert proc.stdin is not None
            with contextlib.suppress(OSError):
                proc.stdin.close()
        for proc, reader in zip(self._procs, self._readers, strict=True):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            reader.join()
            assert proc.stdout is not None
            proc.stdout.close()

    def send(self, worker: int, batch: list[Planned], chain_hash: bytes, signed: bool) -> None:
        stdin = self._procs[worker].stdin
        assert stdin is not None
        try:
            stdin.write(encode_request(chain_hash, signed, [p.job for p in batch]))
            stdin.flush()
        except BrokenPipeError:
            raise RuntimeError(
                f"signing worker {worker} exited (code {self._procs[worker].poll()})"
            ) from None

    def receive(self, worker: int) -> list[bytes]:
        results = self._replies[worker].get()
        if results is None:
            raise RuntimeError(f"signing worker {worker} exited (code {self._procs[worker].wait()})")
        return results


# The pipe protocol: a request is [u32 length][pickle of (chain_hash, signed, jobs)]; the reply is
# [u32 length] and the messages as [u16 length][message] records. Both ends are this module's code.


def encode_request(chain_hash: bytes, signed: bool, jobs: list[Job]) -> bytes:
    payload = pickle.dumps((chain_hash, signed, jobs), protocol=pickle.HIGHEST_PROTOCOL)
    return len(payload).to_bytes(4, "big") + payload


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """The worker loop: answer requests until the parent closes the pipe."""
    while len(header := stdin.read(4)) == 4:
        payload = stdin.read(int.from_bytes(header, "big"))
        chain_hash, signed, jobs = pickle.loads(payload)  # noqa: S301 - written by our own parent process
        reply = b"".join(len(raw).to_bytes(2, "big") + raw for raw in build_batch(jobs, chain_hash, signed))
        stdout.write(len(reply).to_bytes(4, "big") + reply)
        stdout.flush()


def decode_reply(body: bytes) -> list[bytes]:
    out = []
    at = 0
    while at < len(body):
        n = int.from_bytes(body[at : at + 2], "big")
        out.append(body[at + 2 : at + 2 + n])
        at += 2 + n
    return out
