"""`make demo`: WALKTHROUGH.md's two-host session, run on this one machine.

node1 and node2 each live in their own UTS + mount namespace, so every command of the
walk-through runs exactly as written there (`drbdadm create-md r0`, `mount /dev/drbd0 /mnt/test`):

* a namespace holder per node: `unshare --uts --mount --propagation private sleep infinity`;
* inside it (entered with `nsenter -t <holder> -u -m`): `hostname node1`, a private tmpfs on
  /run/drbd (the node's sockets, logs, proc file) and on /mnt, and the node's drbd.conf
  bind-mounted over /etc/drbd.conf: the walk-through's configuration with the addresses
  127.0.0.1:7788 / 127.0.0.2:7788 and a loop device over a temporary file as /dev/sda9;
* `device /dev/drbd0` stays as written: each node's daemon mounts its FUSE device file on the
  host's (regular, empty) file /dev/drbd0, each inside its own mount namespace;
* commands run with this checkout's .venv/bin first in PATH, so `drbdadm` is udrbd's;
* `systemctl start|stop drbd` runs what drbd.service runs: contrib/drbd-service.sh start|stop.

After each step the demo prints the new lines of each node's log ($UDRBD_RUN_DIR/r0.log, the
daemon's syslog lines) as `node1 kernel: ...`, and the service's output as `node1 drbd: ...`,
like the walk-through's syslog. It checks every step and exits non-zero on any deviation.
Whatever happens, it takes everything down again (unmounts, `drbdadm down`, daemons, namespace
holders, loop devices, temporary files).
"""
from __future__ import annotations

import datetime
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
SERVICE = REPO / "contrib" / "drbd-service.sh"
DISK_SIZE = "256M"
DEVICE = Path("/dev/drbd0")
HOST_PATHS = (DEVICE, Path("/etc/drbd.conf"), Path("/run/drbd"))   # made on the host if missing

CONF = """\
global { usage-count no; }
common { syncer { rate 100M; } }
resource r0 {
protocol C;
startup {
wfc-timeout 15;
degr-wfc-timeout 60;
}
net {
cram-hmac-alg sha1;
shared-secret "secret";
}
on node1 {
device /dev/drbd0;
disk %(node1_disk)s;
address 127.0.0.1:7788;
meta-disk internal;
}
on node2 {
device /dev/drbd0;
disk %(node2_disk)s;
address 127.0.0.2:7788;
meta-disk internal;
}
}
"""

# What drbd.service runs, when contrib/drbd-service.sh is not in this checkout.
FALLBACK_SERVICE = {
    "start": 'echo "["; drbdadm up all; rc=$?; echo "]"; [ $rc -eq 0 ] || exit $rc; '
             'drbdadm wait-con-int || true',
    "stop": 'if mountpoint -q /mnt/test; then umount /mnt/test; fi; '
            'echo "Stopping all DRBD resources"; drbdadm down all',
}


class DemoError(Exception):
    """A step did not do what the walk-through says."""


def log_time(stamp: str) -> float | None:
    """The time of a log line's ISO timestamp; None for other lines (the daemon's stderr)."""
    if not (stamp[:4].isdigit() and "T" in stamp):
        return None
    try:
        return datetime.datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None


def host(*cmd: str, check: bool = True) -> str:
    """A command on the host (outside the nodes' namespaces)."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if check and p.returncode != 0:
        raise DemoError(f"{' '.join(cmd)} -> exit code {p.returncode}: {p.stderr.strip()}")
    return p.stdout.strip()


class KernelLog:
    """The machine's kernel log (dmesg): the file systems' own lines (`EXT4-fs (loop0): ...`)
    for the loop device each node's `mount /dev/drbd0 /mnt/test` set up over its device file."""

    def __init__(self) -> None:
        lines = self._read()
        self.readable = bool(lines)
        self.last = lines[-1][0] if lines else 0.0
        self.loops: dict[str, str] = {}         # loop0 -> node1

    @staticmethod
    def _read() -> list[tuple[float, str]]:
        p = subprocess.run(["dmesg"], capture_output=True, text=True, check=False)
        out = []
        for line in p.stdout.splitlines() if p.returncode == 0 else []:
            m = re.match(r"\[\s*(\d+\.\d+)\] (.*)", line)
            if m:
                out.append((float(m.group(1)), m.group(2)))
        return out

    def new_lines(self) -> dict[str, list[tuple[float, str]]]:
        """New lines about the nodes' loop devices, per node, with their wall-clock time."""
        offset = time.time() - time.monotonic()        # dmesg counts from boot
        out: dict[str, list[tuple[float, str]]] = {}
        for when, text in self._read():
            if when <= self.last:
                continue
            self.last = when
            m = re.match(r"(?:EXT[234]-fs \()?(loop\d+)[):]", text)
            if m and m.group(1) in self.loops:
                out.setdefault(self.loops[m.group(1)], []).append((when + offset, text))
        return out


