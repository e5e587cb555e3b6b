"""A backing disk that starts failing: on-io-error as DRBD 8.4 applies it, nothing lost.

The failing disk is tests/integration/faultydisk.py: the node's backing file served by a
small FUSE filesystem that answers EIO on command.
"""
from __future__ import annotations

import errno
import os
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.faultydisk import FaultyDisk
from tests.integration.loopdev import loop_device
from tests.integration.nodes import WALKTHROUGH_CONF, Cluster, Node, bin_path, in_sync
from tests.integration.test_durability import (SLOW_SYNC, BLOCK, Writer, block_for,
                                               fail_over_to_node2, verify_on)
from tests.integration.test_single_node import check_files, write_files
from tests.integration.test_two_nodes import data_area_digest, sh


@contextmanager
def faulty_cluster(tmp_path: Path, *names: str, conf: str = WALKTHROUGH_CONF):
    """The walk-through's two nodes, the named nodes' backing disks behind FaultyDisks;
    yields (cluster, [disk per name]) and undoes everything afterwards, even on failure."""
    c = Cluster(tmp_path, conf_template=conf)
    disks: list[FaultyDisk] = []
    try:
        for name in names:
            n = c.node1 if name == "node1" else c.node2
            disk = FaultyDisk(n.disk, n.base / "faulty")
            disks.append(disk)
            disk.start()
            c.config.write_text(c.config.read_text().replace(f"disk {n.disk};",
                                                             f"disk {disk.path};"))
        yield c, disks
    finally:
        for disk in disks:          # down need not sit through a slowed fsync per flush
            try:
                disk.heal()
            except OSError:
                pass
        c.cleanup()
        for disk in disks:
            disk.stop()


def with_net(options: str) -> str:
    """The walk-through's configuration with more net options."""
    return WALKTHROUGH_CONF.replace("cram-hmac-alg sha1;", f"cram-hmac-alg sha1; {options}")


def in_log(n: Node, text: str) -> bool:
    return any(text in m for m in n.log_messages())


def generation_on_disk(disk: FaultyDisk) -> str:
    """The current UUID in the metadata of the image behind ``disk`` (drbdmeta get-gi)."""
    out = subprocess.run([bin_path("drbdmeta"), "0", "v08", str(disk.image), "internal", "get-gi"],
                         capture_output=True, text=True, timeout=30).stdout
    return out.split(":")[0]


def write_blocks(n: Node, seed: bytes, offsets: list[int]) -> None:
    fd = os.open(n.device, os.O_RDWR)
    try:
        for off in offsets:
            os.pwrite(fd, block_for(seed, off), off)
        os.fsync(fd)
    finally:
        os.close(fd)


@pytest.mark.parametrize("back", [("down", "up"), ("detach", "attach")])
def test_secondary_disk_failure_detaches_it_and_the_primary_keeps_everything(
        tmp_path: Path, back: tuple[str, str]):
    """detach + attach is 8.4's disk replacement: attached while connected, the nodes
    renegotiate and resync what the Primary marked meanwhile."""
    with faulty_cluster(tmp_path, "node2") as (c, (disk,)):
        c.up_connected()
        c.sync_from_node1()
        n1, n2 = c.nodes
        size = n1.snapshot()["size_kib"] * 1024
        seed = os.urandom(8)
        disk.fail("write")
        w = Writer(n1.device, size, seed, limit=500)
        w.run()
        assert w.error is None                   # the Primary's writes never fail
        n2.wait_for(lambda s: s["disk"] == "Diskless", what="node2 detached")
        assert in_log(n2, "Local IO failed in write. Detaching...")
        assert in_log(n2, "disk( UpToDate -> Failed )")
        snap = n1.wait_for(lambda s: s["pdsk"] == "Diskless", what="pdsk Diskless")
        assert snap["oos_kib"] >= 4 * 500        # everything since is tracked on node1
        assert in_log(n1, "new current UUID")
        (pid,) = n2.pids()                       # as 8.4, node2 lets go of the failed disk
        fds = Path(f"/proc/{pid}/fd")
        deadline = time.monotonic() + 10
        while any(os.path.realpath(f) == str(disk.path) for f in fds.iterdir()):
            assert time.monotonic() < deadline, "the failed disk is still open"
            time.sleep(0.05)
        # the disk is replaced (healed) and brought back: a resync, then identical data
        disk.heal()
        for command in back:
            n2.drbdadm(command, "r0")
        for n in c.nodes:
            n.wait_for(in_sync, timeout=60, what="resynced")
        fail_over_to_node2(c)
        assert verify_on(n2, seed, w.acked) == []


