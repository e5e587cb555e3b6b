"""One node, no peer: the resource is already a usable block device (real FUSE, loop, ext3)."""
from __future__ import annotations

import errno
import hashlib
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.integration.nodes import Cluster, Node, bin_path, _wait_pid_gone as _wait_gone


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def up_primary(n: Node) -> None:
    n.drbdadm("create-md", "r0")
    n.drbdadm("up", "r0")
    n.drbdadm("primary", "--force", "r0")


def write_files(mnt: Path, count: int = 4, size: int = 1 << 20) -> dict[str, str]:
    sums = {}
    for i in range(count):
        data = os.urandom(size)
        (mnt / f"f{i}").write_bytes(data)
        sums[f"f{i}"] = hashlib.sha256(data).hexdigest()
    return sums


def check_files(mnt: Path, sums: dict[str, str]) -> None:
    for name, digest in sums.items():
        assert hashlib.sha256((mnt / name).read_bytes()).hexdigest() == digest, name


def bits_set_on_disk(n: Node) -> int:
    out = n.drbdmeta("0", "v08", str(n.disk), "internal", "dump-md").stdout
    return int(re.search(r"# bits-set (\d+);", out).group(1))


def test_up_prints_steps_and_logs_transitions(cluster: Cluster):
    n = cluster.node1
    n.drbdadm("create-md", "r0")
    out = n.drbdadm("up", "r0").stdout
    assert out.splitlines() == ["create res: r0", "prepare disk: r0", "adjust disk: r0",
                                "adjust net: r0"]
    snap = n.wait_for(lambda s: s["conn"] == "WFConnection", what="WFConnection")
    assert (snap["role"], snap["disk"], snap["pdsk"]) == ("Secondary", "Inconsistent", "DUnknown")
    transitions = [m for m in n.log_messages() if "( " in m]
    assert transitions == [
        "block drbd0: disk( Diskless -> Attaching )",
        "block drbd0: disk( Attaching -> Inconsistent )",
        "drbd r0: conn( StandAlone -> Unconnected )",
        "drbd r0: conn( Unconnected -> WFConnection )",
    ]
    assert os.stat(n.device).st_size == snap["size_kib"] * 1024
    status = n.drbdadm("status", "r0").stdout
    assert status == "r0 role:Secondary\n  disk:Inconsistent\n  node2 connection:Connecting\n\n"
    assert n.drbdadm("role", "r0").stdout == "Secondary/Unknown\n"
    assert n.drbdadm("dstate", "r0").stdout == "Inconsistent/DUnknown\n"
    assert n.drbdadm("cstate", "r0").stdout == "WFConnection\n"


def test_dry_run_up_prints_the_drbdsetup_calls(cluster: Cluster):
    n = cluster.node1
    out = n.drbdadm("-d", "up", "r0").stdout.splitlines()
    assert out == [
        "drbdsetup new-resource r0",
        f"drbdsetup new-minor r0 0 0 --device={n.device}",
        f"drbdmeta 0 v08 {n.disk} internal apply-al",
        f"drbdsetup attach 0 {n.disk} {n.disk} internal --resync-rate=100M",
        f"drbdsetup connect r0 ipv4:127.0.0.1:{cluster.port} ipv4:127.0.0.2:{cluster.port} "
        "--protocol=C "
        "--cram-hmac-alg=sha1 --shared-secret=secret --_name=node2",
    ]
    assert not list(n.run_dir.glob("*.sock")), "a dry run must not start anything"


def test_secondary_refuses_opens_and_primary_needs_data(cluster: Cluster):
    n = cluster.node1
    n.drbdadm("create-md", "r0")
    n.drbdadm("up", "r0")
    # 8.4's drbd_open on a Secondary: EROFS to a writable open, EMEDIUMTYPE to a read-only one
    for flags, refusal in ((os.O_RDWR, errno.EROFS), (os.O_WRONLY, errno.EROFS),
                           (os.O_RDONLY, errno.EMEDIUMTYPE)):
        with pytest.raises(OSError) as e:
            os.close(os.open(n.device, flags))
        assert e.value.errno == refusal
    r = n.drbdadm("primary", "r0", check=False)
    assert r.returncode == 17
    assert "0: State change failed: (-2) Need access to UpToDate data" in r.stderr
    n.drbdadm("primary", "--force", "r0")
    assert "block drbd0: role( Secondary -> Primary ) disk( Inconsistent -> UpToDate )" \
        in n.log_messages()
    os.close(os.open(n.device, os.O_RDWR))


