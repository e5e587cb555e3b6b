"""drbdadm commands that steer resyncs and data generations, on two live nodes."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.integration.nodes import WALKTHROUGH_CONF, Cluster, in_sync

SLOW = WALKTHROUGH_CONF.replace("common {{ syncer {{ rate 100M; }} }}",
                                "common {{ disk {{ c-plan-ahead 0; resync-rate 8M; }} "
                                "net {{ verify-alg sha1; }} }}")
VERIFY = WALKTHROUGH_CONF.replace("common {{ syncer {{ rate 100M; }} }}",
                                  "common {{ syncer {{ rate 100M; verify-alg crc32c; }} }}")


def up_connected(c: Cluster) -> None:
    c.up_connected()


@pytest.fixture
def verify_cluster(tmp_path: Path):
    c = Cluster(tmp_path, conf_template=VERIFY)
    try:
        yield c
    finally:
        c.cleanup()


def test_new_current_uuid_clear_bitmap_skips_the_initial_sync(verify_cluster: Cluster):
    c = verify_cluster
    up_connected(c)
    c.node1.drbdadm("--", "--clear-bitmap", "new-current-uuid", "r0")   # 8.4's recipe
    for n in c.nodes:
        snap = n.wait_for(in_sync, what="UpToDate without sync")
        assert snap["oos_kib"] == 0
        assert not any("Began resync" in m for m in n.log_messages())
    uuid = c.node1.snapshot()["uuids"].split(":")[0]
    assert [m for m in c.node1.log_messages() if "skip" in m or "UUID " in m][-3:] == [
        "block drbd0: Preparing to skip initial sync",
        f"block drbd0: new current UUID {uuid}:0000000000000004:0000000000000000:0000000000000000",
        f"block drbd0: cleared bitmap UUID {uuid}:0000000000000000:0000000000000000:0000000000000000"]
    assert "block drbd0: Accepted new current UUID, preparing to skip initial sync" \
        in c.node2.log_messages()
    assert c.node1.snapshot()["uuids"].split(":")[0] == c.node2.snapshot()["uuids"].split(":")[0]


def test_verify_finds_blocks_changed_behind_drbds_back(verify_cluster: Cluster):
    c = verify_cluster
    up_connected(c)
    c.node1.drbdadm("new-current-uuid", "--clear-bitmap", "r0/0")
    for n in c.nodes:
        n.wait_for(in_sync, what="in sync")
    with open(c.node2.disk, "r+b") as f:          # three blocks differ, two of them adjacent
        for off in (0, 40 << 20, (40 << 20) + 4096):
            f.seek(off)
            f.write(b"\xa5" * 4096)
    c.node1.drbdadm("verify", "r0")
    c.node1.wait_for(lambda s: s["conn"] == "Connected" and s["oos_kib"] == 12,
                     what="verify done")
    msgs = c.node1.log_messages()
    assert "block drbd0: Online verify found 3 4k block out of sync!" in msgs
    assert "block drbd0: Out of sync: start=0, size=8 (sectors)" in msgs
    assert f"block drbd0: Out of sync: start={(40 << 20) // 512}, size=16 (sectors)" in msgs
    assert c.node2.wait_for(lambda s: s["conn"] == "Connected")["oos_kib"] == 12
    # found blocks are resynced by a reconnect, as in DRBD
    c.node2.drbdadm("disconnect", "r0")
    c.node2.drbdadm("connect", "r0")
    for n in c.nodes:
        n.wait_for(lambda s: in_sync(s) and s["oos_kib"] == 0, what="resynced")


def test_verify_needs_an_algorithm(tmp_path: Path):
    c = Cluster(tmp_path)
    try:
        up_connected(c)
        r = c.node1.drbdadm("verify", "r0", check=False)
        assert r.returncode == 11
        assert "(-14) Need a verify algorithm to start online verify" in r.stderr
        r = c.node1.drbdadm("net-options", "--verify-alg=nosuch", "r0", check=False)
        assert r.returncode == 10
        assert "r0: Failure: (146) The 'verify-alg' you specified is not known" in r.stderr
    finally:
        c.cleanup()


def test_invalidate_remote_pause_and_resume(tmp_path: Path):
    c = Cluster(tmp_path, conf_template=SLOW)
    try:
        n1, n2 = c.nodes
        up_connected(c)
        n1.drbdadm("new-current-uuid", "--clear-bitmap", "r0/0")
        for n in c.nodes:
            n.wait_for(in_sync, what="in sync")
        n1.drbdadm("invalidate-remote", "r0")
        n2.wait_for(lambda s: s["conn"] == "SyncTarget", what="SyncTarget")
        n1.drbdadm("pause-sync", "r0")
        n1.wait_for(lambda s: s["conn"] == "PausedSyncS" and s["user_isp"], what="paused")
        n2.wait_for(lambda s: s["conn"] == "PausedSyncT" and s["peer_isp"], what="peer paused")
        r = n1.drbdadm("pause-sync", "r0", check=False)
        assert r.returncode == 10 and "(134) Resync pause flag is already set" in r.stderr
        time.sleep(0.5)                                  # requests already in flight land
        left = n2.snapshot()["oos_kib"]
        time.sleep(1.0)
        assert n2.snapshot()["oos_kib"] == left          # nothing new moves while paused
        n1.drbdadm("resume-sync", "r0")
        n2.wait_for(lambda s: s["conn"] == "SyncTarget", what="resumed")
        assert "drbd0: conn( SyncSource -> PausedSyncS ) user_isp( 0 -> 1 )" in \
            " ".join(n1.log_messages())
    finally:
        c.cleanup()


def test_invalidate_makes_this_node_sync_target(verify_cluster: Cluster):
    c = verify_cluster
    up_connected(c)
    c.node1.drbdadm("new-current-uuid", "--clear-bitmap", "r0/0")
    for n in c.nodes:
        n.wait_for(in_sync, what="in sync")
    c.node2.drbdadm("invalidate", "r0")
    for n in c.nodes:
        n.wait_for(in_sync, timeout=60, what="resynced after invalidate")
    t = [m for m in c.node2.log_messages() if "( " in m]
    assert "block drbd0: conn( Connected -> StartingSyncT ) disk( UpToDate -> Inconsistent )" in t
    assert any("Began resync as SyncTarget (will sync 131032 KB" in m
               for m in c.node2.log_messages())


def test_outdate_and_its_refusals(verify_cluster: Cluster):
    c = verify_cluster
    n1, n2 = c.nodes
    up_connected(c)
    r = n1.drbdadm("outdate", "r0", check=False)
    assert r.returncode == 5 and "(-16)" in r.stderr          # Inconsistent: lower than Outdated
    n1.drbdadm("new-current-uuid", "--clear-bitmap", "r0/0")
    for n in c.nodes:
        n.wait_for(in_sync, what="in sync")
    n2.drbdadm("outdate", "r0")       # connected: 8.4's sanitize_state turns Outdated back
    assert n2.snapshot()["disk"] == "UpToDate"                   # into UpToDate at once
    n2.drbdadm("disconnect", "r0")
    n2.drbdadm("outdate", "r0")
    assert n2.snapshot()["disk"] == "Outdated"
    n2.drbdadm("connect", "r0")       # the same data: Outdated vanishes, as 8.4's sanitize
    for n in c.nodes:
        n.wait_for(lambda s: s["conn"] == "Connected" and s["disk"] == s["pdsk"] == "UpToDate",
                   what="connected, UpToDate")
        assert n.drbdadm("dstate", "r0").stdout.strip() == "UpToDate/UpToDate"
    n2.drbdadm("primary", "r0")       # (it was refused: -6 while Outdated and Connected)
    n2.drbdadm("secondary", "r0")
    n2.drbdadm("disconnect", "r0")
    n2.drbdadm("invalidate", "r0")    # not connected: Inconsistent now, synced at connect
    assert n2.snapshot()["disk"] == "Inconsistent"
    n2.drbdadm("connect", "r0")
    for n in c.nodes:
        n.wait_for(in_sync, what="resynced")
    size_kib = n2.snapshot()["size_kib"]
    assert f"Began resync as SyncTarget (will sync {size_kib} KB" in \
        [m for m in n2.log_messages() if "Began resync" in m][-1]
    n2.drbdadm("disconnect", "r0")
    n2.drbdadm("outdate", "r0")
    n2.drbdadm("down", "r0")
    out = n2.drbdadm("dstate", "r0").stdout.strip()
    assert out == "Outdated"                                    # drbdmeta's offline answer
    assert os.path.exists(n2.disk)


def test_net_options_reconnect_under_writes_resyncs_and_loses_no_write(tmp_path: Path):
    """The reconnect for a new protocol: what the Primary wrote meanwhile resyncs (a
    bitmap resync, no split brain), every acknowledged write is on node2 afterwards; with
    two Primaries the change is refused (their writes meanwhile would diverge)."""
    from tests.integration.test_durability import Writer, fail_over_to_node2, verify_on
    c = Cluster(tmp_path)
    try:
        c.up_connected()
        c.sync_from_node1()
        n1, n2 = c.nodes
        r = n1.drbdadm("net-options", "--allow-two-primaries=yes", "--protocol=B", "r0",
                       check=False)
        assert r.returncode == 10 and "(139) Protocol C required" in r.stderr
        n1.drbdadm("disconnect", "r0")
        r = n1.drbdadm("connect", "--discard-my-data", "r0", check=False)
        assert r.returncode == 10
        assert "(123) --discard-my-data not allowed when primary." in r.stderr
        n1.drbdadm("connect", "r0")
        for n in c.nodes:
            n.wait_for(in_sync, what="connected again")
        seen = {n.name: len(n.log_messages()) for n in c.nodes}
        seed = os.urandom(8)
        w = Writer(n1.device, n1.snapshot()["size_kib"] * 1024, seed, limit=20_000)
        w.start()
        try:
            time.sleep(0.5)
            n1.drbdadm("net-options", "--protocol=B", "r0")
            time.sleep(0.5)
        finally:
            w.stop.set()
            w.join()
        assert w.error is None and w.acked
        for n in c.nodes:
            n.wait_for(lambda s: in_sync(s) and s["protocol"] == "B", timeout=60,
                       what="reconnected, resynced")
            since = n.log_messages()[seen[n.name]:]
            assert not any("Split-Brain" in m for m in since), since
        began = [m for m in n1.log_messages()[seen["node1"]:] if "Began resync as SyncSource" in m]
        assert began and int(began[-1].split("will sync ")[1].split(" KB")[0]) < \
            n1.snapshot()["size_kib"]                           # a bitmap resync, not full
        n1.drbdadm("net-options", "--allow-two-primaries=yes", "--protocol=C", "r0")
        n2.wait_for(lambda s: s["conn"] == "Connected" and s["protocol"] == "C",
                    what="protocol C again")
        n2.drbdadm("primary", "r0")                             # both Primary now
        r = n1.drbdadm("net-options", "--after-sb-0pri=discard-local", "r0", check=False)
        assert r.returncode == 10 and "not while both nodes are Primary" in r.stderr
        r = n1.drbdadm("net-options", "--allow-two-primaries=no", "r0", check=False)
        assert r.returncode == 10 and "(164) Can not clear allow_two_primaries" in r.stderr
        n2.drbdadm("secondary", "r0")
        fail_over_to_node2(c)
        assert verify_on(n2, seed, w.acked) == []
    finally:
        c.cleanup()


def test_net_options_change_live_and_adjust_reconnects_for_the_protocol(tmp_path: Path):
    c = Cluster(tmp_path)
    try:
        up_connected(c)
        n1, n2 = c.nodes
        n1.drbdadm("net-options", "--ping-timeout=20", "--ko-count=3", "r0")
        shown = n1.drbdsetup("show", "r0").stdout
        assert "ping-timeout    \t20;" in shown and "ko-count        \t3;" in shown
        assert n1.snapshot()["conn"] == "Connected"
        assert not any("Disconnecting" in m for m in n1.log_messages())
        r = n1.drbdadm("net-options", "--ping-timeout=abc", "r0", check=False)
        assert r.returncode == 10 and "--ping-timeout" in r.stderr
        # the protocol is agreed in the handshake: adjust reconnects, and the peer takes the
        # new protocol over (8.4's P_PROTOCOL_UPDATE) instead of refusing the connection
        c.config.write_text(c.config.read_text().replace("protocol C;", "protocol B;"))
        n1.drbdadm("adjust", "r0")
        for n in c.nodes:
            n.wait_for(lambda s: s["conn"] == "Connected" and s["protocol"] == "B",
                       what="reconnected with protocol B")
        assert "drbd r0: peer changed the connection's settings: protocol B" \
            in n2.log_messages()
        assert n2.drbdadm("-d", "adjust", "r0").stdout == ""     # nothing left to do there
        assert "ping-timeout" not in n1.drbdsetup("show", "r0").stdout   # --set-defaults
        assert any("conn( Connected -> Disconnecting )" in m for m in n1.log_messages())
    finally:
        c.cleanup()


def test_disk_options_on_the_sync_source_reach_the_resync(tmp_path: Path):
    """8.4 sends changed resync settings to the peer (P_SYNC_PARAM): the SyncTarget, which
    paces the resync, takes over what disk-options set on the SyncSource."""
    c = Cluster(tmp_path, conf_template=SLOW)
    try:
        up_connected(c)
        n1, n2 = c.nodes
        n1.drbdadm("primary", "--force", "r0")
        n2.wait_for(lambda s: s["conn"] == "SyncTarget", what="syncing at 8M")
        assert "resync-rate" in n2.drbdsetup("show", "r0").stdout
        n1.drbdadm("disk-options", "--resync-rate=300M", "r0")
        n2.wait_for(lambda s: "resync-rate     \t307200" in n2.drbdsetup("show", "r0").stdout,
                    what="the new rate adopted")
        for n in c.nodes:
            n.wait_for(in_sync, timeout=60, what="synced")
    finally:
        c.cleanup()


def test_sh_b_pri_promotes_where_become_primary_on_says(tmp_path: Path):
    """The 8.4 init script's last step (and drbd-service.sh's): primary on the nodes that
    startup { become-primary-on } names; the others stay as they are."""
    conf = WALKTHROUGH_CONF.replace("wfc-timeout 15;", "wfc-timeout 15; become-primary-on node1;")
    c = Cluster(tmp_path, size="64M", conf_template=conf)
    try:
        c.up_connected()
        c.sync_from_node1()
        n1, n2 = c.nodes
        n1.drbdadm("secondary", "r0")
        assert n1.drbdadm("-d", "sh-b-pri", "all").stdout == "drbdsetup primary 0\n"
        assert n2.drbdadm("-d", "sh-b-pri", "all").stdout == ""
        for n in (n2, n1):
            n.drbdadm("sh-b-pri", "all")
        assert (n1.snapshot()["role"], n2.snapshot()["role"]) == ("Primary", "Secondary")
        n1.drbdadm("sh-b-pri", "r0")                     # already Primary: nothing to do
    finally:
        c.cleanup()