def test_primary_disk_failure_goes_on_diskless_through_the_peer(tmp_path: Path):
    with faulty_cluster(tmp_path, "node1") as (c, (disk,)):
        c.up_connected()
        c.sync_from_node1()
        n1, n2 = c.nodes
        seed = os.urandom(8)
        offsets = [i * 7 * BLOCK for i in range(64)]
        disk.fail("write")
        disk.fail("read")
        write_blocks(n1, seed, offsets)          # no error reaches the application
        snap = n1.wait_for(lambda s: s["disk"] == "Diskless", what="node1 detached")
        assert snap["role"] == "Primary" and snap["pdsk"] == "UpToDate"
        assert any(m.startswith("block drbd0: Local IO") and "Detaching..." in m
                   for m in n1.log_messages())    # the data or the activity log write failed
        assert verify_on(n1, seed, offsets) == []   # reads come from node2 now
        assert n2.snapshot()["oos_kib"] > 0          # node2 tracks what node1's disk lacks
        assert in_log(n2, "new current UUID")
        for cmd in ("invalidate", "invalidate-remote"):    # no disk to sync (late 8.4)
            r = n1.drbdadm(cmd, "r0", check=False)
            assert r.returncode == 10, cmd
            assert "(138) Device does not have a disk-config" in r.stderr, cmd
        r = n1.drbdadm("verify", "r0", check=False)         # (8.4's state engine: -4)
        assert r.returncode == 16 and "(-4) Can not resync without local disk" in r.stderr
        n1.drbdadm("secondary", "r0")                # demoted, the disk healed: attach
        disk.heal()                                  # takes it back (8.4: it has none)
        n1.drbdadm("attach", "r0")
        for n in c.nodes:
            n.wait_for(in_sync, timeout=60, what="resynced")
        n1.drbdadm("primary", "r0")
        assert verify_on(n1, seed, offsets) == []    # from its own disk again


def fail_under_writes(c: Cluster, n: Node, disk: FaultyDisk, kinds: tuple[str, ...],
                      seed: bytes, offsets: list[int]) -> None:
    """In sync, node1 Primary; then n's disk fails (``kinds`` of I/O) under node1's
    writes (and their fsync), until n is Diskless."""
    c.up_connected()
    c.sync_from_node1()
    for kind in kinds:
        disk.fail(kind)
    write_blocks(c.node1, seed, offsets)
    n.wait_for(lambda s: s["disk"] == "Diskless", what=f"{n.name} detached")


def test_peer_flush_failure_marks_recent_extents_out_of_sync(tmp_path: Path):
    with faulty_cluster(tmp_path, "node2") as (c, (disk,)):
        n1, n2 = c.nodes
        seed = os.urandom(8)
        fail_under_writes(c, n2, disk, ("fsync",), seed, [0, 64 << 20])   # two extents
        assert in_log(n2, "Local IO failed in flush. Detaching...")
        assert in_log(n1, "peer failed to flush;")
        # at least the two extents just written (4 MiB each) are to be resent
        assert n1.snapshot()["oos_kib"] >= 2 * 4096


