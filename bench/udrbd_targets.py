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
  protocol {proto};
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

    def _env(self, node: str) -> dict:
        run = self.workdir / node / "run"
        run.mkdir(parents=True, exist_ok=True)
        return {**os.environ, "__DRBD_NODE__": node, "UDRBD_RUN_DIR": str(run),
                "UDRBD_CONFIG": str(self.workdir / "drbd.conf")}

    def _adm(self, node: str, *args: str) -> None:
        subprocess.run([str(VENV_BIN / "drbdadm"), *args], env=self._env(node), check=True,
                       capture_output=True, timeout=120)

    def _snap_conn(self, node: str) -> str:
        out = subprocess.run([str(VENV_BIN / "drbdadm"), "cstate", "r0"], env=self._env(node),
                             capture_output=True, text=True, timeout=30).stdout
        return out.strip()

    def start(self) -> str:
        names = ["node1", "node2"]
        paths = {}
        for n in names:
            (self.workdir / n).mkdir(exist_ok=True)
            paths[n] = (make_sparse(self.workdir / n / "disk.img", self.size + (64 << 20)),
                        self.workdir / n / "drbd0")
        (self.workdir / "drbd.conf").write_text(CONF.format(
            proto=self.protocol, port=_free_port(), dev1=paths["node1"][1],
            disk1=paths["node1"][0], dev2=paths["node2"][1], disk2=paths["node2"][0]))
        used = names[:self.nodes]
        for n in used:
            self._adm(n, "create-md", "--force", "r0")
            self._adm(n, "up", "r0")
            self.mountpoints.append(paths[n][1])
        if self.nodes == 1:
            self._adm("node1", "disconnect", "r0")
            self._adm("node1", "primary", "--force", "r0")
        else:
            deadline = time.monotonic() + 30
            while any(self._snap_conn(n) != "Connected" for n in used):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name}: nodes did not connect")
                time.sleep(0.1)
            self._adm("node1", "new-current-uuid", "--clear-bitmap", "r0/0")
            self._adm("node1", "primary", "r0")
        self._used = used
        self.path = str(paths["node1"][1])
        return self.path

    @property
    def server_pids(self) -> list[int]:
        pids = []
        for n in getattr(self, "_used", []):
            for pidfile in (self.workdir / n / "run").glob("*.pid"):
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
