"""replicator.latency: rings, percentiles and the stage bookkeeping of the write path."""
from dataclasses import dataclass, field

import pytest
import trio

from replicator import latency


@pytest.fixture(autouse=True)
def fresh():
    latency.reset()
    yield
    latency.reset()


def test_ring_percentiles_over_the_last_samples():
    r = latency.Ring(size=8)
    assert r.summary() == [0, 0, 0, 0]
    for us in (5, 1, 9, 3, 7):
        r.add(us)
    assert r.summary() == [5, 5, 7, 9]            # sorted 1 3 5 7 9: p50 5, p99 7 (index 3)
    for us in range(100, 108):                    # 8 more push the first 5 out
        r.add(us)
    assert r.summary() == [8, 103, 106, 107]


@dataclass
class FakePending:
    seq: int
    done: trio.Event = field(default_factory=trio.Event)


class FakePeer:
    def __init__(self, protocol="C"):
        self.protocol = protocol
        self.link = object()


def test_protocol_c_write_records_every_stage(monkeypatch):
    now = [1_000_000]
    w = latency.writes
    monkeypatch.setattr("replicator.latency.clock", lambda: now[0])
    peer, p = FakePeer("C"), FakePending(1)
    t0 = latency.clock()
    latency.begin()
    assert w.upper_pending == 1
    now[0] += 5_000
    latency.submitted(peer, p)
    t1 = latency.clock()
    now[0] += 20_000
    latency.local(t1)                     # 20 us
    now[0] += 30_000
    latency.SENT.set()                    # handed to the kernel 50 us after submit
    now[0] += 100_000
    latency.acked(1)                      # 150 us
    latency.acked(1)                      # a second ack for the same write is not counted
    latency.end(t0, p)                    # 155 us total
    snap = latency.snapshot()
    assert snap == {"local": [1, 20, 20, 20], "send": [1, 50, 50, 50],
                    "ack": [1, 150, 150, 150], "total": [1, 155, 155, 155]}
    assert w.upper_pending == 0


def test_protocol_a_send_is_taken_when_the_write_completes(monkeypatch):
    now = [0]
    monkeypatch.setattr("replicator.latency.clock", lambda: now[0])
    peer, p = FakePeer("A"), FakePending(7)
    t0 = latency.clock()
    latency.begin()
    latency.submitted(peer, p)
    latency.SENT.set()                    # nothing queued for A: ignored
    now[0] += 40_000
    p.done.set()
    latency.end(t0, p)
    assert latency.snapshot()["send"] == [1, 40, 40, 40]


def test_a_new_link_forgets_frames_queued_on_the_old_one(monkeypatch):
    now = [0]
    monkeypatch.setattr("replicator.latency.clock", lambda: now[0])
    peer = FakePeer("C")
    latency.submitted(peer, FakePending(1))       # never sent: the link died
    peer.link = object()
    now[0] += 1_000_000_000
    latency.submitted(peer, FakePending(2))
    now[0] += 10_000
    latency.SENT.set()
    assert latency.snapshot()["send"] == [1, 10, 10, 10]
