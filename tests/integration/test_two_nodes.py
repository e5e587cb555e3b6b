"""Two daemons on 127.0.0.1 and 127.0.0.2: the walk-through, failover, resync, split brain."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.integration.nodes import Cluster, Node, in_sync


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def synced_primary(c: Cluster) -> None:
    c.up_connected()
    c.sync_from_node1("--", "--overwrite-data-of-peer", "primary", "all")


def transitions(n: Node) -> list[str]:
    return [m.split(": ", 1)[1] for m in n.log_messages() if "( " in m and " -> " in m]


def contains_in_order(haystack: list[str], needles: list[str]) -> bool:
    it = iter(haystack)
    return all(any(n == h for h in it) for n in needles)


def data_area_digest(n: Node, size_kib: int) -> str:
    h = hashlib.sha256()
    with open(n.disk, "rb") as f:
        left = size_kib * 1024
        while left:
            chunk = f.read(min(left, 1 << 20))
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def test_walkthrough(cluster: Cluster, tmp_path: Path):
    n1, n2 = cluster.node1, cluster.node2
    cluster.up_connected()
    for n in cluster.nodes:
        snap = n.snapshot()
        assert (snap["disk"], snap["pdsk"], snap["peer"]) == ("Inconsistent", "Inconsistent",
                                                              "Secondary")
        assert contains_in_order(transitions(n), [
            "disk( Diskless -> Attaching )", "disk( Attaching -> Inconsistent )",
            "conn( StandAlone -> Unconnected )", "conn( Unconnected -> WFConnection )",
            "conn( WFConnection -> WFReportParams )",
            "peer( Unknown -> Secondary ) conn( WFReportParams -> Connected ) "
            "pdsk( DUnknown -> Inconsistent )"])
    n1.drbdadm("--", "--overwrite-data-of-peer", "primary", "all")
    for n in cluster.nodes:
        n.wait_for(lambda s: s["conn"] == "Connected" and s["disk"] == "UpToDate"
                   and s["pdsk"] == "UpToDate", timeout=120, what="synced")
    assert contains_in_order(transitions(n1), [
        "role( Secondary -> Primary ) disk( Inconsistent -> UpToDate )",
        "conn( Connected -> WFBitMapS )", "conn( WFBitMapS -> SyncSource )",
        "conn( SyncSource -> Connected ) pdsk( Inconsistent -> UpToDate )"])
    assert contains_in_order(transitions(n2), [
        "peer( Secondary -> Primary ) pdsk( Inconsistent -> UpToDate )",
        "conn( Connected -> WFBitMapT )", "conn( WFBitMapT -> WFSyncUUID )",
        "conn( WFSyncUUID -> SyncTarget )",
        "conn( SyncTarget -> Connected ) disk( Inconsistent -> UpToDate )"])
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    sh("mkfs.ext3", "-q", "-F", str(n1.device))
    sh("mount", str(n1.device), str(mnt))
    (mnt / "hello").write_text("hello\n")
    with pytest.raises(OSError):                  # node2 is Secondary: no opens
        os.close(os.open(n2.device, os.O_RDONLY))
    sh("umount", str(mnt))
    n1.drbdadm("down", "r0")
    n2.wait_for(lambda s: s["conn"] == "WFConnection", what="WFConnection after peer down")
    assert contains_in_order(transitions(n2), [
        "peer( Primary -> Secondary )",
        "peer( Secondary -> Unknown ) conn( Connected -> TearDown ) pdsk( UpToDate -> DUnknown )",
        "conn( TearDown -> Unconnected )", "conn( Unconnected -> WFConnection )"])
    assert contains_in_order(transitions(n1), [
        "role( Primary -> Secondary )",
        "peer( Secondary -> Unknown ) conn( Connected -> Disconnecting ) pdsk( UpToDate -> DUnknown )",
        "conn( Disconnecting -> StandAlone )", "disk( UpToDate -> Failed )",
        "disk( Failed -> Diskless )"])
    n2.drbdadm("primary", "r0")
    assert "role( Secondary -> Primary )" in transitions(n2)
    sh("mount", str(n2.device), str(mnt))
    try:
        assert (mnt / "hello").read_text() == "hello\n"
    finally:
        sh("umount", str(mnt))


def test_old_primary_returns_and_gets_exactly_the_changed_blocks(cluster: Cluster):
    n1, n2 = cluster.node1, cluster.node2
    synced_primary(cluster)
    n1.drbdadm("secondary", "r0")
    n1.drbdadm("down", "r0")
    n2.wait_for(lambda s: s["conn"] == "WFConnection", what="peer gone")
    n2.drbdadm("primary", "r0")
    written = set()
    fd = os.open(n2.device, os.O_RDWR)
    try:
        for i in range(37):
            off = i * 3 * 1024 * 1024 + 4096 * (i % 5)
            os.pwrite(fd, os.urandom(8192), off)        # two 4 KiB blocks each
            written |= {off // 4096, off // 4096 + 1}
        os.fsync(fd)
    finally:
        os.close(fd)
    assert n2.snapshot()["oos_kib"] == len(written) * 4
    n1.drbdadm("up", "r0")
    for n in cluster.nodes:
        n.wait_for(lambda s: s["conn"] == "Connected" and s["disk"] == "UpToDate"
                   and s["pdsk"] == "UpToDate", timeout=60, what="resynced")
    began = [m for m in n1.log_messages() if "Began resync as SyncTarget" in m]
    assert began and began[-1].endswith(f"(will sync {len(written) * 4} KB "
                                        f"[{len(written)} bits set]).")
    size_kib = n2.snapshot()["size_kib"]
    n2.drbdadm("secondary", "r0")
    for n in cluster.nodes:
        n.drbdadm("down", "r0")
    assert data_area_digest(n1, size_kib) == data_area_digest(n2, size_kib)


def test_split_brain_detected_and_recovered(cluster: Cluster):
    n1, n2 = cluster.node1, cluster.node2
    synced_primary(cluster)
    for n in cluster.nodes:
        n.drbdadm("disconnect", "r0")
    n2.drbdadm("primary", "r0")
    for n in cluster.nodes:                      # both write while apart
        fd = os.open(n.device, os.O_RDWR)
        os.pwrite(fd, os.urandom(4096), 1 << 20)
        os.close(fd)
    for n in cluster.nodes:
        n.drbdadm("connect", "r0")
    for n in cluster.nodes:
        n.wait_for(lambda s: s["conn"] == "StandAlone", what="StandAlone after split brain")
        assert any("Split-Brain detected but unresolved, dropping connection!" in m
                   for m in n.log_messages())
    n2.drbdadm("secondary", "r0")
    n2.drbdadm("connect", "--discard-my-data", "r0")
    n1.drbdadm("connect", "r0")
    for n in cluster.nodes:
        n.wait_for(lambda s: s["conn"] == "Connected" and s["disk"] == "UpToDate"
                   and s["pdsk"] == "UpToDate", timeout=60, what="recovered")
    size_kib = n1.snapshot()["size_kib"]
    n1.drbdadm("secondary", "r0")
    for n in cluster.nodes:
        n.drbdadm("down", "r0")
    assert data_area_digest(n1, size_kib) == data_area_digest(n2, size_kib)


def test_wrong_secret_keeps_nodes_apart(tmp_path: Path):
    c = Cluster(tmp_path)
    try:
        c.node2.config = tmp_path / "node2.conf"
        c.node2.env["UDRBD_CONFIG"] = str(c.node2.config)
        c.node2.config.write_text(c.config.read_text().replace('"secret"', '"wrong"'))
        for n in c.nodes:
            n.drbdadm("create-md", "r0")
            n.drbdadm("up", "r0")
        for n in c.nodes:
            n.wait_for(lambda s: s["conn"] == "StandAlone", what="StandAlone after auth failure")
        assert any("Authentication of peer failed" in m
                   for n in c.nodes for m in n.log_messages())
        for n in c.nodes:
            assert n.snapshot()["pdsk"] == "DUnknown"
    finally:
        c.cleanup()


def test_wait_con_int_times_out_then_sees_the_peer(tmp_path: Path):
    from tests.integration.nodes import WALKTHROUGH_CONF
    c = Cluster(tmp_path, conf_template=WALKTHROUGH_CONF.replace("wfc-timeout 15", "wfc-timeout 2"))
    try:
        n1, n2 = c.nodes
        for n in c.nodes:
            n.drbdadm("create-md", "r0")
        n1.drbdadm("up", "r0")
        assert n1.drbdadm("-d", "wait-connect", "r0").stdout.strip() == \
            "drbdsetup wait-connect 0 --wfc-timeout=2 --degr-wfc-timeout=60"
        r = n1.drbdadm("wait-con-int", check=False)
        assert r.returncode == 5
        assert " DRBD's startup script waits for the peer node(s) to appear." in r.stdout
        assert "   is 2 seconds. [wfc-timeout]" in r.stdout
        assert "(These values are for resource 'r0'; 0 sec -> wait forever)" in r.stdout
        assert " To abort waiting for DRBD connections, kill this process: kill " in r.stdout
        n2.drbdadm("up", "r0")
        assert n1.drbdadm("wait-con-int").returncode == 0
        assert n1.snapshot()["conn"] == "Connected"
    finally:
        c.cleanup()


def test_a_primary_without_disk_attaches_by_a_full_sync_and_no_stale_disk_is_promoted(
        cluster: Cluster):
    """udrbd renegotiates an attach by reconnecting; a Primary doing that used to start a
    new data generation on its stale disk: split brain. A diskless Primary's new disk is
    synced in full from the peer instead, and a Secondary's stays unpromotable until the
    handshake has judged it. A diskless node connected to an UpToDate peer may become
    Primary, as in 8.4 (asking used to crash the command handler, later it was refused)."""
    synced_primary(cluster)
    n1, n2 = cluster.nodes
    n1.drbdadm("detach", "r0")
    n1.wait_for(lambda s: s["disk"] == "Diskless" and s["pdsk"] == "UpToDate", what="detached")
    n1.drbdadm("attach", "r0")
    for n in cluster.nodes:
        n.wait_for(in_sync, timeout=60, what="attached and synced in full")
    began = [m for m in n1.log_messages() if "Began resync as SyncTarget" in m][-1]
    assert f"will sync {n1.snapshot()['size_kib']} KB" in began
    n1.drbdadm("detach", "r0")
    r = n2.drbdadm("primary", "r0", check=False)            # node1 is Primary
    assert r.returncode == 11
    assert "0: State change failed: (-1) Multiple primaries not allowed by config" in r.stderr
    n1.drbdadm("secondary", "r0")
    n2.drbdadm("primary", "r0")
    n2.drbdadm("secondary", "r0")                           # node1's disk is stale now
    (pid,) = n2.pids()
    os.kill(pid, signal.SIGSTOP)                            # the renegotiation stalls
    try:
        n1.drbdadm("attach", "r0")
        r = n1.drbdadm("primary", "r0", check=False)        # not onto that disk before
        assert r.returncode == 17                           # the handshake has judged it
        assert "(-2) Need access to UpToDate data" in r.stderr
    finally:
        os.kill(pid, signal.SIGCONT)
    for n in cluster.nodes:
        n.wait_for(lambda s: s["conn"] == "Connected" and s["disk"] == "UpToDate"
                   and s["pdsk"] == "UpToDate", timeout=60, what="renegotiated")
    assert not any("Split-Brain" in m for n in cluster.nodes for m in n.log_messages())
    n2.drbdadm("detach", "r0")                              # a diskless Secondary whose
    n2.drbdadm("primary", "r0")                             # peer is UpToDate
    assert n2.snapshot()["role"] == "Primary"
    n2.drbdadm("disconnect", "r0")
    r = n2.drbdadm("primary", "r0", check=False)            # no data here: already
    assert r.returncode == 0                                # Primary, nothing to do
    n2.drbdadm("secondary", "r0")
    r = n2.drbdadm("primary", "r0", check=False)            # alone without a disk
    assert r.returncode == 17
    assert "0: State change failed: (-2) Need access to UpToDate data" in r.stderr
