"""Validation errors: exact text (as drbdadm-84 prints it, see drbd-reference.md §1.6)
and exit code. Where udrbd deliberately differs, the test says so."""
import os

import pytest

from replicator.config import ConfigError, parse_text

H1 = "  on node1 { device /dev/drbd0; disk /dev/sda9; address 127.0.0.1:7788; meta-disk internal; }\n"
H2 = "  on node2 { device /dev/drbd0; disk /dev/sda9; address 127.0.0.2:7788; meta-disk internal; }\n"
R1 = ("resource r1 {\n"
      "  on node1 { device /dev/drbd1; disk /dev/sdb; address 127.0.0.1:7789; meta-disk internal; }\n"
      "  on node2 { device /dev/drbd1; disk /dev/sdb; address 127.0.0.2:7789; meta-disk internal; }\n"
      "}\n")


def res(body: str, hosts: str = H1 + H2) -> str:
    return "resource r0 {\n" + body + "\n" + hosts + "}\n"


def host1(**kw) -> str:
    parts = {"device": "device /dev/drbd0;", "disk": "disk /dev/sda9;",
             "address": "address 127.0.0.1:7788;", "meta": "meta-disk internal;"}
    parts.update(kw)
    return "  on node1 { " + " ".join(p for p in parts.values() if p) + " }\n"