class Running:
    """A command running in a node; its output lines are collected with the time they came."""

    def __init__(self, node: "Node", command: str):
        self.node, self.command = node, command
        self.proc = subprocess.Popen(node.nsenter(command), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, cwd="/", start_new_session=True)
        self.lines: list[tuple[float, str]] = []
        self._taken = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.time(), line.rstrip("\n")))

    def wait(self, timeout: float = 120) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise DemoError(f"{self.node.name}$ {self.command}: still running after "
                            f"{timeout:.0f} s") from None
        self._reader.join(timeout=5)
        return rc

    def new_lines(self) -> list[tuple[float, str]]:
        out = self.lines[self._taken:]
        self._taken += len(out)
        return out

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()


class Node:
    def __init__(self, name: str, workdir: Path):
        self.name = name
        self.workdir = workdir
        self.image = workdir / f"{name}-sda9.img"
        self.conf = workdir / f"{name}-drbd.conf"
        self.loop = ""
        self.holder: subprocess.Popen | None = None
        self._log_offset = 0

    # -- the namespace ---------------------------------------------------------------------
    def start_namespace(self) -> None:
        self.holder = subprocess.Popen(
            ["unshare", "--uts", "--mount", "--propagation", "private", "sleep", "infinity"],
            stdin=subprocess.DEVNULL, start_new_session=True)
        own_ns = os.readlink("/proc/self/ns/mnt")
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{self.holder.pid}/ns/mnt") == own_ns:   # not unshared yet
            if self.holder.poll() is not None or time.monotonic() > deadline:
                raise DemoError(f"{self.name}: unshare --uts --mount failed")
            time.sleep(0.01)
        for command in (f"hostname {self.name}",
                        "mount -t tmpfs -o mode=0700 udrbd-run /run/drbd",
                        "mount -t tmpfs udrbd-mnt /mnt",
                        f"mount --bind {self.conf} /etc/drbd.conf"):
            self.check(command)
        found = self.check("hostname; command -v drbdadm").split()
        if found != [self.name, str(VENV_BIN / "drbdadm")]:
            raise DemoError(f"{self.name}: namespace set-up gave {found}")

    def nsenter(self, command: str) -> list[str]:
        assert self.holder is not None
        env = ["env", "-u", "__DRBD_NODE__", "-u", "UDRBD_RUN_DIR", "-u", "UDRBD_CONFIG",
               f"PATH={VENV_BIN}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
               "PYTHONUNBUFFERED=1"]
        return ["nsenter", "-t", str(self.holder.pid), "-u", "-m", *env, "bash", "-c", command]

    def path(self, inside: str) -> Path:
        """A path as this node sees it (through its namespace holder's root)."""
        assert self.holder is not None
        return Path(f"/proc/{self.holder.pid}/root{inside}")

    def alive(self) -> bool:
        return self.holder is not None and self.holder.poll() is None

    # -- commands --------------------------------------------------------------------------
    def run(self, command: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.nsenter(command), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, cwd="/")

    def check(self, command: str, timeout: float = 120) -> str:
        p = self.run(command, timeout)
        if p.returncode != 0:
            raise DemoError(f"{self.name}$ {command} -> exit code {p.returncode}\n"
                            f"{(p.stdout + p.stderr).rstrip()}")
        return p.stdout.strip()

    def state(self, what: str) -> str:
        """`drbdadm role|cstate|dstate r0`."""
        return self.check(f"drbdadm {what} r0")

    def wait_state(self, what: str, want: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        got = ""
        while time.monotonic() < deadline:
            got = self.state(what)
            if got == want:
                return
            time.sleep(0.2)
        raise DemoError(f"{self.name}: drbdadm {what} r0 is {got!r}, expected {want!r} "
                        f"within {timeout:.0f} s")

    def expect(self, **states: str) -> None:
        for what, want in states.items():
            got = self.state(what)
            if got != want:
                raise DemoError(f"{self.name}: drbdadm {what} r0 is {got!r}, expected {want!r}")

    # -- the daemon's log ------------------------------------------------------------------
    def new_log_lines(self) -> list[tuple[float, str]]:
        """Lines the daemon logged since the last call, as (time, `node1 kernel: ...`)."""
        try:
            with open(self.path("/run/drbd/r0.log"), "rb") as f:
                f.seek(self._log_offset)
                data = f.read()
        except FileNotFoundError:
            return []
        data = data[:data.rfind(b"\n") + 1]          # whole lines only
        self._log_offset += len(data)
        out, last = [], time.time()
        for line in data.decode(errors="replace").splitlines():
            stamp, _, message = line.partition(" ")
            when = log_time(stamp)
            if when is None:                             # not a log line: the daemon's stderr
                out.append((last, f"{self.name} udrbd: {line}"))
            else:
                last = when
                out.append((when, f"{self.name} kernel: {message}"))
        return out


class Demo:
    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="udrbd-demo."))
        self.node1 = Node("node1", self.workdir)
        self.node2 = Node("node2", self.workdir)
        self.created: list[Path] = []
        self.background: list[Running] = []
        self.pending: dict[str, list[tuple[float, str]]] = {"node1": [], "node2": []}
        self.kernel = KernelLog()

    @property
    def nodes(self) -> list[Node]:
        return [self.node1, self.node2]

    # -- output ----------------------------------------------------------------------------
    @staticmethod
    def say(text: str = "") -> None:
        print(text, flush=True)

    def syslog(self, *order: Node) -> None:
        """Print what each node logged since the last time (service output and daemon lines,
        in time order), the nodes in the given order (the one that acted first)."""
        for name, lines in self.kernel.new_lines().items():
            self.pending[name] += [(t, f"{name} kernel: {text}") for t, text in lines]
        blocks = []
        for node in order:
            lines = self.pending[node.name] + node.new_log_lines()
            self.pending[node.name] = []
            if lines:
                blocks.append([text for _, text in sorted(lines, key=lambda x: x[0])])
        if blocks:
            self.say("# syslog")
            for block in blocks:
                for text in block:
                    self.say(text)

    def prompt(self, node: Node, command: str, note: str = "") -> None:
        self.say()
        self.say(f"{node.name}$ {command}" + (f"    # {note}" if note else ""))

    # -- steps -----------------------------------------------------------------------------
    def step(self, node: Node, command: str) -> str:
        """Run a walk-through command in ``node`` and show its output; it must succeed."""
        self.prompt(node, command)
        p = node.run(command)
        output = (p.stdout + p.stderr).rstrip("\n")
        if output:
            self.say(output)
        if p.returncode != 0:
            raise DemoError(f"{node.name}$ {command} -> exit code {p.returncode}")
        return p.stdout

    def service(self, node: Node, action: str) -> Running:
        """`systemctl start|stop drbd`: what drbd.service runs, its output as `node drbd: ...`."""
        if SERVICE.exists():
            command = f"{SERVICE} {action}"
            note = f"drbd.service runs {SERVICE.relative_to(REPO)} {action}"
        else:
            command = FALLBACK_SERVICE[action]
            note = f"what drbd.service runs: {command}"
        self.prompt(node, f"systemctl {action} drbd", note)
        running = Running(node, command)
        self.background.append(running)
        return running

    def collect(self, running: Running) -> None:
        self.pending[running.node.name] += [(t, f"{running.node.name} drbd: {line}")
                                            for t, line in running.new_lines()]

    def finish_service(self, running: Running, timeout: float = 120) -> None:
        rc = running.wait(timeout)
        self.collect(running)
        self.background.remove(running)
        if rc != 0:
            self.syslog(running.node)
            raise DemoError(f"{running.node.name}$ systemctl ... drbd "
                            f"({running.command}) -> exit code {rc}")

    def note_mount(self, node: Node) -> None:
        """`mount` put the file system on a loop device over the device file: its kernel
        lines (EXT4-fs (loopN)) are this node's from now on."""
        source = node.check("findmnt -n -o SOURCE /mnt/test")
        if not source.startswith("/dev/loop"):
            raise DemoError(f"{node.name}: /mnt/test is mounted from {source!r}, "
                            f"expected a loop device over /dev/drbd0")
        self.kernel.loops[os.path.basename(source)] = node.name

    # -- set-up and tear-down --------------------------------------------------------------
    def setup(self) -> None:
        self.say(f"# set-up: two nodes on this machine, each in its own UTS + mount namespace; "
                 f"temporary folder {self.workdir}")
        if DEVICE.exists() and not DEVICE.is_file():
            raise DemoError(f"{DEVICE} exists and is not a regular file (is the real DRBD "
                            f"module loaded?); the demo mounts each node's device file there")
        for path in HOST_PATHS:
            if not path.exists():
                if path == Path("/run/drbd"):
                    path.mkdir(mode=0o700)
                else:
                    path.touch(mode=0o600)
                self.created.append(path)
        for node in self.nodes:
            host("truncate", "-s", DISK_SIZE, str(node.image))
            node.loop = host("losetup", "-f", "--show", str(node.image))
            self.say(f"#   {node.name}: /dev/sda9 is {node.loop} (backing file {node.image})")
        for node in self.nodes:
            node.conf.write_text(CONF % {"node1_disk": self.node1.loop,
                                         "node2_disk": self.node2.loop})
            node.start_namespace()
            assert node.holder is not None
            self.say(f"#   {node.name}: namespace holder pid {node.holder.pid} (hostname "
                     f"{node.name}, tmpfs on /run/drbd and /mnt, {node.conf.name} on "
                     f"/etc/drbd.conf)")
        self.node2.check("mkdir /mnt/test")          # the walk-through makes it on node1 only
        self.say(f"# PATH starts with {VENV_BIN}: drbdadm is udrbd's")
        if not self.kernel.readable:
            self.say("# (dmesg is not readable here: the file system's kernel lines are not shown)")

    def cleanup(self) -> None:
        """Undo everything, step by step; a step that fails is reported and the rest still run."""
        notes: list[str] = []

        def attempt(what: str, fn, *args) -> None:
            try:
                fn(*args)
            except Exception as e:      # keep cleaning up
                notes.append(f"FAILED to {what}: {e!r}")

        for running in self.background:
            attempt("stop a service command", running.kill)
        daemons: list[int] = []
        for node in self.nodes:
            if node.alive():
                attempt(f"take {node.name} down", self._take_down, node, notes, daemons)
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in daemons):
            if time.monotonic() > deadline:
                notes.append(f"FAILED: daemons {daemons} still there after kill -9")
                break
            time.sleep(0.05)
        for node in self.nodes:
            if node.holder is not None and node.holder.poll() is None:
                node.holder.kill()
                node.holder.wait()
        for node in self.nodes:
            if node.loop:
                attempt(f"detach {node.loop}", host, "losetup", "-d", node.loop)
        attempt(f"remove {self.workdir}", subprocess.run, ["rm", "-rf", str(self.workdir)])
        for path in reversed(self.created):
            attempt(f"remove {path}", path.rmdir if path.is_dir() else path.unlink)
        loops = " ".join(n.loop for n in self.nodes if n.loop)
        created = " ".join(str(p) for p in self.created)
        notes.append(f"namespaces ended; detached {loops or 'no loop devices'}; removed "
                     f"{self.workdir}" + (f" and {created}" if created else ""))
        self.say()
        for note in notes:
            self.say(f"# clean-up: {note}")
        if any(note.startswith("FAILED") for note in notes):
            raise DemoError("clean-up incomplete (see above)")

    @staticmethod
    def _take_down(node: Node, notes: list[str], daemons: list[int]) -> None:
        """Inside the node: unmount /mnt/test, `drbdadm down r0`, kill -9 what is left."""
        if node.run("mountpoint -q /mnt/test").returncode == 0:
            node.run("umount /mnt/test || umount -l /mnt/test")
            notes.append(f"{node.name}: unmounted /mnt/test")
        for loop in node.run(f"losetup -n -O NAME -j {DEVICE}").stdout.split():
            node.run(f"losetup -d {loop}")       # what `mount /dev/drbd0` set up, if left
        if node.path("/run/drbd/r0.sock").exists():
            node.run("drbdadm down r0", timeout=60)
            notes.append(f"{node.name}: drbdadm down r0")
        for pidfile in node.path("/run/drbd").glob("*.pid"):
            try:
                pid = int(pidfile.read_text())
                if b"replicator.daemon" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    os.kill(pid, signal.SIGKILL)
                    daemons.append(pid)
                    notes.append(f"{node.name}: killed daemon {pid} (kill -9)")
            except (ValueError, OSError):
                pass

    # -- the walk-through ------------------------------------------------------------------
    def run(self) -> None:
        n1, n2 = self.node1, self.node2
        self.setup()

        self.step(n1, "drbdadm create-md r0")
        self.step(n2, "drbdadm create-md r0")

        # node1's drbd.service waits for its peer (startup { wfc-timeout 15; }) while node2's
        # starts, as two terminals would
        start1 = self.service(n1, "start")
        deadline = time.monotonic() + 60
        while not any(line == "]" for _, line in start1.lines):
            if start1.proc.poll() is not None or time.monotonic() > deadline:
                self.finish_service(start1)
                raise DemoError("node1: drbd.service start ended before `drbdadm up all` did")
            time.sleep(0.05)
        n1.wait_state("cstate", "WFConnection")
        self.collect(start1)
        self.syslog(n1)
        self.say("# node1's drbd.service now waits for its peer (wfc-timeout 15); node2 starts")

        start2 = self.service(n2, "start")
        self.finish_service(start2)
        self.finish_service(start1)
        for node in self.nodes:
            node.expect(cstate="Connected", role="Secondary/Secondary",
                        dstate="Inconsistent/Inconsistent")
        self.syslog(n2, n1)

        self.step(n1, "drbdadm -- --overwrite-data-of-peer primary all")
        n1.expect(role="Primary/Secondary")
        n2.wait_state("role", "Secondary/Primary")
        self.syslog(n1, n2)
        self.step(n1, "drbdadm status")
        if n1.path("/run/drbd/proc").exists():
            self.step(n1, "cat /run/drbd/proc")
        self.say("\n# waiting for the resync (drbdadm dstate r0 -> UpToDate/UpToDate on both)")
        for node in self.nodes:
            node.wait_state("dstate", "UpToDate/UpToDate", timeout=120)
            node.expect(cstate="Connected")
        self.syslog(n1, n2)
        self.step(n1, "drbdadm status")
        if n1.path("/run/drbd/proc").exists():
            self.step(n1, "cat /run/drbd/proc")

        self.step(n1, "mkfs.ext3 /dev/drbd0")
        self.syslog(n1, n2)
        self.step(n1, "mkdir /mnt/test")
        self.step(n1, "mount /dev/drbd0 /mnt/test")
        self.note_mount(n1)
        self.syslog(n1, n2)
        self.step(n1, "touch /mnt/test/hello")
        self.syslog(n1, n2)

        stop1 = self.service(n1, "stop")
        self.finish_service(stop1)
        if n1.run("mountpoint -q /mnt/test").returncode == 0:
            raise DemoError("node1: /mnt/test is still mounted after stopping drbd")
        n1.expect(cstate="Unconfigured")
        n2.wait_state("cstate", "WFConnection")
        n2.expect(role="Secondary/Unknown", dstate="UpToDate/DUnknown")
        self.syslog(n1, n2)

        self.step(n2, "drbdadm primary r0")
        n2.expect(role="Primary/Unknown")
        self.syslog(n2)
        self.step(n2, "mount /dev/drbd0 /mnt/test")
        self.note_mount(n2)
        self.syslog(n2, n1)
        listing = self.step(n2, "ls /mnt/test").split()
        if sorted(listing) != ["hello", "lost+found"]:      # lost+found: mkfs.ext3's own
            raise DemoError(f"node2$ ls /mnt/test shows {listing}, expected hello "
                            f"(and lost+found)")
        self.syslog(n2, n1)
        self.say("\n# node2 took over: /mnt/test/hello, written on node1, is there")


