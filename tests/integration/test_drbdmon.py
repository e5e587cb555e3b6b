"""drbdmon in a tmux pane (80x24) against two live nodes during a slow resync."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.nodes import Cluster, bin_path
from tests.integration.test_status import SLOW_CONF, start_sync


class Pane:
    def __init__(self, name: str):
        self.sock = f"udrbd-test-{os.getpid()}-{name}"
        self.name = name

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", "-L", self.sock, *args], capture_output=True, text=True,
                              check=check)

    def start(self, command: str) -> None:
        self.tmux("new-session", "-d", "-s", self.name, "-x", "80", "-y", "24", command)

    def capture(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.name).stdout

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.name, *keys)

    def alive(self) -> bool:
        return self.tmux("has-session", "-t", self.name, check=False).returncode == 0

    def wait_for(self, *texts: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.capture() if self.alive() else screen
            if all(t in screen for t in texts):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{texts} not on screen:\n{screen}")

    def kill(self) -> None:
        self.tmux("kill-server", check=False)


@pytest.fixture
def syncing(tmp_path: Path):
    c = Cluster(tmp_path, size="48M", port=7821, conf_template=SLOW_CONF)
    try:
        c.up_connected()
        yield c
    finally:
        c.cleanup()


def test_drbdmon_shows_the_sync_and_its_views_and_quits(syncing: Cluster):
    n1 = syncing.node1
    pane = Pane("drbdmon")
    try:
        pane.start(f"env UDRBD_RUN_DIR={n1.run_dir} __DRBD_NODE__=node1 "
                   f"{bin_path('drbdmon')} --ascii")
        screen = pane.wait_for("RES:r0", "+ CON:node2 Connected role:Secondary")
        assert "DRBD DrbdMon v" in screen.splitlines()[0] and "Node node1" in screen
        start_sync(syncing)
        screen = pane.wait_for("* Primary", "replication:SyncSource", "% ", "K/s ETA ")
        lines = screen.splitlines()
        assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
        bar = next(line for line in lines if line.strip().startswith("["))
        assert bar.strip()[1] in "X-" and "]" in bar
        assert "[degraded]" in screen and "Resources: 1 (1 degraded)" in screen
        first_pct = bar.split("]")[1].split("%")[0].strip()
        pane.wait_for("K/s ETA ")
        deadline = time.monotonic() + 30        # the bar follows the resync
        while time.monotonic() < deadline:
            now = [line for line in pane.capture().splitlines() if "K/s ETA" in line]
            if now and now[0].split("]")[1].split("%")[0].strip() != first_pct:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("progress did not move")

        pane.keys("p")
        screen = pane.wait_for("- Problems", "RES:r0")
        pane.keys("m")
        screen = pane.wait_for("- Messages", "r0: conn( WFBitMapS -> SyncSource )")
        assert "r0: role( Secondary -> Primary ) disk( Inconsistent -> UpToDate )" in screen
        pane.keys("m")
        pane.wait_for("- Status", "RES:r0")
        n1.drbdadm("disk-options", "--resync-rate=1000M", "r0")   # the rest at full speed
        for n in syncing.nodes:
            n.wait_for(lambda s: s["conn"] == "Connected" and s["pdsk"] == "UpToDate",
                       timeout=120, what="synced")
        screen = pane.wait_for("+ VOL:0 replication:Established peer-disk:UpToDate",
                               "Resources: 1 ")
        assert "degraded" not in screen
        pane.keys("p")
        pane.wait_for("No problems detected.")
        pane.keys("q")
        deadline = time.monotonic() + 10
        while pane.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pane.alive()
    finally:
        pane.kill()


def test_drbdmon_version_and_help():
    out = subprocess.run([bin_path("drbdmon"), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("DrbdMon v")
    out = subprocess.run([bin_path("drbdmon"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--ascii" in out.stdout and "--freqlmt" in out.stdout
