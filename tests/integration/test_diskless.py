"""8.4's diskless Primary: a node without a disk of its own, connected to an UpToDate peer,
becomes Primary and reads and writes the peer's disk over the network."""
from __future__ import annotations

import errno
import os
import re
import time
from pathlib import Path
from threading import Thread

import pytest

from tests.integration.loopdev import loop_device
from tests.integration.nodes import WALKTHROUGH_CONF, Cluster, Node, in_sync, synced_pair
from tests.integration.test_disk_errors import files_in, in_log, write_blocks
from tests.integration.test_durability import BLOCK, block_for, verify_on
from tests.integration.test_single_node import check_files
from tests.integration.test_two_nodes import data_area_digest, sh


def detach_node2(c: Cluster) -> None:
    """node1 UpToDate Secondary, node2 connected without a disk."""
    c.node1.drbdadm("secondary", "r0")
    c.node2.drbdadm("detach", "r0")
    c.node2.wait_for(lambda s: s["disk"] == "Diskless" and s["pdsk"] == "UpToDate",
                     what="node2 diskless")


def mounted_files(n: Node, mnt: Path, tag: str, sums: dict[str, str],
                  mkfs: bool = False) -> dict[str, str]:
    """Mount ``n``'s device at ``mnt`` (after mkfs.ext3 if asked), check ``sums``, add two
    files in the directory ``tag``, unmount; returns all sums."""
    with loop_device(str(n.device)) as loop:
        if mkfs:
            sh("mkfs.ext3", "-q", loop)
        sh("mount", loop, str(mnt))
        try:
            check_files(mnt, sums)
            sums = {**sums, **files_in(mnt, tag)}
        finally:
            sh("umount", str(mnt))
    return sums


