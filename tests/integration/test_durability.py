"""Durability: acknowledged writes survive a crash; a damaged link never damages data."""
from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from pathlib import Path

import pytest

from tests.integration.faultproxy import FaultProxy
from tests.integration.nodes import WALKTHROUGH_CONF, Cluster, Node, free_port

BLOCK = 4096


def block_for(seed: bytes, offset: int) -> bytes:
    """Checksummed content: 128 x sha256(seed|offset) = 4 KiB, recognisable per offset."""
    return hashlib.sha256(seed + offset.to_bytes(8, "big")).digest() * (BLOCK // 32)


class Writer(threading.Thread):
    """Writes unique 4 KiB blocks until the device fails; records every acknowledged one."""

    def __init__(self, device: Path, size: int, seed: bytes, limit: int = 1_000_000):
        super().__init__(daemon=True)
        self.device, self.seed = device, seed
        slots = list(range(size // BLOCK))
        random.Random(seed).shuffle(slots)
        self.offsets = [s * BLOCK for s in slots[:limit]]
        self.acked: list[int] = []
        self.error: OSError | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        fd = os.open(self.device, os.O_RDWR)
        try:
            for off in self.offsets:
                if self.stop.is_set():
                    return
                os.pwrite(fd, block_for(self.seed, off), off)
                self.acked.append(off)          # pwrite returned: protocol C acknowledged it
        except OSError as e:
            self.error = e
        finally:
            try:
                os.close(fd)
            except OSError:
                pass


def synced(c: Cluster) -> None:
    c.up_connected()
    c.sync_from_node1()


def fail_over_to_node2(c: Cluster) -> None:
    """The clean failover of the walk-through: node1 demotes and goes down, node2 sees it
    go and becomes Primary."""
    c.node1.drbdadm("secondary", "r0")
    c.node1.drbdadm("down", "r0")
    c.node2.wait_for(lambda s: s["conn"] == "WFConnection", what="node1 gone")
    c.node2.drbdadm("primary", "r0")


def verify_on(n: Node, seed: bytes, offsets: list[int]) -> list[int]:
    """Offsets whose block on ``n``'s device is not the checksummed content."""
    bad = []
    fd = os.open(n.device, os.O_RDONLY)
    try:
        for off in offsets:
            if os.pread(fd, BLOCK, off) != block_for(seed, off):
                bad.append(off)
    finally:
        os.close(fd)
    return bad


@pytest.mark.parametrize("delay", [0.3, 1.1, 2.0])
def test_acknowledged_writes_survive_kill9_of_the_primary(tmp_path: Path, delay: float):
    c = Cluster(tmp_path)
    try:
        synced(c)
        n1, n2 = c.nodes
        size = n1.snapshot()["size_kib"] * 1024
        seed = os.urandom(8)
        w = Writer(n1.device, size, seed)
        w.start()
        time.sleep(delay)
        n1.kill9()                               # the primary's daemon dies mid-stream
        w.join(timeout=30)
        assert not w.is_alive()
        assert w.error is not None, "the writer must see the device fail"
        assert len(w.acked) > 10, f"too few writes before the crash ({len(w.acked)})"
        n2.wait_for(lambda s: s["conn"] in ("WFConnection", "Unconnected"), what="peer lost")
        n2.drbdadm("primary", "r0")
        assert verify_on(n2, seed, w.acked) == []
    finally:
        c.cleanup()


def proxied_configs(c: Cluster, tmp_path: Path, pport: int) -> None:
    """node1 reaches node2 through 127.0.0.3:PPORT and node2 reaches node1 via 127.0.0.4:PPORT."""
    base = c.config.read_text()
    for node, text in ((c.node1, base.replace(f"127.0.0.2:{c.port}", f"127.0.0.3:{pport}")),
                       (c.node2, base.replace(f"127.0.0.1:{c.port}", f"127.0.0.4:{pport}"))):
        node.config = tmp_path / f"{node.name}.conf"
        node.config.write_text(text)
        node.env["UDRBD_CONFIG"] = str(node.config)


def test_corrupted_bytes_on_the_link_cause_a_reconnect_not_damage(tmp_path: Path):
    c = Cluster(tmp_path)
    pport = free_port()
    proxied_configs(c, tmp_path, pport)
    # one byte flipped after 3 MiB on whichever proxy carries the connection; each node
    # sees its peer coming from the address it has configured for it
    to_n2 = FaultProxy(("127.0.0.3", pport), ("127.0.0.2", c.port), "127.0.0.4",
                       corrupt_after=3 << 20)
    to_n1 = FaultProxy(("127.0.0.4", pport), ("127.0.0.1", c.port), "127.0.0.3",
                       corrupt_after=3 << 20)
    try:
        with to_n2, to_n1:
            synced(c)                            # the full sync alone moves > 3 MiB
            n1, n2 = c.nodes
            assert to_n2.corrupted.is_set() or to_n1.corrupted.is_set()
            assert any("checksum mismatch" in m for n in c.nodes for m in n.log_messages())
            assert any("conn( WFReportParams -> ProtocolError )" in m or
                       "-> ProtocolError )" in m for n in c.nodes for m in n.log_messages())
            size = n1.snapshot()["size_kib"] * 1024
            seed = os.urandom(8)
            w = Writer(n1.device, size, seed, limit=2000)
            w.run()
            assert w.error is None
            n1.drbdadm("secondary", "r0")
            for n in c.nodes:
                n.drbdadm("down", "r0")
            digests = [hashlib.sha256(n.disk.read_bytes()[:size]).hexdigest() for n in c.nodes]
            assert digests[0] == digests[1]
    finally:
        c.cleanup()


SLOW_SYNC = WALKTHROUGH_CONF.replace("common {{ syncer {{ rate 100M; }} }}",
                                     "common {{ disk {{ c-plan-ahead 0; resync-rate 8M; }} }}")


def test_interrupted_resync_resumes_where_it_stopped(tmp_path: Path):
    c = Cluster(tmp_path, conf_template=SLOW_SYNC)
    try:
        n1, n2 = c.nodes
        for n in c.nodes:
            n.drbdadm("create-md", "r0")
            n.drbdadm("up", "r0")
        for n in c.nodes:
            n.wait_for(lambda s: s["conn"] == "Connected", what="Connected")
        n1.drbdadm("primary", "--force", "r0")
        n2.wait_for(lambda s: s["conn"] == "SyncTarget" and s.get("done", 0) > 20,
                    timeout=60, what="resync 20% done")
        time.sleep(1.5)                          # let the bitmap flusher write progress out
        n2.kill9()
        first_total = n2.log_messages()
        n1.wait_for(lambda s: s["conn"] == "WFConnection", what="target gone")
        n2.drbdadm("up", "r0")
        n2.wait_for(lambda s: s["conn"] == "SyncTarget", timeout=30, what="resync resumed")
        began = [m for m in n2.log_messages() if "Began resync as SyncTarget" in m]
        assert len(began) == 2, began
        kb = [int(m.split("will sync ")[1].split(" KB")[0]) for m in began]
        assert kb[1] < kb[0] * 0.85, f"resumed resync should be smaller: {kb}"
        assert first_total
    finally:
        c.cleanup()


def test_peer_lost_mid_write_completes_locally_and_resyncs_later(tmp_path: Path):
    c = Cluster(tmp_path)
    try:
        synced(c)
        n1, n2 = c.nodes
        size = n1.snapshot()["size_kib"] * 1024
        seed = os.urandom(8)
        w = Writer(n1.device, size, seed, limit=6000)
        w.start()
        time.sleep(0.5)
        n2.kill9()                               # the Secondary dies while writes are in flight
        w.join(timeout=60)
        assert w.error is None and len(w.acked) == 6000   # every write completed locally
        snap = n1.wait_for(lambda s: s["conn"] == "WFConnection", what="peer lost")
        assert snap["oos_kib"] > 0
        assert any("new current UUID" in m for m in n1.log_messages()[-10:])
        n2.drbdadm("up", "r0")
        for n in c.nodes:
            n.wait_for(lambda s: s["conn"] == "Connected" and s["pdsk"] == "UpToDate"
                       and s["disk"] == "UpToDate", timeout=60, what="resynced")
        fail_over_to_node2(c)
        assert verify_on(n2, seed, w.acked) == []
    finally:
        c.cleanup()
