"""Online resize: grow both backing disks, ``drbdadm resize``, the new area resynced."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from fuseblk.mount import is_fuse_mount
from tests.integration.loopdev import loop_device
from tests.integration.nodes import WALKTHROUGH_CONF, Cluster, Node, in_sync, synced_pair
from tests.integration.test_durability import Writer, fail_over_to_node2, verify_on
from tests.integration.test_two_nodes import data_area_digest, sh

MiB = 1 << 20
SIZE_40M = WALKTHROUGH_CONF.replace("common {{ syncer {{ rate 100M; }} }}",
                                    "common {{ syncer {{ rate 100M; }} disk {{ size 40M; }} }}")


def grow_disks(c: Cluster, size: int) -> None:
    for n in c.nodes:
        os.truncate(n.disk, size)


def loop_size(dev: str) -> int:
    return int(sh("blockdev", "--getsize64", dev))


def sized(n: Node, size: int) -> dict:
    return n.wait_for(lambda s: s["size_kib"] * 1024 == size and in_sync(s), timeout=60,
                      what=f"in sync at {size} bytes")


def down_and_compare(c: Cluster, size: int) -> None:
    """Both nodes down, then their data areas must be byte-identical up to ``size``."""
    for n in c.nodes:
        n.drbdadm("down", "r0")
    assert data_area_digest(c.node1, size >> 10) == data_area_digest(c.node2, size >> 10)


def test_online_grow_of_a_mounted_device_resyncs_only_the_new_area(tmp_path: Path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with synced_pair(tmp_path) as c:
        n1, n2 = c.nodes
        old = n1.snapshot()["size_kib"] * 1024
        with loop_device(str(n1.device)) as loop:
            sh("mkfs.ext3", "-q", loop)
            sh("mount", loop, str(mnt))
            data = os.urandom(20 * MiB)
            (mnt / "before").write_bytes(data)
            grow_disks(c, 96 * MiB)
            n2.drbdadm("resize", "r0")       # the Secondary asks (the Primary: see below)
            # the command returns with the new size in place on the node that ran it, and on
            # the Primary the loop device over the device file sees it too
            new = n2.snapshot()["size_kib"] * 1024
            assert new > old + 30 * MiB
            for n in c.nodes:
                sized(n, new)
                assert os.stat(n.device).st_size == new
                assert (n.run_dir / "drbd-minor-0.lkbd").read_text() == \
                    f"{96 * MiB}\t{n.disk}\n"                   # where its metadata is now
            assert loop_size(loop) == new
            for line in ("Resync of new storage after online grow",
                         f"Began resync as SyncSource (will sync {(new - old) >> 10} KB"):
                assert any(line in m for m in n1.log_messages()), line
            assert any("Resync of new storage after online grow" in m
                       for m in n2.log_messages())
            # this machine's root may not resize a mounted ext3 (CAP_SYS_RESOURCE): offline
            sh("umount", str(mnt))
            sh("e2fsck", "-f", "-y", loop)
            sh("resize2fs", loop)
            sh("mount", loop, str(mnt))
            assert os.statvfs(mnt).f_blocks * os.statvfs(mnt).f_frsize > old
            more = os.urandom(40 * MiB)
            (mnt / "after").write_bytes(more)                   # needs the new space
            sh("umount", str(mnt))
        down_and_compare(c, new)
        for n in c.nodes:                     # the metadata is found at the new end
            gi = n.drbdadm("show-gi", "r0").stdout
            assert f"last agreed size: 96 MB ({new // 512} sectors)" in gi
            n.drbdadm("up", "r0")
        c.node2.wait_for(in_sync, what="connected again")
        n1.drbdadm("primary", "r0")
        sh("mount", str(n1.device), str(mnt))
        assert (mnt / "before").read_bytes() == data and (mnt / "after").read_bytes() == more
        sh("umount", str(mnt))


def test_assume_clean_grows_without_a_resync(tmp_path: Path):
    with synced_pair(tmp_path) as c:
        n1, n2 = c.nodes
        old = n1.snapshot()["size_kib"] * 1024
        grow_disks(c, 80 * MiB)
        n1.drbdadm("--", "--assume-clean", "resize", "r0")
        new = n1.snapshot()["size_kib"] * 1024
        assert new > old
        for n in c.nodes:
            assert sized(n, new)["oos_kib"] == 0
        assert any("Resync of new storage suppressed with --assume-clean" in m
                   for m in n1.log_messages())
        assert sum("Began resync" in m for m in n1.log_messages()) == 1   # the initial one


def test_resize_refusals_and_growing_alone(tmp_path: Path):
    c = Cluster(tmp_path, size="64M")
    try:
        c.up_connected()
        n1, n2 = c.nodes
        r = n1.drbdadm("resize", "r0", check=False)          # Secondary/Secondary
        assert r.returncode == 10
        assert "0: Failure: (131) Need one Primary node to resize." in r.stderr
        r = n1.drbdadm("check-resize", "r0", check=False)    # quiet about it, as 8.4
        assert (r.returncode, r.stderr) == (0, "")
        c.sync_from_node1()
        n1.drbdadm("pause-sync", "r0")
        n1.drbdadm("invalidate-remote", "r0")
        n1.wait_for(lambda s: s["conn"] == "PausedSyncS", what="PausedSyncS")
        r = n1.drbdadm("resize", "r0", check=False)
        assert r.returncode == 10 and "(130) Resize not allowed during resync." in r.stderr
        n1.drbdadm("resume-sync", "r0")
        n1.wait_for(in_sync, what="synced")
        old = n1.snapshot()["size_kib"] * 1024

        n1.drbdadm("disconnect", "r0")
        grow_disks(c, 96 * MiB)
        n1.drbdadm("resize", "r0")                           # the peer's room is unknown
        assert n1.snapshot()["size_kib"] * 1024 == old
        n1.drbdadm("--", "--assume-peer-has-space", "resize", "r0")
        new = n1.snapshot()["size_kib"] * 1024
        assert new > old and os.stat(n1.device).st_size == new
        assert n1.snapshot()["oos_kib"] * 1024 == new - old  # the new area, for the peer
        assert any("Resize while not connected was forced by the user!" in m
                   for m in n1.log_messages())
        # node2 moves its metadata when it meets the bigger node1, and gets the new area
        n1.drbdadm("connect", "r0")
        for n in c.nodes:
            sized(n, new)
        assert any("Writing the whole bitmap, size changed and md moved" in m
                   for m in n2.log_messages())

        shrunk = new - 4 * MiB                                # explicit: both follow
        n1.drbdadm("--", f"--size={shrunk // 1024}k", "resize", "r0")
        for n in c.nodes:
            sized(n, shrunk)
        assert any(f"Peer sets u_size to {shrunk // 512} sectors" in m
                   for m in n2.log_messages())
        n1.drbdadm("invalidate-remote", "r0")                # a full sync: of the device only
        for n in c.nodes:
            sized(n, shrunk)
        assert f"Began resync as SyncSource (will sync {shrunk >> 10} KB" in \
            [m for m in n1.log_messages() if "Began resync" in m][-1]
        n2.drbdadm("--", "--size=1G", "resize", "r0")        # too big: as big as it gets
        assert any("Requested disk size is too big" in m for m in n2.log_messages())
        for n in c.nodes:
            sized(n, new)
        r = n2.drbdsetup("resize", "0", "--size=x", check=False)
        assert r.returncode == 10 and "--size" in r.stderr
        down_and_compare(c, new)
    finally:
        c.cleanup()


def test_disk_size_in_the_configuration_caps_the_device(tmp_path: Path):
    with synced_pair(tmp_path, SIZE_40M) as c:
        for n in c.nodes:
            assert n.snapshot()["size_kib"] == 40 * 1024
            assert os.stat(n.device).st_size == 40 * MiB
        n1, n2 = c.nodes
        with open(n2.disk, "r+b") as f:       # what lies beyond the old size differs
            f.seek(50 * MiB)
            f.write(b"\xee" * MiB)
        for n in c.nodes:
            n.drbdadm("down", "r0")
        c.config.write_text(c.config.read_text().replace(" disk { size 40M; }", ""))
        for n in c.nodes:
            n.drbdadm("up", "r0")
        n1.drbdadm("primary", "r0")
        full = n1.wait_for(lambda s: s["size_kib"] > 40 * 1024 and in_sync(s),
                           what="grown and in sync")["size_kib"] * 1024
        sized(n2, full)
        down_and_compare(c, full)
        c.config.write_text(c.config.read_text().replace("syncer { rate 100M; }",
                                                         "disk { size 40M; }"))
        r = n1.drbdadm("up", "r0", check=False)           # as 8.4: data would be cut off
        assert r.returncode == 10
        assert "(111) Low.dev. smaller than requested DRBD-dev. size." in r.stderr
        assert any("refusing to truncate a consistent device" in m for m in n1.log_messages())


def test_drbdadm_resize_dry_run_is_drbdadm_84s(tmp_path: Path):
    c = Cluster(tmp_path, size="64M")
    try:
        for cmd in ("resize", "check-resize"):           # the same in drbdadm-84
            r = c.node1.drbdadm("-d", "--", "--assume-clean", cmd, "r0")
            assert [line.split("drbdsetup ")[-1] for line in r.stdout.splitlines()] == [
                "resize 0 --assume-clean", "check-resize 0"]
    finally:
        c.cleanup()


def test_writes_during_the_resize_all_reach_both_disks(tmp_path: Path):
    with synced_pair(tmp_path) as c:
        n1, n2 = c.nodes
        old = n1.snapshot()["size_kib"] * 1024
        before = Writer(n1.device, old, os.urandom(8), limit=12000)
        before.start()
        while len(before.acked) < 200 and before.is_alive():
            time.sleep(0.01)
        grow_disks(c, 96 * MiB)
        n1.drbdadm("resize", "r0")
        assert before.is_alive()                 # the resize ran while it wrote
        before.join(120)
        assert before.error is None and len(before.acked) == 12000
        new = n1.snapshot()["size_kib"] * 1024
        after = Writer(n1.device, new, os.urandom(8), limit=3000)
        after.run()                              # the new area too
        assert after.error is None and max(after.acked) >= old
        for n in c.nodes:
            sized(n, new)
        fail_over_to_node2(c)
        rewritten = set(after.acked)
        assert verify_on(n2, before.seed, [o for o in before.acked if o not in rewritten]) == []
        assert verify_on(n2, after.seed, after.acked) == []


def test_kill_9_right_after_a_resize_then_down_and_up_at_once(tmp_path: Path):
    with synced_pair(tmp_path) as c:
        n1 = c.node1
        n1.drbdadm("--", "--size=40M", "resize", "r0")
        os.kill(n1.pids()[0], signal.SIGKILL)    # and down at once, while it is exiting
        for _ in range(500):
            if "cleaned up after it" in n1.drbdadm("down", "r0", check=False).stderr:
                break
            time.sleep(0.01)
        else:
            raise AssertionError("down never cleaned up after the killed daemon")
        assert not is_fuse_mount(str(n1.device))
        n1.drbdadm("up", "r0")
        c.node2.wait_for(in_sync, what="back in sync")


def test_a_node_that_crashed_between_the_grow_and_the_resize_comes_back(tmp_path: Path):
    with synced_pair(tmp_path) as c:
        n1, n2 = c.nodes
        grow_disks(c, 96 * MiB)
        n2.kill9()                               # its metadata still at the old end
        n2.drbdadm("down", "r0")
        r = n2.drbdadm("up", "r0")               # apply-al finds it (last known size)
        assert "moved it from there to the new end" in r.stderr
        n2.wait_for(in_sync, what="back in sync")
        n1.drbdadm("resize", "r0")
        new = n1.snapshot()["size_kib"] * 1024
        assert new > 90 * MiB
        for n in c.nodes:
            sized(n, new)
        down_and_compare(c, new)


def test_adjust_resizes_to_a_changed_disk_size(tmp_path: Path):
    with synced_pair(tmp_path, SIZE_40M) as c:
        n1, n2 = c.nodes
        c.config.write_text(c.config.read_text().replace("size 40M;", "size 48M;"))
        assert n1.drbdadm("-d", "adjust", "r0").stdout.splitlines()[-1].endswith(
            "drbdsetup resize 0 --size=48M")
        n1.drbdadm("adjust", "r0")
        for n in c.nodes:
            sized(n, 48 * MiB)
        for n in c.nodes:                       # node2 took the size over from node1
            assert n.drbdadm("-d", "adjust", "r0").stdout == ""
        r = n1.drbdsetup("disk-options", "0", "--size=30M", check=False)
        assert r.returncode == 20 and "unrecognized option '--size'" in r.stderr
