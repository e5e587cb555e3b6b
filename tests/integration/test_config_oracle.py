"""Our drbd.conf parser against the real thing: drbd-utils' ``/lib/drbd/drbdadm-84``.

``drbdadm-84 -c FILE dump all`` must print what dump_config() prints, and for the
reference's validation mistakes (§1.6, 8.4 column) the real tool's stderr and exit code
must be ours -- except for the deliberate differences listed in DIFFERENT, each checked
to differ exactly in the documented way. The real tool must be installed: without it
these tests fail (they are the compatibility oracle), they do not skip.
"""
import os
import subprocess
from pathlib import Path

import pytest

from replicator.config import ConfigError, dump_config, load_config
from tests.unit import test_config_errors as errors

REAL = "/lib/drbd/drbdadm-84"
DATA = Path(__file__).resolve().parent.parent / "data" / "conf"
NOISE = ("modinfo: not found", "found __DRBD_NODE__ in environment", "PRETENDING that I am")


def test_real_drbdadm_84_is_installed():
    assert os.access(REAL, os.X_OK), f"{REAL} missing: apt-get install drbd-utils"


def real(conf: Path, node: str, *names: str) -> tuple[int, str, str]:
    assert os.access(REAL, os.X_OK), f"{REAL} missing: apt-get install drbd-utils"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "__DRBD_NODE__": node,
           "LC_ALL": "C"}
    p = subprocess.run([REAL, "-c", conf.name, "dump", *(names or ("all",))],
                       cwd=conf.parent, env=env, capture_output=True, text=True, timeout=30)
    err = "\n".join(ln for ln in p.stderr.splitlines()
                    if ln.strip() and not any(n in ln for n in NOISE))
    return p.returncode, p.stdout, err


def ours(conf: Path, node: str, *names: str) -> tuple[int, str, str]:
    cwd = os.getcwd()
    os.chdir(conf.parent)             # same relative -c FILE as the real tool gets
    try:
        cfg = load_config(conf.name)
        return 0, dump_config(cfg, list(names) or None, node), ""
    except ConfigError as e:
        return e.exit_code, "", str(e)
    finally:
        os.chdir(cwd)


H = """  on node1 { device /dev/drbd0; disk /dev/sda9; address 127.0.0.1:7788; meta-disk internal; }
  on node2 { device /dev/drbd0; disk /dev/sda9; address 127.0.0.2:7788; meta-disk internal; }
"""
NOIP = "global { disable-ip-verification; }\n"
DUMPS = {
    "walkthrough-verbatim": ((DATA / "walkthrough.conf").read_text(), "node3"),
    "walkthrough-node1": ((DATA / "walkthrough.conf").read_text().replace(
        "global { usage-count no; }", "global { usage-count no; disable-ip-verification; }"),
        "node1"),
    "walkthrough-one-machine": ((DATA / "walkthrough.conf").read_text()
                                .replace("192.168.122.122", "127.0.0.1")
                                .replace("192.168.122.28", "127.0.0.2")
                                .replace("device /dev/drbd0;", "device /dev/drbd0 minor 0;", 1),
                                "node1"),
    "empty": ("", "node1"),
    "global-only": ("global { minor-count 5; dialog-refresh 3; usage-count yes; "
                    "cmd-timeout-short 7; cmd-timeout-medium 122; cmd-timeout-long 900; "
                    "disable-ip-verification; udev-always-use-vnr; }\ncommon { }\n", "node1"),
    "global-defaults": ("global { usage-count ask; }\n", "node1"),
    "volumes": (NOIP + """resource r0 {
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
""", "node1"),
    "options": (NOIP + """common {
  handlers { fence-peer "/usr/lib/drbd/crm-fence-peer.sh --timeout 30"; outdate-peer /bin/true; split-brain "a\\"b"; }
  syncer { rate 33M; al-extents 257; verify-alg sha1; csums-alg md5; use-rle; cpu-mask ff; on-no-data-accessible suspend-io; after r0; c-plan-ahead 0; }
  startup { become-primary-on both; wfc-timeout 10; stacked-timeouts; wait-after-sb; }
  net { no-tcp-cork; allow-two-primaries; always-asbp no; max-buffers 8K; sndbuf-size 1M; after-sb-0pri discard-node-node1; shared-secret ""; cram-hmac-alg "a b"; }
  disk { no-disk-barrier; disk-flushes yes; size 10G; fencing resource-only; }
  options { cpu-mask 3; }
}
resource r0 {
  protocol a;
  syncer { rate 1s; use-rle no; }
  net { ping-timeout 7; timeout 1K1; }
  disk { c-fill-target 1M; size 1023; resync-rate 100M; disk-barrier; md-flushes no; al-updates; no-md-flushes; }
  startup { become-primary-on node1 node2; degr-wfc-timeout 5; }
  handlers { split-brain "/usr/lib/drbd/notify-split-brain.sh root"; }
  options { on-no-data-accessible io-error; }
""".replace("timeout 1K1;", "timeout 1;") + H + "}\n", "node1"),
    "skip-and-comments": (NOIP + """# a comment
skip { resource r9 { on x { } } }
skip foo { nested { deeper { } } }
resource r0 { # comment after the brace
""" + H + "}\n", "node1"),
    "floating": (NOIP + """resource r0 {
 device /dev/drbd3; disk /dev/a; meta-disk internal;
 floating ipv6 [fd00::1]:7788;
 floating ipv4 10.9.9.9:7788 { disk /dev/b; }
}
""", "10.9.9.9"),
    "quoting": (NOIP + """resource "r 0" {
 on node1 { device "/dev/drbd0"; disk "/dev/my disk"; address 127.0.0.1:7788; meta-disk internal; }
 on node2 { device /dev/drbd0; disk none; address 127.0.0.2:7788; meta-disk "/dev/m d" [1]; }
 handlers { split-brain "/bin/echo \\"x\\" \\\\ y"; }
}
""", "node1"),
    "ignored-and-one-host": (NOIP + "resource r0 {\n" + H + "}\nresource r1 {\n"
                             "  on node7 { device minor 1; disk /dev/x; address 10.0.0.7:7789;"
                             " meta-disk internal; }\n}\n", "node1"),
}


