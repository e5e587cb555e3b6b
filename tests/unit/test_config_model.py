"""drbd.conf -> model: the walk-through config, includes, skip, inheritance, volumes,
floating hosts and host selection."""
import dataclasses
import os
from pathlib import Path

import pytest

from replicator.config import (Address, ConfigError, NotForThisHost, current_node,
                               load_config, parse_text)

DATA = Path(__file__).resolve().parent.parent / "data" / "conf"
WALKTHROUGH = DATA / "walkthrough.conf"

HOSTS = """  on node1 { device /dev/drbd0; disk /dev/sda9; address 127.0.0.1:7788; meta-disk internal; }
  on node2 { device /dev/drbd0; disk /dev/sda9; address 127.0.0.2:7788; meta-disk internal; }
"""


def res(body: str = "", hosts: str = HOSTS) -> str:
    return "resource r0 {\n" + body + "\n" + hosts + "}\n"


# --- the walk-through ---------------------------------------------------------------

def test_walkthrough_fixture_is_the_users_text_verbatim():
    shared = Path("/work/shared/WALKTHROUGH.md")
    if not shared.exists():
        pytest.skip("WALKTHROUGH.md not on this machine")
    assert WALKTHROUGH.read_text() in shared.read_text()


def test_walkthrough_parses_into_the_expected_model():
    cfg = load_config(str(WALKTHROUGH))
    assert cfg.path == str(WALKTHROUGH)
    assert cfg.files == (str(WALKTHROUGH),)
    assert cfg.global_options["usage-count"] == "no"
    assert list(cfg.resources) == ["r0"]
    r0 = cfg.resources["r0"]
    assert (r0.name, r0.file, r0.line) == ("r0", str(WALKTHROUGH), 3)
    assert r0.protocol == "C" and r0.net["protocol"] == "C"
    assert r0.startup["wfc-timeout"] == 15
    assert r0.startup["degr-wfc-timeout"] == 60
    assert r0.startup["outdated-wfc-timeout"] == 0
    assert r0.net["cram-hmac-alg"] == "sha1"
    assert r0.net["shared-secret"] == "secret"
    # syncer { rate 100M; } in common -> disk resync-rate in KiB/s, inherited
    assert cfg.common.disk["resync-rate"] == 102400
    assert r0.disk["resync-rate"] == 102400
    assert r0.explicit("disk") == frozenset()          # it came from common
    assert r0.explicit("net") == {"protocol", "cram-hmac-alg", "shared-secret"}
    assert [h.names for h in r0.hosts] == [("node1",), ("node2",)]
    n1, n2 = r0.hosts
    assert n1.address == Address("ipv4", "192.168.122.122", 7788)
    assert n2.address == Address("ipv4", "192.168.122.28", 7788)
    assert str(n1.address) == "ipv4 192.168.122.122:7788"
    assert (n1.line, n2.line) == (13, 19)
    for host in (n1, n2):
        (vol,) = host.volumes
        assert (vol.vnr, vol.device, vol.minor) == (0, "/dev/drbd0", 0)
        assert (vol.disk, vol.meta_disk, vol.meta_index) == ("/dev/sda9", "internal", None)
        assert vol.implicit and vol.meta_device == "/dev/sda9"
        assert vol.disk_options["resync-rate"] == 102400
        assert vol.disk_options["al-extents"] == 1237