ABS = os.path.realpath(".") + "/drbd.conf"
CASES = {
    # name: (config text, exit code, exact message)
    "unknown protocol": (res("protocol D;"), 10,
                         # 8.4 prints it without FILE:LINE; we add it
                         "drbd.conf:2: unknown protocol 'D', should be one of A,B,C"),
    "unknown protocol in net": (res("net { protocol AB; }"), 10,
                                "drbd.conf:2: unknown protocol 'AB', should be one of A,B,C"),
    "unknown keyword in resource": (res("protocoll C;"), 10,
        "drbd.conf:2: Parse error: 'protocol | on | disk | net | syncer | startup | handlers"
        " | ignore-on | stacked-on-top-of' expected,\n\tbut got 'protocoll' (TK 282)"),
    "unknown section": (res("frobnicate { }"), 10,
        "drbd.conf:2: Parse error: 'protocol | on | disk | net | syncer | startup | handlers"
        " | ignore-on | stacked-on-top-of' expected,\n\tbut got 'frobnicate' (TK 282)"),
    "unknown option in net": (res("net { protocoll C; }"), 10,
        "drbd.conf:2: Parse error: 'an option keyword' expected,\n\tbut got 'protocoll'"),
    "option of another section": (res("net { resync-rate 10M; }"), 10,
        "drbd.conf:2: Parse error: 'an option keyword' expected,\n\tbut got 'resync-rate'"),
    "unknown syncer option": (res("syncer { ping-int 5; }"), 10,
        "drbd.conf:2: Parse error: 'a syncer option keyword' expected,\n\tbut got 'ping-int'"),
    "unknown global option": ("global { frob; }\n", 10,
        "drbd.conf:1: Parse error: 'dialog-refresh | minor-count | disable-ip-verification'"
        " expected,\n\tbut got 'frob'"),
    "unknown top-level section": ("frob { }\n", 10,
        "drbd.conf:1: Parse error: 'global | common | resource | skip | include' expected,"
        "\n\tbut got 'frob'"),
    "missing semicolon": (res("protocol C }"), 10,
        "drbd.conf:2: Parse error: ';' expected,\n\tbut got '}' (TK 125)"),
    "missing semicolon in options": (res("net { ping-int 5\n}"), 10,
        "drbd.conf:3: Parse error: ';' expected,\n\tbut got '}' (TK 125)"),
    "bad flag value": (res("net { allow-two-primaries maybe; }"), 10,
        "drbd.conf:2: Parse error: 'yes | no | ;' expected,\n\tbut got 'maybe'"),
    "missing value": (res("handlers { split-brain; }"), 10,
        "drbd.conf:2: Parse error: 'TK_STRING | TK_INTEGER' expected,\n\tbut got ';' (TK 59)"),
    "missing closing brace in on": ("resource r0 {\n  on node1 { device /dev/drbd0;\n", 10,
        "drbd.conf:3: Parse error: 'disk | device | address | meta-disk | flexible-meta-disk'"
        " expected,\n\tbut got ''"),
    "missing closing brace in section": ("resource r0 {\n  net { ping-int 5;\n", 10,
        "drbd.conf:3: Parse error: 'an option' expected,\n\tbut got ''"),
    "missing closing brace of resource": ("resource r0 {\n" + H1 + H2, 10,
        # drbdadm-84 silently accepts this; we do not
        "drbd.conf:4: Parse error: '}' expected,\n\tbut got '' (TK 0)"),
    "not a number": (res("disk { resync-rate 40X; }"), 20,
                     # 8.4 prints "40X is not a valid number" without FILE:LINE
                     "drbd.conf:2: 40X is not a valid number"),
    "not a number (unchecked by 8.4)": (res("net { ping-timeout abc; }"), 20,
                                        "drbd.conf:2: abc is not a valid number"),
    "number overflows": (res("disk { resync-rate 20000000000000G; }"), 20,
                         "drbd.conf:2: 20000000000000G: out of range"),
    "out of range": (res("net { ping-int 1000; }"), 10,
                     "drbd.conf:2: ping-int 1000 => 1000 out of range [1..120]."),
    "out of range with unit": (res("disk { resync-rate 5G; }"), 10,
        "drbd.conf:2: resync-rate 5G => 5242880k out of range [1..4194304]k."),
    "out of range negative": (res("disk { resync-rate -5; }"), 10,
        "drbd.conf:2: resync-rate -5 => 18446744073709551611k out of range [1..4194304]k."),
    "bad enum": (res("disk { on-io-error explode; }"), 10,
                 # 8.4 leaves this to drbdsetup; we report it in drbdadm 9's words
                 "drbd.conf:2: Parse error: while parsing value ('explode')\n"
                 "for on-io-error. Value is not valid.\n"
                 "Allowed values are: pass_on | call-local-io-error | detach"),
    "no port": (res("", host1(address="address 127.0.0.1;") + H2), 10,
                "drbd.conf:3: Parse error: ':' expected,\n\tbut got ';' (TK 59)"),
    "host name as address": (res("", host1(address="address node1:7788;") + H2), 10,
        "drbd.conf:3: Parse error: 'ssocks | sdp | ipv4 | ipv6 | <ipv4 address> ' expected,"
        "\n\tbut got 'node1'"),
    "ipv6 without brackets": (res("", host1(address="address ipv6 fd01::1:7788;") + H2), 10,
        "drbd.conf:3: Parse error: '[' expected,\n\tbut got 'fd01::1:7788' (TK 316)"),
    "port out of range": (res("", host1(address="address 127.0.0.1:0;") + H2), 10,
        "drbd.conf:3: port 0 => 0 out of range [1..65535].\n"
        "drbd.conf:3: port 0 => 0 out of range [1..65535]."),
    "missing device": ("resource r0 {\n  on node1 {\n disk /dev/sda9; address 127.0.0.1:7788;"
                       " meta-disk internal; }\n" + H2 + "}\n", 10,
        "drbd.conf:2: in resource r0, on node1 { ... }: 'device' keyword missing."),
    "missing disk": (res("", host1(disk="")), 10,
        "drbd.conf:3: in resource r0, on node1 { ... }: 'disk' keyword missing."),
    "missing address": (res("", host1(address="") + H2), 10,
        "drbd.conf:3: in resource r0, on node1 { ... }: 'address' keyword missing."),
    "missing meta-disk": (res("", host1(meta="") + H2), 10,
        "drbd.conf:3: in resource r0, on node1 { ... }: 'meta-disk' keyword missing.\n"
        "drbd.conf:3: in resource r0, on node1 { ... }: 'meta-index' keyword missing."),
    "duplicate minor": (res("") + R1.replace("drbd1;", "drbd0;", 1), 10,
        "drbd.conf:7: conflicting use of device-minor 'device-minor:node1:0' ...\n"
        "drbd.conf:3: device-minor 'device-minor:node1:0' first used here."),
    "duplicate address (loopback, per host)": (res("") + R1.replace("7789", "7788", 1), 10,
        "drbd.conf:7: conflicting use of IP 'node1:127.0.0.1:7788' ...\n"
        "drbd.conf:3: IP 'node1:127.0.0.1:7788' first used here."),
    "duplicate address": (res("", host1(address="address 10.1.1.1:7788;") + H2)
                          + R1.replace("127.0.0.1:7789", "10.1.1.1:7788"), 10,
        "drbd.conf:7: conflicting use of IP '10.1.1.1:7788' ...\n"
        "drbd.conf:3: IP '10.1.1.1:7788' first used here."),
    "two global sections": ("global { usage-count no; }\nglobal { }\n", 10,
        "drbd.conf:2: conflicting use of global section 'global' ...\n"
        "drbd.conf:1: global section 'global' first used here."),
    "two common sections": ("common { }\ncommon { }\n", 10,
        "drbd.conf:2: conflicting use of resource section 'common' ...\n"
        "drbd.conf:1: resource section 'common' first used here."),
    "two resources of one name": (res("") + "resource r0 {\n}\n", 10,
        "drbd.conf:6: conflicting use of resource section 'r0' ...\n"
        "drbd.conf:1: resource section 'r0' first used here."),
    "two net sections": (res("net { }\nnet { }"), 10,
        "drbd.conf:3: conflicting use of net section 'r0:net' ...\n"
        "drbd.conf:2: net section 'r0:net' first used here."),
    "host twice": (res("", H1 + H1.replace("7788", "7790").replace("drbd0", "drbd5")), 10,
        "drbd.conf:4: conflicting use of host section 'r0: on node1' ...\n"
        "drbd.conf:3: host section 'r0: on node1' first used here."),
    "include inside a resource": (res('include "x.res";'), 10,
        "drbd.conf:2: Parse error: 'protocol | on | disk | net | syncer | startup | handlers"
        " | ignore-on | stacked-on-top-of' expected,\n\tbut got 'include' (TK 318)"),
    "hosts in common": ("common {\n on node1 { address 10.0.0.1:7788; } }\n", 10,
        "drbd.conf:2: in the common section, there are no host sections allowed."),
    "minor does not match device": (res("", host1(device="device /dev/drbd5 minor 6;") + H2), 10,
        "drbd.conf:3: explicit minor number must match with device name\n"
        "\tTry \"device /dev/drbd6 minor 6;\",\n"
        "\tor leave off either device name or explicit minor.\n"
        "\tArbitrary device names must start with /dev/drbd_\n"
        "\tmind the '_'! (/dev/ is optional, but drbd_ is required)"),
    "no minor": (res("", host1(device="device /dev/drbd_foo;") + H2), 10,
        "drbd.conf:3: no minor given nor device name contains a minor number"),
    "no minor for a custom path": (res("", host1(device="device /tmp/x/drbd0;") + H2), 10,
        "drbd.conf:3: no minor given nor device name contains a minor number"),
    "minor not a number": (res("", host1(device="device minor abc;") + H2), 10,
        "drbd.conf:3: Parse error: 'TK_INTEGER' expected,\n\tbut got 'abc' (TK 282)"),
    "meta index not a number": (res("", host1(meta="meta-disk /dev/x [a];") + H2), 10,
        "drbd.conf:3: Parse error: 'TK_INTEGER' expected,\n\tbut got 'a' (TK 282)"),
    "meta index without brackets": (res("", host1(meta="meta-disk /dev/x 1;") + H2), 10,
        "drbd.conf:3: Parse error: '[ | ;' expected,\n\tbut got '1'"),
    "same external meta-disk slot": (
        res("", host1(meta="meta-disk /dev/m [0];") + H2)
        + R1.replace("meta-disk internal; }", "meta-disk /dev/m [0]; }", 1), 10,
        "drbd.conf:7: conflicting use of meta-disk 'node1:/dev/m[0]' ...\n"
        "drbd.conf:3: meta-disk 'node1:/dev/m[0]' first used here."),
    "mixing implicit and explicit volumes": (
        res("volume 1 { device /dev/drbd3; disk /dev/a; meta-disk internal; }"), 10,
        "drbd.conf:3: in resource r0: you must not mix implicit and explicit volumes\n"
        "drbd.conf:4: in resource r0: you must not mix implicit and explicit volumes"),
    "volume missing on a host": (
        "resource r0 {\n on node1 { volume 0 { device minor 0; disk /dev/a; meta-disk internal; }"
        " volume 1 { device minor 1; disk /dev/b; meta-disk internal; } address 127.0.0.1:7788; }\n"
        " on node2 { volume 0 { device minor 0; disk /dev/a; meta-disk internal; }"
        " address 127.0.0.2:7788; }\n}\n", 10,
        "drbd.conf:4: in resource r0, on node1 { ... }: volume 1 not defined on node2"),
    "floating with address": ("resource r0 {\n floating 10.0.0.1:7788 { address 10.0.0.1:7788; }\n}\n",
                              10, "drbd.conf:2: address statement not allowed for floating {} "
                              "host sections"),
    "skip without brace": ("skip ;\n", 10,
                           "drbd.conf:1: Parse error: '[ some_text ] {' expected,\n\tbut got ';'"),
    "skip to end of file": ("skip {\n", 10,
                            "drbd.conf:1: reached eof while parsing this skip block."),
    "overlong token": (res("disk { resync-after " + "a" * 130 + "; }"), 10,
                       "drbd.conf:2: Token too long >>>aaaaaaaaaaaaaaaaaaaa...<<<"),
    "unterminated string": (res('handlers { split-brain "abc\n"; }'), 10,
        "drbd.conf:2: Unterminated double quoted string\n  we don't allow embedded newlines\n"
        '  >>>"abc\n...<<<'),
    "become-primary-on both": (res("startup { become-primary-on both; }"), 10,
        f"{ABS}:1: in resource r0:\nbecome-primary-on is set to both, but allow-two-primaries"
        " is not set."),
    "become-primary-on unknown host": (res("startup { become-primary-on node7; }"), 10,
        f"{ABS}:1: in resource r0:\n\tbecome-primary-on contains 'node7', which is not named"
        " with the 'on' sections."),
    "resync-after unknown resource": (res("disk { resync-after r7; }"), 10,
        # 8.4 only warns (and drops the option) when not on a terminal
        f"{ABS}:1: in resource r0:\n\tresource 'r7' mentioned in 'resync-after' option is not"
        " known."),
    "empty resource name": ('resource "" {\n}\n', 1, "Resource name is empty."),
    "stacked resources": (res("stacked-on-top-of r9 { }"), 10,
                          "drbd.conf:2: 'stacked-on-top-of' is not supported by udrbd."),
}


