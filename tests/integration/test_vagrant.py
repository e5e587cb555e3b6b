"""vagrant/: the two-VM demo, checked without starting a VM.

* ``vagrant validate`` of the Vagrantfile with each provider (libvirt through Debian's
  vagrant-libvirt plugin; VirtualBox, which Debian does not package, through a VBoxManage
  that only answers ``--version`` so that Vagrant's own VirtualBox config checks run), plus
  the machines as Vagrant itself loads them (hostnames, addresses, disks, synced repo);
* shellcheck of every shell script in vagrant/, contrib/ and scripts/install-service.sh;
* provision.sh against a throwaway root: the walk-through's /etc/drbd.conf (read back with
  udrbd's own parser) with the detected second disk, the tool links, the unit file.

Nothing here contacts 192.168.122.x: those addresses are only written into files.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from replicator.config import current_node, load_config
from tests.integration import loopdev

REPO = Path(__file__).resolve().parents[2]
VAGRANT_DIR = REPO / "vagrant"
PROVISION = VAGRANT_DIR / "provision.sh"
TOOLS = ("drbdadm", "drbdsetup", "drbdmeta", "drbdmon")

# The walk-through's configuration, verbatim, with the VM's backing disk for /dev/sda9.
WALKTHROUGH_CONF = """\
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
disk @DISK@;
address 192.168.122.122:7788;
meta-disk internal;
}
on node2 {
device /dev/drbd0;
disk @DISK@;
address 192.168.122.28:7788;
meta-disk internal;
}
}
"""


# -- vagrant -------------------------------------------------------------------------------
def _apt_install(*packages: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                           *packages], env=env, capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module")
def vagrant() -> str:
    """Debian's vagrant and vagrant-libvirt, installed with apt if missing; FAIL if not."""
    if shutil.which("vagrant") is None or not Path(
            "/usr/share/doc/vagrant-libvirt").is_dir():
        r = _apt_install("vagrant", "vagrant-libvirt")
        if shutil.which("vagrant") is None or r.returncode != 0:
            policy = subprocess.run(["apt-cache", "policy", "vagrant", "vagrant-libvirt"],
                                    capture_output=True, text=True).stdout
            pytest.fail("vagrant/vagrant-libvirt are not installed and `apt-get install "
                        f"vagrant vagrant-libvirt` failed (exit {r.returncode}):\n"
                        f"{r.stderr[-3000:]}\napt-cache policy:\n{policy}")
    return shutil.which("vagrant")


def _vagrant_env(tmp_path: Path, cwd: Path, **extra: str) -> dict:
    """Vagrant state (home, .vagrant) in tmp_path, no version check over the network."""
    return {**os.environ, "VAGRANT_CHECKPOINT_DISABLE": "1",
            "VAGRANT_HOME": str(tmp_path / "vagrant.d"),
            "VAGRANT_DOTFILE_PATH": str(tmp_path / "dot-vagrant"),
            "VAGRANT_CWD": str(cwd), **extra}


def _vboxmanage_version_only(tmp_path: Path) -> Path:
    """A VBoxManage that answers only ``--version`` and records every call."""
    bindir = tmp_path / "vbox-bin"
    bindir.mkdir()
    stub = bindir / "VBoxManage"
    stub.write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/vbox-calls\n'
                    'if [ "$*" = --version ]; then echo 7.0.14r161095; exit 0; fi\nexit 1\n')
    stub.chmod(0o755)
    return bindir