@pytest.mark.parametrize("policy", ["pass_on", "detach", "call-local-io-error"])
def test_standalone_write_error_reaches_the_application(tmp_path: Path, policy: str):
    handler = f'handlers {{{{ local-io-error "touch {tmp_path}/called"; }}}}\n'
    conf = WALKTHROUGH_CONF.replace(
        "startup {{", f"disk {{{{ on-io-error {policy}; }}}}\n{handler}startup {{{{")
    with faulty_cluster(tmp_path, "node1", conf=conf) as (c, (disk,)):
        n1 = c.node1
        n1.drbdadm("create-md", "r0")
        n1.drbdadm("up", "r0")
        n1.drbdadm("primary", "--force", "r0")
        fd = os.open(n1.device, os.O_RDWR)
        try:
            os.pwrite(fd, b"y" * BLOCK, 0)        # the extent is in the activity log now
            disk.fail("write", 0, 1 << 20)        # the data area's first MiB goes bad
            with pytest.raises(OSError) as e:
                os.pwrite(fd, b"x" * BLOCK, 0)    # no peer has it either
            assert e.value.errno == 5
        finally:
            os.close(fd)
        if policy == "pass_on":                   # the disk stays, Inconsistent
            n1.wait_for(lambda s: s["disk"] == "Inconsistent", what="Inconsistent")
            assert in_log(n1, "Local IO failed in write. (")
            with pytest.raises(OSError) as e:     # and what it holds is not served
                fd = os.open(n1.device, os.O_RDONLY)
                try:
                    os.pread(fd, BLOCK, 0)
                finally:
                    os.close(fd)
            assert e.value.errno in (errno.EIO, errno.ENODATA)
        else:
            n1.wait_for(lambda s: s["disk"] == "Diskless", what="Diskless")
            assert in_log(n1, "Local IO failed in write. Detaching...")
        done = "helper command: drbdadm local-io-error minor-0 exit code 0 (0x0)"
        if policy == "call-local-io-error":
            n1.wait_for(lambda s: in_log(n1, done), what="the local-io-error handler")
            assert (tmp_path / "called").exists()
        else:
            assert not in_log(n1, "local-io-error") and not (tmp_path / "called").exists()


def test_an_fsync_returns_once_node2_synced_the_writes_before_it(tmp_path: Path):
    """node2 answers a FLUSH at once when an fdatasync it started on its own (after the
    write arrived) has finished; while that one still runs, the answer waits for it."""
    with faulty_cluster(tmp_path, "node2") as (c, (disk,)):
        c.up_connected()
        c.sync_from_node1()
        n1, n2 = c.nodes
        write_blocks(n1, os.urandom(8), [0])      # a write, an fsync: fsync-heavy now
        disk.slow("fsync", 3)
        start = time.monotonic()
        write_blocks(n1, os.urandom(8), [BLOCK])  # node2's fdatasync of it takes 3 s
        assert time.monotonic() - start >= 3
        for n in c.nodes:
            assert in_sync(n.snapshot())


def test_a_slow_flush_on_the_peer_does_not_look_like_a_dead_peer(tmp_path: Path):
    conf = with_net("ping-int 1; ping-timeout 5;")
    with faulty_cluster(tmp_path, "node2", conf=conf) as (c, (disk,)):
        c.up_connected()
        c.sync_from_node1()
        n1, n2 = c.nodes
        seed = os.urandom(8)
        seen = {n.name: len(n.log_messages()) for n in c.nodes}
        disk.slow("fsync", 2.5)                  # five ping timeouts long
        # ends with an fsync: node2 flushes for 2.5 s and must go on answering pings (no
        # more writes meanwhile: a FUSE file, unlike a disk, locks out writes during fsync)
        write_blocks(n1, seed, [0, BLOCK])
        assert in_sync(n1.snapshot())
        for n in c.nodes:
            since = n.log_messages()[seen[n.name]:]
            assert not any("PingAck" in m or "conn(" in m for m in since), since


def test_a_write_that_waits_for_the_peers_flush_does_not_stall_its_pings(tmp_path: Path):
    """On FUSE (and btrfs) a write waits while an fdatasync of the file runs. node2 starts
    one on its own as soon as a write arrives (fsync-heavy writer); the next write reaches
    it 2.5 s before that flush ends, and node2 must go on showing node1 that it lives."""
    conf = with_net("ping-int 1; ping-timeout 5;")
    with faulty_cluster(tmp_path, "node2", conf=conf) as (c, (disk,)):
        c.up_connected()
        c.sync_from_node1()
        n1, n2 = c.nodes
        seed = os.urandom(8)
        for _ in range(2):                       # a write, an fsync: fsync-heavy now
            write_blocks(n1, seed, [0])
        seen = {n.name: len(n.log_messages()) for n in c.nodes}
        disk.slow("fsync", 2.5)
        fd = os.open(n1.device, os.O_RDWR)
        try:
            os.pwrite(fd, block_for(seed, 0), 0)
            time.sleep(0.1)                      # node2's own fdatasync of it has begun
            os.pwrite(fd, block_for(seed, BLOCK), BLOCK)
            os.fsync(fd)
        finally:
            os.close(fd)
        assert in_sync(n1.snapshot())
        for n in c.nodes:
            since = n.log_messages()[seen[n.name]:]
            assert not any("PingAck" in m or "conn(" in m for m in since), since
        with open(disk.image, "rb") as f:        # acknowledged under C: on node2's disk
            assert [os.pread(f.fileno(), BLOCK, off) for off in (0, BLOCK)] == \
                [block_for(seed, off) for off in (0, BLOCK)]