def test_a_detached_secondary_becomes_primary_on_its_peers_data(tmp_path: Path):
    """The data lives on node1 alone: node2's file system is created and written through
    the network, node1 marks what its own peer's disk lacks, and node2's disk attached
    again gets exactly those blocks."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with synced_pair(tmp_path) as c:
        n1, n2 = c.nodes
        detach_node2(c)
        gen = n1.snapshot()["uuids"]
        n2.drbdadm("primary", "r0")
        s2 = n2.snapshot()
        assert (s2["role"], s2["disk"], s2["pdsk"]) == ("Primary", "Diskless", "UpToDate")
        assert s2["size_kib"] == n1.snapshot()["size_kib"]
        # 8.4: node1's disk takes writes its peer's disk will lack: a new data generation
        n1.wait_for(lambda s: s["uuids"] != gen, what="node1's new current UUID")
        assert in_log(n1, "new current UUID")

        sums = mounted_files(n2, mnt, "diskless", {}, mkfs=True)
        s2 = n2.snapshot()
        assert s2["written_kib"] > 0 and s2["read_kib"] > 0
        oos = n1.snapshot()["oos_kib"]
        assert oos >= 2 * 1024                      # (two 1 MiB files at least)

        n2.drbdadm("secondary", "r0")
        n1.drbdadm("primary", "r0")
        sums = mounted_files(n1, mnt, "node1", sums)
        oos = n1.snapshot()["oos_kib"]
        n1.drbdadm("secondary", "r0")

        n2.drbdadm("attach", "r0")                  # its old disk: one generation behind
        for n in c.nodes:
            n.wait_for(in_sync, timeout=60, what="resynced after attach")
        began = [m for m in n2.log_messages() if "Began resync as SyncTarget" in m][-1]
        assert re.search(rf"will sync {oos} KB", began), began
        assert not any("Split-Brain" in m for n in c.nodes for m in n.log_messages())
        size = n1.snapshot()["size_kib"]
        assert data_area_digest(n1, size) == data_area_digest(n2, size)
        n2.drbdadm("primary", "r0")
        mounted_files(n2, mnt, "attached", sums)


def test_a_node_that_never_had_a_disk_serves_as_primary(tmp_path: Path):
    """``disk none;`` in node2's section: up connects it without a disk; as Primary its
    writes land on node1; without the connection its I/O fails; back, it goes on."""
    conf = WALKTHROUGH_CONF.replace("disk {disk2};", "disk none;")
    c = Cluster(tmp_path, size="64M", conf_template=conf)
    try:
        n1, n2 = c.nodes
        n1.drbdadm("create-md", "r0")
        for n in c.nodes:
            n.drbdadm("up", "r0")
        for n in c.nodes:
            n.wait_for(lambda s: s["conn"] == "Connected", what="connected")
        r = n2.drbdadm("primary", "r0", check=False)   # node1's data is Inconsistent
        assert r.returncode == 17
        assert "(-2) Need access to UpToDate data" in r.stderr
        n1.drbdadm("primary", "--force", "r0")
        n2.wait_for(lambda s: s["pdsk"] == "UpToDate", what="node1 UpToDate")
        r = n2.drbdadm("primary", "r0", check=False)   # node1 is Primary
        assert r.returncode == 11
        n1.drbdadm("secondary", "r0")
        n2.drbdadm("primary", "r0")

        seed = os.urandom(8)
        offsets = [i * 7 * BLOCK for i in range(50)]
        fd = os.open(n2.device, os.O_RDWR)
        try:
            for off in offsets:
                os.pwrite(fd, block_for(seed, off), off)
            os.fsync(fd)
            with open(n1.disk, "rb") as f:          # on node1's disk, nowhere else
                for off in offsets:
                    assert os.pread(f.fileno(), BLOCK, off) == block_for(seed, off)

            n1.drbdadm("disconnect", "r0")
            n2.wait_for(lambda s: s["conn"] != "Connected", what="node2 alone")
            with pytest.raises(OSError) as e:
                os.pwrite(fd, block_for(seed, 0), 0)
            assert e.value.errno == errno.EIO
            with pytest.raises(OSError) as e:
                os.pread(fd, BLOCK, offsets[1])
            assert e.value.errno == errno.EIO
            r = n2.drbdadm("secondary", "r0", check=False)   # still open
            assert r.returncode == 11 and "(-12) Device is held open by someone" in r.stderr

            n1.drbdadm("connect", "r0")
            for n in c.nodes:
                n.wait_for(lambda s: s["conn"] == "Connected", what="reconnected")
            n2.drbdadm("suspend-io", "r0")          # held, then through node1 (8.4 fails
            held = Thread(target=os.pwrite, args=(fd, block_for(seed, 0), 0))  # only I/O
            held.start()                            # that has no data to go on with)
            held.join(0.5)
            assert held.is_alive()
            n2.drbdadm("resume-io", "r0")
            held.join(10)
            assert not held.is_alive()
            os.fsync(fd)

            for cmd in ("verify", "invalidate-remote"):     # node2 has no disk (8.4: -5)
                r = n1.drbdadm(cmd, "r0", check=False)
                assert "(-5) Can not resync without remote disk" in r.stderr, cmd
            r = n1.drbdadm("detach", "r0", check=False)      # node2 would lose its data
            assert "(-2) Need access to UpToDate data" in r.stderr
            assert n2.snapshot()["conn"] == "Connected"
        finally:
            os.close(fd)
        assert verify_on(n2, seed, [0] + offsets) == []      # read through node1
        size = n2.snapshot()["size_kib"]
        assert size == n1.snapshot()["size_kib"] and os.stat(n2.device).st_size == size << 10
        n2.drbdadm("secondary", "r0")
        n1.drbdadm("primary", "r0")
        assert verify_on(n1, seed, [0] + offsets) == []
        os.truncate(n1.disk, 96 << 20)          # node1's disk grows; as in 8.4 a diskless
        n1.drbdadm("resize", "r0")              # peer offers no room: grown only alone
        assert n1.snapshot()["size_kib"] == size
        n1.drbdadm("disconnect", "r0")
        n1.drbdadm("--", "--assume-peer-has-space", "resize", "r0")
        grown = n1.snapshot()["size_kib"]
        assert grown > size
        n1.drbdadm("connect", "r0")
        n2.wait_for(lambda s: s["conn"] == "Connected" and s["size_kib"] == grown,
                    what="node2 takes node1's new size")
        assert os.stat(n2.device).st_size == grown << 10
        assert in_log(n2, f"({grown} KB)")
    finally:
        c.cleanup()


def test_a_diskless_primary_in_use_gets_a_disk(tmp_path: Path):
    """attach on a diskless Primary whose file system is mounted: the disk is synced in
    full from node1 while the file system stays in use."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with synced_pair(tmp_path) as c:
        n1, n2 = c.nodes
        detach_node2(c)
        n2.drbdadm("primary", "r0")
        with loop_device(str(n2.device)) as loop:
            sh("mkfs.ext3", "-q", loop)
            sh("mount", loop, str(mnt))
            try:
                sums = files_in(mnt, "diskless")
                n2.drbdadm("suspend-io", "r0")          # held I/O would skip the new disk
                r = n2.drbdadm("attach", "r0", check=False)
                assert r.returncode == 10 and "resume-io' first" in r.stderr
                n2.drbdadm("resume-io", "r0")
                n2.drbdadm("attach", "r0")
                for n in c.nodes:
                    n.wait_for(in_sync, timeout=60, what="the disk synced")
                assert in_log(n2, "Began resync as SyncTarget")
                sums.update(files_in(mnt, "attached"))
                check_files(mnt, sums)
            finally:
                sh("umount", str(mnt))
        s2 = n2.snapshot()
        assert (s2["role"], s2["disk"]) == ("Primary", "UpToDate")
        n2.drbdadm("secondary", "r0")
        size = n1.snapshot()["size_kib"]
        assert data_area_digest(n1, size) == data_area_digest(n2, size)