def _validate(vagrant: str, tmp_path: Path, cwd: Path, provider: str):
    extra = {"VAGRANT_DEFAULT_PROVIDER": provider}
    if provider == "virtualbox":
        extra["PATH"] = f"{_vboxmanage_version_only(tmp_path)}:{os.environ['PATH']}"
    return subprocess.run([vagrant, "validate"], env=_vagrant_env(tmp_path, cwd, **extra),
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def no_dot_vagrant_in_repo():
    before = (VAGRANT_DIR / ".vagrant").exists()
    yield
    if not before:
        assert not (VAGRANT_DIR / ".vagrant").exists(), "vagrant wrote vagrant/.vagrant"


@pytest.mark.parametrize("provider", ["libvirt", "virtualbox"])
def test_vagrantfile_validates(vagrant, tmp_path, provider, no_dot_vagrant_in_repo):
    r = _validate(vagrant, tmp_path, VAGRANT_DIR, provider)
    assert r.returncode == 0, f"vagrant validate ({provider}):\n{r.stdout}\n{r.stderr}"
    assert "Vagrantfile validated successfully." in r.stdout
    if provider == "virtualbox":     # the stub only told Vagrant which version is installed
        calls = set((tmp_path / "vbox-calls").read_text().split("\n")) - {""}
        assert calls == {"--version"}


@pytest.mark.parametrize("provider,old,new,reported", [
    ("libvirt", "lv.memory", "lv.memroy", "memroy"),
    ("virtualbox", "vb.memory", "vb.memroy", "memroy"),
    ("libvirt", 'path: "provision.sh"', 'path: "provison.sh"', "provison.sh"),
])
def test_validate_rejects_a_broken_copy(vagrant, tmp_path, provider, old, new, reported):
    """Control: the same validation run fails on a Vagrantfile with one mistake."""
    broken = tmp_path / "vagrant"
    broken.mkdir()
    shutil.copy(PROVISION, broken / "provision.sh")
    text = (VAGRANT_DIR / "Vagrantfile").read_text()
    assert old in text
    (broken / "Vagrantfile").write_text(text.replace(old, new))
    r = _validate(vagrant, tmp_path, broken, provider)
    assert r.returncode != 0, r.stdout
    assert reported in r.stdout + r.stderr


LOAD_MACHINES = r"""
require "json"
require "vagrant"
env = Vagrant::Environment.new(cwd: ENV["VAGRANT_CWD"])
out = {}
env.machine_names.each do |name|
  c = env.vagrantfile.machine_config(name, :libvirt, env.boxes)[:config]
  out[name] = {
    "box" => c.vm.box, "hostname" => c.vm.hostname,
    "networks" => c.vm.networks.map { |t, o| [t.to_s, o[:ip]] },
    "synced" => c.vm.synced_folders.values.map { |o|
      [o[:guestpath], o[:hostpath], o[:type].to_s, !!o[:disabled]] },
    "provisioners" => c.vm.provisioners.map { |p| [p.type.to_s, p.config.path] },
    "libvirt_disks" => c.vm.get_provider_config(:libvirt).disks.map { |d|
      [d[:device], d[:bus], d[:size]] },
    "vbox_customize" => c.vm.get_provider_config(:virtualbox).customizations.map { |e, cmd|
      cmd.map(&:to_s) },
  }
end
puts JSON.generate(out)
"""


def test_machines_as_vagrant_loads_them(vagrant, tmp_path, no_dot_vagrant_in_repo):
    r = subprocess.run(["ruby", "-e", LOAD_MACHINES], env=_vagrant_env(tmp_path, VAGRANT_DIR),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    machines = json.loads(r.stdout.strip().splitlines()[-1])
    assert sorted(machines) == ["node1", "node2"]
    for name, ip in (("node1", "192.168.122.122"), ("node2", "192.168.122.28")):
        m = machines[name]
        assert m["box"] == "debian/bookworm64"
        assert m["hostname"] == name
        assert ["private_network", ip] in m["networks"]
        synced = {s[0]: s for s in m["synced"]}
        assert synced["/vagrant"][3] is True                 # the vagrant/ folder: not synced
        guest, host, kind, disabled = synced["/opt/udrbd"]
        assert (VAGRANT_DIR / host).resolve() == REPO and kind == "rsync" and not disabled
        assert m["provisioners"] == [["shell", "provision.sh"]]
        assert m["libvirt_disks"] == [["vdb", "virtio", "2G"]]
        attach = [c for c in m["vbox_customize"] if c[0] == "storageattach"]
        assert len(attach) == 1 and "--medium" in attach[0]
        assert attach[0][attach[0].index("--medium") + 1].endswith(f"udrbd-{name}-disk.vdi")


# -- shellcheck ----------------------------------------------------------------------------
def _shell_scripts() -> list[Path]:
    found = {REPO / "scripts" / "install-service.sh"}
    for d in (REPO / "vagrant", REPO / "contrib"):
        for p in d.iterdir():
            if p.is_file() and (p.suffix == ".sh" or p.read_bytes()[:2] == b"#!"
                                and b"sh" in p.read_bytes().split(b"\n", 1)[0]):
                found.add(p)
    return sorted(found)


def test_the_expected_scripts_are_found():
    names = {str(p.relative_to(REPO)) for p in _shell_scripts()}
    assert {"vagrant/provision.sh", "contrib/drbd-service.sh", "contrib/outdate-peer-ssh.sh",
            "scripts/install-service.sh"} <= names


@pytest.mark.parametrize("script", _shell_scripts(), ids=lambda p: str(p.relative_to(REPO)))
def test_shellcheck_clean(script: Path):
    r = subprocess.run(["shellcheck", "--severity=style", str(script)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "set -euo pipefail" in script.read_text()
    assert script.stat().st_mode & stat.S_IXUSR, f"{script} is not executable"


def test_shellcheck_flags_a_bad_script(tmp_path):
    """Control: the shellcheck run above does report problems."""
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/bash\nset -euo pipefail\nrm -rf $1/*\n")
    r = subprocess.run(["shellcheck", str(bad)], capture_output=True, text=True)
    assert r.returncode != 0 and "SC2086" in r.stdout


# -- provision.sh against a throwaway root ------------------------------------------------
@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "dev").mkdir(parents=True)
    return r


@pytest.fixture
def blank_disk(tmp_path: Path):
    """A loop device over a blank 64 MiB file: stands in for the VM's second disk."""
    img = tmp_path / "disk.img"
    subprocess.run(["truncate", "-s", "64M", str(img)], check=True)
    with loopdev.loop_device(str(img)) as dev:
        yield dev


def _node_for(root: Path, name: str, loop: str) -> None:
    """ROOT/dev/NAME: a block device node with the loop device's numbers."""
    rdev = os.stat(loop).st_rdev
    os.mknod(root / "dev" / name, 0o600 | stat.S_IFBLK, rdev)


def provision(root: Path, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("DISK", "SKIP_APT")}
    full.update({"ROOT": str(root), "DRY_RUN": "1", "UDRBD_SRC": str(REPO), **env})
    return subprocess.run(["bash", str(PROVISION)], env=full, capture_output=True, text=True,
                          timeout=120)


SYSTEM_PATHS = [Path("/etc/drbd.conf"), Path("/etc/systemd/system/drbd.service"),
                *(Path("/usr/local/sbin") / t for t in TOOLS)]


def _system_state() -> dict:
    out = {}
    for p in SYSTEM_PATHS:
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            out[str(p)] = None
            continue
        body = os.readlink(p) if stat.S_ISLNK(st.st_mode) else hashlib.sha256(
            p.read_bytes()).hexdigest()
        out[str(p)] = (st.st_mtime_ns, body)
    return out


@pytest.mark.parametrize("name", ["vdb", "sdb", "xvdb"])
def test_provision_writes_the_walkthrough_setup(root, blank_disk, name, monkeypatch):
    _node_for(root, name, blank_disk)
    before = _system_state()
    r = provision(root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _system_state() == before, "provision.sh touched this machine's files"

    # the commands that change a machine were only printed
    assert "would run: apt-get install -y -qq --no-install-recommends make python3-venv" \
        in r.stdout
    assert f"would run: make -C {REPO} setup" in r.stdout
    assert "skipped systemctl daemon-reload" in r.stdout

    conf = root / "etc" / "drbd.conf"
    assert conf.read_text() == WALKTHROUGH_CONF.replace("@DISK@", f"/dev/{name}")
    cfg = load_config(str(conf))
    assert cfg.global_options["usage-count"] == "no"
    assert list(cfg.resources) == ["r0"]
    r0 = cfg.resources["r0"]
    assert r0.protocol == "C"
    assert r0.startup["wfc-timeout"] == 15 and r0.startup["degr-wfc-timeout"] == 60
    assert r0.net["cram-hmac-alg"] == "sha1" and r0.net["shared-secret"] == "secret"
    assert r0.disk["resync-rate"] == 100 * 1024         # syncer { rate 100M; } in KiB/s
    for node, ip in (("node1", "192.168.122.122"), ("node2", "192.168.122.28")):
        monkeypatch.setenv("__DRBD_NODE__", node)
        node_name = current_node()
        assert node_name == node
        assert [res.name for res in cfg.resources_for(node_name)] == ["r0"]
        host = r0.host_for(node_name)
        assert (host.address.af, host.address.host, host.address.port) == ("ipv4", ip, 7788)
        (vol,) = host.volumes
        assert (vol.device, vol.minor, vol.disk, vol.meta_disk) == (
            "/dev/drbd0", 0, f"/dev/{name}", "internal")
        assert [p.names for p in r0.peers_of(node_name)] == [
            ("node2",) if node == "node1" else ("node1",)]

    for tool in TOOLS:
        link = root / "usr" / "local" / "sbin" / tool
        assert link.is_symlink() and os.readlink(link) == str(REPO / ".venv" / "bin" / tool)
        assert os.access(link, os.X_OK), f"{link} -> {os.readlink(link)} is not executable"

    unit = (root / "etc" / "systemd" / "system" / "drbd.service").read_text()
    assert not re.search(r"@[A-Z_]+@", unit), unit
    assert f"ExecStart={REPO}/contrib/drbd-service.sh start\n" in unit
    assert f"ExecStop={REPO}/contrib/drbd-service.sh stop\n" in unit
    assert f"Environment=UDRBD_BIN={REPO}/.venv/bin\n" in unit


def test_provision_twice_gives_the_same_files(root, blank_disk):
    _node_for(root, "vdb", blank_disk)
    assert provision(root).returncode == 0
    first = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}
    links = {p: os.readlink(p) for p in root.rglob("*") if p.is_symlink()}
    r = provision(root)
    assert r.returncode == 0, r.stderr
    assert {p: p.read_bytes() for p in first} == first
    assert {p: os.readlink(p) for p in root.rglob("*") if p.is_symlink()} == links
    assert not list((root / "etc").glob(".drbd.conf.*"))        # no temporary left over


def test_provision_without_a_second_disk_fails_and_writes_nothing(root):
    r = provision(root)
    assert r.returncode == 1
    assert "no second disk: none of /dev/vdb, /dev/sdb, /dev/xvdb" in r.stderr
    assert not (root / "etc").exists()


def test_provision_refuses_a_disk_with_a_filesystem(root, blank_disk):
    subprocess.run(["mkfs.ext4", "-q", blank_disk], check=True)
    _node_for(root, "vdb", blank_disk)
    r = provision(root)
    assert r.returncode == 1
    assert "/dev/vdb is not blank and holds no DRBD metadata (found: ext4)" in r.stderr
    assert not (root / "etc").exists()


def test_provision_accepts_a_disk_after_the_demo(root, blank_disk):
    """Re-provisioning after create-md and mkfs.ext3 on the device: DRBD metadata is ours."""
    subprocess.run(["mkfs.ext3", "-q", "-F", blank_disk, "60M"], check=True,
                   capture_output=True)
    subprocess.run([str(REPO / ".venv" / "bin" / "drbdmeta"), "--force", "0", "v08", blank_disk,
                    "internal", "create-md"], check=True, capture_output=True)
    _node_for(root, "sdb", blank_disk)
    r = provision(root)
    assert r.returncode == 0, r.stderr
    assert "disk /dev/sdb;" in (root / "etc" / "drbd.conf").read_text()


def test_provision_honours_disk(root, blank_disk):
    _node_for(root, "vdc", blank_disk)
    r = provision(root, DISK="/dev/vdc")
    assert r.returncode == 0, r.stderr
    assert (root / "etc" / "drbd.conf").read_text() == WALKTHROUGH_CONF.replace(
        "@DISK@", "/dev/vdc")


def test_provision_needs_the_repository(root, blank_disk, tmp_path):
    _node_for(root, "vdb", blank_disk)
    r = provision(root, UDRBD_SRC=str(tmp_path / "nowhere"))
    assert r.returncode == 1
    assert "no udrbd repository at" in r.stderr