def fail_during_the_initial_sync(c: Cluster, disk: FaultyDisk) -> list[Node]:
    """Connect, start the full sync from node1, and let ``disk`` fail writes mid-sync."""
    c.up_connected()
    n1, n2 = c.nodes
    n1.drbdadm("primary", "--force", "r0")
    n2.wait_for(lambda s: s["conn"] == "SyncTarget", what="syncing")
    disk.fail("write")
    return c.nodes


def test_a_sync_source_whose_disk_fails_stops_the_resync(tmp_path: Path):
    """The resync must not go on reading a failed disk: the target would get stale blocks
    over the writes it received directly, and be called UpToDate."""
    with faulty_cluster(tmp_path, "node1", conf=SLOW_SYNC) as (c, (disk,)):
        n1, n2 = fail_during_the_initial_sync(c, disk)
        seed = os.urandom(8)
        try:
            write_blocks(n1, seed, [100 * BLOCK])    # reaches node2, not node1's disk
        except OSError:
            pass                                 # (the activity log write may fail first)
        n1.wait_for(lambda s: s["disk"] == "Diskless", what="node1 detached")
        for n in c.nodes:
            n.wait_for(lambda s: s["conn"] == "Connected", what="resync stopped")
        assert n2.snapshot()["disk"] == "Inconsistent"
        assert not any(in_log(n, "Resync done") for n in c.nodes)
        assert not any(in_log(n, "NetworkFailure") for n in c.nodes)   # 8.4 stays connected


def test_a_sync_target_whose_disk_fails_detaches_and_stays_connected(tmp_path: Path):
    with faulty_cluster(tmp_path, "node2", conf=SLOW_SYNC) as (c, (disk,)):
        n1, n2 = fail_during_the_initial_sync(c, disk)
        n2.wait_for(lambda s: s["disk"] == "Diskless", what="node2 detached")
        for n in c.nodes:
            n.wait_for(lambda s: s["conn"] == "Connected", what="resync stopped")
        assert n1.snapshot()["pdsk"] == "Diskless"
        assert not any(in_log(n, "NetworkFailure") for n in c.nodes)
        write_blocks(n1, os.urandom(8), [0, BLOCK])             # the Primary goes on


def test_fsync_fails_when_neither_disk_could_flush(tmp_path: Path):
    """node1's disk has failed (Diskless Primary), then node2's flush fails too: the
    application's fsync must not report success."""
    with faulty_cluster(tmp_path, "node1", "node2") as (c, (disk1, disk2)):
        n1, n2 = c.nodes
        c.up_connected()
        c.sync_from_node1()
        seed = os.urandom(8)
        disk1.fail("write")
        disk1.fail("read")
        write_blocks(n1, seed, [0])              # node1 detaches; node2 has it, fsync ok
        n1.wait_for(lambda s: s["disk"] == "Diskless", what="node1 detached")
        # node2 starts a new data generation (it has the only copy now); the fault must
        # only hit the application's fsync, not that metadata write
        n2.wait_for(lambda s: generation_on_disk(disk2) == s["uuids"].split(":")[0],
                    what="node2's new current UUID on disk")
        disk2.fail("fsync")
        fd = os.open(n1.device, os.O_RDWR)
        try:
            os.pwrite(fd, block_for(seed, BLOCK), BLOCK)
            with pytest.raises(OSError) as e:
                os.fsync(fd)
            assert e.value.errno == errno.EIO
        finally:
            os.close(fd)


