"""status, the /proc/drbd file and events2 against two live nodes during a slow resync."""
from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.integration.nodes import WALKTHROUGH_CONF, Cluster, bin_path

# c-plan-ahead 0 makes resync-rate the rate: 48 MiB at 2 MiB/s would take ~24 s (the
# tests raise the rate once they have seen the resync run)
SLOW_CONF = WALKTHROUGH_CONF.replace("common {{ syncer {{ rate 100M; }} }}",
                                     "common {{ disk {{ c-plan-ahead 0; resync-rate 2M; }} }}")


@pytest.fixture
def pair(tmp_path: Path):
    c = Cluster(tmp_path, size="48M", conf_template=SLOW_CONF)
    try:
        c.up_connected()
        yield c
    finally:
        c.cleanup()


def start_sync(c: Cluster) -> None:
    c.node1.drbdadm("primary", "--force", "r0")
    c.node1.wait_for(lambda s: s["conn"] == "SyncSource", what="SyncSource")
    c.node2.wait_for(lambda s: s["conn"] == "SyncTarget", what="SyncTarget")


def tokens(text: str) -> dict[str, str]:
    return dict(w.split(":", 1) for w in text.split() if ":" in w)


def wait_until(fn, timeout: float = 60, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


PROC_DEVICE = re.compile(
    r"version: 8\.4\.11 \(api:1/proto:86-101\)\n"
    r"srcversion: udrbd-\S+\n"
    r" 0: cs:(?P<cs>\w+) ro:(?P<ro>\w+/\w+) ds:(?P<ds>\w+/\w+) C r-----\n"
    r"    ns:\d+ nr:\d+ dw:\d+ dr:\d+ al:\d+ bm:\d+ lo:\d+ pe:\d+ ua:0 ap:\d+ ep:\d+ wo:f "
    r"oos:(?P<oos>\d+)\n(?P<rest>(?:.*\n)*)\Z")
PROGRESS = re.compile(r"\t\[=*>\.*\] sync'ed: ?[ \d]\d\.\d% \((?P<left>\d+)/(?P<total>\d+)\)K\n"
                      r"\tfinish: \d+:\d\d:\d\d speed: [\d,]+ \([\d,]+\)(?P<want> want: [\d,]+)?"
                      r" K/sec\n\Z")


def test_status_and_proc_during_and_after_a_resync(pair: Cluster):
    n1, n2 = pair.node1, pair.node2
    start_sync(pair)
    out = n1.drbdadm("status", "r0").stdout
    m = re.fullmatch(r"r0 role:Primary\n  disk:UpToDate\n  node2 role:Secondary\n"
                     r"    replication:SyncSource peer-disk:Inconsistent done:(\d+\.\d\d)\n\n", out)
    assert m, out
    assert 0 <= float(m.group(1)) < 100
    out = n2.drbdsetup("status").stdout
    assert re.fullmatch(r"r0 role:Secondary\n  disk:Inconsistent\n  node1 role:Primary\n"
                        r"    replication:SyncTarget peer-disk:UpToDate done:\d+\.\d\d\n\n", out), out

    fd = os.open(n1.device, os.O_RDWR)           # application writes for the latency keys
    try:
        for i in range(20):
            os.pwrite(fd, os.urandom(4096), (i * 37 % 48) << 20)
        os.fsync(fd)
    finally:
        os.close(fd)
    out = n1.drbdadm("status", "--verbose", "--statistics", "r0").stdout
    lines = out.splitlines()
    # wrapped at 80 columns; only a single field longer than that (the long test path of
    # backing_dev) stands alone on a longer line, as drbd-utils' wrap_printf does
    assert all(len(line) <= 80 or len(line.split()) == 1 for line in lines), out
    assert lines[0] == "r0 node-id:0 role:Primary suspended:no force-io-failures:no"
    assert lines[1] == "    write-ordering:flush"
    assert lines[2] == "  volume:0 minor:0 disk:UpToDate"
    assert lines[3] == f"      backing_dev:{n1.disk}"
    assert lines[4] == "      quorum:yes"
    assert out.endswith("\n\n")
    t = tokens(out)
    assert t["written"] == "80" and int(t["size"]) > 0 and int(t["sent"]) > 0
    assert t["replication"] == "SyncSource" and int(t["out-of-sync"]) > 0
    for key in ("read", "al-writes", "bm-writes", "upper-pending", "lower-pending",
                "al-suspended", "blocked", "congested", "ap-in-flight", "rs-in-flight",
                "received", "pending", "unacked", "dbdt1", "eta", "resync-suspended"):
        assert key in t, key
    drbd_keys = [w.split(":")[0] for w in out.split() if ":" in w]
    first_latency = min(i for i, k in enumerate(drbd_keys) if k.startswith("latency-"))
    assert "blocked" in drbd_keys[:first_latency]   # DRBD's own fields come first
    for stage in ("local", "total", "send", "ack"):
        p50, p99, mx = (int(x) for x in t[f"latency-{stage}-us"].split("/"))
        assert 0 < p50 <= p99 <= mx, stage

    # the proc file: 8.4 layout with the progress pair, rewritten while the resync runs
    proc = n1.run_dir / "proc"
    first = PROC_DEVICE.fullmatch(proc.read_text())
    assert first and (first["cs"], first["ro"], first["ds"]) == (
        "SyncSource", "Primary/Secondary", "UpToDate/Inconsistent"), proc.read_text()
    prog = PROGRESS.fullmatch(first["rest"])
    assert prog and not prog["want"] and int(prog["left"]) <= int(prog["total"]), first["rest"]
    moved = wait_until(lambda: (m := PROC_DEVICE.fullmatch(proc.read_text()))
                       and m["oos"] != first["oos"] and m, what="proc progress")
    assert int(moved["oos"]) < int(first["oos"])
    target = PROC_DEVICE.fullmatch((n2.run_dir / "proc").read_text())
    assert target["cs"] == "SyncTarget" and PROGRESS.fullmatch(target["rest"])["want"]

    n1.drbdadm("disk-options", "--resync-rate=1000M", "r0")   # seen enough: the running
    for n in pair.nodes:                                       # resync takes the new rate
        n.wait_for(lambda s: s["conn"] == "Connected" and s["pdsk"] == "UpToDate"
                   and s["disk"] == "UpToDate", timeout=120, what="synced")
    done = wait_until(lambda: (m := PROC_DEVICE.fullmatch(proc.read_text()))
                      and m["cs"] == "Connected" and m, what="proc after sync")
    assert (done["ds"], done["oos"], done["rest"]) == ("UpToDate/UpToDate", "0", "")
    s1, s2 = n1.snapshot(), n2.snapshot()         # dw/dr count resync I/O, as 8.4's do
    assert s2["written_kib"] == s2["nr_kib"] > 0  # resync data and the 80 KiB mirrored
    assert s1["read_kib"] >= s1["ns_kib"] - 80 > 0
    assert n1.drbdadm("status", "r0").stdout == (
        "r0 role:Primary\n  disk:UpToDate\n  node2 role:Secondary\n    peer-disk:UpToDate\n\n")
    assert n1.drbdsetup("status", "r9", check=False).returncode == 10


def test_proc_part_goes_away_with_the_resource(pair: Cluster):
    n2 = pair.node2
    assert " 0: cs:Connected " in (n2.run_dir / "proc").read_text()
    n2.drbdadm("down", "r0")
    assert (n2.run_dir / "proc").read_text().splitlines()[2:] == []
    assert not list((n2.run_dir / "proc.d").iterdir())


def reader(proc: subprocess.Popen) -> "queue.Queue[str]":
    q: "queue.Queue[str]" = queue.Queue()

    def run() -> None:
        for line in proc.stdout:
            q.put(line.rstrip("\n"))
    threading.Thread(target=run, daemon=True).start()
    return q


def next_matching(q: "queue.Queue[str]", pattern: str, seen: list[str], timeout: float = 60):
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = q.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if rx.fullmatch(line):
            return line
    raise AssertionError(f"no line matching {pattern!r}; got {seen}")


def test_events2_now_and_streaming(pair: Cluster):
    n1 = pair.node1
    port = pair.port
    out = n1.drbdsetup("events2", "--now", "r0").stdout.splitlines()
    assert out == [
        "exists resource name:r0 role:Secondary suspended:no force-io-failures:no "
        "may_promote:no promotion_score:0",
        "exists connection name:r0 peer-node-id:1 conn-name:node2 connection:Connected "
        "role:Secondary",
        f"exists device name:r0 volume:0 minor:0 backing_dev:{n1.disk} disk:Inconsistent "
        "client:no quorum:yes",
        "exists peer-device name:r0 peer-node-id:1 conn-name:node2 volume:0 "
        "replication:Established peer-disk:Inconsistent peer-client:no resync-suspended:no",
        f"exists path name:r0 peer-node-id:1 conn-name:node2 local:ipv4:127.0.0.1:{port} "
        f"peer:ipv4:127.0.0.2:{port} established:yes",
        "exists -"]
    stats = n1.drbdsetup("events2", "--now", "--statistics", "all").stdout
    assert " write-ordering:flush " in stats and " al-suspended:no blocked:no\n" in stats
    assert n1.drbdsetup("events2", "--now", "r9", check=False).returncode == 10

    ev = subprocess.Popen([bin_path("drbdsetup"), "events2", "--timestamps", "all"],
                          env=n1.env, stdout=subprocess.PIPE, text=True)
    try:
        q = reader(ev)
        seen: list[str] = []
        stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}[+-]\d\d:\d\d "
        next_matching(q, stamp + "exists -", seen)
        start_sync(pair)
        next_matching(q, stamp + "change resource name:r0 role:Primary may_promote:no "
                      "promotion_score:10101", seen)
        next_matching(q, stamp + f"change device name:r0 volume:0 minor:0 backing_dev:{n1.disk}"
                      " disk:UpToDate client:no quorum:yes", seen)
        next_matching(q, stamp + "change peer-device name:r0 peer-node-id:1 conn-name:node2 "
                      r"volume:0 replication:SyncSource( done:\d+\.\d\d)?", seen)
        next_matching(q, stamp + "change peer-device name:r0 peer-node-id:1 conn-name:node2 "
                      r"volume:0 done:\d+\.\d\d", seen)
    finally:
        ev.send_signal(signal.SIGINT)
        rc = ev.wait(timeout=10)
    assert rc == 0


