"""`make demo` (scripts/demo.sh) against the walk-through's own syslog.

The demo runs WALKTHROUGH.md's session on two local nodes, each in its own UTS + mount
namespace, and prints each node's daemon lines as ``node1 kernel: ...`` and drbd.service's
output as ``node1 drbd: ...``. Here, for each node, the walk-through's syslog lines must appear
in the demo's output in the same order: state changes compared as sets of (field, old, new)
transitions per line (spacing, commas, typos and the `block r0:`/`drbd r0:` prefixes of the
seed text do not count), other kernel lines by their text (minus the seed's "sucessfull"), and
the service's lines (`[`, `create res: r0`, ..., `Stopping all DRBD resources`) exactly.

WALKTHROUGH.md is read from ``../shared/`` beside the repository (where CI puts a copy of
shared/), never from a copy inside the repository.

After the demo nothing may be left: no FUSE mounts (in any mount namespace), no loop devices
on its files, no udrbd daemons, no namespace holders, no temporary folder, no host files it made.
And it must run again right away.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "scripts" / "demo.sh"
WALKTHROUGH = REPO.parent / "shared" / "WALKTHROUGH.md"
HOST_PATHS = ("/dev/drbd0", "/etc/drbd.conf", "/run/drbd")

TRANSITION = re.compile(r"([a-z_]+)\s*\(\s*(\w+)\s*->\s*(\w+)\s*\)")
SYSLOG = re.compile(r"^(node[12]) (kernel|drbd): (.*)$")
PREFIX = re.compile(r"^(?:block|drbd) [\w/]+: ")        # `block drbd0: ` / `drbd r0: `

Transitions = frozenset  # of (field, old, new)


def T(*triples: tuple[str, str, str]) -> Transitions:
    return frozenset(triples)


# Where the walk-through's syslog differs from what DRBD 8.4 logs, udrbd follows DRBD. Each
# entry: (node, the walk-through's line as transitions) -> what is expected instead, and why.
# Every entry must match a line of the walk-through (checked), so none goes stale unseen.
DELIBERATE = {
    # node2 when node1 is promoted with --overwrite-data-of-peer: node2's own disk stays
    # Inconsistent (it is about to become SyncTarget); it is the PEER's disk that DRBD reports
    # as UpToDate. The walk-through wrote `disk(` for `pdsk(`.
    ("node2", T(("peer", "Secondary", "Primary"), ("disk", "Inconsistent", "UpToDate"))):
        T(("peer", "Secondary", "Primary"), ("pdsk", "Inconsistent", "UpToDate")),
    # node2 when the resync ends: node2 is the SyncTarget, so its OWN disk goes
    # Inconsistent -> UpToDate (the peer's was UpToDate all along, see above). The walk-through
    # copied node1's `pdsk(` here; DRBD logs `disk(` on the target.
    ("node2", T(("conn", "SyncTarget", "Connected"), ("pdsk", "Inconsistent", "UpToDate"))):
        T(("conn", "SyncTarget", "Connected"), ("disk", "Inconsistent", "UpToDate")),
}
# The file system's own kernel line on `systemctl stop drbd`, `EXT4-fs (drbd0): unmounting
# filesystem`, comes from this machine's kernel (the demo shows dmesg's lines for the node's
# mount): `mount /dev/drbd0` puts the file system on a loop device over udrbd's device file, so
# the kernel names the loop device. `EXT4-fs (loopN)` is compared as `EXT4-fs (drbd0)`.
LOOP_FS = re.compile(r"^(EXT[234]-fs) \(loop\d+\)")
# Not a transition difference, so not in the table: node1's `drbd r0: disk( UpToDate -> Failed )`
# on `systemctl stop drbd` is a device-level change, which DRBD 8.4 logs as `block drbd0:`
# (dev_printk), like the `disk( Failed -> Diskless )` right after it. Prefixes are not compared;
# test_device_lines_keep_drbds_prefix checks that udrbd logs it as `block drbd0:`.


@dataclass(frozen=True)
class Event:
    kind: str      # "transitions", "message" (another kernel line) or "service" (drbd: line)
    value: object  # Transitions, or the text

    def matches(self, other: "Event") -> bool:
        if self.kind != other.kind:
            return False
        if self.kind == "message":                # "Handshake successful" has more after it
            return str(other.value).startswith(str(self.value))
        return self.value == other.value

    def __str__(self) -> str:
        if self.kind == "transitions":
            return " ".join(f"{f}( {a} -> {b} )" for f, a, b in sorted(self.value))
        return f"{self.kind}: {self.value}"


def kernel_event(message: str) -> Event:
    body = PREFIX.sub("", message, count=1)
    found = TRANSITION.findall(body)
    if found:
        return Event("transitions", frozenset(found))
    body = LOOP_FS.sub(r"\1 (drbd0)", body)
    return Event("message", body.replace("sucessfull", "successful").strip())


def syslog_events(text: str) -> dict[str, list[Event]]:
    """Per node, the kernel and drbd lines of a syslog-like text, in order."""
    out: dict[str, list[Event]] = {"node1": [], "node2": []}
    for line in text.splitlines():
        m = SYSLOG.match(line.rstrip())
        if not m:
            continue
        node, source, message = m.groups()
        out[node].append(kernel_event(message) if source == "kernel"
                         else Event("service", message.strip()))
    return out


def walkthrough_events() -> dict[str, list[Event]]:
    if not WALKTHROUGH.exists():
        pytest.fail(f"{WALKTHROUGH} is missing: the demo is checked against shared/WALKTHROUGH.md, "
                    f"which must sit beside the repository ({REPO.parent}/shared/)")
    events = syslog_events(WALKTHROUGH.read_text())
    used = set()
    for node, seq in events.items():
        for i, ev in enumerate(seq):
            key = (node, ev.value)
            if ev.kind == "transitions" and key in DELIBERATE:
                seq[i] = Event("transitions", DELIBERATE[key])
                used.add(key)
    assert used == set(DELIBERATE), f"deliberate differences not in the walk-through: " \
                                    f"{set(DELIBERATE) - used}"
    return events


def first_missing(expected: list[Event], got: list[Event]) -> tuple[int, Event] | None:
    """The first expected event not found, in order, in ``got`` (None if all are)."""
    pos = 0
    for i, want in enumerate(expected):
        while pos < len(got) and not want.matches(got[pos]):
            pos += 1
        if pos == len(got):
            return i, want
        pos += 1
    return None


# -- what a run may leave behind ---------------------------------------------------------------
def _pids() -> list[str]:
    return [p for p in os.listdir("/proc") if p.isdigit()]


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _ns(pid: str, kind: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return ""


def _hostname(pid: str) -> str:
    p = subprocess.run(["nsenter", "-t", pid, "-u", "hostname"], capture_output=True, text=True)
    return p.stdout.strip()


# Other tests may run at the same time on this machine (their daemons, FUSE mounts and loop
# devices live in this test's namespaces, on their own paths): only what is the demo's counts.
def host_state() -> dict:
    own_mnt, own_uts = _ns("self", "mnt"), _ns("self", "uts")
    fuse = set()                         # the nodes' device files, in any mount namespace
    for pid in _pids():
        ns = _ns(pid, "mnt")
        for line in _read(f"/proc/{pid}/mounts").splitlines():
            parts = line.split()
            if (len(parts) > 2 and parts[2].startswith("fuse") and parts[2] != "fusectl"
                    and (parts[1] == "/dev/drbd0" or ns not in ("", own_mnt))):
                fuse.add((ns, parts[1], parts[2]))
    loops = {line for line in subprocess.run(["losetup", "-a"], capture_output=True,
                                             text=True).stdout.splitlines()
             if "(/dev/drbd0)" in line}  # what `mount /dev/drbd0 /mnt/test` sets up
    daemons = {pid for pid in _pids()    # a daemon started in a node's namespaces
               if "replicator.daemon" in _read(f"/proc/{pid}/cmdline").replace("\0", " ")
               and ({_ns(pid, "mnt"), _ns(pid, "uts")} - {"", own_mnt, own_uts})}
    holders = {(pid, _read(f"/proc/{pid}/cmdline").replace("\0", " ").strip())
               for pid in _pids() if _ns(pid, "uts") not in ("", own_uts)
               and _hostname(pid) in ("node1", "node2")}
    paths = {p: (os.path.exists(p), _read(p) if os.path.isfile(p) else None) for p in HOST_PATHS}
    return {"fuse": fuse, "loops": loops, "daemons": daemons, "holders": holders,
            "paths": paths}


def leftovers(before: dict, after: dict, out: str) -> list[str]:
    found = [f"FUSE mount {m} ({t}) in mount namespace {ns}"
             for ns, m, t in sorted(after["fuse"] - before["fuse"])]
    found += [f"loop device {x}" for x in sorted(after["loops"] - before["loops"])]
    found += [f"udrbd daemon pid {p}: {_read(f'/proc/{p}/cmdline')!r}"
              for p in sorted(after["daemons"] - before["daemons"])]
    found += [f"process {pid} ({cmd}) in a node's UTS namespace (hostname node1/node2)"
              for pid, cmd in sorted(after["holders"] - before["holders"])]
    for path, state in after["paths"].items():
        if state != before["paths"][path]:
            found.append(f"{path} changed: before {before['paths'][path]}, after {state}")
    backing = re.findall(r"\(backing file (\S+)\)", out)
    folders = re.findall(r"temporary folder (\S+)", out)
    if len(backing) != 2 or len(folders) != 1:
        found.append(f"the demo did not name its 2 backing files and its folder: {backing} "
                     f"{folders}")
    for file in backing:
        loops = subprocess.run(["losetup", "-j", file], capture_output=True, text=True).stdout
        if loops.strip():
            found.append(f"loop device on {file}: {loops.strip()}")
    for folder in folders:
        if os.path.exists(folder):
            found.append(f"temporary folder {folder}")
    return found


@dataclass
class DemoRun:
    rc: int
    out: str
    err: str
    leftovers: list[str]


def run_demo() -> DemoRun:
    before = host_state()
    p = subprocess.run(["bash", str(DEMO)], capture_output=True, text=True, timeout=180,
                       stdin=subprocess.DEVNULL)
    return DemoRun(p.returncode, p.stdout, p.stderr, leftovers(before, host_state(), p.stdout))


@pytest.fixture(scope="module")
def demo() -> DemoRun:
    return run_demo()


def _explain(run: DemoRun) -> str:
    return f"--- demo stdout ---\n{run.out}\n--- demo stderr ---\n{run.err}"


# -- the tests ---------------------------------------------------------------------------------
def test_demo_succeeds(demo: DemoRun):
    assert demo.rc == 0, f"demo exited with {demo.rc}\n{_explain(demo)}"
    assert "node2$ ls /mnt/test\nhello\n" in demo.out, _explain(demo)


@pytest.mark.parametrize("node", ["node1", "node2"])
def test_walkthrough_syslog_in_order(demo: DemoRun, node: str):
    expected = walkthrough_events()[node]
    got = syslog_events(demo.out)[node]
    assert {e.kind for e in expected} == {"transitions", "message", "service"}
    # The kernel lines (one log, plus dmesg's) in one order; the service's lines in theirs: the
    # demo places them among the kernel lines only by the time it read them.
    for what, kinds in (("kernel", {"transitions", "message"}), ("drbd", {"service"})):
        want = [e for e in expected if e.kind in kinds]
        have = [e for e in got if e.kind in kinds]
        missing = first_missing(want, have)
        if missing is not None:
            i, ev = missing
            done = "\n".join(f"  {e}" for e in want[:i]) or "  (none)"
            pytest.fail(f"{node}: walk-through line not found in the demo's output in order:\n"
                        f"  {ev}\nafter these, which were found in order:\n{done}\n"
                        f"{node}'s {what} lines in the demo:\n"
                        + "\n".join(f"  {e}" for e in have) + f"\n{_explain(demo)}")


def test_device_lines_keep_drbds_prefix(demo: DemoRun):
    """node1's disk( UpToDate -> Failed ) on stop: `block drbd0:` in DRBD 8.4 and udrbd
    (the walk-through's `drbd r0:` is one of its prefix slips)."""
    lines = [line for line in demo.out.splitlines() if line.startswith("node1 kernel: ")
             and "disk( UpToDate -> Failed )" in line]
    assert lines == ["node1 kernel: block drbd0: disk( UpToDate -> Failed )"], _explain(demo)


def test_demo_leaves_nothing_behind(demo: DemoRun):
    assert not demo.leftovers, "\n".join(demo.leftovers)


def test_demo_runs_again(demo: DemoRun):
    again = run_demo()
    assert again.rc == 0, f"second run exited with {again.rc}\n{_explain(again)}"
    assert not again.leftovers, "\n".join(again.leftovers)
