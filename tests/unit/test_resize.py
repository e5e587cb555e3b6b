"""Online resize: the size rule (8.4's drbd_new_dev_size) and the SIZES exchange's
decisions (replicator.resize), with stand-ins for the device and the connection."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import trio

from replicator import resize, resync
from replicator.protocol import Msg
from replicator.states import Conn, Disk, Role, State

M = 1 << 20


def test_the_device_is_the_smaller_of_both_offers():
    assert resize.new_dev_size(96 * M, 80 * M, 64 * M, 0) == (80 * M, "")
    assert resize.new_dev_size(96 * M, 128 * M, 64 * M, 0) == (96 * M, "")


def test_without_the_peers_offer_it_stays_at_the_last_agreed_size():
    assert resize.new_dev_size(96 * M, 0, 64 * M, 0) == (64 * M, "")
    assert resize.new_dev_size(48 * M, 0, 64 * M, 0) == (48 * M, "")   # our disk shrank
    assert resize.new_dev_size(96 * M, 0, 0, 0) == (96 * M, "")        # never agreed: ours


def test_a_user_size_caps_it_and_too_big_a_one_is_reported():
    assert resize.new_dev_size(96 * M, 96 * M, 64 * M, 72 * M) == (72 * M, "")
    size, complaint = resize.new_dev_size(96 * M, 80 * M, 64 * M, 100 * M)
    assert size == 80 * M
    assert complaint == f"Requested disk size is too big ({100 * 1024} > {80 * 1024})"


class Dev:
    def __init__(self, size: int, offer: int):
        self._size, self.offer, self.user_size = size, offer, 0
        self.lines: list[str] = []
        self.log = SimpleNamespace(device=self.lines.append)

    def size(self) -> int:
        return self._size

    def backing_size(self) -> int:
        return self.offer


def make_peer(dev: Dev, role=Role.Primary, peer_role=Role.Secondary, accepted=False):
    sent: list[tuple[Msg, dict]] = []
    state = State(role=role, peer=peer_role, conn=Conn.Connected, disk=Disk.UpToDate,
                  pdsk=Disk.UpToDate)
    return SimpleNamespace(
        res=SimpleNamespace(state=state), sent=sent, peer_offer=0, peer_size=dev.size(),
        resize_pending=False, resize_clean=False, sizes_answered=None, dev=dev,
        _usable_disk=lambda: dev, link_accepted=lambda: accepted,
        send=lambda msg, body: sent.append((msg, body)))


@pytest.fixture
def grows_to(monkeypatch):
    """determine() stand-in: the device takes min(offer, peer offer)."""
    def install(dev: Dev):
        async def determine(d, peer_offer, user, clean, connecting=False):
            new = min(d.offer, peer_offer)
            old, d._size = d._size, new
            return "grew" if new > old else "unchanged"
        monkeypatch.setattr(resize, "determine", determine)
    return install


@pytest.fixture
def syncs(monkeypatch):
    started: list[dict] = []
    monkeypatch.setattr(resync, "start_sync", lambda peer, **kw: started.append(kw))
    return started


def frame(**b) -> dict:
    return {"max": 96 * M, "size": 64 * M, "user": 0, "ask": False, "answer": False,
            "clean": False, **b}


def test_an_asked_node_always_answers_even_with_nothing_to_change(grows_to, syncs):
    dev = Dev(64 * M, 64 * M)
    grows_to(dev)
    peer = make_peer(dev, role=Role.Secondary, peer_role=Role.Primary)
    trio.run(resize.on_sizes, peer, frame(ask=True))
    assert [(m, b["answer"], b["size"]) for m, b in peer.sent] == [(Msg.SIZES, True, 64 * M)]
    assert not syncs


def test_only_the_answer_wakes_the_command_not_a_size_notification(grows_to, syncs):
    dev = Dev(96 * M, 96 * M)
    grows_to(dev)
    peer = make_peer(dev)
    peer.sizes_answered = trio.Event()
    trio.run(resize.on_sizes, peer, frame(size=96 * M))
    assert not peer.sizes_answered.is_set()
    trio.run(resize.on_sizes, peer, frame(size=96 * M, answer=True))
    assert peer.sizes_answered.is_set()


def test_the_primary_resyncs_the_new_area_once_both_have_grown(grows_to, syncs):
    dev = Dev(64 * M, 96 * M)            # asked the peer first; its answer shows it grew
    grows_to(dev)
    peer = make_peer(dev)
    trio.run(resize.on_sizes, peer, frame(size=96 * M, answer=True))
    assert dev.size() == 96 * M and syncs == [{"source": True, "full": False,
                                               "tell_peer": True}]
    assert "Resync of new storage after online grow" in dev.lines
    assert peer.sent[-1][1]["size"] == 96 * M and not peer.resize_pending


def test_the_secondary_waits_for_the_primary_and_a_smaller_peer_keeps_it_pending(grows_to, syncs):
    dev = Dev(64 * M, 96 * M)
    grows_to(dev)
    peer = make_peer(dev, role=Role.Secondary, peer_role=Role.Primary)
    trio.run(resize.on_sizes, peer, frame(size=64 * M, ask=True))   # the Primary asks first
    assert dev.size() == 96 * M and peer.resize_pending and not syncs   # it has not grown
    trio.run(resize.on_sizes, peer, frame(size=96 * M))              # now it has
    assert not peer.resize_pending and not syncs                     # the Primary starts it
    assert "Resync of new storage after online grow" in dev.lines


def test_assume_clean_suppresses_the_resync(grows_to, syncs):
    dev = Dev(64 * M, 96 * M)
    grows_to(dev)
    peer = make_peer(dev, role=Role.Secondary, peer_role=Role.Primary)
    trio.run(resize.on_sizes, peer, frame(size=96 * M, ask=True, clean=True))
    assert "Resync of new storage suppressed with --assume-clean" in dev.lines and not syncs


def test_a_lost_connection_ends_the_round_and_wakes_the_command():
    peer = make_peer(Dev(64 * M, 96 * M))
    peer.resize_pending, peer.peer_offer, peer.sizes_answered = True, 96 * M, trio.Event()
    waiting = peer.sizes_answered
    resize.forget(peer)
    assert waiting.is_set() and not peer.resize_pending and peer.peer_offer == 0
