"""Replication details: protocols A/B, csums-alg, remote reads, sizes, settings, ping, AL."""
from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import pytest

from tests.integration.nodes import WALKTHROUGH_CONF, Cluster, Node, in_sync
from tests.integration.test_durability import BLOCK, Writer, fail_over_to_node2, verify_on


def bring_up(c: Cluster, force_primary: bool = True, md_force: bool = False) -> None:
    c.up_connected(md_force=md_force)
    if force_primary:
        c.sync_from_node1()


def conf(**replace: str) -> str:
    text = WALKTHROUGH_CONF
    for old, new in replace.items():
        text = text.replace(old.replace("_", " "), new)
    return text


def digest_of(n: Node, size: int) -> str:
    with open(n.disk, "rb") as f:
        return hashlib.sha256(f.read(size)).hexdigest()


@pytest.mark.parametrize("proto", ["A", "B"])
def test_protocols_a_and_b_replicate_and_survive_a_clean_failover(tmp_path: Path, proto: str):
    c = Cluster(tmp_path, conf_template=WALKTHROUGH_CONF.replace("protocol C;", f"protocol {proto};"))
    try:
        bring_up(c)
        n1, n2 = c.nodes
        size = n1.snapshot()["size_kib"] * 1024
        seed = os.urandom(8)
        w = Writer(n1.device, size, seed, limit=3000)
        w.run()
        assert w.error is None
        fd = os.open(n1.device, os.O_RDWR)
        os.fsync(fd)                       # the flush round trip: everything is on node2
        os.close(fd)
        assert n1.snapshot()["protocol"] == proto
        fail_over_to_node2(c)
        assert verify_on(n2, seed, w.acked) == []
    finally:
        c.cleanup()


def test_different_protocols_refuse_to_connect(tmp_path: Path):
    c = Cluster(tmp_path)
    try:
        c.node2.config = tmp_path / "node2.conf"
        c.node2.env["UDRBD_CONFIG"] = str(c.node2.config)
        c.node2.config.write_text(c.config.read_text().replace("protocol C;", "protocol A;"))
        for n in c.nodes:
            n.drbdadm("create-md", "r0")
            n.drbdadm("up", "r0")
        for n in c.nodes:
            n.wait_for(lambda s: s["conn"] == "StandAlone", what="StandAlone")
        assert any("incompatible protocol settings" in m
                   for n in c.nodes for m in n.log_messages())
    finally:
        c.cleanup()


def test_csums_alg_transfers_only_blocks_that_differ(tmp_path: Path):
    text = WALKTHROUGH_CONF.replace("common {{ syncer {{ rate 100M; }} }}",
                                    "common {{ syncer {{ rate 100M; csums-alg sha1; }} }}")
    c = Cluster(tmp_path, conf_template=text)
    try:
        for n in c.nodes:                       # same content on both disks before create-md
            with open(n.disk, "r+b") as f:
                f.write(b"\x5a" * (8 << 20))
        bring_up(c, md_force=True)              # full sync, but almost all checksums match
        msgs = c.node2.log_messages()
        line = [m for m in msgs if "had equal checksums" in m]
        assert line, msgs[-10:]
        eliminated = int(line[0].split("eliminated: ")[1].split("K")[0])
        transferred = int(line[0].split("transferred ")[1].split("K")[0])
        assert eliminated >= 8 * 1024 and transferred < 131032 - 8 * 1024 + 1024
        size = c.node1.snapshot()["size_kib"] * 1024
        c.node1.drbdadm("secondary", "r0")
        for n in c.nodes:
            n.drbdadm("down", "r0")
        assert digest_of(c.node1, size) == digest_of(c.node2, size)
    finally:
        c.cleanup()


def test_sync_target_primary_reads_unsynced_blocks_from_the_peer(tmp_path: Path):
    slow = WALKTHROUGH_CONF.replace("common {{ syncer {{ rate 100M; }} }}",
                                    "common {{ disk {{ c-plan-ahead 0; resync-rate 4M; }} }}")
    c = Cluster(tmp_path, conf_template=slow)
    try:
        n1, n2 = c.nodes
        for n in c.nodes:
            n.drbdadm("create-md", "r0")
        with open(n1.disk, "r+b") as f:        # node1's data: a pattern at the end
            f.seek(100 << 20)
            f.write(b"\xc3" * (1 << 20))
        for n in c.nodes:
            n.drbdadm("up", "r0")
        for n in c.nodes:
            n.wait_for(lambda s: s["conn"] == "Connected", what="Connected")
        n1.drbdadm("primary", "--force", "r0")
        n2.wait_for(lambda s: s["conn"] == "SyncTarget", what="SyncTarget")
        n1.drbdadm("secondary", "r0")
        n2.drbdadm("primary", "r0")             # Primary while still SyncTarget
        fd = os.open(n2.device, os.O_RDONLY)
        try:
            assert os.pread(fd, 1 << 20, 100 << 20) == b"\xc3" * (1 << 20)
        finally:
            os.close(fd)
        assert n2.snapshot()["conn"] in ("SyncTarget", "PausedSyncT")
    finally:
        c.cleanup()


def test_device_is_the_smaller_of_the_two(tmp_path: Path):
    c = Cluster(tmp_path)
    try:
        os.truncate(c.node2.disk, 96 << 20)
        bring_up(c)
        sizes = {n.name: n.snapshot()["size_kib"] for n in c.nodes}
        assert sizes["node1"] == sizes["node2"]
        assert os.stat(c.node1.device).st_size == sizes["node1"] * 1024 < 96 << 20
    finally:
        c.cleanup()


