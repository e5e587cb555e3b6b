"""Per-stage write latency: local write, network send, peer ack, total.

Cheap enough for every write: each stage keeps the last ``RING`` samples (microseconds) in a
preallocated ``array``; recording one is an index store. Percentiles are computed only when
somebody asks (``snapshot()``: status --statistics, drbdmon).

Stages (all measured from the moment the stage's request began):

* ``local``  the pwrite of the data to the backing disk;
* ``send``   a mirrored write queued for the peer until the link handed it to the kernel;
* ``ack``    queued for the peer until its RecvAck (protocol B) / WriteAck (C) arrived;
* ``total``  Device.write from entry (including any activity-log transaction) to completion.

One daemon serves one resource, so the state is per process. The device calls ``clock``,
``begin``, ``local`` and ``end``; the peer calls ``submitted`` (and hands ``SENT`` to the link
as the "handed to the kernel" callback for protocols B and C) and ``acked``.
"""
from __future__ import annotations

import collections
import time
from array import array
from typing import Any

RING = 1024                     # samples kept per stage (power of two)
_SEQ_SLOTS = 4096               # submit times kept by sequence number (power of two)
STAGES = ("local", "send", "ack", "total")

clock = time.perf_counter_ns


class Ring:
    """The last RING samples of one stage, in microseconds."""

    __slots__ = ("samples", "count")

    def __init__(self, size: int = RING):
        self.samples = array("q", bytes(8 * size))
        self.count = 0

    def add(self, us: int) -> None:
        self.samples[self.count & (len(self.samples) - 1)] = us
        self.count += 1

    def summary(self) -> list[int]:
        """``[n, p50, p99, max]`` over the samples held (n = how many), zeros when empty."""
        n = min(self.count, len(self.samples))
        if n == 0:
            return [0, 0, 0, 0]
        values = sorted(self.samples[:n])
        return [n, values[(n - 1) * 50 // 100], values[(n - 1) * 99 // 100], values[-1]]


class WriteLatency:
    def __init__(self) -> None:
        self.stages = {name: Ring() for name in STAGES}
        self.upper_pending = 0          # application writes inside Device.write
        self._submit_ns = array("q", bytes(8 * _SEQ_SLOTS))
        self._submit_seq = array("q", bytes(8 * _SEQ_SLOTS))
        self._proto_a = bytearray(_SEQ_SLOTS)
        self._acked = bytearray(_SEQ_SLOTS)
        self._sending: collections.deque = collections.deque()   # seqs queued on the link
        self._link: Any = None

    # -- device side -------------------------------------------------------------------------
    def begin(self) -> None:
        self.upper_pending += 1

    def local(self, t1: int) -> None:
        self.stages["local"].add((clock() - t1) // 1000)

    def end(self, t0: int, pending: Any = None) -> None:
        now = clock()
        self.upper_pending -= 1
        self.stages["total"].add((now - t0) // 1000)
        if pending is not None:           # protocol A: the wait that just ended was the send
            i = pending.seq & (_SEQ_SLOTS - 1)
            if self._proto_a[i] and self._submit_seq[i] == pending.seq and pending.done.is_set():
                self._proto_a[i] = 0
                self.stages["send"].add((now - self._submit_ns[i]) // 1000)

    # -- peer side -----------------------------------------------------------------------------
    def submitted(self, peer: Any, p: Any) -> None:
        if peer.link is not self._link:    # a new connection: frames of the old one are gone
            self._link = peer.link
            self._sending.clear()
        i = p.seq & (_SEQ_SLOTS - 1)
        self._submit_ns[i] = clock()
        self._submit_seq[i] = p.seq
        proto_a = peer.protocol == "A"
        self._proto_a[i] = proto_a
        self._acked[i] = 0
        if not proto_a:
            self._sending.append(p.seq)

    def sent(self) -> None:
        """The link handed the oldest queued DATA frame to the kernel."""
        if not self._sending:
            return
        seq = self._sending.popleft()
        i = seq & (_SEQ_SLOTS - 1)
        if self._submit_seq[i] == seq:
            self.stages["send"].add((clock() - self._submit_ns[i]) // 1000)

    def acked(self, seq: int) -> None:
        i = seq & (_SEQ_SLOTS - 1)
        if self._submit_seq[i] == seq and not self._acked[i]:
            self._acked[i] = 1            # a RecvAck and a later WriteAck count once
            self.stages["ack"].add((clock() - self._submit_ns[i]) // 1000)

    def snapshot(self) -> dict:
        return {name: ring.summary() for name, ring in self.stages.items()}


class _Sent:
    """Passed to the link as a frame's ``done``: ``set()`` runs when the kernel has the frame."""

    __slots__ = ()

    def set(self) -> None:
        writes.sent()


writes = WriteLatency()
SENT = _Sent()

# the call sites in device.py / peer.py use these module-level names
begin = writes.begin
local = writes.local
end = writes.end
submitted = writes.submitted
acked = writes.acked


def snapshot() -> dict:
    return writes.snapshot()


def reset() -> None:
    """Forget everything (tests)."""
    fresh = WriteLatency()
    writes.__dict__.update(fresh.__dict__)