def test_model_is_immutable():
    r0 = load_config(str(WALKTHROUGH)).resources["r0"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        r0.name = "x"
    with pytest.raises(TypeError):
        r0.net["timeout"] = 1
    with pytest.raises(TypeError):
        r0.hosts[0].volumes[0].disk_options["size"] = 1
    assert isinstance(r0.hosts, tuple) and isinstance(r0.hosts[0].volumes, tuple)


# --- host selection -------------------------------------------------------------------

def test_host_for_is_exact_and_case_sensitive():
    r0 = load_config(str(WALKTHROUGH)).resources["r0"]
    assert r0.host_for("node1").names == ("node1",)
    assert [h.names for h in r0.peers_of("node1")] == [("node2",)]
    assert [h.names for h in r0.peers_of("node2")] == [("node1",)]
    for other in ("NODE1", "node1.example.com", "node", "node3"):
        with pytest.raises(NotForThisHost) as e:
            r0.host_for(other)
        assert str(e.value) == "'r0' not defined in your config (for this host)."
        assert e.value.exit_code == 1
        assert isinstance(e.value, ConfigError)


def test_on_with_several_names():
    cfg = parse_text(res(hosts="""  on alpha beta { device /dev/drbd0; disk /dev/a; address 127.0.0.1:7788; meta-disk internal; }
  on gamma { device /dev/drbd0; disk /dev/a; address 127.0.0.2:7788; meta-disk internal; }
"""))
    r0 = cfg.resources["r0"]
    assert r0.host_for("beta") is r0.host_for("alpha")
    assert r0.peers_of("beta")[0].names == ("gamma",)


def test_current_node_honours_drbd_node(monkeypatch):
    monkeypatch.setenv("__DRBD_NODE__", "node2")
    assert current_node() == "node2"
    monkeypatch.delenv("__DRBD_NODE__")
    assert current_node() == os.uname().nodename
    monkeypatch.setenv("__DRBD_NODE__", "")          # empty = not set, as drbdadm
    assert current_node() == os.uname().nodename


def test_resources_for_node(monkeypatch):
    cfg = parse_text(res() + """resource r1 {
  on node2 { device /dev/drbd1; disk /dev/b; address 127.0.0.2:7789; meta-disk internal; }
  on node3 { device /dev/drbd1; disk /dev/b; address 127.0.0.3:7789; meta-disk internal; }
}
""")
    assert [r.name for r in cfg.resources_for("node1")] == ["r0"]
    assert [r.name for r in cfg.resources_for("node2")] == ["r0", "r1"]
    with pytest.raises(NotForThisHost):
        cfg.resource("nope")


# --- includes ---------------------------------------------------------------------------

def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_includes_relative_glob_nomatch_nested(tmp_path, monkeypatch):
    main = _write(tmp_path / "etc" / "drbd.conf", """# the default layout
include "drbd.d/global_common.conf";
include "drbd.d/*.res";
include "nothing/here/*.res";
include "drbd.d/more/*";
""")
    _write(tmp_path / "etc/drbd.d/global_common.conf",
           "global { disable-ip-verification; }\ncommon { net { protocol B; } }\n")
    _write(tmp_path / "etc/drbd.d/b.res", res().replace("r0", "rb"))
    _write(tmp_path / "etc/drbd.d/a.res", res().replace("r0", "ra")
           .replace("7788", "7790").replace("drbd0", "drbd2"))
    _write(tmp_path / "etc/drbd.d/ignored.txt", "this is not drbd.conf syntax")
    _write(tmp_path / "etc/drbd.d/more/c.conf", 'include "deeper.conf";\n')
    _write(tmp_path / "etc/drbd.d/more/deeper.conf", res().replace("r0", "rc")
           .replace("7788", "7791").replace("drbd0", "drbd3"))
    monkeypatch.chdir("/")          # relative to the including file, not the cwd
    cfg = load_config(str(main))
    assert list(cfg.resources) == ["ra", "rb", "rc"]      # glob order, then nesting
    assert cfg.global_options["disable-ip-verification"] is True
    assert cfg.resources["ra"].protocol == "B"            # common from an include
    assert cfg.resources["rc"].file == str(tmp_path / "etc/drbd.d/more/deeper.conf")
    assert cfg.resources["rc"].line == 1
    assert cfg.files[0] == str(main) and len(cfg.files) == 6


def test_include_of_missing_plain_file_is_an_error(tmp_path):
    main = _write(tmp_path / "drbd.conf", 'include "gone.conf";\n')
    with pytest.raises(ConfigError) as e:
        load_config(str(main))
    assert str(e.value) == f"{main}:1: Failed to open include file 'gone.conf'."
    assert e.value.exit_code == 10


def test_a_file_is_included_once(tmp_path):
    main = _write(tmp_path / "drbd.conf", 'include "*.res";\ninclude "a.res";\n')
    _write(tmp_path / "a.res", 'include "../' + tmp_path.name + '/a.res";\n' + res())
    cfg = load_config(str(main))
    assert list(cfg.resources) == ["r0"]


def test_errors_in_included_files_name_that_file(tmp_path):
    main = _write(tmp_path / "drbd.conf", 'include "sub/*.res";\n')
    _write(tmp_path / "sub/x.res", "\n\nresource r0 { frob; }\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(main))
    assert str(e.value).startswith(f"{tmp_path}/sub/x.res:3: Parse error: ")


def test_load_config_missing_file():
    with pytest.raises(ConfigError) as e:
        load_config("/nonexistent/drbd.conf")
    assert str(e.value) == "Can not open '/nonexistent/drbd.conf'."
    assert e.value.exit_code == 20


# --- skip, comments, strings -------------------------------------------------------------

def test_skip_sections_comments_and_quotes():
    cfg = parse_text("""# comment
skip { resource r9 { on x { weird stuff here; } } }
skip resource r8 { anything { nested { } } }
resource "r0" {   # trailing comment
  skip net { protocol Q; }
  net { shared-secret "with space and # hash"; }
  on node1 { skip { } device "/dev/drbd0"; disk "/dev/sda9"; address 127.0.0.1:7788; meta-disk internal; }
  on node2 { device /dev/drbd0; disk /dev/sda9; address 127.0.0.2:7788; meta-disk internal; }
}
""")
    assert list(cfg.resources) == ["r0"]
    r0 = cfg.resources["r0"]
    assert r0.net["shared-secret"] == "with space and # hash"
    assert r0.protocol == "C"


def test_quoted_host_name_that_looks_like_an_ip():
    cfg = parse_text(res(hosts=HOSTS.replace("on node1", 'on "10.0.0.1"')))
    assert cfg.resources["r0"].host_for("10.0.0.1").names == ("10.0.0.1",)


# --- inheritance -------------------------------------------------------------------------

def test_inheritance_common_resource_volume():
    cfg = parse_text("""common {
  net { ping-int 5; timeout 40; }
  disk { resync-rate 10M; al-extents 3833; }
  startup { wfc-timeout 30; }
  handlers { split-brain "/bin/common-handler"; }
}
resource r0 {
  net { timeout 50; }
  disk { al-extents 257; }
  handlers { fence-peer "/bin/fence"; }
  volume 0 { device minor 0; disk /dev/a; meta-disk internal; disk { c-max-rate 200M; } }
  volume 1 { device minor 1; disk /dev/b; meta-disk internal; }
  on node1 { address 127.0.0.1:7788; volume 1 { disk { resync-rate 1G; } } }
  on node2 { address 127.0.0.2:7788; volume 1 { disk /dev/c; } }
}
""")
    r0 = cfg.resources["r0"]
    assert r0.net["ping-int"] == 5 and r0.net["timeout"] == 50
    assert r0.disk["resync-rate"] == 10240 and r0.disk["al-extents"] == 257
    assert r0.startup["wfc-timeout"] == 30
    assert r0.handlers["split-brain"] == "/bin/common-handler"
    assert r0.handlers["fence-peer"] == "/bin/fence"
    assert r0.handlers["pri-lost"] == ""
    n1, n2 = r0.hosts
    v0, v1 = n1.volumes
    assert v0.disk_options["c-max-rate"] == 200 * 1024        # resource-level volume
    assert v0.disk_options["al-extents"] == 257
    assert v1.disk_options["resync-rate"] == 1024 * 1024      # host volume overrides
    assert v1.disk_options["c-max-rate"] == 102400
    assert [v.disk for v in n2.volumes] == ["/dev/a", "/dev/c"]   # host overrides disk
    assert [v.minor for v in n2.volumes] == [0, 1]
    assert not v0.implicit and not v1.implicit
    assert cfg.common.net["ping-int"] == 5 and cfg.common.net["timeout"] == 40


def test_resource_level_device_disk_meta_are_volume0_defaults_host_overrides():
    cfg = parse_text("""resource r0 {
  device /dev/drbd7; disk /dev/sdb1; meta-disk internal;
  on node1 { address 127.0.0.1:7788; }
  on node2 { address 127.0.0.2:7788; disk /dev/sdc1; meta-disk /dev/md0 [3]; }
}
""")
    n1, n2 = cfg.resources["r0"].hosts
    assert (n1.volumes[0].device, n1.volumes[0].minor, n1.volumes[0].disk) == \
        ("/dev/drbd7", 7, "/dev/sdb1")
    v = n2.volumes[0]
    assert (v.disk, v.meta_disk, v.meta_index, v.meta_device) == \
        ("/dev/sdc1", "/dev/md0", 3, "/dev/md0")


# --- device / disk / meta-disk / address forms --------------------------------------------

@pytest.mark.parametrize("stmt, device, minor, named", [
    ("device /dev/drbd3;", "/dev/drbd3", 3, True),
    ("device drbd4;", "/dev/drbd4", 4, True),
    ("device minor 11;", "/dev/drbd11", 11, False),
    ("device /dev/drbd_foo minor 3;", "/dev/drbd_foo", 3, True),
    ("device /dev/drbd5 minor 5;", "/dev/drbd5", 5, True),
    ("device /tmp/x/drbd0 minor 0;", "/tmp/x/drbd0", 0, True),
])
def test_device_forms(stmt, device, minor, named):
    cfg = parse_text(res(hosts=f"""  on node1 {{ {stmt} disk /dev/a; address 127.0.0.1:7788; meta-disk internal; }}
  on node2 {{ device minor 99; disk /dev/a; address 127.0.0.2:7788; meta-disk internal; }}
"""))
    vol = cfg.resources["r0"].host_for("node1").volumes[0]
    assert (vol.device, vol.minor, vol.device_named) == (device, minor, named)


@pytest.mark.parametrize("stmt, disk, meta, index, text", [
    ("disk none; meta-disk internal;", None, "internal", None, "internal"),
    ("disk /dev/a; meta-disk /dev/md;", "/dev/a", "/dev/md", None, "flexible"),
    ("disk /dev/a; meta-disk /dev/md [2];", "/dev/a", "/dev/md", 2, "2"),
    ("disk /dev/a; flexible-meta-disk /dev/md;", "/dev/a", "/dev/md", None, "flexible"),
    ("disk /dev/a; flexible-meta-disk internal;", "/dev/a", "internal", None, "internal"),
])
def test_disk_and_meta_disk_forms(stmt, disk, meta, index, text):
    cfg = parse_text(res(hosts=f"""  on node1 {{ device minor 0; {stmt} address 127.0.0.1:7788; }}
  on node2 {{ device minor 0; {stmt} address 127.0.0.2:7788; }}
"""))
    vol = cfg.resources["r0"].hosts[0].volumes[0]
    assert (vol.disk, vol.meta_disk, vol.meta_index, vol.meta_index_text) == \
        (disk, meta, index, text)
    assert vol.diskless == (disk is None)


@pytest.mark.parametrize("stmt, af, host, port, text", [
    ("address 10.0.0.1:7789;", "ipv4", "10.0.0.1", 7789, "ipv4 10.0.0.1:7789"),
    ("address ipv4 10.0.0.1:7789;", "ipv4", "10.0.0.1", 7789, "ipv4 10.0.0.1:7789"),
    ("address ipv6 [fd01::1]:7789;", "ipv6", "fd01::1", 7789, "ipv6 [fd01::1]:7789"),
    ("address ipv6 [::ffff:1.2.3.4]:1;", "ipv6", "::ffff:1.2.3.4", 1, "ipv6 [::ffff:1.2.3.4]:1"),
    ("address ssocks 10.0.0.1:65535;", "ssocks", "10.0.0.1", 65535, "ssocks 10.0.0.1:65535"),
    ("address sci 10.0.0.1:7789;", "ssocks", "10.0.0.1", 7789, "ssocks 10.0.0.1:7789"),
    ("address sdp 10.0.0.1:7789;", "sdp", "10.0.0.1", 7789, "sdp 10.0.0.1:7789"),
])
def test_address_forms(stmt, af, host, port, text):
    cfg = parse_text(res(hosts=f"""  on node1 {{ device minor 0; disk /dev/a; meta-disk internal; {stmt} }}
  on node2 {{ device minor 0; disk /dev/a; meta-disk internal; address 127.0.0.2:7788; }}
"""))
    a = cfg.resources["r0"].hosts[0].address
    assert (a.af, a.host, a.port, str(a)) == (af, host, port, text)


def test_floating_sections():
    cfg = parse_text("""resource r0 {
  device minor 0; disk /dev/a; meta-disk internal;
  floating 192.0.2.10:7788;
  floating ipv6 [2001:db8::10]:7788 { disk /dev/b; }
}
""")
    r0 = cfg.resources["r0"]
    f4, f6 = r0.hosts
    assert f4.floating and f4.names == () and str(f4.address) == "ipv4 192.0.2.10:7788"
    assert f6.volumes[0].disk == "/dev/b" and f6.label == "ipv6 [2001:db8::10]:7788"
    assert r0.host_for("192.0.2.10") is f4            # __DRBD_NODE__=ADDRESS, as 8.4
    assert r0.peers_of("2001:db8::10") == (f4,)
    with pytest.raises(NotForThisHost):
        r0.host_for("node1")


def test_floating_matches_an_address_of_this_machine():
    cfg = parse_text("""resource r0 {
  device minor 0; disk /dev/a; meta-disk internal;
  floating 127.0.0.1:7788;
  floating 192.0.2.10:7788;
}
""")
    r0 = cfg.resources["r0"]
    assert r0.host_for("some-name") is r0.hosts[0]


def test_explicit_volumes_are_sorted_and_host_volume_numbers():
    cfg = parse_text("""resource r0 {
  volume 2 { device minor 12; disk /dev/c; meta-disk internal; }
  volume 0 { device minor 10; disk /dev/a; meta-disk internal; }
  on node1 { address 127.0.0.1:7788; }
  on node2 { address 127.0.0.2:7788; }
}
""")
    n1 = cfg.resources["r0"].hosts[0]
    assert [(v.vnr, v.minor) for v in n1.volumes] == [(0, 10), (2, 12)]
    assert n1.volume(2).disk == "/dev/c"
    with pytest.raises(KeyError):
        n1.volume(1)


def test_one_host_section_is_accepted_as_8_4_does():
    cfg = parse_text(res(hosts=HOSTS.splitlines(True)[0]))
    r0 = cfg.resources["r0"]
    assert r0.peers_of("node1") == ()


def test_syncer_keywords_go_to_their_8_4_sections():
    cfg = parse_text(res("""syncer { rate 33M; al-extents 257; verify-alg sha1; csums-alg md5;
  use-rle no; cpu-mask ff; on-no-data-accessible suspend-io; after r0; c-plan-ahead 0;
  c-delay-target 5; c-fill-target 1M; c-max-rate 1G; c-min-rate 4M; }"""))
    r0 = cfg.resources["r0"]
    assert r0.disk["resync-rate"] == 33 * 1024
    assert r0.disk["al-extents"] == 257
    assert r0.disk["resync-after"] == "r0"
    assert (r0.disk["c-plan-ahead"], r0.disk["c-delay-target"]) == (0, 5)
    assert r0.disk["c-fill-target"] == 2048                       # sectors
    assert (r0.disk["c-max-rate"], r0.disk["c-min-rate"]) == (1 << 20, 4096)
    assert (r0.net["verify-alg"], r0.net["csums-alg"], r0.net["use-rle"]) == ("sha1", "md5", False)
    assert r0.options["cpu-mask"] == "ff"
    assert r0.options["on-no-data-accessible"] == "suspend-io"
    assert [s.name for s in r0.settings["disk"]][:2] == ["resync-rate", "al-extents"]


def test_protocol_in_net_and_resource_level_last_wins():
    assert parse_text(res("net { protocol A; }")).resources["r0"].protocol == "A"
    assert parse_text(res("protocol b;")).resources["r0"].protocol == "B"
    assert parse_text(res("protocol A; net { protocol B; }")).resources["r0"].protocol == "B"


def test_startup_become_primary_on_and_flags():
    r0 = parse_text(res("startup { become-primary-on node1; wait-after-sb; stacked-timeouts; }")) \
        .resources["r0"]
    assert r0.startup["become-primary-on"] == ("node1",)
    assert r0.startup["wait-after-sb"] is True and r0.startup["stacked-timeouts"] is True
    both = parse_text(res("net { allow-two-primaries; } startup { become-primary-on both; }"))
    assert both.resources["r0"].startup["become-primary-on"] == ("both",)


def test_deprecated_options_are_ignored_and_aliases_renamed():
    r0 = parse_text(res("""disk { delay-probe-volume 5; rate 1M; after r0; }
  handlers { outdate-peer "/bin/x"; }""")).resources["r0"]
    assert r0.disk["resync-rate"] == 1024 and r0.disk["resync-after"] == "r0"
    assert r0.handlers["fence-peer"] == "/bin/x"
    assert "delay-probe-volume" not in r0.disk


def test_warnings_are_reported_not_raised():
    cfg = parse_text(res() + "global { usage-count no; }\n")
    assert cfg.warnings == ("drbd.conf:6: You should put the global {} section\n"
                            "\tin front of any resource {} section",)