def test_a_diskless_node_connects_and_resyncs_once_it_attaches(tmp_path: Path):
    """8.4: a node without a disk still connects (nothing to resync); attaching the disk
    while connected renegotiates, and exactly what the Primary wrote meanwhile moves."""
    c = Cluster(tmp_path)
    try:
        c.up_connected()
        c.sync_from_node1()
        n1, n2 = c.nodes
        n2.drbdadm("detach", "r0")
        n2.drbdadm("disconnect", "r0")
        n2.drbdadm("connect", "r0")
        for n in c.nodes:
            n.wait_for(lambda s: s["conn"] == "Connected", what="connected")
        s1, s2 = n1.snapshot(), n2.snapshot()
        assert (s1["disk"], s1["pdsk"]) == ("UpToDate", "Diskless")
        assert (s2["disk"], s2["pdsk"], s2["peer"]) == ("Diskless", "UpToDate", "Primary")
        seed = os.urandom(8)
        offsets = [i * 5 * BLOCK for i in range(40)]
        write_blocks(n1, seed, offsets)          # node2 has no disk: node1 tracks them
        assert n1.snapshot()["oos_kib"] == 4 * len(offsets)
        n2.drbdadm("attach", "r0")
        for n in c.nodes:
            n.wait_for(in_sync, timeout=60, what="resynced after attach")
        assert in_log(n2, "disk attached while connected: renegotiating")
        # 8.4: Negotiating until a handshake compared it, never UpToDate unchecked while
        # connected; its own state again once the connection is down
        disk_lines = [m for m in n2.log_messages() if "disk( " in m]
        assert "block drbd0: disk( Attaching -> Negotiating )" in disk_lines
        back = next(m for m in disk_lines if "disk( Negotiating -> " in m)
        assert "conn( Connected -> " in back
        fail_over_to_node2(c)
        assert verify_on(n2, seed, offsets) == []
    finally:
        c.cleanup()


def lose_node1s_disk(c: Cluster, disk: FaultyDisk, seed: bytes) -> None:
    """node1 Primary and in sync; then its disk fails under a write: a Diskless Primary."""
    fail_under_writes(c, c.node1, disk, ("write", "read"), seed, [0])


def test_a_diskless_primary_reconnects_and_goes_on_through_the_peer(tmp_path: Path):
    with faulty_cluster(tmp_path, "node1") as (c, (disk,)):
        n1, n2 = c.nodes
        seed = os.urandom(8)
        lose_node1s_disk(c, disk, seed)
        n1.drbdadm("disconnect", "r0")
        n1.drbdadm("connect", "r0")
        for n in c.nodes:
            n.wait_for(lambda s: s["conn"] == "Connected", what="reconnected")
        assert n1.snapshot()["pdsk"] == "UpToDate"
        offsets = [i * 3 * BLOCK for i in range(1, 30)]
        write_blocks(n1, seed, offsets)          # through node2 only
        assert verify_on(n1, seed, [0] + offsets) == []   # read back through node2
        assert n2.snapshot()["oos_kib"] >= 4 * (len(offsets) + 1)


def test_a_diskless_primary_refuses_data_of_another_generation(tmp_path: Path):
    with faulty_cluster(tmp_path, "node1") as (c, (disk,)):
        n1, n2 = c.nodes
        lose_node1s_disk(c, disk, os.urandom(8))
        n1.drbdadm("disconnect", "r0")
        n2.wait_for(lambda s: s["conn"] == "WFConnection", what="node2 alone")
        n2.drbdadm("new-current-uuid", "r0/0")   # node2 starts a generation of its own
        n1.drbdadm("connect", "r0")
        n1.wait_for(lambda s: s["conn"] == "StandAlone" and in_log(
            n1, "Can only connect to data with current UUID="), what="refused")