def test_a_frozen_peer_is_noticed_by_ping(tmp_path: Path):
    fast = WALKTHROUGH_CONF.replace("cram-hmac-alg sha1;", "cram-hmac-alg sha1; ping-int 1; "
                                    "ping-timeout 5;")
    c = Cluster(tmp_path, conf_template=fast)
    try:
        bring_up(c, force_primary=False)
        pid = c.node2.pids()[0]
        os.kill(pid, signal.SIGSTOP)
        try:
            c.node1.wait_for(lambda s: s["conn"] in ("WFConnection", "Unconnected"),
                             timeout=15, what="peer declared dead")
        finally:
            os.kill(pid, signal.SIGCONT)
        assert "drbd r0: PingAck did not arrive in time." in c.node1.log_messages()
        for n in c.nodes:                        # and they find each other again
            n.wait_for(lambda s: s["conn"] == "Connected", timeout=30, what="reconnected")
    finally:
        c.cleanup()


def test_crashed_primary_gets_its_activity_log_extents_resynced(tmp_path: Path):
    c = Cluster(tmp_path)
    try:
        bring_up(c)
        n1, n2 = c.nodes
        fd = os.open(n1.device, os.O_RDWR)
        for i in range(5):                        # five hot extents on node1
            os.pwrite(fd, os.urandom(BLOCK), i * (4 << 20))
        os.close(fd)
        n1.kill9()
        n2.wait_for(lambda s: s["conn"] == "WFConnection", what="peer lost")
        n2.drbdadm("primary", "r0")
        fd = os.open(n2.device, os.O_RDWR)
        os.pwrite(fd, os.urandom(BLOCK), 90 << 20)
        os.close(fd)
        r = n1.drbdadm("up", "r0")                # apply-al marks node1's hot extents
        assert "Marked additional" in r.stdout + r.stderr
        for n in c.nodes:
            n.wait_for(in_sync, timeout=60, what="resynced")
        began = [m for m in n1.log_messages() if "Began resync as SyncTarget" in m][-1]
        kb = int(began.split("will sync ")[1].split(" KB")[0])
        assert kb >= 5 * 4096 + 4, began           # AL extents + the block written on node2
        size = n2.snapshot()["size_kib"] * 1024
        n2.drbdadm("secondary", "r0")
        for n in c.nodes:
            n.drbdadm("down", "r0")
        assert digest_of(n1, size) == digest_of(n2, size)
    finally:
        c.cleanup()


def test_after_sb_discard_zero_changes_resolves_automatically(tmp_path: Path):
    text = WALKTHROUGH_CONF.replace("cram-hmac-alg sha1;",
                                    "cram-hmac-alg sha1; after-sb-0pri discard-zero-changes;")
    c = Cluster(tmp_path, conf_template=text)
    try:
        bring_up(c)
        n1, n2 = c.nodes
        for n in c.nodes:
            n.drbdadm("disconnect", "r0")
        n1.drbdadm("secondary", "r0")
        n2.drbdadm("primary", "r0")               # both were Primary apart ...
        fd = os.open(n2.device, os.O_RDWR)
        os.pwrite(fd, os.urandom(BLOCK), 8192)    # ... but only node2 wrote
        os.close(fd)
        n2.drbdadm("secondary", "r0")
        for n in c.nodes:
            n.drbdadm("connect", "r0")
        for n in c.nodes:
            n.wait_for(in_sync, timeout=60, what="auto-resolved")
        assert any("Split-Brain detected, 0 primaries, automatically solved. Sync from peer node"
                   in m for m in n1.log_messages())
    finally:
        c.cleanup()


def test_discard_local_is_the_peers_discard_remote(tmp_path: Path):
    """8.4 swaps discard-local/-remote of the peer's settings before comparing them: the
    same discard-local on both nodes is refused (both would discard their data and wait
    for the other's), discard-node-node2 (discard-local there, -remote here) resolves."""
    text = WALKTHROUGH_CONF.replace("cram-hmac-alg sha1;",
                                    "cram-hmac-alg sha1; after-sb-0pri discard-local;")
    c = Cluster(tmp_path, conf_template=text)
    try:
        for n in c.nodes:
            n.drbdadm("create-md", "r0")
            n.drbdadm("up", "r0")
        for n in c.nodes:
            n.wait_for(lambda s: s["conn"] == "StandAlone", what="refused")
            assert any("incompatible after-sb-0pri settings" in m for m in n.log_messages())
        for n in c.nodes:
            n.drbdadm("down", "r0")
        c.config.write_text(c.config.read_text().replace("after-sb-0pri discard-local;",
                                                         "after-sb-0pri discard-node-node2;"))
        bring_up(c, md_force=True)
        n1, n2 = c.nodes
        for n in c.nodes:
            n.drbdadm("disconnect", "r0")
        n1.drbdadm("secondary", "r0")
        seeds = {}
        for n in c.nodes:                         # both write while apart, then neither
            n.drbdadm("primary", "r0")            # is Primary: a 0-primaries split brain
            seeds[n.name] = os.urandom(BLOCK)
            fd = os.open(n.device, os.O_RDWR)
            os.pwrite(fd, seeds[n.name], 8192)
            os.fsync(fd)
            os.close(fd)
            n.drbdadm("secondary", "r0")
        for n in c.nodes:
            n.drbdadm("connect", "r0")
        for n in c.nodes:
            n.wait_for(in_sync, timeout=60, what="auto-resolved")
        assert any("Split-Brain detected, 0 primaries, automatically solved. Sync from this "
                   "node" in m for m in n1.log_messages())
        n1.drbdadm("primary", "r0")
        fd = os.open(n1.device, os.O_RDONLY)
        assert os.pread(fd, BLOCK, 8192) == seeds["node1"]
        os.close(fd)
    finally:
        c.cleanup()