def test_ext3_survives_down_and_up(cluster: Cluster, tmp_path: Path):
    n = cluster.node1
    up_primary(n)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    sh("mkfs.ext3", "-q", "-F", str(n.device))
    sh("mount", str(n.device), str(mnt))         # mount loops the regular file by itself
    sums = write_files(mnt)
    r = n.drbdadm("secondary", "r0", check=False)
    assert r.returncode == 11 and "(-12) Device is held open by someone" in r.stderr
    r = n.drbdadm("down", "r0", check=False)
    assert r.returncode == 11 and "(-12) Device is held open by someone" in r.stderr
    sh("umount", str(mnt))
    n.drbdadm("down", "r0")
    assert not list(n.run_dir.glob("*.sock")) and not list(n.run_dir.glob("*.pid"))
    assert "fuse" not in sh("stat", "-f", "-c", "%T", str(n.device.parent))
    messages = n.log_messages()
    assert messages[-3:] == ["block drbd0: role( Primary -> Secondary )",
                             "block drbd0: disk( UpToDate -> Failed )",
                             "block drbd0: disk( Failed -> Diskless )"] or \
        "block drbd0: disk( UpToDate -> Failed )" in messages
    n.drbdadm("up", "r0")
    snap = n.wait_for(lambda s: s["disk"] == "UpToDate", what="UpToDate after up")
    n.drbdadm("primary", "r0")                   # data is UpToDate: no --force needed
    loop = sh("losetup", "-f", "--show", str(n.device)).strip()
    try:
        sh("mount", loop, str(mnt))
        check_files(mnt, sums)
        sh("umount", str(mnt))
    finally:
        subprocess.run(["losetup", "-d", loop])
    assert snap["oos_kib"] > 0


