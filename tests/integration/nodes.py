"""Test nodes: one udrbd node = a run directory, a host name and the real CLIs.

Each node runs the venv's drbdadm/drbdsetup/drbdmeta (never /sbin's real DRBD tools) with
``__DRBD_NODE__``, ``UDRBD_RUN_DIR`` and ``UDRBD_CONFIG`` set, so two nodes share one
machine. ``Cluster.cleanup`` ends everything a test started even when it failed: unmounts
filesystems and FUSE devices under the test directory, detaches loop devices on its files,
and kills daemons by pid.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from replicator import control, rundir
from tests.leaks import track_pid

VENV_BIN = Path(sys.executable).parent


def bin_path(name: str) -> str:
    return str(VENV_BIN / name)


@dataclass
class Node:
    name: str
    base: Path               # this node's directory
    config: Path
    address: str
    env: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(exist_ok=True)
        self.env = {**os.environ, "__DRBD_NODE__": self.name, "UDRBD_RUN_DIR": str(self.run_dir),
                    "UDRBD_STATE_DIR": str(self.run_dir), "UDRBD_CONFIG": str(self.config)}

    @property
    def run_dir(self) -> Path:
        return self.base / "run"

    @property
    def device(self) -> Path:
        return self.base / "drbd0"

    @property
    def disk(self) -> Path:
        return self.base / "disk.img"

    def run(self, tool: str, *args: str, check: bool = True, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run([bin_path(tool), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, input=input)
        self._track()
        if check and proc.returncode != 0:
            raise AssertionError(f"{self.name}$ {tool} {' '.join(args)} -> rc {proc.returncode}\n"
                                 f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
        return proc

    def drbdadm(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run("drbdadm", *args, **kw)

    def drbdsetup(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run("drbdsetup", *args, **kw)

    def drbdmeta(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return self.run("drbdmeta", *args, **kw)

    def _track(self) -> None:
        for pidfile in self.run_dir.glob("*.pid"):
            try:
                track_pid(int(pidfile.read_text()))
            except (ValueError, OSError):
                pass

    def pids(self) -> list[int]:
        out = []
        for pidfile in self.run_dir.glob("*.pid"):
            try:
                out.append(int(pidfile.read_text()))
            except (ValueError, OSError):
                pass
        return out

    def snapshot(self, res: str = "r0") -> dict:
        with control.Client(str(self.run_dir / f"{res}.sock"), timeout=10) as c:
            return c.call("snapshot")["snapshot"]

    def wait_for(self, predicate, res: str = "r0", timeout: float = 30, what: str = "") -> dict:
        """Poll the daemon's state through the control socket until predicate(snapshot)."""
        deadline = time.monotonic() + timeout
        snap: dict = {}
        while time.monotonic() < deadline:
            try:
                snap = self.snapshot(res)
                if predicate(snap):
                    return snap
            except control.ControlError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{self.name}: timed out waiting for {what or predicate}; last {snap}")

    def log_messages(self, res: str = "r0") -> list[str]:
        """The state log without timestamps."""
        path = self.run_dir / f"{res}.log"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            stamp, _, msg = line.partition(" ")
            if stamp[:4].isdigit() and "T" in stamp:
                out.append(msg)
        return out

    def kill9(self) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in self.pids():
            _wait_pid_gone(pid)


def _wait_pid_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not rundir.has_exited(pid):
        time.sleep(0.02)


def _mounts_under(base: Path) -> list[tuple[str, str]]:
    found = []
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            mnt = parts[1].replace("\\040", " ")
            if mnt.startswith(str(base)):
                found.append((mnt, parts[2]))
    return found


