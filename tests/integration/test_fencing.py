"""Resource-level fencing as DRBD 8.4 does it: ``disk { fencing resource-only |
resource-and-stonith; }`` and a ``fence-peer`` handler, plus suspend-io/resume-io.

The handler is the shipped contrib/outdate-peer-ssh.sh: it outdates the peer's disk on the
peer over ssh and exits 4; here "ssh" runs drbdadm with the peer node's environment, and
marker files make it wait, fail, or find the peer unreachable. Partitions come from two FaultProxy links that
drop everything, as a network would, while both daemons stay alive.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tests.integration.faultproxy import FaultProxy
from tests.integration.nodes import (WALKTHROUGH_CONF, Cluster, bin_path, free_port, in_sync,
                                     synced_pair)
from tests.integration.test_durability import proxied_configs
from tests.integration.test_two_nodes import data_area_digest

CONTRIB_HANDLER = Path(__file__).resolve().parents[2] / "contrib" / "outdate-peer-ssh.sh"

# "ssh root@HOST drbdadm ...": the command runs with HOST's udrbd environment (all nodes
# live on this machine); marker files make it wait for "go", fail, or not reach HOST
FAKE_SSH = """#!/bin/sh
base={base}
host=${{1#root@}}
shift 2
echo "$DRBD_RESOURCE $host" >> "$base/fence-calls"
if [ -e "$base/hold" ]; then
    while [ ! -e "$base/go" ]; do sleep 0.05; done
fi
[ -e "$base/broken" ] && exit 1
[ -e "$base/$host.unreachable" ] && exit 255
conf="$base/$host.conf"
[ -e "$conf" ] || conf="$base/drbd.conf"
exec env __DRBD_NODE__="$host" UDRBD_RUN_DIR="$base/$host/run" \\
    UDRBD_STATE_DIR="$base/$host/run" UDRBD_CONFIG="$conf" {drbdadm} "$@"
"""


def fencing_conf(tmp_path: Path, policy: str) -> str:
    """drbd.conf for two nodes whose fence-peer handler is contrib/outdate-peer-ssh.sh,
    over FAKE_SSH."""
    ssh = tmp_path / "fake-ssh"
    ssh.write_text(FAKE_SSH.format(base=tmp_path, drbdadm=bin_path("drbdadm")))
    ssh.chmod(0o755)
    handler = f"env UDRBD_FENCE_SSH={ssh} {CONTRIB_HANDLER}"
    return (WALKTHROUGH_CONF
            .replace("net {{\n", "net {{\nping-int 1;\nconnect-int 1;\n")
            .replace("startup {{", f"disk {{{{ fencing {policy}; }}}}\n"
                     f'handlers {{{{ fence-peer "{handler}"; }}}}\nstartup {{{{'))


def fence_calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "fence-calls"
    return path.read_text().splitlines() if path.exists() else []


class BlockWriter(threading.Thread):
    """One 4 KiB write to the device, in the background (it may be frozen)."""

    def __init__(self, device: Path, offset: int, data: bytes):
        super().__init__(daemon=True)
        self.device, self.offset, self.data = device, offset, data
        self.error: OSError | None = None

    def run(self) -> None:
        try:
            fd = os.open(self.device, os.O_RDWR)
            try:
                os.pwrite(fd, self.data, self.offset)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            self.error = e


def frozen_write(device: Path, offset: int, data: bytes | None = None) -> BlockWriter:
    """Start a write that must not complete: still waiting a second later."""
    w = BlockWriter(device, offset, data or os.urandom(4096))
    w.start()
    w.join(1.0)
    assert w.is_alive(), f"the write completed while I/O should be frozen ({w.error})"
    return w


def completes(w: BlockWriter) -> bool:
    w.join(30)
    return not w.is_alive() and w.error is None


def write_block(device: Path, offset: int, data: bytes) -> None:
    w = BlockWriter(device, offset, data)
    w.run()
    assert w.error is None, w.error


@contextlib.contextmanager
def synced_through_proxies(tmp_path: Path, policy: str) -> Iterator[tuple[Cluster, Links]]:
    """A fencing pair, synced with node1 Primary, whose link can be cut (``links.cut()``)."""
    c = Cluster(tmp_path, size="64M", conf_template=fencing_conf(tmp_path, policy))
    pport = free_port()
    proxied_configs(c, tmp_path, pport)
    links = Links(FaultProxy(("127.0.0.3", pport), ("127.0.0.2", c.port), "127.0.0.4"),
                  FaultProxy(("127.0.0.4", pport), ("127.0.0.1", c.port), "127.0.0.3"))
    try:
        with links.to_n2, links.to_n1:
            c.up_connected()
            c.sync_from_node1()
            yield c, links
    finally:
        c.cleanup()


@dataclass
class Links:
    to_n2: FaultProxy
    to_n1: FaultProxy

    def cut(self) -> None:
        self.to_n2.cut()
        self.to_n1.cut()

    def heal(self) -> None:
        self.to_n2.heal()
        self.to_n1.heal()


def test_partition_outdates_the_peer_through_the_handler_and_heals_with_a_resync(tmp_path):
    with synced_through_proxies(tmp_path, "resource-only") as (c, links):
        n1, n2 = c.nodes
        links.cut()
        n1.wait_for(lambda s: s["pdsk"] == "Outdated", what="peer fenced")
        assert n2.snapshot()["disk"] == "Outdated"          # both daemons alive
        msgs = n1.log_messages()
        assert "drbd r0: helper command: drbdadm fence-peer r0" in msgs
        assert "drbd r0: helper command: drbdadm fence-peer r0 exit code 4 (0x400)" in msgs
        assert "drbd r0: fence-peer helper returned 4 (peer was fenced)" in msgs
        assert fence_calls(tmp_path) == ["r0 node2"]
        # the outdated side cannot take over: no split brain
        r = n2.drbdadm("primary", "r0", check=False)
        assert r.returncode != 0 and "(-2) Need access to UpToDate data" in r.stderr
        write_block(n1.device, 1 << 20, os.urandom(4096))   # goes on, alone
        links.heal()
        for n in c.nodes:
            n.wait_for(in_sync, timeout=60, what="resynced after the partition")
        assert any("-> SyncTarget" in m for m in n2.log_messages())
        n1.drbdadm("secondary", "r0")
        size_kib = n1.snapshot()["size_kib"]
        assert data_area_digest(n1, size_kib) == data_area_digest(n2, size_kib)


def test_stonith_freezes_io_until_the_peer_is_fenced(tmp_path):
    with synced_through_proxies(tmp_path, "resource-and-stonith") as (c, links):
        n1, n2 = c.nodes
        (tmp_path / "hold").touch()                 # the handler waits for "go"
        links.cut()
        n1.wait_for(lambda s: s["susp_fen"], what="I/O frozen")
        data = os.urandom(4096)
        w = frozen_write(n1.device, 2 << 20, data)
        status = n1.drbdadm("status", "r0").stdout
        assert "suspended:fencing" in status
        (tmp_path / "go").touch()
        assert completes(w)
        s = n1.snapshot()
        assert s["pdsk"] == "Outdated" and not s["susp_fen"]
        assert n2.snapshot()["disk"] == "Outdated"
        msgs = n1.log_messages()
        lost = next(m for m in msgs if "conn( Connected -> NetworkFailure )" in m)
        assert lost.endswith("susp( 0 -> 1 )")
        i = msgs.index("drbd r0: fence-peer helper returned 4 (peer was fenced)")
        assert "pdsk( DUnknown -> Outdated )" in msgs[i + 1]
        assert msgs[i + 2].endswith("susp( 1 -> 0 )")
        with open(n1.device, "rb") as f:
            f.seek(2 << 20)
            assert f.read(4096) == data


def test_promoting_a_disconnected_secondary_fences_the_peer_first(tmp_path):
    with synced_pair(tmp_path, fencing_conf(tmp_path, "resource-only")) as c:
        n1, n2 = c.nodes
        n1.kill9()                                      # the Primary's host dies
        n2.wait_for(lambda s: s["conn"] == "WFConnection", what="peer lost")
        assert fence_calls(tmp_path) == []              # a Secondary fences nobody
        (tmp_path / "broken").touch()
        r = n2.drbdadm("primary", "r0", check=False)
        assert r.returncode != 0
        assert "(-7) Refusing to be Primary while peer is not outdated" in r.stderr
        assert fence_calls(tmp_path) == ["r0 node1"] * 4     # 8.4 tries four times
        (tmp_path / "broken").unlink()
        n2.drbdadm("primary", "r0")     # the handler outdates node1's disk (its daemon is
        s = n2.snapshot()               # gone: drbdadm outdates the metadata offline)
        assert s["role"] == "Primary" and s["pdsk"] == "Outdated"
        assert "fence-peer helper returned 4 (peer was fenced)" in " ".join(n2.log_messages())
        assert n1.drbdadm("dstate", "r0").stdout.strip().split("/")[0] == "Outdated"
        write_block(n2.device, 1 << 20, os.urandom(4096))
        n1.drbdadm("up", "r0")
        for n in c.nodes:
            n.wait_for(in_sync, timeout=60, what="node1 resynced")
        assert n1.snapshot()["role"] == "Secondary"
        n2.drbdadm("secondary", "r0")
        size_kib = n1.snapshot()["size_kib"]
        assert data_area_digest(n1, size_kib) == data_area_digest(n2, size_kib)
        # unreachable peer: assumed dead, as our disk is UpToDate
        n1.kill9()
        n2.wait_for(lambda s: s["conn"] == "WFConnection", what="peer lost")
        (tmp_path / "node1.unreachable").touch()
        n2.drbdadm("primary", "r0")
        assert ("drbd r0: fence-peer helper returned 5 (peer is unreachable, assumed to be "
                "dead)") in n2.log_messages()


def test_graceful_disconnect_outdates_the_secondary_without_the_handler(tmp_path):
    with synced_pair(tmp_path, fencing_conf(tmp_path, "resource-only")) as c:
        n1, n2 = c.nodes
        n2.drbdadm("disconnect", "r0")                  # the Secondary leaves
        assert n2.snapshot()["disk"] == "Outdated"
        n1.wait_for(lambda s: s["pdsk"] == "Outdated", what="peer outdated")
        n2.drbdadm("connect", "r0")
        for n in c.nodes:
            n.wait_for(in_sync, what="back in sync")
        n1.drbdadm("disconnect", "r0")                  # the Primary leaves
        assert n1.snapshot()["pdsk"] == "Outdated"
        n2.wait_for(lambda s: s["disk"] == "Outdated", what="outdated by the Primary")
        time.sleep(0.5)                                 # (a fence call would be async)
        assert fence_calls(tmp_path) == []
        assert not any("fence-peer" in m for m in n1.log_messages())


def test_a_disconnect_the_peer_cannot_confirm_fences_it_instead(tmp_path):
    """The Primary's graceful disconnect counts on the peer's Outdated only once the peer
    said so; through a partition it cannot, so the peer is fenced as if lost."""
    with synced_through_proxies(tmp_path, "resource-and-stonith") as (c, links):
        n1 = c.node1
        (tmp_path / "broken").touch()
        links.cut()
        n1.drbdadm("disconnect", "r0")
        s = n1.wait_for(lambda s: any("fence-peer helper broken" in m
                                      for m in n1.log_messages()), what="fenced")
        assert s["pdsk"] == "DUnknown" and s["susp_fen"]
        w = frozen_write(n1.device, 1 << 20)
        n1.drbdadm("resume-io", "r0")
        assert completes(w)


def test_suspend_io_holds_writes_until_resume_io(tmp_path):
    c = Cluster(tmp_path, size="64M")
    try:
        n1 = c.node1
        n1.drbdadm("create-md", "r0")
        n1.drbdadm("up", "r0")
        n1.drbdadm("primary", "--force", "r0")
        n1.drbdadm("suspend-io", "r0")
        assert n1.log_messages()[-1] == "block drbd0: susp( 0 -> 1 )"
        assert "suspended:user" in n1.drbdadm("status", "r0").stdout
        w = frozen_write(n1.device, 0)
        n1.drbdadm("resume-io", "r0")
        assert completes(w)
        assert n1.log_messages()[-1] == "block drbd0: susp( 1 -> 0 )"
        assert "suspended" not in n1.drbdadm("status", "r0").stdout
    finally:
        c.cleanup()


def test_no_data_accessible_suspends_io_until_the_peer_is_back(tmp_path):
    conf = (WALKTHROUGH_CONF.replace("net {{\n", "net {{\nconnect-int 1;\n")
            .replace("startup {{", "options {{ on-no-data-accessible suspend-io; }}\n"
                     "startup {{"))
    c = Cluster(tmp_path, size="64M", conf_template=conf)
    try:
        c.up_connected()
        c.sync_from_node1()
        n1, n2 = c.nodes
        held = os.open(n1.device, os.O_RDWR)    # in use: the Primary goes on diskless,
        n1.drbdadm("detach", "r0")              # through node2
        write_block(n1.device, 0, os.urandom(4096))
        n2.drbdadm("down", "r0")
        n1.wait_for(lambda s: s["susp_nod"], what="frozen for lack of data")
        assert "suspended:no-data" in n1.drbdadm("status", "r0").stdout
        w = frozen_write(n1.device, 1 << 20)    # not an I/O error: frozen
        n1.drbdadm("resume-io", "r0")           # no disk: the frozen I/O fails, as in 8.4
        w.join(30)
        assert not w.is_alive() and w.error is not None
        assert not n1.snapshot()["susp_nod"]    # and what comes next fails at once
        w = BlockWriter(n1.device, 1 << 20, os.urandom(4096))
        w.run()
        assert w.error is not None
        n2.drbdadm("up", "r0")
        n1.wait_for(lambda s: s["pdsk"] == "UpToDate", what="data back")
        n2.drbdadm("down", "r0")                # no data again: frozen again
        n1.wait_for(lambda s: s["susp_nod"], what="frozen for lack of data")
        data = os.urandom(4096)
        w = frozen_write(n1.device, 2 << 20, data)
        n2.drbdadm("up", "r0")                  # the data is back: the write goes on
        assert completes(w)
        assert not n1.snapshot()["susp_nod"]
        os.close(held)
        n1.drbdadm("secondary", "r0")
        n2.drbdadm("down", "r0")
        with open(n2.disk, "rb") as f:
            f.seek(2 << 20)
            assert f.read(4096) == data
    finally:
        c.cleanup()
