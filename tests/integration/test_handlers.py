"""Handlers from drbd.conf: the daemon calls back through drbdadm, with DRBD's environment."""
from __future__ import annotations

import os
from pathlib import Path

from tests.integration.nodes import WALKTHROUGH_CONF, Cluster


def with_handlers(body: str) -> str:
    return WALKTHROUGH_CONF.replace("startup {{", "handlers {{ " + body + " }}\nstartup {{")


def test_split_brain_handler_runs_with_drbds_environment(tmp_path: Path):
    text = with_handlers(f'split-brain "env > {tmp_path}/sb-$DRBD_MINOR-$DRBD_PEERS.env";')
    c = Cluster(tmp_path, conf_template=text)
    try:
        c.up_connected()
        c.sync_from_node1()
        for n in c.nodes:
            n.drbdadm("disconnect", "r0")
        c.node2.drbdadm("primary", "r0")
        for n in c.nodes:
            fd = os.open(n.device, os.O_RDWR)
            os.pwrite(fd, os.urandom(4096), 1 << 20)
            os.close(fd)
        for n in c.nodes:
            n.drbdadm("connect", "r0")
        for n in c.nodes:
            n.wait_for(lambda s: s["conn"] == "StandAlone", what="split brain")
        env1 = (tmp_path / "sb-0-node2.env").read_text().splitlines()   # run on node1
        assert "DRBD_RESOURCE=r0" in env1 and "DRBD_MINOR=0" in env1
        assert "DRBD_PEER_ADDRESS=127.0.0.2" in env1 and "DRBD_MY_ADDRESS=127.0.0.1" in env1
        assert (tmp_path / "sb-0-node1.env").exists()                   # and on node2
        msgs = c.node1.log_messages()
        assert "block drbd0: helper command: drbdadm split-brain minor-0" in msgs
        assert "block drbd0: helper command: drbdadm split-brain minor-0 exit code 0 (0x0)" in msgs
        # 8.4's order: initial-split-brain, the decision, then split-brain
        order = [m for m in msgs if "helper command: drbdadm" in m and "exit code" not in m
                 or "Split-Brain detected" in m]
        assert order[-3:] == ["block drbd0: helper command: drbdadm initial-split-brain minor-0",
                              "block drbd0: Split-Brain detected but unresolved, dropping "
                              "connection!",
                              "block drbd0: helper command: drbdadm split-brain minor-0"]
    finally:
        c.cleanup()


def test_failing_before_resync_target_drops_the_connection(tmp_path: Path):
    c = Cluster(tmp_path, conf_template=with_handlers('before-resync-target "exit 1";'))
    try:
        c.up_connected()
        c.node1.drbdadm("primary", "--force", "r0")
        c.node2.wait_for(lambda s: s["conn"] == "StandAlone", what="dropped")
        msgs = c.node2.log_messages()
        assert "block drbd0: before-resync-target handler returned 1, dropping connection." in msgs
        assert c.node2.snapshot()["disk"] == "Inconsistent"
    finally:
        c.cleanup()


def test_drbdadm_runs_a_handler_by_minor_and_passes_its_exit_code(tmp_path: Path):
    c = Cluster(tmp_path, conf_template=with_handlers('out-of-sync "exit 5";'))
    try:
        n = c.node1
        assert n.drbdadm("out-of-sync", "minor-0", check=False).returncode == 5
        assert n.drbdadm("out-of-sync", "r0", check=False).returncode == 5
        assert n.drbdadm("split-brain", "r0").returncode == 0        # none configured
        r = n.drbdadm("out-of-sync", "minor-7", check=False)
        assert r.returncode == 1 and "'minor-7' not defined" in r.stderr
    finally:
        c.cleanup()