def sh_status_lines(n) -> list[str]:
    """``drbdadm sh-status`` eval'd as the OCF resource agent does: one line per volume."""
    script = ('_sh_status_process() { echo "$_res_name $_volume $_known $_cstate $_role '
              '$_peer $_disk $_pdsk [$_flags_user_isp] [$_resynced_percent]"; }; '
              f'eval "$({bin_path("drbdadm")} sh-status)"')
    return subprocess.run(["bash", "-c", script], env=n.env, capture_output=True, text=True,
                          check=True, timeout=60).stdout.splitlines()


def test_sh_status_gives_the_ocf_agent_its_variables(pair: Cluster):
    n1, n2 = pair.node1, pair.node2
    assert sh_status_lines(n1) == ["r0 0 Configured Connected Secondary Secondary "
                                   "Inconsistent Inconsistent [] []"]
    n1.drbdadm("pause-sync", "r0")
    n1.drbdadm("primary", "--force", "r0")
    n1.wait_for(lambda s: s["conn"] == "PausedSyncS", what="PausedSyncS")
    line = sh_status_lines(n1)[0]
    m = re.fullmatch(r"r0 0 Configured PausedSyncS Primary Secondary UpToDate Inconsistent "
                     r"\[1\] \[(\d+)\.(\d)\]", line)
    assert m, line
    assert int(m.group(1)) < 100
    n1.drbdadm("resume-sync", "r0")
    n1.drbdadm("disk-options", "--resync-rate=1000M", "r0")
    for n in pair.nodes:
        n.wait_for(lambda s: s["conn"] == "Connected" and s["pdsk"] == "UpToDate"
                   and s["disk"] == "UpToDate", timeout=120, what="synced")
    assert sh_status_lines(n2) == ["r0 0 Configured Connected Secondary Primary "
                                   "UpToDate UpToDate [] []"]
    n2.drbdadm("down", "r0")                      # not there: as 8.4 reports it (the
    assert sh_status_lines(n2) == [" -1 NA Unconfigured     [] []"]   # rest is a comment)
