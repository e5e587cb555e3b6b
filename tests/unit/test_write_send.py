"""When a mirrored DATA frame goes to the kernel at once and when it joins a batch."""
from __future__ import annotations

import pytest
import trio

from replicator import latency
from replicator.peer import Peer
from replicator.protocol import Msg


class RecordingLink:
    """Stands in for PeerLink: records each frame and whether it was to be batched."""

    closed = False

    def __init__(self) -> None:
        self.frames: list[tuple[Msg, bool]] = []

    def send(self, msg, body, data, done, batch) -> None:
        self.frames.append((msg, batch))


def peer_for(protocol: str) -> Peer:
    """Only the state the write path reads (no daemon, no connection)."""
    peer = Peer.__new__(Peer)
    peer.protocol, peer.link, peer.tl, peer.seq = protocol, RecordingLink(), {}, 0
    peer.peer_acked_upto = peer.ns_kib = peer.since_barrier = peer.flush_id = 0
    peer.flushes = {}
    return peer


def batched(peer: Peer) -> list[bool]:
    return [batch for msg, batch in peer.link.frames if msg == Msg.DATA]


@pytest.mark.parametrize("protocol", ["B", "C"])
def test_a_write_after_an_acked_one_is_sent_at_once(protocol):
    """Under B the transfer log keeps acked writes until the next barrier: they must not
    make a lone write wait for the sender task."""
    async def main() -> None:
        latency.reset()
        peer = peer_for(protocol)
        peer.submit_write(0, b"x" * 4096)
        peer._acked_upto(1, retire=protocol == "C")     # RecvAck (B) / WriteAck (C)
        peer.submit_write(4096, b"x" * 4096)
        peer.submit_write(8192, b"x" * 4096)            # the second is still in flight
        assert batched(peer) == [False, False, True]
    trio.run(main)