@pytest.mark.parametrize("name", list(DUMPS))
def test_dump_matches_drbdadm_84(tmp_path, name):
    text, node = DUMPS[name]
    conf = tmp_path / "drbd.conf"
    conf.write_text(text)
    expected = real(conf, node)
    assert expected[0] == 0, expected      # the oracle accepts these configs
    assert ours(conf, node) == expected


@pytest.mark.parametrize("name", list(DUMPS))
def test_dump_xml_matches_drbdadm_84(tmp_path, name):
    """``drbdadm dump-xml`` (what GUIs and cluster tools read), byte for byte; for a
    named resource too, which drbdadm-84 prints without the <config> around it."""
    from tests.integration.nodes import bin_path
    text, node = DUMPS[name]
    conf = tmp_path / "drbd.conf"
    conf.write_text(text)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "__DRBD_NODE__": node,
           "LC_ALL": "C"}
    cfg = load_config(str(conf))
    mine = [name for name, res in cfg.resources.items() if res.is_for(node)]
    for which in [["all"]] + [[r] for r in mine[:1]]:
        expected = subprocess.run([REAL, "-c", str(conf), "dump-xml", *which], env=env,
                                  capture_output=True, text=True, timeout=30)
        got = subprocess.run([bin_path("drbdadm"), "-c", str(conf), "dump-xml", *which],
                             env=env, capture_output=True, text=True, timeout=30)
        assert expected.returncode == 0
        assert (got.returncode, got.stdout) == (0, expected.stdout), which


def test_dump_of_named_resources_matches(tmp_path):
    conf = tmp_path / "drbd.conf"
    conf.write_text(DUMPS["volumes"][0])
    assert ours(conf, "node1", "r2", "r0") == real(conf, "node1", "r2", "r0")
    for name in ("r1", "nope"):
        assert ours(conf, "node2", name) == real(conf, "node2", name)