@pytest.mark.parametrize("demoted", [False, True])
def test_writes_of_a_diskless_primary_survive_a_crash_of_the_disk_node(
        tmp_path: Path, demoted: bool):
    """node1 holds the only copy of what node2 writes diskless: a kill -9 of node1 must not
    lose the marks saying node2's own disk lacks it (8.4 puts these writes through node1's
    activity log, and writes the bitmap once node2 is Primary no more), or node2's disk
    would be declared UpToDate without them."""
    with synced_pair(tmp_path) as c:
        n1, n2 = c.nodes
        detach_node2(c)
        n2.drbdadm("primary", "r0")
        seed = os.urandom(8)
        offsets = [i * 1031 * BLOCK for i in range(12)]   # a few 4 MiB extents apart
        write_blocks(n2, seed, offsets)
        if demoted:
            n2.drbdadm("secondary", "r0")
            n1.wait_for(lambda s: s["peer"] == "Secondary", what="node2 demoted")
            time.sleep(0.5)                  # (its superblock without the Primary flag)
        n1.kill9()
        n2.wait_for(lambda s: s["conn"] != "Connected", what="node1 gone")
        if not demoted:
            n2.drbdadm("secondary", "r0")
        n1.drbdadm("up", "r0")
        for n in c.nodes:
            n.wait_for(lambda s: s["conn"] == "Connected", what="reconnected")
        n2.drbdadm("attach", "r0")
        for n in c.nodes:
            n.wait_for(in_sync, timeout=60, what="resynced after attach")
        size = n1.snapshot()["size_kib"]
        assert data_area_digest(n1, size) == data_area_digest(n2, size)
        n1.drbdadm("down", "r0")
        n2.drbdadm("primary", "r0")
        assert verify_on(n2, seed, offsets) == []


def test_a_primary_detached_while_connected_follows_its_peers_new_generation(tmp_path: Path):
    """node2 starts a new data generation when node1's disk goes (node1 writes to node2's
    disk alone from then on); node1 must show that one, or its next connect is refused
    ("Can only connect to data with current UUID")."""
    with synced_pair(tmp_path) as c:
        n1, n2 = c.nodes
        gen = n2.snapshot()["uuids"]
        n1.drbdadm("detach", "r0")               # Primary, not in use: diskless from now
        n2.wait_for(lambda s: s["pdsk"] == "Diskless" and s["uuids"] != gen,
                    what="node2's new generation")
        n1.drbdadm("disconnect", "r0")
        n1.drbdadm("connect", "r0")
        for n in c.nodes:
            n.wait_for(lambda s: s["conn"] == "Connected", what="reconnected")
        assert not in_log(n1, "Can only connect to data")
        seed = os.urandom(8)
        write_blocks(n1, seed, [BLOCK])
        assert verify_on(n1, seed, [BLOCK]) == []