@pytest.mark.parametrize("name", list(CASES))
def test_error_text_and_exit_code(name):
    text, code, message = CASES[name]
    with pytest.raises(ConfigError) as e:
        parse_text(text, "drbd.conf")
    assert str(e.value) == message
    assert e.value.exit_code == code


def test_errors_found_before_a_parse_error_are_reported_with_it():
    text = res("net { ping-int 1000; timeout 0; }\n frob;")
    with pytest.raises(ConfigError) as e:
        parse_text(text)
    assert str(e.value).splitlines() == [
        "drbd.conf:2: ping-int 1000 => 1000 out of range [1..120].",
        "drbd.conf:2: timeout 0 => 0 out of range [1..600].",
        "drbd.conf:3: Parse error: 'protocol | on | disk | net | syncer | startup | handlers"
        " | ignore-on | stacked-on-top-of' expected,",
        "\tbut got 'frob' (TK 282)",
    ]
    assert e.value.exit_code == 10


def test_accepted_like_8_4():
    # the reference's "accepted" rows and a few neighbours
    parse_text(res("", H1))                                   # only one on section
    parse_text(res("", H1 + H2) + R1.replace("/dev/sdb", "/dev/sda9"))   # same backing disk
    parse_text(res("disk { delay-probe-volume 5; }"))         # deprecated, ignored
    parse_text(res("", host1(device="device /dev/drbd_foo minor 3;") + H2))
