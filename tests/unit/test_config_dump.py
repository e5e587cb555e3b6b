"""``drbdadm dump`` normal form (golden texts captured from drbdadm-84) and
dump -> parse -> dump stability."""
from pathlib import Path

import pytest

from replicator.config import (NotForThisHost, dump_config, esc, load_config, parse_text)

DATA = Path(__file__).resolve().parent.parent / "data" / "conf"

WALKTHROUGH_DUMP = """\
# {path}
global {{
    usage-count no;
    cmd-timeout-medium 600;
    cmd-timeout-long 0;
}}

common {{
    disk {{
        resync-rate      100M;
    }}
}}

# resource r0 on node1: not ignored, not stacked
# defined at {path}:3
resource r0 {{
    on node1 {{
        device           /dev/drbd0 minor 0;
        disk             /dev/sda9;
        meta-disk        internal;
        address          ipv4 192.168.122.122:7788;
    }}
    on node2 {{
        device           /dev/drbd0 minor 0;
        disk             /dev/sda9;
        meta-disk        internal;
        address          ipv4 192.168.122.28:7788;
    }}
    net {{
        protocol           C;
        cram-hmac-alg    sha1;
        shared-secret    secret;
    }}
    startup {{
        wfc-timeout       15;
        degr-wfc-timeout  60;
    }}
}}

"""

VOLUMES_CONF = """global { disable-ip-verification; }
resource r0 {
  device minor 5; disk /dev/sdb1; meta-disk /dev/sdz [2];
  disk { on-io-error detach; }
  on node1 { address 127.0.0.1:7788; }
  on node2 node3 { address ipv6 [fd01::1]:7788; disk /dev/sdc; meta-disk /dev/sdy; }
}
resource r1 {
  volume 0 { device /dev/drbd1; disk /dev/a; meta-disk internal; }
  volume 3 { device /dev/drbd_foo minor 3; disk none; flexible-meta-disk /dev/md; }
  on node1 { address sdp 127.0.0.1:7789; volume 3 { disk /dev/x; disk { al-extents 100; } } }
  floating 10.0.0.9:7789 { }
}
resource r2 {
  on node1 { device /dev/drbd9; disk /dev/a; address 127.0.0.1:7790; meta-disk internal; }
}
"""
# drbdadm-84 -c volumes.conf dump all, with __DRBD_NODE__=node1
VOLUMES_DUMP = """\
# {path}
global {{
    disable-ip-verification;
    cmd-timeout-medium 600;
    cmd-timeout-long 0;
}}

# resource r0 on node1: not ignored, not stacked
# defined at {path}:2
resource r0 {{
    on node1 {{
        device           minor 5;
        disk             /dev/sdb1;
        meta-disk        /dev/sdz [2];
        address          ipv4 127.0.0.1:7788;
    }}
    on node2 node3 {{
        device           minor 5;
        disk             /dev/sdc;
        meta-disk        /dev/sdy;
        address          ipv6 [fd01::1]:7788;
    }}
    disk {{
        on-io-error      detach;
    }}
}}

# resource r1 on node1: not ignored, not stacked
# defined at {path}:8
resource r1 {{
    on node1 {{
        volume 0 {{
            device       /dev/drbd1 minor 1;
            disk         /dev/a;
            meta-disk    internal;
        }}
        volume 3 {{
            disk {{
                al-extents 100;
            }}
            device       /dev/drbd_foo minor 3;
            disk         /dev/x;
            meta-disk        /dev/md;
        }}
        address          sdp 127.0.0.1:7789;
    }}
    floating ipv4 10.0.0.9:7789 {{
        volume 0 {{
            device       /dev/drbd1 minor 1;
            disk         /dev/a;
            meta-disk    internal;
        }}
        volume 3 {{
            device       /dev/drbd_foo minor 3;
            disk         none;
            meta-disk        /dev/md;
        }}
    }}
}}

# resource r2 on node1: not ignored, not stacked
# defined at {path}:14
resource r2 {{
    on node1 {{
        device           /dev/drbd9 minor 9;
        disk             /dev/a;
        meta-disk        internal;
        address          ipv4 127.0.0.1:7790;
    }}
}}

"""

