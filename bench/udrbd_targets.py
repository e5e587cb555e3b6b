"""udrbd columns for the benchmark: standalone Primary, and two nodes per protocol.

Each node is the real thing: drbdadm with its own run directory and ``__DRBD_NODE__``,
daemons talking TCP on 127.0.0.1/127.0.0.2. The two-node pair skips the initial full sync
with ``new-current-uuid --clear-bitmap`` (both disks are fresh), so setup stays quick.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.targets import Target, make_sparse, register

VENV_BIN = Path(sys.executable).parent

CONF = """\
global {{ usage-count no; }}
resource r0 {{
  protocol {proto};{disk_opts}
  on node1 {{ device {dev1} minor 0; disk {disk1}; address 127.0.0.1:{port}; meta-disk internal; }}
  on node2 {{ device {dev2} minor 0; disk {disk2}; address 127.0.0.2:{port}; meta-disk internal; }}
}}
"""


def _free_port() -> int:
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
    raise RuntimeError("no free port")


class UdrbdTarget(Target):
    name = "udrbd"
    description = "udrbd standalone Primary (one node, no peer)"
    protocol = "C"
    nodes = 1
    disk_opts = ""          # e.g. " disk { resync-rate 4G; }"

    def run_dir(self, node: str) -> Path:
        return self.workdir / node / "run"

    def _env(self, node: str) -> dict:
        run = self.run_dir(node)
        run.mkdir(parents=True, exist_ok=True)
        return {**os.environ, "__DRBD_NODE__": node, "UDRBD_RUN_DIR": str(run),
                "UDRBD_CONFIG": str(self.workdir / "drbd.conf")}

    def adm(self, node: str, *args: str) -> None:
        subprocess.run([str(VENV_BIN / "drbdadm"), *args], env=self._env(node), check=True,
                       capture_output=True, timeout=120)

    def _snap_conn(self, node: str) -> str:
        out = subprocess.run([str(VENV_BIN / "drbdadm"), "cstate", "r0"], env=self._env(node),
                             capture_output=True, text=True, timeout=30).stdout
        return out.strip()

    def disk_image(self, node: str) -> Path:
        return self.workdir / node / "disk.img"

    def device(self, node: str) -> Path:
        return self.workdir / node / "drbd0"

    def up(self) -> None:
        """Configuration, metadata and daemons; two nodes wait until Connected."""
        names = ["node1", "node2"]
        for n in names:
            (self.workdir / n).mkdir(exist_ok=True)
            if not self.disk_image(n).exists():
                make_sparse(self.disk_image(n), self.size + (64 << 20))
        (self.workdir / "drbd.conf").write_text(CONF.format(
            proto=self.protocol, disk_opts=self.disk_opts, port=_free_port(),
            dev1=self.device("node1"), disk1=self.disk_image("node1"),
            dev2=self.device("node2"), disk2=self.disk_image("node2")))
        self._used = names[:self.nodes]
        for n in self._used:
            self.adm(n, "create-md", "--force", "r0")
            self.adm(n, "up", "r0")
            self.mountpoints.append(self.device(n))
        if self.nodes == 2:
            deadline = time.monotonic() + 30
            while any(self._snap_conn(n) != "Connected" for n in self._used):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name}: nodes did not connect")
                time.sleep(0.1)

    def start(self) -> str:
        self.up()
        if self.nodes == 1:
            self.adm("node1", "disconnect", "r0")
            self.adm("node1", "primary", "--force", "r0")
        else:
            self.adm("node1", "new-current-uuid", "--clear-bitmap", "r0/0")
            self.adm("node1", "primary", "r0")
        self.path = str(self.device("node1"))
        return self.path

    @property
    def server_pids(self) -> list[int]:
        pids = []
        for n in getattr(self, "_used", []):
            for pidfile in self.run_dir(n).glob("*.pid"):
                try:
                    pids.append(int(pidfile.read_text()))
                except (OSError, ValueError):
                    pass
        return pids

    def stop(self) -> None:
        for n in getattr(self, "_used", []):
            env = self._env(n)
            subprocess.run([str(VENV_BIN / "drbdadm"), "secondary", "r0"], env=env,
                           capture_output=True, timeout=60)
            subprocess.run([str(VENV_BIN / "drbdadm"), "down", "r0"], env=env,
                           capture_output=True, timeout=60)
        for pid in self.server_pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        super().stop()


def _two_node(proto: str) -> type[UdrbdTarget]:
    return type(f"udrbd-{proto}", (UdrbdTarget,), {
        "name": f"udrbd-{proto}", "protocol": proto, "nodes": 2,
        "description": f"udrbd two nodes on loopback, protocol {proto}"})


for _cls in (UdrbdTarget, _two_node("C"), _two_node("B"), _two_node("A")):
    register(_cls)
