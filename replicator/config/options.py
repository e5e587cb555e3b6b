"""DRBD 8.4 option tables: default, unit, range and allowed values of every option.

Numbers come from ``linux/drbd_limits.h`` as shipped for 8.4 in drbd-utils. Each numeric
option has a *default unit* (its ``scale``): ``'1'`` (plain count / seconds / 0.1 s, as the
option defines), ``'k'`` (KiB) or ``'s'`` (512-byte sectors). Values may carry a binary
suffix K/M/G or ``s``; they are converted to the default unit, rounding up when the
default unit is the larger one (drbd-utils ``new_strtoll``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import E_EXEC_ERROR, ConfigError

U64 = (1 << 64) - 1


@dataclass(frozen=True)
class Opt:
    """One option of a section."""
    name: str
    kind: str                      # 'int' | 'bool' | 'enum' | 'str' | 'names'
    default: object
    scale: str = "1"               # default unit for 'int': '1', 'k' or 's'
    lo: int | None = None          # range for 'int'
    hi: int | None = None
    values: tuple[str, ...] = ()   # allowed values for 'enum'
    unit: str = ""                 # human description of the unit (docs / tests)
    parser_checked: bool = False   # drbdadm-84 itself range-checks it (else drbdsetup would)


def _i(name, default, lo, hi, scale="1", unit="", checked=False):
    return Opt(name, "int", default, scale, lo, hi, unit=unit, parser_checked=checked)


def _b(name, default):
    return Opt(name, "bool", default)


def _e(name, default, *values):
    return Opt(name, "enum", default, values=values)


def _s(name, default=""):
    return Opt(name, "str", default)


AL_EXTENTS = (67, 0xFFFE, 1237)
RATE_MAX = 4 << 20   # KiB/s

NET = {o.name: o for o in (
    _e("protocol", "C", "A", "B", "C"),
    _i("timeout", 60, 1, 600, unit="0.1 s", checked=True),
    _i("connect-int", 10, 1, 120, unit="s", checked=True),
    _i("ping-int", 10, 1, 120, unit="s", checked=True),
    _i("ping-timeout", 5, 1, 300, unit="0.1 s"),
    _i("socket-check-timeout", 0, 0, 300, unit="0.1 s"),
    _i("max-buffers", 2048, 32, 131072, unit="pages", checked=True),
    _i("max-epoch-size", 2048, 1, 20000, unit="requests", checked=True),
    _i("sndbuf-size", 0, 0, 10 << 20, unit="bytes", checked=True),
    _i("rcvbuf-size", 0, 0, 10 << 20, unit="bytes", checked=True),
    _i("ko-count", 7, 0, 200, unit="count", checked=True),
    _i("unplug-watermark", 2048 // 16, 1, 131072, unit="requests"),
    _b("allow-two-primaries", False),
    _s("cram-hmac-alg"),
    _s("shared-secret"),
    _e("after-sb-0pri", "disconnect", "disconnect", "discard-younger-primary",
       "discard-older-primary", "discard-zero-changes", "discard-least-changes",
       "discard-local", "discard-remote"),
    _e("after-sb-1pri", "disconnect", "disconnect", "consensus", "discard-secondary",
       "call-pri-lost-after-sb", "violently-as0p"),
    _e("after-sb-2pri", "disconnect", "disconnect", "violently-as0p", "call-pri-lost-after-sb"),
    _b("always-asbp", False),
    _e("rr-conflict", "disconnect", "disconnect", "call-pri-lost", "violently"),
    _s("data-integrity-alg"),
    _s("verify-alg"),
    _s("csums-alg"),
    _b("csums-after-crash-only", False),
    _b("use-rle", True),
    _b("tcp-cork", True),
    _e("on-congestion", "block", "block", "pull-ahead", "disconnect"),
    _i("congestion-fill", 0, 0, 10 << 21, scale="s", unit="sectors", checked=True),
    _i("congestion-extents", AL_EXTENTS[2], AL_EXTENTS[0], AL_EXTENTS[1], unit="extents",
       checked=True),
)}

DISK = {o.name: o for o in (
    _i("size", 0, 0, 2 << 40, scale="s", unit="sectors", checked=True),
    _e("on-io-error", "detach", "pass_on", "call-local-io-error", "detach"),
    _e("fencing", "dont-care", "dont-care", "resource-only", "resource-and-stonith"),
    _b("disk-barrier", False),
    _b("disk-flushes", True),
    _b("disk-drain", True),
    _b("md-flushes", True),
    _b("use-bmbv", False),
    # al-extents: drbdadm-84 leaves the range to the kernel, which clamps; we check the
    # limits the kernel accepts at all
    _i("al-extents", AL_EXTENTS[2], AL_EXTENTS[0], AL_EXTENTS[1], unit="extents"),
    _b("al-updates", True),
    _i("resync-rate", 250, 1, RATE_MAX, scale="k", unit="KiB/s", checked=True),
    _s("resync-after"),
    _i("c-plan-ahead", 20, 0, 300, unit="0.1 s", checked=True),
    _i("c-delay-target", 10, 1, 100, unit="0.1 s", checked=True),
    _i("c-fill-target", 100, 0, 1 << 20, scale="s", unit="sectors", checked=True),
    _i("c-max-rate", 102400, 250, RATE_MAX, scale="k", unit="KiB/s", checked=True),
    _i("c-min-rate", 250, 0, RATE_MAX, scale="k", unit="KiB/s", checked=True),
    _i("disk-timeout", 0, 0, 6000, unit="0.1 s"),
    _e("read-balancing", "prefer-local", "prefer-local", "prefer-remote", "round-robin",
       "least-pending", "when-congested-remote", "32K-striping", "64K-striping",
       "128K-striping", "256K-striping", "512K-striping", "1M-striping"),
    _i("max-bio-bvecs", 0, 0, 128, unit="count"),
    _b("discard-zeroes-if-aligned", True),
    _i("rs-discard-granularity", 0, 0, 1 << 20, unit="bytes"),
)}

STARTUP = {o.name: o for o in (
    _i("wfc-timeout", 0, 0, 300000, unit="s", checked=True),
    _i("degr-wfc-timeout", 0, 0, 300000, unit="s", checked=True),
    _i("outdated-wfc-timeout", 0, 0, 300000, unit="s", checked=True),
    _b("wait-after-sb", False),
    _b("stacked-timeouts", False),
    Opt("become-primary-on", "names", ()),
)}

OPTIONS = {o.name: o for o in (
    _s("cpu-mask"),
    _e("on-no-data-accessible", "io-error", "io-error", "suspend-io"),
)}

HANDLER_NAMES = ("pri-on-incon-degr", "pri-lost-after-sb", "pri-lost", "fence-peer",
                 "unfence-peer", "local-io-error", "initial-split-brain", "split-brain",
                 "before-resync-target", "after-resync-target", "before-resync-source",
                 "out-of-sync")
HANDLERS = {n: _s(n) for n in HANDLER_NAMES}

SECTIONS: dict[str, dict[str, Opt]] = {
    "options": OPTIONS, "net": NET, "disk": DISK, "startup": STARTUP, "handlers": HANDLERS,
}

# global {}: (name, default as drbdadm-84 holds it when unset, range)
# The command timeouts: drbd-utils 9.22's 8.4 personality starts with short=5,
# medium=600, long=0 while its "default" constants (below which dump stays silent)
# are 5/121/600; we keep exactly what the real tool has, so dump matches it.
CMD_TIMEOUT_DEFS = {"cmd-timeout-short": 5, "cmd-timeout-medium": 121, "cmd-timeout-long": 600}
GLOBAL_DEFAULTS = {
    "usage-count": "ask", "minor-count": 0, "dialog-refresh": 1,
    "disable-ip-verification": False, "udev-always-use-vnr": False,
    "cmd-timeout-short": 5, "cmd-timeout-medium": 600, "cmd-timeout-long": 0,
}
GLOBAL_RANGES = {"minor-count": (1, 255), "dialog-refresh": (0, 600),
                 "cmd-timeout-short": (0, 900), "cmd-timeout-medium": (0, 900),
                 "cmd-timeout-long": (0, 900)}
PORT_RANGE = (1, 0xFFFF)
SHARED_SECRET_MAX = 64

_SHIFT = {"1": 0, "k": -10, "s": -9}
_UNIT = {"K": 10, "k": 10, "M": 20, "m": 20, "G": 30, "g": 30, "s": 9}
_NUMBER = re.compile(r"\s*([+-]?)([0-9]+)(.?)(.*)\Z", re.S)


def strtoll(text: str, scale: str) -> int:
    """drbd-utils m_strtoll(): TEXT in units of SCALE; errors exit 20 as the real tool."""
    m = _NUMBER.match(text)
    if not m or m.group(4):
        raise ConfigError(f"{text} is not a valid number", E_EXEC_ERROR)
    sign, digits, unit = m.group(1), m.group(2), m.group(3)
    value = min(int(digits), U64)          # strtoull saturates
    if sign == "-":
        value = (-value) & U64             # ... and negates modulo 2**64
    if not unit:                           # a plain number is in the default unit
        return value
    if unit not in _UNIT:
        raise ConfigError(f"{text} is not a valid number", E_EXEC_ERROR)
    shift = _SHIFT[scale] + _UNIT[unit]
    if shift < 0:
        return (value + (1 << -shift) - 1) >> -shift
    if value > (U64 >> shift):
        raise ConfigError(f"{text}: out of range", E_EXEC_ERROR)
    return value << shift


def range_message(where: str, name: str, text: str, value: int, lo: int, hi: int,
                  scale: str) -> str:
    """drbdadm-84's out-of-range text, e.g. ``f:3: ping-int 1000 => 1000 out of range [1..120].``"""
    unit = "" if scale == "1" else scale
    return f"{where}: {name} {text} => {value}{unit} out of range [{lo}..{hi}]{unit}."


def enum_message(where: str, name: str, text: str, values: tuple[str, ...]) -> str:
    """Bad value for an enumerated option, in drbdadm 9's words (8.4 leaves it to drbdsetup)."""
    return (f"{where}: Parse error: while parsing value ('{text}')\nfor {name}. "
            f"Value is not valid.\nAllowed values are: {' | '.join(values)}")


def bool_value(text: str) -> bool:
    return text == "yes"