def _terminate(signum: int, _frame) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    if os.geteuid() != 0:
        print("demo: needs root (namespaces, loop devices, FUSE, mount)", file=sys.stderr)
        return 1
    for tool in ("drbdadm", "drbdsetup", "drbdmeta"):
        if not os.access(VENV_BIN / tool, os.X_OK):
            print(f"demo: {VENV_BIN / tool} is missing; run `make setup`", file=sys.stderr)
            return 1
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    began = time.monotonic()
    demo = Demo()
    rc = 0
    try:
        demo.run()
    except DemoError as e:
        print(f"\ndemo FAILED: {e}", file=sys.stderr, flush=True)
        rc = 1
    except KeyboardInterrupt:
        print("\ndemo: interrupted", file=sys.stderr, flush=True)
        rc = 130
    except SystemExit as e:
        print("\ndemo: terminated by a signal", file=sys.stderr, flush=True)
        rc = e.code if isinstance(e.code, int) else 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)       # a second Ctrl-C must not stop the clean-up
        try:
            demo.cleanup()
        except Exception as e:      # report, never hide the first failure
            print(f"demo: clean-up failed: {e}", file=sys.stderr, flush=True)
            rc = rc or 1
    if rc == 0:
        print(f"# demo OK in {time.monotonic() - began:.1f} s", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