OPTIONS_CONF = """global { disable-ip-verification; minor-count 5; dialog-refresh 3; usage-count yes;
  cmd-timeout-short 7; cmd-timeout-medium 122; cmd-timeout-long 900; }
common {
  handlers { fence-peer "/usr/lib/drbd/crm-fence-peer.sh --timeout 30"; outdate-peer /bin/true; split-brain "a\\"b"; }
  syncer { rate 33M; al-extents 257; verify-alg sha1; csums-alg md5; use-rle; cpu-mask ff; on-no-data-accessible suspend-io; after r0; c-plan-ahead 0; }
  startup { become-primary-on both; wfc-timeout 10; stacked-timeouts; wait-after-sb; }
  net { no-tcp-cork; allow-two-primaries; always-asbp no; max-buffers 8K; sndbuf-size 1M; after-sb-0pri discard-node-node1; shared-secret ""; cram-hmac-alg "a b"; }
  disk { no-disk-barrier; disk-flushes yes; size 10G; fencing resource-only; }
  options { cpu-mask 3; }
}
resource r0 {
  on node1 { device /dev/drbd0; disk /dev/sda9; address 127.0.0.1:7788; meta-disk internal; }
  on node2 { device /dev/drbd0; disk /dev/sda9; address 127.0.0.2:7788; meta-disk internal; }
}
"""
OPTIONS_DUMP = """\
# {path}
global {{
    disable-ip-verification;
    minor-count 5;
    dialog-refresh 3;
    usage-count yes;
    cmd-timeout-short 7;
    cmd-timeout-medium 122;
    cmd-timeout-long 900;
}}

common {{
    options {{
        cpu-mask          ff;
        on-no-data-accessible suspend-io;
        cpu-mask           3;
    }}
    net {{
        verify-alg       sha1;
        csums-alg        md5;
        use-rle          yes;
        tcp-cork          no;
        allow-two-primaries yes;
        always-asbp       no;
        max-buffers       8K;
        sndbuf-size       1M;
        after-sb-0pri    discard-node-node1;
        shared-secret     "";
        cram-hmac-alg    "a b";
    }}
    disk {{
        resync-rate      33M;
        al-extents       257;
        resync-after      r0;
        c-plan-ahead       0;
        disk-barrier      no;
        disk-flushes     yes;
        size             10G;
        fencing          resource-only;
    }}
    startup {{
        wfc-timeout       10;
        wait-after-sb    yes;
        stacked-timeouts;
        become-primary-on both;
    }}
    handlers {{
        fence-peer       "/usr/lib/drbd/crm-fence-peer.sh --timeout 30";
        fence-peer       /bin/true;
        split-brain      "a\\"b";
    }}
}}

# resource r0 on node1: not ignored, not stacked
# defined at {path}:11
resource r0 {{
    on node1 {{
        device           /dev/drbd0 minor 0;
        disk             /dev/sda9;
        meta-disk        internal;
        address          ipv4 127.0.0.1:7788;
    }}
    on node2 {{
        device           /dev/drbd0 minor 0;
        disk             /dev/sda9;
        meta-disk        internal;
        address          ipv4 127.0.0.2:7788;
    }}
}}

"""


def _load(tmp_path: Path, text: str, name: str = "drbd.conf"):
    path = tmp_path / name
    path.write_text(text)
    return load_config(str(path)), str(path)


def test_walkthrough_dump_golden():
    path = str(DATA / "walkthrough.conf")
    assert dump_config(load_config(path), None, "node1") == WALKTHROUGH_DUMP.format(path=path)
    assert dump_config(load_config(path), ["all"], "node1") == WALKTHROUGH_DUMP.format(path=path)


def test_walkthrough_dump_uses_drbd_node(monkeypatch):
    path = str(DATA / "walkthrough.conf")
    monkeypatch.setenv("__DRBD_NODE__", "node2")
    text = dump_config(load_config(path))
    assert "# resource r0 on node2: not ignored, not stacked\n" in text
    monkeypatch.setenv("__DRBD_NODE__", "elsewhere")
    assert "# resource r0 on elsewhere: ignored, not stacked\n" in dump_config(load_config(path))


@pytest.mark.parametrize("conf, golden", [(VOLUMES_CONF, VOLUMES_DUMP),
                                          (OPTIONS_CONF, OPTIONS_DUMP)],
                         ids=["volumes", "options"])
def test_dump_golden(tmp_path, conf, golden):
    cfg, path = _load(tmp_path, conf)
    assert dump_config(cfg, None, "node1") == golden.format(path=path)


