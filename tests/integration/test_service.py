"""contrib/drbd.service, contrib/drbd-service.sh and scripts/install-service.sh.

The unit is checked by systemd itself (``systemd-analyze verify``) after the installer put
this checkout's paths into it; the wrapper's start and stop run for real against a
single udrbd node (no peer: it never connects, the startup timeouts are cut to seconds).
"""
from __future__ import annotations

import configparser
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.nodes import WALKTHROUGH_CONF, Cluster

REPO = Path(__file__).resolve().parents[2]
WRAPPER = REPO / "contrib" / "drbd-service.sh"
INSTALLER = REPO / "scripts" / "install-service.sh"


def install(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(INSTALLER), *args],
                          env={**os.environ, "ROOT": str(root), **env},
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    r = install(tmp_path / "root")
    assert r.returncode == 0, r.stderr
    assert "skipped systemctl daemon-reload" in r.stdout
    return tmp_path / "root" / "etc" / "systemd" / "system" / "drbd.service"


def _parse_unit(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=True, interpolation=None, delimiters=("=",),
                                   comment_prefixes=("#", ";"))
    cp.optionxform = str
    cp.read_string(path.read_text())
    return cp


def test_unit_has_the_service_shape(unit: Path):
    cp = _parse_unit(unit)
    assert cp.sections() == ["Unit", "Service", "Install"]
    svc = cp["Service"]
    assert svc["Type"] == "oneshot" and svc["RemainAfterExit"] == "yes"
    assert svc["ExecStart"] == f"{WRAPPER} start"
    assert svc["ExecStop"] == f"{WRAPPER} stop"
    assert svc["Environment"] == f"UDRBD_BIN={REPO}/.venv/bin"
    assert svc["SyslogIdentifier"] == "drbd"        # the walk-through's "drbd: [" lines
    assert svc["TimeoutStartSec"] == "infinity"     # wfc-timeout decides (0 = forever)
    assert cp["Install"]["WantedBy"] == "multi-user.target"
    assert os.access(WRAPPER, os.X_OK)
    for tool in ("drbdadm", "python"):
        assert os.access(REPO / ".venv" / "bin" / tool, os.X_OK)


def _verify(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", "verify", "--man=no", str(path)],
                          capture_output=True, text=True, timeout=120)


def _complaints(r: subprocess.CompletedProcess, name: str) -> list[str]:
    return [line for line in r.stderr.splitlines() if name in line or "ignoring" in line]


def test_systemd_analyze_verify(unit: Path):
    assert Path("/usr/bin/systemd-analyze").exists(), "systemd-analyze is missing (apt: systemd)"
    r = _verify(unit)
    assert r.returncode == 0 and not _complaints(r, "drbd.service"), r.stderr


@pytest.mark.parametrize("old,new", [
    ("ExecStart=", "ExecStrat="),                           # a key systemd does not know
    (str(WRAPPER), "/nonexistent/drbd-service.sh"),         # a command that is not there
])
def test_systemd_analyze_verify_rejects_a_broken_unit(unit: Path, tmp_path: Path, old, new):
    """Control: the same check fails on a unit with one mistake."""
    bad = tmp_path / "drbd.service"
    bad.write_text(unit.read_text().replace(old, new))
    r = _verify(bad)
    assert r.returncode != 0 or _complaints(r, "drbd.service"), r.stderr


def test_installer_rejects_a_home_without_udrbd(tmp_path: Path):
    r = subprocess.run(["bash", str(INSTALLER), str(tmp_path)], capture_output=True, text=True,
                       env={**os.environ, "ROOT": "/"}, timeout=60)
    assert r.returncode == 1
    assert "drbd-service.sh is missing or not executable" in r.stderr
    r = install(tmp_path / "root", "relative/path")
    assert r.returncode == 1 and "must be an absolute path" in r.stderr


def _install_in_namespace(systemd_running: bool, tmp_path: Path) -> subprocess.CompletedProcess:
    """install-service.sh with ROOT=/ in a private mount namespace whose
    /etc/systemd/system (and /run/systemd) are empty tmpfs: this machine's stay untouched."""
    log = tmp_path / "systemctl.log"
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "systemctl").write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    (fake_bin / "systemctl").chmod(0o755)
    script = ("set -e; mount -t tmpfs udrbd-test /etc/systemd/system; "
              "mkdir -p /run/systemd; mount -t tmpfs udrbd-test /run/systemd; "
              + ("mkdir /run/systemd/system; " if systemd_running else "")
              + f'PATH={fake_bin}:$PATH bash {INSTALLER}; '
              "cat /etc/systemd/system/drbd.service > " + str(tmp_path / "installed"))
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k not in ("ROOT", "DRY_RUN")})