def test_a_peer_that_completes_no_write_is_expelled_after_ko_count(tmp_path: Path):
    """node2's disk hangs: it completes no write and (its event loop stuck in the write)
    answers nothing; with pings far apart only ko-count x timeout notices. node1's write
    completes locally, marked out of sync, and the resync brings node2 up to date."""
    conf = with_net("timeout 10; ko-count 2; ping-int 120;")
    with faulty_cluster(tmp_path, "node2", conf=conf) as (c, (disk,)):
        c.up_connected()
        c.sync_from_node1()
        n1 = c.node1
        seed = os.urandom(8)
        disk.slow("write", 6)
        fd = os.open(n1.device, os.O_RDWR)
        try:
            os.pwrite(fd, block_for(seed, 0), 0)     # returns once node2 is expelled
        finally:
            os.close(fd)
        assert in_log(n1, "Remote failed to finish a request within")
        assert in_log(n1, "ko-count (2) * timeout (10 * 0.1s)")
        assert any("conn( Connected -> Timeout )" in m for m in n1.log_messages())
        assert n1.snapshot()["oos_kib"] >= 4
        heal_and_fail_over(c, disk, seed, [0])


def heal_and_fail_over(c: Cluster, disk: FaultyDisk, seed: bytes, offsets: list[int]) -> None:
    """node2's disk works again: once resynced, node2 as Primary has every block."""
    disk.heal()
    for n in c.nodes:
        n.wait_for(in_sync, timeout=60, what="resynced")
    fail_over_to_node2(c)
    assert verify_on(c.node2, seed, offsets) == []


def test_a_peer_that_completes_no_flush_is_expelled_after_ko_count(tmp_path: Path):
    """node2's flushes hang (it still answers pings: its fdatasync runs off its event
    loop): as in 8.4, where a flush is a request like a write, ko-count x timeout
    expels it and node1's fsync returns with its own disk's flush."""
    conf = with_net("timeout 10; ko-count 2;")
    with faulty_cluster(tmp_path, "node2", conf=conf) as (c, (disk,)):
        c.up_connected()
        c.sync_from_node1()
        n1 = c.node1
        seed = os.urandom(8)
        disk.slow("fsync", 8)
        start = time.monotonic()
        write_blocks(n1, seed, [0, 64 * BLOCK])          # and its fsync
        assert time.monotonic() - start < 7
        assert in_log(n1, "Remote failed to finish a request within")
        assert any("conn( Connected -> Timeout )" in m for m in n1.log_messages())
        heal_and_fail_over(c, disk, seed, [0, 64 * BLOCK])


@pytest.mark.parametrize("proto", ["B", "C"])
def test_b_completes_a_write_once_node2_has_it_c_once_node2_wrote_it(tmp_path: Path, proto):
    """node2's disk takes 4 s per write. Under protocol B node1's write returns while
    node2 is still writing (node2's image holds the old block); under C only afterwards.
    (Pings far apart: node2's event loop is stuck in the slow write meanwhile.)"""
    conf = with_net("ping-int 120;").replace("protocol C;", f"protocol {proto};")
    with faulty_cluster(tmp_path, "node2", conf=conf) as (c, (disk,)):
        c.up_connected()
        c.sync_from_node1()
        n1, n2 = c.nodes
        assert n1.snapshot()["protocol"] == proto
        block = block_for(os.urandom(8), 0)
        written = n2.snapshot()["written_kib"]
        disk.slow("write", 4)
        fd = os.open(n1.device, os.O_RDWR)
        try:
            os.pwrite(fd, block, 0)
        finally:
            os.close(fd)
        with open(disk.image, "rb") as f:
            on_node2 = f.read(BLOCK)
        assert (on_node2 == block) == (proto == "C")
        disk.heal()
        n2.wait_for(lambda s: s["written_kib"] >= written + 4, what="node2 wrote it")
        with open(disk.image, "rb") as f:
            assert f.read(BLOCK) == block
        for n in c.nodes:
            assert in_sync(n.snapshot())


def files_in(mnt: Path, name: str) -> dict[str, str]:
    """Two new 1 MiB files of random data in the new directory ``mnt/name``: their sums."""
    (mnt / name).mkdir()
    return {f"{name}/{k}": v for k, v in write_files(mnt / name, count=2).items()}