def test_includes_match(tmp_path):
    etc = tmp_path / "etc"
    (etc / "drbd.d" / "more").mkdir(parents=True)
    (etc / "drbd.conf").write_text('include "drbd.d/global_common.conf";\n'
                                   'include "drbd.d/*.res";\ninclude "none/*.res";\n'
                                   'include "drbd.d/more/*.conf";\n')
    (etc / "drbd.d/global_common.conf").write_text(NOIP + "common { net { protocol B; } }\n")
    (etc / "drbd.d/r0.res").write_text("\nresource r0 {\n" + H + "}\n")
    (etc / "drbd.d/more/x.conf").write_text('include "y.conf";\n')
    (etc / "drbd.d/more/y.conf").write_text(
        "skip { }\nresource r1 {\n" + H.replace("7788", "7789").replace("drbd0", "drbd1") + "}\n")
    conf = etc / "drbd.conf"
    expected = real(conf, "node1")
    assert expected[0] == 0, expected
    assert ours(conf, "node1") == expected


# Where we differ on purpose (see replicator/config/parser.py), and how.
PREFIXED = {"unknown protocol", "unknown protocol in net", "not a number", "number overflows"}
REAL_ACCEPTS = {"bad enum", "not a number (unchecked by 8.4)", "missing closing brace of resource",
                "resync-after unknown resource"}
REAL_OTHER_TEXT = {"no minor for a custom path", "stacked resources"}


@pytest.mark.parametrize("name", list(errors.CASES))
def test_error_matches_drbdadm_84(tmp_path, name):
    text, code, message = errors.CASES[name]
    conf = tmp_path / "drbd.conf"
    conf.write_text(text)
    got = ours(conf, "node1")
    assert got[0] == code and got[0] != 0
    expected = real(conf, "node1")
    if name in PREFIXED:
        # drbdadm-84 prints these without FILE:LINE; ours is that text behind "FILE:LINE: "
        assert expected[0] == got[0]
        prefix, _, rest = got[2].partition(": ")
        assert rest == expected[2] and prefix.startswith("drbd.conf:")
    elif name in REAL_ACCEPTS:
        assert expected[0] == 0, expected
    elif name in REAL_OTHER_TEXT:
        assert expected[0] == got[0] == 10 and expected[2] != got[2]
    else:
        assert got == expected


def test_missing_include_matches(tmp_path):
    conf = tmp_path / "drbd.conf"
    conf.write_text(NOIP + 'include "gone.conf";\ninclude "gone/*.conf";\n')
    expected = real(conf, "node1")
    assert expected[0] == 10, expected
    assert ours(conf, "node1") == expected


def test_error_in_included_file(tmp_path):
    (tmp_path / "sub").mkdir()
    conf = tmp_path / "drbd.conf"
    conf.write_text('include "sub/*.res";\n')
    (tmp_path / "sub/a.res").write_text("\nresource r0 { frob; }\n")
    expected = real(conf, "node1")
    assert expected[0] == 10 and expected[2].startswith("sub/a.res:2: Parse error")
    assert ours(conf, "node1") == expected
    # an include inside an included file: drbdadm-84 names it relative to the directory
    # of the file that includes it ("x.conf:1"); we keep the path from the main file's
    # directory ("sub/x.conf:1") -- deliberate, to say where the file is
    (tmp_path / "sub/a.res").write_text('include "x.conf";\n')
    (tmp_path / "sub/x.conf").write_text("frob;\n")
    expected = real(conf, "node1")
    got = ours(conf, "node1")
    assert expected[0] == got[0] == 10
    assert expected[2].startswith("x.conf:1: Parse error")
    assert got[2] == "sub/" + expected[2]


SH_QUERIES = ("sh-resource", "sh-dev", "sh-minor", "sh-ll-dev", "sh-md-dev", "sh-md-idx",
              "sh-ip")


@pytest.mark.parametrize("node", ["node1", "node2"])
def test_sh_queries_match(tmp_path, node):
    """The sh-* queries init scripts use: the same lines as drbdadm-84 prints."""
    from tests.integration.nodes import bin_path
    conf = tmp_path / "drbd.conf"
    conf.write_text(DUMPS["volumes"][0])
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "__DRBD_NODE__": node,
           "LC_ALL": "C"}
    commands = [["sh-resources"], ["sh-nop"]] + [[q, r] for q in SH_QUERIES
                                                  for r in ("r0", "r1", "r2")]
    for cmd in commands:
        expected = subprocess.run([REAL, "-c", str(conf), *cmd], env=env, capture_output=True,
                                  text=True, timeout=30)
        got = subprocess.run([bin_path("drbdadm"), "-c", str(conf), *cmd], env=env,
                             capture_output=True, text=True, timeout=30)
        if expected.returncode == 0:
            assert (got.returncode, got.stdout) == (0, expected.stdout), cmd
        else:
            assert got.returncode != 0 and got.stdout == "", cmd