def test_installer_skips_daemon_reload_without_systemd(tmp_path: Path):
    before = os.path.exists("/etc/systemd/system/drbd.service")
    r = _install_in_namespace(False, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "systemd is not running on this machine (no /run/systemd/system): skipped " \
           "systemctl daemon-reload" in r.stdout
    assert not (tmp_path / "systemctl.log").exists()
    assert f"ExecStart={WRAPPER} start" in (tmp_path / "installed").read_text()
    assert os.path.exists("/etc/systemd/system/drbd.service") == before


def test_installer_reloads_a_running_systemd(tmp_path: Path):
    r = _install_in_namespace(True, tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "systemctl.log").read_text() == "daemon-reload\n"
    assert "systemctl daemon-reload done" in r.stdout


# -- the wrapper against a real node --------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(tmp_path: Path):
    conf = (WALKTHROUGH_CONF.replace("wfc-timeout 15;", "wfc-timeout 3;")
            .replace("degr-wfc-timeout 60;", "degr-wfc-timeout 2;"))
    c = Cluster(tmp_path, size="64M", port=_free_port(), conf_template=conf)
    try:
        yield c
    finally:
        c.cleanup()


def service(c: Cluster, action: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in c.node1.env.items() if k != "UDRBD_BIN"}   # the venv next to it
    r = subprocess.run([str(WRAPPER), action], env=env, capture_output=True, text=True,
                       timeout=timeout)
    c.node1._track()
    return r


def test_stop_with_nothing_running(cluster: Cluster):
    r = service(cluster, "stop")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Stopping all DRBD resources\n"


def test_stop_reports_a_broken_config(cluster: Cluster):
    cluster.config.write_text(cluster.config.read_text().replace("protocol C;", "protocol C"))
    r = service(cluster, "stop")
    assert r.returncode == 10, r.stdout + r.stderr
    assert f"{cluster.config}:" in r.stderr and "Parse error" in r.stderr


def test_wrapper_usage(cluster: Cluster):
    for args in ([], ["restart"], ["start", "now"]):
        r = subprocess.run([str(WRAPPER), *args], capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and "usage:" in r.stderr


def _mounted(path: Path) -> bool:
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(path) for line in f)


def test_start_brackets_up_and_stop_unmounts_and_downs(cluster: Cluster, tmp_path: Path):
    n = cluster.node1
    n.drbdadm("create-md", "r0")
    t0 = time.monotonic()
    r = service(cluster, "start")
    assert r.returncode == 0, r.stdout + r.stderr
    assert time.monotonic() - t0 < 60
    lines = r.stdout.splitlines()
    assert lines[:6] == ["[", "create res: r0", "prepare disk: r0", "adjust disk: r0",
                         "adjust net: r0", "]"], r.stdout
    assert n.drbdadm("cstate", "r0").stdout.strip() in ("WFConnection", "Unconnected")

    # the walk-through's node1: primary, ext3, mounted; then `systemctl stop drbd`
    n.drbdadm("primary", "--force", "r0")
    subprocess.run(["mkfs.ext3", "-q", "-F", str(n.device)], check=True, capture_output=True)
    mnt = tmp_path / "mnt test"                       # a space: findmnt escapes it
    mnt.mkdir()
    subprocess.run(["mount", str(n.device), str(mnt)], check=True, capture_output=True)
    (mnt / "hello").touch()
    r = service(cluster, "stop")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout == "Stopping all DRBD resources\n"
    assert not _mounted(mnt)
    assert n.drbdadm("cstate", "r0").stdout.strip() == "Unconfigured"
    assert not list(n.run_dir.glob("*.sock"))


def test_start_waits_for_the_peer_as_startup_says(cluster: Cluster):
    """No peer: start prints DRBD's waiting text and gives up after wfc-timeout (3 s)."""
    n = cluster.node1
    n.drbdadm("create-md", "r0")
    t0 = time.monotonic()
    r = service(cluster, "start")
    took = time.monotonic() - t0
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        out = r.stdout + r.stderr
        assert "DRBD's startup script waits for the peer node(s) to appear." in out
        assert "(These values are for resource 'r0'; 0 sec -> wait forever)" in out
        assert "the timeout\n   is 3 seconds. [wfc-timeout]" in out
        assert 3 <= took < 30
    finally:
        service(cluster, "stop")