def test_a_primary_gets_a_new_disk_while_its_file_system_stays_mounted(tmp_path: Path):
    """DRBD's "replacing a failed disk" on the Primary: the file system stays mounted
    through the failure (its I/O goes through node2) and through the replacement
    (create-md on the new disk, attach, a full sync from node2); then 8.4's detach of a
    Primary in use, and attach again."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with faulty_cluster(tmp_path, "node1") as (c, (disk,)):
        n1, n2 = c.nodes
        c.up_connected()
        c.sync_from_node1()
        size = n1.snapshot()["size_kib"] * 1024
        with loop_device(str(n1.device)) as loop:
            sh("mkfs.ext3", "-q", loop)
            sh("mount", loop, str(mnt))
            try:
                sums = files_in(mnt, "before")
                os.sync()
                disk.fail("write")
                disk.fail("read")
                sums.update(files_in(mnt, "during"))
                os.sync()
                n1.wait_for(lambda s: s["disk"] == "Diskless", what="node1 lost its disk")
                check_files(mnt, sums)                    # read through node2

                r = n1.drbdadm("attach", "r0", check=False)  # the dead disk again
                assert r.returncode != 0 and n1.snapshot()["disk"] == "Diskless"
                disk.heal()                               # a new, empty disk at the path
                image_size = disk.image.stat().st_size
                os.truncate(disk.image, 0)
                os.truncate(disk.image, image_size - (8 << 20))      # too small first
                n1.drbdadm("create-md", "--force", "r0")
                r = n1.drbdadm("attach", "r0", check=False)
                assert r.returncode == 10 and "(111) Low.dev. smaller" in r.stderr
                check_files(mnt, sums)
                os.truncate(disk.image, 0)
                os.truncate(disk.image, image_size)
                n1.drbdadm("create-md", "--force", "r0")
                n1.drbdadm("attach", "r0")
                for n in c.nodes:
                    n.wait_for(in_sync, timeout=60, what="the new disk synced")
                assert in_log(n1, "Began resync as SyncTarget")
                sums.update(files_in(mnt, "after"))
                check_files(mnt, sums)

                n1.drbdadm("detach", "r0")      # 8.4: a Primary in use goes on diskless
                snap = n1.snapshot()
                assert (snap["role"], snap["disk"], snap["pdsk"]) == (
                    "Primary", "Diskless", "UpToDate")
                assert [m for m in n1.log_messages() if "disk( " in m][-2:] == [
                    "block drbd0: disk( UpToDate -> Failed )",
                    "block drbd0: disk( Failed -> Diskless )"]
                n1.drbdadm("detach", "r0")      # nothing left to detach
                sums.update(files_in(mnt, "detached"))   # through node2
                os.sync()
                n1.drbdadm("attach", "r0")      # the same disk back, synced in full
                for n in c.nodes:
                    n.wait_for(in_sync, timeout=60, what="attached again and synced")
                check_files(mnt, sums)
            finally:
                subprocess.run(["umount", str(mnt)], check=False)
        for n in c.nodes:
            n.drbdadm("down", "r0")
        assert data_area_digest(n1, size >> 10) == data_area_digest(n2, size >> 10)



def test_a_write_still_on_its_way_to_the_disk_when_the_peer_returns_is_resynced(tmp_path):
    """A write that began while node2 was away goes to node1's disk alone and marks its
    block once written; node2 returning meanwhile must not get the bitmap before that
    mark (8.4 sends it with application I/O drained), or the resync leaves the block out
    and both sides call themselves UpToDate. Here the write waits behind node1's slow
    superblock write (node2 left: a new generation) while the handshake runs."""
    with faulty_cluster(tmp_path, "node1") as (c, (disk,)):
        c.up_connected()
        c.sync_from_node1()
        n1, n2 = c.nodes
        seed = os.urandom(8)
        off = 40 << 20
        write_blocks(n1, os.urandom(8), [off])          # a hot extent: no AL transaction
        disk.slow("fsync", 3)
        n2.drbdadm("disconnect", "r0")                  # node1 writes its superblock
        n1.wait_for(lambda s: s["conn"] == "WFConnection", what="node2 away")
        writer = threading.Thread(target=write_blocks, args=(n1, seed, [off]))
        writer.start()                                  # waits behind that write
        n2.drbdadm("connect", "r0")                     # the handshake meanwhile
        writer.join(30)
        assert not writer.is_alive()
        disk.heal()
        for n in c.nodes:
            n.wait_for(in_sync, timeout=60, what="in sync")
        n1.wait_for(lambda s: s["oos_kib"] == 0, timeout=10, what="no bit left")
        size = n1.snapshot()["size_kib"]
        assert data_area_digest(n1, size) == data_area_digest(n2, size)
