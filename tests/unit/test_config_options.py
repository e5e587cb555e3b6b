"""Every option of drbd-reference.md §1.5: default, unit, range edges, values.

The expectations below are transcribed from the reference (and drbd_limits.h for 8.4),
not taken from the implementation's tables.
"""
import os

import pytest

from replicator.config import ConfigError, parse_text, strtoll
from replicator.config.options import SECTIONS

HOSTS = """  on node1 { device /dev/drbd0; disk /dev/sda9; address 127.0.0.1:7788; meta-disk internal; }
  on node2 { device /dev/drbd0; disk /dev/sda9; address 127.0.0.2:7788; meta-disk internal; }
"""
G = 2 ** 30
# section, name, default, scale ('1' | 'k' | 's'), min, max
NUMERIC = [
    ("net", "timeout", 60, "1", 1, 600),
    ("net", "connect-int", 10, "1", 1, 120),
    ("net", "ping-int", 10, "1", 1, 120),
    ("net", "ping-timeout", 5, "1", 1, 300),
    ("net", "socket-check-timeout", 0, "1", 0, 300),
    ("net", "max-buffers", 2048, "1", 32, 131072),
    ("net", "max-epoch-size", 2048, "1", 1, 20000),
    ("net", "sndbuf-size", 0, "1", 0, 10 << 20),
    ("net", "rcvbuf-size", 0, "1", 0, 10 << 20),
    ("net", "ko-count", 7, "1", 0, 200),
    ("net", "unplug-watermark", 128, "1", 1, 131072),
    ("net", "congestion-fill", 0, "s", 0, 10 * G // 512),
    ("net", "congestion-extents", 1237, "1", 67, 65534),
    ("disk", "size", 0, "s", 0, 2 ** 41),
    ("disk", "al-extents", 1237, "1", 67, 65534),
    ("disk", "resync-rate", 250, "k", 1, 4 * G // 1024),
    ("disk", "c-plan-ahead", 20, "1", 0, 300),
    ("disk", "c-delay-target", 10, "1", 1, 100),
    ("disk", "c-fill-target", 100, "s", 0, 1 << 20),
    ("disk", "c-max-rate", 102400, "k", 250, 4 * G // 1024),
    ("disk", "c-min-rate", 250, "k", 0, 4 * G // 1024),
    ("disk", "disk-timeout", 0, "1", 0, 6000),
    ("disk", "max-bio-bvecs", 0, "1", 0, 128),
    ("disk", "rs-discard-granularity", 0, "1", 0, 1 << 20),
    ("startup", "wfc-timeout", 0, "1", 0, 300000),
    ("startup", "degr-wfc-timeout", 0, "1", 0, 300000),
    ("startup", "outdated-wfc-timeout", 0, "1", 0, 300000),
]
BOOLS = [
    ("net", "allow-two-primaries", False), ("net", "always-asbp", False),
    ("net", "csums-after-crash-only", False), ("net", "use-rle", True),
    ("net", "tcp-cork", True), ("disk", "disk-barrier", False), ("disk", "disk-flushes", True),
    ("disk", "disk-drain", True), ("disk", "md-flushes", True), ("disk", "al-updates", True),
    ("disk", "discard-zeroes-if-aligned", True), ("startup", "wait-after-sb", False),
]
ENUMS = [
    ("net", "protocol", "C", ["A", "B", "C"]),
    ("net", "after-sb-0pri", "disconnect",
     ["disconnect", "discard-younger-primary", "discard-older-primary", "discard-zero-changes",
      "discard-least-changes", "discard-local", "discard-remote"]),
    ("net", "after-sb-1pri", "disconnect",
     ["disconnect", "consensus", "discard-secondary", "call-pri-lost-after-sb", "violently-as0p"]),
    ("net", "after-sb-2pri", "disconnect",
     ["disconnect", "violently-as0p", "call-pri-lost-after-sb"]),
    ("net", "rr-conflict", "disconnect", ["disconnect", "call-pri-lost", "violently"]),
    ("net", "on-congestion", "block", ["block", "pull-ahead", "disconnect"]),
    ("disk", "on-io-error", "detach", ["pass_on", "call-local-io-error", "detach"]),
    ("disk", "fencing", "dont-care", ["dont-care", "resource-only", "resource-and-stonith"]),
    ("disk", "read-balancing", "prefer-local",
     ["prefer-local", "prefer-remote", "round-robin", "least-pending", "when-congested-remote",
      "32K-striping", "64K-striping", "128K-striping", "256K-striping", "512K-striping",
      "1M-striping"]),
    ("options", "on-no-data-accessible", "io-error", ["io-error", "suspend-io"]),
]
STRINGS = [
    ("net", "cram-hmac-alg"), ("net", "shared-secret"), ("net", "data-integrity-alg"),
    ("net", "verify-alg"), ("net", "csums-alg"), ("disk", "resync-after"),
    ("options", "cpu-mask"),
] + [("handlers", h) for h in (
    "pri-on-incon-degr", "pri-lost-after-sb", "pri-lost", "fence-peer", "unfence-peer",
    "local-io-error", "initial-split-brain", "split-brain", "before-resync-target",
    "after-resync-target", "before-resync-source", "out-of-sync")]


def conf(section: str, body: str) -> str:
    return f"resource r0 {{\n  {section} {{ {body} }}\n{HOSTS}}}\n"


def value(section: str, body: str, name: str):
    return getattr(parse_text(conf(section, body)).resources["r0"], section)[name]


def error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        parse_text(text)
    return e.value


def test_the_tables_cover_exactly_the_reference_options():
    listed = {(s, n) for s, n, *_ in NUMERIC} | {(s, n) for s, n, _ in BOOLS} \
        | {(s, n) for s, n, *_ in ENUMS} | set(STRINGS) \
        | {("startup", "stacked-timeouts"), ("startup", "become-primary-on"), ("disk", "use-bmbv")}
    implemented = {(s, n) for s, table in SECTIONS.items() for n in table}
    assert implemented == listed


def test_defaults_without_any_setting():
    r0 = parse_text(f"resource r0 {{\n{HOSTS}}}\n").resources["r0"]
    for section, name, default, *_ in NUMERIC:
        assert getattr(r0, section)[name] == default, name
    for section, name, default in BOOLS:
        assert getattr(r0, section)[name] is default, name
    for section, name, default, _ in ENUMS:
        assert getattr(r0, section)[name] == default, name
    for section, name in STRINGS:
        assert getattr(r0, section)[name] == "", name
    assert r0.startup["become-primary-on"] == () and r0.startup["stacked-timeouts"] is False
    assert r0.protocol == "C"
    vol_disk = r0.hosts[0].volumes[0].disk_options
    assert dict(vol_disk) == dict(r0.disk)


@pytest.mark.parametrize("section, name, default, scale, lo, hi", NUMERIC,
                         ids=[n for _, n, *_ in NUMERIC])
def test_numeric_range_edges(section, name, default, scale, lo, hi):
    assert value(section, f"{name} {lo};", name) == lo
    assert value(section, f"{name} {hi};", name) == hi
    unit = "" if scale == "1" else scale
    e = error(conf(section, f"{name} {hi + 1};"))
    assert str(e) == f"drbd.conf:2: {name} {hi + 1} => {hi + 1}{unit} out of range [{lo}..{hi}]{unit}."
    assert e.exit_code == 10
    if lo > 0:
        e = error(conf(section, f"{name} {lo - 1};"))
        assert str(e) == f"drbd.conf:2: {name} {lo - 1} => {lo - 1}{unit} out of range [{lo}..{hi}]{unit}."


@pytest.mark.parametrize("section, name, default, scale, lo, hi", NUMERIC,
                         ids=[n for _, n, *_ in NUMERIC])
def test_numeric_units(section, name, default, scale, lo, hi):
    # one value given with a suffix that lands inside the range, per default unit
    if scale == "k":
        assert value(section, f"{name} 1M;", name) == 1024           # KiB
        assert value(section, f"{name} 1G;", name) == 1024 * 1024
        if lo <= 1:
            assert value(section, f"{name} 3s;", name) == 2          # 1.5 KiB rounds up
    elif scale == "s":
        assert value(section, f"{name} 1K;", name) == 2              # sectors
        assert value(section, f"{name} 1M;", name) == 2048
        assert value(section, f"{name} 1000s;", name) == 1000
    else:
        if lo <= 1 <= hi:
            assert value(section, f"{name} 1;", name) == 1
        if hi >= 1024:
            assert value(section, f"{name} 1K;", name) == 1024
        if hi >= 512:
            assert value(section, f"{name} 1s;", name) == 512


@pytest.mark.parametrize("text, scale, expected", [
    ("100M", "k", 102400), ("40M", "k", 40960), ("1", "k", 1), ("1s", "k", 1), ("3s", "k", 2),
    ("1023", "s", 1023), ("1k", "s", 2), ("1K", "s", 2), ("1g", "s", 2097152),
    ("7", "1", 7), ("2K", "1", 2048), ("1m", "1", 1 << 20), ("2s", "1", 1024),
    ("1", "s", 1), ("0", "k", 0),
])
def test_strtoll(text, scale, expected):
    assert strtoll(text, scale) == expected


@pytest.mark.parametrize("text, message", [
    ("40X", "40X is not a valid number"), ("abc", "abc is not a valid number"),
    ("10MB", "10MB is not a valid number"), ("", " is not a valid number"),
    ("20000000000000G", "20000000000000G: out of range"),
])
def test_strtoll_errors(text, message):
    with pytest.raises(ConfigError) as e:
        strtoll(text, "k")
    assert (str(e.value), e.value.exit_code) == (message, 20)


def test_strtoll_wraps_and_saturates_like_strtoull():
    assert strtoll("-5", "k") == 2 ** 64 - 5
    assert strtoll("99999999999999999999", "1") == 2 ** 64 - 1


@pytest.mark.parametrize("section, name, default", BOOLS, ids=[n for _, n, _ in BOOLS])
def test_booleans_bare_yes_no(section, name, default):
    assert value(section, f"{name};", name) is True
    assert value(section, f"{name} yes;", name) is True
    assert value(section, f"{name} no;", name) is False


@pytest.mark.parametrize("name", ["disk-barrier", "disk-flushes", "disk-drain", "md-flushes"])
def test_old_no_flags_disk(name):
    assert value("disk", f"no-{name};", name) is False


def test_old_no_flag_tcp_cork():
    assert value("net", "no-tcp-cork;", "tcp-cork") is False


@pytest.mark.parametrize("section, name, default, allowed", ENUMS,
                         ids=[n for _, n, *_ in ENUMS])
def test_enums(section, name, default, allowed):
    for v in allowed:
        assert value(section, f"{name} {v};", name) == v
    if name == "protocol":
        return       # its own message, see test_config_errors
    e = error(conf(section, f"{name} bogus;"))
    assert str(e) == ("drbd.conf:2: Parse error: while parsing value ('bogus')\n"
                      f"for {name}. Value is not valid.\n"
                      f"Allowed values are: {' | '.join(allowed)}")
    assert e.exit_code == 10


def test_discard_node_name_is_accepted_for_known_hosts():
    assert value("net", "after-sb-0pri discard-node-node2;", "after-sb-0pri") \
        == "discard-node-node2"
    e = error(conf("net", "after-sb-0pri discard-node-node7;"))
    # post-parse checks name the resource's file absolutely, as drbdadm-84 does
    assert str(e) == (f"{os.path.realpath('.')}/drbd.conf:1: in resource r0:\n\tthe nodename in the 'after-sb-0pri' "
                      "option is not known.\n\tvalid nodenames are: 'node1 node2'.")


@pytest.mark.parametrize("section, name", STRINGS, ids=[n for _, n in STRINGS])
def test_strings(section, name):
    text = "r0" if name == "resync-after" else "/usr/lib/drbd/some handler.sh --x 1"
    assert value(section, f'{name} "{text}";', name) == text


def test_shared_secret_limit():
    assert value("net", "shared-secret " + "s" * 64 + ";", "shared-secret") == "s" * 64
    e = error(conf("net", "shared-secret " + "s" * 65 + ";"))
    assert str(e) == "drbd.conf:2: shared-secret is too long (65 > 64 characters)."


def test_last_setting_wins_within_a_section():
    assert value("options", "cpu-mask 1; cpu-mask ff;", "cpu-mask") == "ff"


GLOBAL_DEFAULTS = {"usage-count": "ask", "minor-count": 0, "dialog-refresh": 1,
                   "disable-ip-verification": False, "udev-always-use-vnr": False,
                   "cmd-timeout-short": 5, "cmd-timeout-medium": 600, "cmd-timeout-long": 0}


def test_global_defaults_and_values():
    assert dict(parse_text("").global_options) == GLOBAL_DEFAULTS
    g = parse_text("global { usage-count yes; minor-count 255; dialog-refresh 0; "
                   "disable-ip-verification; udev-always-use-vnr; cmd-timeout-short 0; "
                   "cmd-timeout-medium 900; cmd-timeout-long 1; }").global_options
    assert dict(g) == {"usage-count": "yes", "minor-count": 255, "dialog-refresh": 0,
                       "disable-ip-verification": True, "udev-always-use-vnr": True,
                       "cmd-timeout-short": 0, "cmd-timeout-medium": 900, "cmd-timeout-long": 1}


@pytest.mark.parametrize("name, lo, hi", [
    ("minor-count", 1, 255), ("dialog-refresh", 0, 600), ("cmd-timeout-short", 0, 900),
    ("cmd-timeout-medium", 0, 900), ("cmd-timeout-long", 0, 900)])
def test_global_ranges(name, lo, hi):
    e = error(f"global {{ {name} {hi + 1}; }}")
    assert str(e) == f"drbd.conf:1: {name} {hi + 1} => {hi + 1} out of range [{lo}..{hi}]."
    if lo:
        e = error(f"global {{\n{name} {lo - 1}; }}")
        assert str(e) == f"drbd.conf:2: {name} {lo - 1} => {lo - 1} out of range [{lo}..{hi}]."


def test_port_range_and_meta_index_units():
    e = error(f"resource r0 {{\n{HOSTS.replace('127.0.0.1:7788', '127.0.0.1:65536')}}}\n")
    # drbdadm-84 checks the port twice and says so twice
    assert str(e) == ("drbd.conf:2: port 65536 => 65536 out of range [1..65535].\n"
                      "drbd.conf:2: port 65536 => 65536 out of range [1..65535].")