def test_dump_named_resources(tmp_path):
    cfg, path = _load(tmp_path, VOLUMES_CONF)
    text = dump_config(cfg, ["r2", "r0"], "node1")
    assert text.startswith("# resource r2 on node1: not ignored, not stacked\n")
    assert "global" not in text and "# resource r1" not in text
    assert text.index("resource r2 {") < text.index("resource r0 {")
    with pytest.raises(NotForThisHost) as e:
        dump_config(cfg, ["r2"], "node2")          # r2 has no section for node2
    assert (str(e.value), e.value.exit_code) == \
        ("'r2' not defined in your config (for this host).", 1)
    with pytest.raises(NotForThisHost):
        dump_config(cfg, ["nope"], "node1")


def test_global_dump_rules():
    # unset timeouts are 5/600/0 in drbdadm-84 and printed when they differ from 5/121/600
    assert dump_config(parse_text("global { usage-count yes; }", "/c"), None, "n") == (
        "# /c\nglobal {\n    usage-count yes;\n    cmd-timeout-medium 600;\n"
        "    cmd-timeout-long 0;\n}\n\n")
    # nothing but defaults: no global section at all
    assert dump_config(parse_text("global { usage-count ask; cmd-timeout-long 0; }", "/c"),
                       None, "n") == "# /c\n"
    # deliberate difference: a written timeout equal to 8.4's default constant is kept
    # (drbdadm-84 drops it, and re-reading its dump then yields 600/0 instead)
    text = dump_config(parse_text("global { usage-count no; cmd-timeout-medium 121; "
                                  "cmd-timeout-long 600; }", "/c"), None, "n")
    assert text == ("# /c\nglobal {\n    usage-count no;\n    cmd-timeout-medium 121;\n"
                    "    cmd-timeout-long 600;\n}\n\n")


def test_empty_config_dump():
    assert dump_config(parse_text("", "/etc/drbd.conf"), None, "n") == "# /etc/drbd.conf\n"


@pytest.mark.parametrize("text, expected", [
    ("plain/path_1.2-x", "plain/path_1.2-x"), ("", '""'), ("a b", '"a b"'),
    ('a"b', '"a\\"b"'), ("a\\b", '"a\\\\b"'), ("a:b", '"a:b"'), ("x" * 81, '"' + "x" * 81 + '"'),
])
def test_esc(text, expected):
    assert esc(text) == expected


STABLE = {
    "walkthrough": (DATA / "walkthrough.conf").read_text(),
    "volumes": VOLUMES_CONF,
    "options": OPTIONS_CONF,
    "quoting": """resource "r 0" {
  on "1.2.3.4" node1 { device "/dev/drbd0"; disk "/dev/my disk"; address 127.0.0.1:7788; meta-disk internal; }
  on node2 { device /tmp/n2/drbd0 minor 0; disk none; address ipv6 [::1]:7788; meta-disk "/dev/m d" [1]; }
  handlers { split-brain "/bin/echo \\"x\\" \\\\ y"; }
  startup { become-primary-on node2; }
}
""",
    "resource-volume-disk-options": """resource r0 {
  volume 0 { device minor 0; disk /dev/a; meta-disk internal; disk { c-max-rate 200M; } }
  on node1 { address 127.0.0.1:7788; options { cpu-mask 1; } }
  on node2 { address 127.0.0.2:7788; volume 0 { disk { resync-rate 1G; } } }
  syncer { rate 10M; use-rle; }
  net { ping-int 3; protocol A; }
}
""",
}


@pytest.mark.parametrize("name", list(STABLE))
def test_dump_parse_dump_is_stable(tmp_path, name):
    cfg, path = _load(tmp_path, STABLE[name], "a.conf")
    first = dump_config(cfg, None, "node1")
    cfg2, _ = _load(tmp_path, first, "b.conf")
    second = dump_config(cfg2, None, "node1")
    cfg3, _ = _load(tmp_path, second, "b.conf")
    third = dump_config(cfg3, None, "node1")
    assert third == second                       # idempotent, to the byte

    def strip(t):                                # only file/line comments may differ
        return [ln for ln in t.splitlines() if not ln.startswith("# ")]
    assert strip(first) == strip(second)
    # and the model survives the round trip
    for res in cfg.resources.values():
        again = cfg2.resources[res.name]
        for section in ("net", "disk", "startup", "options", "handlers"):
            assert getattr(again, section) == getattr(res, section), section
        assert [(h.names, h.address, h.floating) for h in again.hosts] == \
            [(h.names, h.address, h.floating) for h in res.hosts]
        assert [h.volumes for h in again.hosts] == [h.volumes for h in res.hosts]