def test_bitmap_counts_the_blocks_written(cluster: Cluster):
    n = cluster.node1
    up_primary(n)
    fd = os.open(n.device, os.O_RDWR)
    blocks = set()
    try:
        for i in range(50):                      # 50 aligned 4 KiB blocks, 1 MiB apart
            os.pwrite(fd, os.urandom(4096), i << 20)
            blocks.add((i << 20) // 4096)
        os.pwrite(fd, b"x" * 200, 10 * 4096 - 100)    # straddles blocks 9 and 10
        blocks |= {9, 10}
        os.pwrite(fd, os.urandom(3 * 4096), 7 << 20)  # overlaps block of i=7 and two more
        blocks |= {(7 << 20) // 4096 + k for k in range(3)}
        os.fsync(fd)
    finally:
        os.close(fd)
    snap = n.snapshot()
    assert snap["oos_kib"] == len(blocks) * 4
    n.drbdadm("secondary", "r0")
    n.drbdadm("down", "r0")
    assert bits_set_on_disk(n) == len(blocks)


def test_kill9_then_up_applies_the_activity_log(cluster: Cluster):
    n = cluster.node1
    up_primary(n)
    payload = {}
    fd = os.open(n.device, os.O_RDWR)
    try:
        for i in range(20):                      # 20 extents of 4 MiB, one block each
            data = os.urandom(4096)
            os.pwrite(fd, data, i * (4 << 20) + 8192)
            payload[i * (4 << 20) + 8192] = hashlib.sha256(data).hexdigest()
        os.fsync(fd)
    finally:
        os.close(fd)
    n.kill9()
    # the dead daemon's FUSE mount is stale; `up` must cope with it
    r = n.drbdadm("up", "r0")
    assert "Marked additional" in r.stderr + r.stdout
    snap = n.wait_for(lambda s: s["disk"] == "UpToDate", what="UpToDate")
    # every extent in the AL is out of sync: 20 hot extents x 4 MiB
    assert snap["oos_kib"] >= 20 * 4096
    n.drbdadm("primary", "r0")
    fd = os.open(n.device, os.O_RDONLY)
    try:
        for off, digest in payload.items():
            assert hashlib.sha256(os.pread(fd, 4096, off)).hexdigest() == digest
    finally:
        os.close(fd)


def test_errors_for_unknown_resource_and_bad_arguments(cluster: Cluster):
    n = cluster.node1
    r = n.drbdadm("up", "r9", check=False)
    assert r.returncode == 1
    assert r.stderr.strip().endswith("'r9' not defined in your config (for this host).")
    r = n.drbdsetup("status", "r9", check=False)
    assert r.returncode == 10 and r.stderr.strip() == "r9: No such resource"
    r = n.drbdadm("frobnicate", "r0", check=False)
    assert r.returncode == 1 and "frobnicate" in r.stderr
    r = n.drbdsetup("role", "7", check=False)
    assert r.returncode == 10 and "7: Failure: (127) Device minor not allocated" in r.stderr
    r = n.drbdadm("status", "r0", check=False)
    assert r.returncode == 10 and "r0: No such resource" in r.stderr
    for target in ("r0/1", "r0/x", "minor-7"):
        r = n.drbdadm("-d", "primary", target, check=False)
        assert r.returncode == 1
        assert r.stderr.strip() == f"'{target}' not defined in your config (for this host)."
    assert n.drbdadm("-d", "primary", "minor-0").stdout == "drbdsetup primary 0\n"
    assert n.drbdadm("-d", "--force", "create-md", "r0").stdout == \
        f"drbdmeta --force 0 v08 {n.disk} internal create-md\n"
    # options for drbdsetup go to it, as drbdadm-84 passes them; it refuses what it lacks
    assert n.drbdadm("-d", "--", "--foo", "primary", "r0").stdout == "drbdsetup primary 0 --foo\n"
    r = n.drbdadm("--", "--foo", "primary", "r0", check=False)
    assert r.returncode == 20 and r.stderr.splitlines() == [
        "drbdsetup primary: unrecognized option '--foo'",
        "Command 'drbdsetup primary 0 --foo' terminated with exit code 20"]
    # after the command drbdadm itself takes only the command's own options, as drbdadm-84
    for cmd in (["primary", "--foo", "r0"], ["up", "--bogus", "r0"], ["up", "r0", "--force"],
                ["resize", "--assume-clean", "r0"], ["adjust", "--skip-net", "r0"],
                ["attach", "--protocol=A", "r0"], ["connect", "--resync-rate=1M", "r0"]):
        r = n.drbdadm(*cmd, check=False)
        bad = next(a for a in cmd if a.startswith("--"))
        assert (r.returncode, r.stderr) == (
            1, f"drbdadm: unrecognized option '{bad}'\ntry 'drbdadm help'\n"), cmd
    assert n.drbdadm("-d", "disk-options", "--resync-rate", "10M", "r0").stdout == \
        "drbdsetup disk-options 0 --resync-rate=10M\n"        # getopt's --opt VALUE
    version = n.drbdadm("--version").stdout          # what the OCF agent evals
    assert re.fullmatch(r"DRBDADM_BUILDTAG=udrbd\\ \S+\nDRBDADM_API_VERSION=1\n"
                        r"DRBD_KERNEL_VERSION_CODE=0x08040b\nDRBDADM_VERSION_CODE=0x[0-9a-f]{6}\n"
                        r"DRBDADM_VERSION=[0-9.]+\n", version), version
    assert n.drbdadm("-V").stdout == version
    for form in (["help"], ["help", "up"], ["-h"], ["--help"]):
        assert n.drbdadm(*form).stdout.startswith("USAGE: drbdadm COMMAND"), form
    assert n.drbdadm("-dv", "down", "r0").stdout == n.drbdadm("-d", "-v", "down", "r0").stdout
    misspelled = subprocess.run([bin_path("drbdadm"), "-d", "up", "all"], capture_output=True,
                                text=True, env={**n.env, "__DRBD_NODE__": "nodde1"})
    assert (misspelled.returncode, misspelled.stderr) == (1, (
        "WARN: no normal resources defined for this host (nodde1)!?\n"
        "Misspelled name of the local machine with the 'on' keyword ?\n"))
    assert n.drbdadm("-d", "disconnect", "--force", "r0").stdout == \
        "drbdsetup disconnect r0 --force\n"
    assert n.drbdadm("-d", "attach", "--resync-rate=1M", "r0").stdout.splitlines()[-1] \
        .endswith(" --resync-rate=1M")
    r = n.drbdsetup("status", "--bogus", check=False)
    assert r.returncode == 20 and r.stderr == "drbdsetup status: unrecognized option '--bogus'\n"
    long_name = "r" * 120                   # its socket path would not fit in sun_path
    r = n.drbdsetup("new-resource", long_name, check=False)
    assert r.returncode == 10 and r.stderr.startswith(f"{long_name}: resource name too long")
    assert not list(n.run_dir.glob(f"{long_name}*"))


def test_up_refuses_an_address_this_host_does_not_have(tmp_path: Path):
    c = Cluster(tmp_path)
    try:
        n = c.node1
        c.config.write_text(c.config.read_text().replace("127.0.0.1:", "192.0.2.1:"))
        n.drbdadm("create-md", "r0")
        r = n.drbdadm("up", "r0", check=False)
        assert r.returncode == 10
        assert f"{c.config}:" in r.stderr and "in resource r0, on node1:" in r.stderr
        assert "\tIP 192.0.2.1 not found on this host." in r.stderr
        c.config.write_text(c.config.read_text().replace(
            "usage-count no;", "usage-count no; disable-ip-verification;"))
        assert n.drbdadm("-d", "up", "r0").returncode == 0
    finally:
        c.cleanup()


def test_adjust_applies_only_what_changed_in_drbd_conf(cluster: Cluster):
    n = cluster.node1
    n.drbdadm("create-md", "r0")
    n.drbdadm("up", "r0")
    n.wait_for(lambda s: s["conn"] == "WFConnection", what="WFConnection")
    assert n.drbdadm("-d", "adjust", "r0").stdout == ""
    conf = cluster.config.read_text()
    cluster.config.write_text(conf.replace("rate 100M;", "rate 10M;").replace(
        "protocol C;", "protocol B;"))
    assert n.drbdadm("-d", "adjust", "r0").stdout.splitlines() == [
        "drbdsetup disk-options 0 --set-defaults --resync-rate=10M",
        f"drbdsetup net-options ipv4:127.0.0.1:{cluster.port} ipv4:127.0.0.2:{cluster.port} "
        "--set-defaults --protocol=B --cram-hmac-alg=sha1 --shared-secret=secret"]
    n.drbdadm("adjust", "r0")
    shown = n.drbdsetup("show", "r0").stdout
    assert "resync-rate     \t10M;" in shown and "protocol        \tB;" in shown
    assert n.drbdadm("-d", "adjust", "r0").stdout == ""
    n.drbdadm("detach", "r0")
    n.drbdadm("disconnect", "r0")
    n.drbdadm("adjust", "r0")
    snap = n.wait_for(lambda s: s["conn"] == "WFConnection" and s["disk"] == "Inconsistent",
                      what="attached and waiting for the peer again")
    assert snap["role"] == "Secondary"


def test_a_daemon_killed_with_9_is_reported_and_down_cleans_up(cluster: Cluster):
    n = cluster.node1
    up_primary(n)
    n.kill9()
    for args in (("status", "r0"), ("role", "r0"), ("primary", "r0")):
        r = n.drbdadm(*args, check=False)
        assert r.returncode == 10, args
        assert "r0: the resource daemon (pid " in r.stderr and "is gone" in r.stderr, args
    r = n.drbdsetup("status", check=False)
    assert r.returncode == 10 and "is gone" in r.stderr
    with pytest.raises(OSError) as e:             # the dead server's mount is stale
        os.stat(n.device)
    assert e.value.errno == errno.ENOTCONN
    r = n.drbdadm("down", "r0")
    assert "cleaned up after it" in r.stderr
    assert os.stat(n.device).st_size == 0         # the mount point file, no mount on it
    assert not [p for p in ("r0.sock", "r0.pid", "r0.device") if (n.run_dir / p).exists()]
    assert n.drbdsetup("status").stdout == "# No currently configured DRBD found.\n"
    n.drbdadm("up", "r0")
    assert n.wait_for(lambda s: s["disk"] == "UpToDate", what="UpToDate")["role"] == "Secondary"


def test_refusals_while_up_have_drbds_exit_codes(cluster: Cluster):
    n = cluster.node1
    n.drbdadm("create-md", "r0")
    n.drbdadm("up", "r0")
    for cmd in ("create-md", "wipe-md", "apply-al"):
        r = n.drbdadm(cmd, "r0", check=False, input="")
        assert r.returncode == 20, cmd
        assert "Device '0' is configured!" in r.stderr
        assert f"Command 'drbdmeta 0 v08 {n.disk} internal {cmd}' terminated with exit code 20" \
            in r.stderr
    r = n.drbdadm("up", "r0", check=False)
    assert r.returncode == 10
    assert "0: Failure: (161) Minor or volume exists already (delete it first)" in r.stderr
    # late 8.4 invalidates locally only on a StandAlone Secondary; else it needs a
    # connection (drbd_adm_invalidate)
    r = n.drbdadm("invalidate", "r0", check=False)
    assert r.returncode == 11
    assert "0: State change failed: (-15) Need a connection to start verify or resync" in r.stderr
    n.drbdadm("primary", "--force", "r0")
    n.drbdadm("secondary", "r0")
    n.drbdadm("disconnect", "r0")
    n.drbdadm("invalidate", "r0")
    snap = n.snapshot()
    assert snap["disk"] == "Inconsistent" and snap["oos_kib"] == snap["size_kib"]


def test_sigterm_is_refused_while_the_device_is_open_as_down_is(cluster: Cluster):
    n = cluster.node1
    up_primary(n)
    pid = n.pids()[0]
    fd = os.open(n.device, os.O_RDWR)
    try:
        os.kill(pid, signal.SIGTERM)
        n.wait_for(lambda s: any("not terminating: r0: State change failed: (-12) Device is "
                                 "held open by someone" in m for m in n.log_messages()),
                   what="the refusal in the log")
        os.pwrite(fd, b"still served", 0)
    finally:
        os.close(fd)
    os.kill(pid, signal.SIGTERM)
    _wait_gone(pid)
    msgs = n.log_messages()
    assert "block drbd0: role( Primary -> Secondary )" in msgs
    assert msgs[-1] == "block drbd0: disk( Failed -> Diskless )"


def test_bad_control_frames_and_option_values_are_refused_without_harm(cluster: Cluster):
    n = cluster.node1
    n.drbdadm("create-md", "r0")
    n.drbdadm("up", "r0")
    for frame in (b"\x00\x00\x00\x01\xc1", b"\x00\x00\x00\x02\x92\x01", b"\xff\xff\xff\xff"):
        with socket.socket(socket.AF_UNIX) as s:       # undecodable, not a map, too long
            s.connect(str(n.run_dir / "r0.sock"))
            s.sendall(frame)
            s.settimeout(10)
            s.recv(100)
    assert n.drbdadm("cstate", "r0").stdout == "WFConnection\n"
    for args, rc, text in (
            (("primary", "0", "--force=no"), 17, "(-2) Need access to UpToDate data"),
            (("primary", "0", "--force=maybe"), 20, "--force=maybe: expected yes or no"),
            (("wait-connect", "0", "--wfc-timeout=abc"), 20, "--wfc-timeout=abc: not a number"),
            (("connect", "r0", "ipv4:127.0.0.1:99999", "ipv4:127.0.0.2:7788"), 10,
             "'ipv4:127.0.0.1:99999': expected ipv4:HOST:PORT with a port in 1..65535")):
        n.drbdadm("disconnect", "r0")
        r = n.drbdsetup(*args, check=False)
        assert (r.returncode, "Traceback" in r.stderr) == (rc, False), args
        assert text in r.stderr, args
    assert n.snapshot()["disk"] == "Inconsistent"


def test_concurrent_ups_start_one_daemon(cluster: Cluster):
    n = cluster.node1
    n.drbdadm("create-md", "r0")
    ups = [subprocess.Popen([bin_path("drbdadm"), "up", "r0"], env=n.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for _ in range(3)]
    results = sorted(p.wait(timeout=120) for p in ups)
    for p in ups:
        p.stdout.close()
        p.stderr.close()
    assert results == [0, 10, 10]                  # the others: (161) as a second `up`
    daemons = subprocess.run(["pgrep", "-f", "replicator.daemon r0$"], capture_output=True,
                             text=True).stdout.split()
    ours = [int(p) for p in daemons if f"={n.run_dir}".encode() in
            open(f"/proc/{p}/environ", "rb").read().replace(b"\0", b" ")]
    assert ours == n.pids()
    n.drbdadm("down", "r0")
    _wait_gone(ours[0])


def test_without_a_disk_the_device_file_refuses_opens(cluster: Cluster):
    n = cluster.node1
    n.drbdadm("create-md", "r0")
    n.drbdadm("up", "r0")
    size = os.stat(n.device).st_size
    n.drbdadm("detach", "r0")
    assert os.stat(n.device).st_size == 0
    for flags, refusal in ((os.O_WRONLY, errno.EROFS), (os.O_RDONLY, errno.EMEDIUMTYPE)):
        with pytest.raises(OSError) as e:         # not the bare mount-point file
            os.close(os.open(n.device, flags))
        assert e.value.errno == refusal
    r = n.drbdsetup("attach", "0", str(n.device), str(n.device), "internal", check=False)
    assert r.returncode == 10 and "is this resource's own device file" in r.stderr
    n.drbdadm("attach", "r0")
    assert os.stat(n.device).st_size == size
    n.drbdadm("down", "r0")
    assert not os.path.exists(n.device)           # created by up, removed by down


def test_get_gi_asks_the_daemon_while_attached_and_drbdmeta_otherwise(cluster: Cluster):
    """8.4's drbdadm get-gi/show-gi: drbdsetup (the kernel's current UUIDs) for an attached
    minor, drbdmeta (the metadata on disk) when that has no disk."""
    n = cluster.node1
    assert n.drbdadm("-d", "get-gi", "r0").stdout.splitlines() == [
        "drbdsetup get-gi 0", f"drbdmeta 0 v08 {n.disk} internal get-gi"]
    n.drbdadm("create-md", "r0")
    fresh = "0000000000000004:0000000000000000:0000000000000000:0000000000000000:0:0:0:0:0:0:0\n"
    assert n.drbdadm("get-gi", "r0").stdout == fresh            # not up: drbdmeta
    n.drbdadm("up", "r0")
    n.drbdadm("primary", "--force", "r0")
    r = n.drbdadm("get-gi", "r0")
    assert r.stdout == n.snapshot()["uuids"] + ":1:1:1:0:0:0:0\n"
    assert r.stdout.split(":")[1] == "0000000000000004"        # the new current UUID's base
    assert r.stderr == ""                                       # no "might be stale" note
    assert "flags: Primary, StandAlone, UpToDate" in n.drbdadm("show-gi", "r0").stdout
    n.drbdadm("secondary", "r0")
    n.drbdadm("detach", "r0")
    r = n.drbdsetup("get-gi", "0", check=False)
    assert r.returncode == 10 and r.stderr == "0: Failure: (138) Device does not have a disk-config\n"
    r = n.drbdadm("get-gi", "r0")                               # detached: drbdmeta reads it
    assert re.fullmatch(r"[0-9A-F]{16}:0000000000000004:0{16}:0{16}:1:1:0:0:0:0:0\n", r.stdout)


def test_detach_attach_keeps_the_zero_copy_write_path(cluster: Cluster):
    """A large write leaves its handler's coroutine in pyfuse3's slot when the session
    ends; the next attach in the same daemon used to refuse its zero-copy writes then."""
    n = cluster.node1
    up_primary(n)
    data = os.urandom(4 << 20)
    for _ in range(2):
        fd = os.open(n.device, os.O_RDWR)
        try:
            os.pwrite(fd, data, 0)                # large writes: the zero-copy handler
            os.fsync(fd)
        finally:
            os.close(fd)
        n.drbdadm("secondary", "r0")
        n.drbdadm("detach", "r0")
        n.drbdadm("attach", "r0")
        n.drbdadm("primary", "r0")
    assert not [m for m in n.log_messages() if "zero-copy writes not installed" in m]
    fd = os.open(n.device, os.O_RDONLY)
    try:
        assert hashlib.sha256(os.pread(fd, len(data), 0)).digest() == \
            hashlib.sha256(data).digest()
    finally:
        os.close(fd)