DRY_RUNS = [["split-brain", "r0"], ["local-io-error", "minor-70"], ["out-of-sync", "r0"],
            ["new-current-uuid", "r0"], ["new-current-uuid", "--clear-bitmap", "r0"],
            ["--", "--clear-bitmap", "new-current-uuid", "r0"], ["new-current-uuid", "r0/0"],
            ["dstate", "r0"], ["cstate", "r0"], ["role", "r0"], ["get-gi", "r0"],
            ["outdate", "r0"], ["disk-options", "--resync-rate", "10M", "r0"],
            ["net-options", "--protocol", "A", "r0"], ["primary", "--force", "r0"],
            ["sh-b-pri", "all"], ["sh-status"], ["sh-status", "r0"], ["wait-connect", "r0"]]


def test_dry_runs_match(tmp_path):
    """``drbdadm -d`` prints what drbdadm-84 prints, and runs nothing (not even a handler)."""
    from tests.integration.nodes import bin_path
    mark = tmp_path / "handler-ran"
    conf = tmp_path / "drbd.conf"
    conf.write_text(f"""resource r0 {{
  handlers {{ split-brain "touch {mark}"; local-io-error "touch '{mark}' && halt -f"; }}
  startup {{ become-primary-on node1; wfc-timeout 7; }}
  on node1 {{ device /dev/drbd70; disk /tmp/d1.img; address 127.0.0.1:7870; meta-disk internal; }}
  on node2 {{ device /dev/drbd71; disk /tmp/d2.img; address 127.0.0.2:7870; meta-disk internal; }}
}}
""")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "__DRBD_NODE__": "node1",
           "LC_ALL": "C"}
    for cmd in DRY_RUNS:
        expected = subprocess.run([REAL, "-c", str(conf), "-d", *cmd], env=env,
                                  capture_output=True, text=True, timeout=30)
        got = subprocess.run([bin_path("drbdadm"), "-c", str(conf), "-d", *cmd], env=env,
                             capture_output=True, text=True, timeout=30)
        assert (got.returncode, got.stdout) == (
            expected.returncode, expected.stdout.replace("/lib/drbd/drbdsetup-84", "drbdsetup")), cmd
        assert not mark.exists(), cmd


def test_an_option_written_twice_counts_as_first_written(tmp_path):
    """drbdadm-84 takes the first of two lines in one section (the resource's still
    override common's): the same values reach drbdsetup attach. A resource's net lines
    it passes as written, so there the last counts (drbdsetup takes the last)."""
    from tests.integration.nodes import bin_path
    conf = tmp_path / "drbd.conf"
    conf.write_text("""common { disk { resync-rate 5M; resync-rate 6M; al-extents 127; } }
resource r0 {
  disk { on-io-error detach; on-io-error pass_on; al-extents 257; }
  on node1 { device /dev/drbd70; disk /tmp/d1.img; address 127.0.0.1:7870; meta-disk internal; }
  on node2 { device /dev/drbd71; disk /tmp/d2.img; address 127.0.0.2:7870; meta-disk internal; }
}
""")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "__DRBD_NODE__": "node1",
           "LC_ALL": "C"}

    def attach_options(tool: str) -> set[str]:
        out = subprocess.run([tool, "-c", str(conf), "-d", "attach", "r0"], env=env,
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return {w for w in out.splitlines()[-1].split() if w.startswith("--")}

    expected = attach_options(REAL)
    assert expected == {"--resync-rate=5M", "--on-io-error=detach", "--al-extents=257"}
    assert attach_options(bin_path("drbdadm")) == expected
    conf.write_text(conf.read_text().replace("common {", "common { net { max-buffers 100; "
                                             "max-buffers 200; }").replace(
        "al-extents 257; }", "al-extents 257; }\n  net { ping-int 5; ping-int 7; }"))
    connect = [subprocess.run([tool, "-c", str(conf), "-d", "connect", "r0"], env=env,
                              capture_output=True, text=True, timeout=30, check=True).stdout
               for tool in (REAL, bin_path("drbdadm"))]
    for out in connect:
        assert "--max-buffers=100 --ping-int=5 --ping-int=7" in out, out