def cleanup_dir(base: Path, nodes: list[Node]) -> None:
    """Undo everything under ``base``: filesystems, loop devices, FUSE devices, daemons."""
    # filesystems mounted from our devices first (deepest first), then loop devices
    for mnt, fstype in sorted(_mounts_under(base), key=lambda m: -len(m[0])):
        if not fstype.startswith("fuse"):
            subprocess.run(["umount", "-l", mnt], capture_output=True)
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if str(base) in line:
            subprocess.run(["losetup", "-d", line.split(":")[0]], capture_output=True)
    for node in nodes:
        for res_sock in node.run_dir.glob("*.sock"):
            subprocess.run([bin_path("drbdsetup"), "down", res_sock.stem], env=node.env,
                           capture_output=True, timeout=60)
        node.kill9()
    for mnt, fstype in sorted(_mounts_under(base), key=lambda m: -len(m[0])):
        subprocess.run(["umount", "-l", mnt], capture_output=True)


WALKTHROUGH_CONF = """\
global {{ usage-count no; }}
common {{ syncer {{ rate 100M; }} }}
resource r0 {{
protocol C;
startup {{
wfc-timeout 15;
degr-wfc-timeout 60;
}}
net {{
cram-hmac-alg sha1;
shared-secret "secret";
}}
on node1 {{
device {dev1} minor 0;
disk {disk1};
address 127.0.0.1:{port};
meta-disk internal;
}}
on node2 {{
device {dev2} minor 0;
disk {disk2};
address 127.0.0.2:{port};
meta-disk internal;
}}
}}
"""


def in_sync(s: dict) -> bool:
    """Connected, both disks UpToDate."""
    return s["conn"] == "Connected" and s["disk"] == "UpToDate" and s["pdsk"] == "UpToDate"


def free_port() -> int:
    """A port free on both 127.0.0.1 and 127.0.0.2, so parallel runs never collide."""
    import socket
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.2", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port on 127.0.0.1/127.0.0.2")


class Cluster:
    """node1 and node2 with the walk-through's configuration (paths under ``base``)."""

    def __init__(self, base: Path, size: str = "128M", port: int | None = None,
                 conf_template: str = WALKTHROUGH_CONF):
        self.base = base
        port = free_port() if port is None else port
        self.port = port
        self.config = base / "drbd.conf"
        self.node1 = Node("node1", base / "node1", self.config, "127.0.0.1")
        self.node2 = Node("node2", base / "node2", self.config, "127.0.0.2")
        for n in self.nodes:
            subprocess.run(["truncate", "-s", size, str(n.disk)], check=True)
        self.config.write_text(conf_template.format(
            dev1=self.node1.device, dev2=self.node2.device, disk1=self.node1.disk,
            disk2=self.node2.disk, port=port))

    @property
    def nodes(self) -> list[Node]:
        return [self.node1, self.node2]

    def up_connected(self, md_force: bool = False) -> None:
        """create-md and up on both nodes, then wait until they are Connected."""
        for n in self.nodes:
            n.drbdadm("create-md", *(["--force"] if md_force else []), "r0")
        for n in self.nodes:
            n.drbdadm("up", "r0")
        for n in self.nodes:
            n.wait_for(lambda s: s["conn"] == "Connected", what="Connected")

    def sync_from_node1(self, *promote: str, timeout: float = 120) -> None:
        """Promote node1 with ``promote`` (default ``primary --force r0``); wait for the sync."""
        self.node1.drbdadm(*(promote or ("primary", "--force", "r0")))
        for n in self.nodes:
            n.wait_for(in_sync, timeout=timeout, what="synced")

    def cleanup(self) -> None:
        cleanup_dir(self.base, self.nodes)


@contextlib.contextmanager
def synced_pair(tmp_path: Path, conf: str = WALKTHROUGH_CONF) -> Iterator[Cluster]:
    """Two nodes on 64 MiB disks, connected and in sync (node1 Primary); cleaned up."""
    c = Cluster(tmp_path, size="64M", conf_template=conf)
    try:
        c.up_connected()
        c.sync_from_node1()
        yield c
    finally:
        c.cleanup()
