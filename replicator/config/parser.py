"""Recursive-descent parser for drbd.conf following drbd-utils' 8.4 parser.

The grammar, the order of checks and the error texts follow ``drbdadm-84`` (drbd-utils
9.22). Problems the real tool reports and then keeps parsing (out of range values,
duplicates, missing keywords) are collected and raised together at the end; parse errors
stop at once, as they do there. Nothing half-parsed is ever returned.

Deliberate differences from drbdadm-84 (each also noted where it happens):
* every message names FILE:LINE, also the two the real tool prints bare
  (``unknown protocol 'D', ...`` and ``40X is not a valid number``);
* values drbdadm-84 leaves to drbdsetup/the kernel are checked here already:
  enumerations (drbdadm 9's wording), ranges of the options the 8.4 parser does not
  range-check (8.4's wording), numbers, the 64 character limit of shared-secret;
* ``device PATH minor N`` accepts any PATH (8.4 insists on /dev/drbd...), so that two
  nodes on one machine can each have their own device path;
* a missing ``}`` at the end of the file is an error (8.4 silently accepts it);
* ``skip`` may prefix any section, at top level and inside resources and hosts, and may
  be followed by several words (8.4: top level only, at most one word);
* disk options inside a resource-level ``volume N { disk { } }`` are inherited by the
  hosts' volumes (8.4 drops them);
* ``resync-after`` naming an unknown resource is an error (8.4 only warns when not on a tty);
* stacked resources, DRBD proxy and ``alternate-link-address`` are not supported.
"""
from __future__ import annotations

import glob
import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any

from . import lexer as L
from .errors import E_CONFIG_INVALID, E_USAGE, ConfigError
from .lexer import Lexer, Token
from .model import Address, Setting
from .options import (GLOBAL_DEFAULTS, GLOBAL_RANGES, PORT_RANGE, SECTIONS,
                      SHARED_SECRET_MAX, enum_message, range_message, strtoll)

_ALIASES = {(L.TK_HANDLER_OPTION, "outdate-peer"): "fence-peer",
            (L.TK_DISK_OPTION, "rate"): "resync-rate",
            (L.TK_DISK_OPTION, "after"): "resync-after"}
_RESOURCE_EXPECTED = ("protocol | on | disk | net | syncer | startup | handlers |"
                      " ignore-on | stacked-on-top-of")


def canonify(path: str) -> str:
    """drbdadm's canonify_path(): absolute, with the directory part resolved."""
    head, tail = os.path.split(path)
    return os.path.join(os.path.realpath(head or "."), tail)


def _trunc(text: str) -> str:
    return text[:20] + ("..." if len(text) > 20 else "")


# ---------------------------------------------------------------------------------------
# mutable parse tree (turned into the frozen model at the end)

@dataclass
class _Vol:
    vnr: int
    implicit: bool
    device: str | None = None
    minor: int = -1
    disk: str | None = None
    meta_disk: str | None = None
    meta_index: str | None = None
    disk_settings: list[Setting] = field(default_factory=list)


@dataclass
class _Host:
    names: list[str]
    line: int
    floating: bool = False
    address: Address | None = None
    volumes: list[_Vol] = field(default_factory=list)
    option_settings: list[Setting] = field(default_factory=list)


@dataclass
class _Res:
    name: str
    display: str          # the file name as messages print it
    file: str             # absolute
    line: int
    settings: dict[str, list[Setting]] = field(
        default_factory=lambda: {s: [] for s in SECTIONS})
    volumes: list[_Vol] = field(default_factory=list)
    hosts: list[_Host] = field(default_factory=list)
    become_primary_on: list[str] | None = None
    stacked_timeouts: bool = False


def _find_volume(vols: list[_Vol], vnr: int) -> _Vol | None:
    for v in vols:
        if v.vnr == vnr:
            return v
    return None


def _insert_sorted(vols: list[_Vol], vol: _Vol) -> None:
    i = 0
    while i < len(vols) and vols[i].vnr <= vol.vnr:
        i += 1
    vols.insert(i, vol)


def _is_loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr.split("%")[0]).is_loopback
    except ValueError:
        return False


class _Parser:
    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.uniq: dict[str, str] = {}
        self.upr: dict[str, str] = {}
        self.seen_files: set[str] = set()
        self.files: list[str] = []
        self.global_options: dict[str, Any] = dict(GLOBAL_DEFAULTS)
        self.global_explicit: set[str] = set()
        self.common: _Res | None = None
        self.resources: list[_Res] = []
        self.lx: Lexer = Lexer("", "")
        self.file_abs = ""
        self.fline = 0
        self.c_section_start = 0
        self.tok = Token(L.TK_EOF, "", 0)

    # --- plumbing -------------------------------------------------------------------
    @property
    def where(self) -> str:
        return f"{self.lx.filename}:{self.fline}"

    def next(self) -> Token:
        self.tok = self.lx.next()
        return self.tok

    def fatal(self, msg: str, code: int = E_CONFIG_INVALID) -> ConfigError:
        return ConfigError("\n".join(self.errors + [msg]), code)

    def error(self, msg: str) -> None:
        self.errors.append(msg)

    def pe_expected(self, exp: str) -> ConfigError:
        return self.fatal(f"{self.lx.filename}:{self.tok.line}: Parse error: '{exp}' expected,"
                          f"\n\tbut got '{_trunc(self.tok.text)}'")

    def pe_expected_got(self, exp: str, tok: Token) -> ConfigError:
        return self.fatal(f"{self.lx.filename}:{tok.line}: Parse error: '{exp}' expected,"
                          f"\n\tbut got '{_trunc(tok.text)}' (TK {tok.code})")

    def expect(self, code: int) -> Token:
        """drbdadm's EXP(): the next token must be CODE."""
        tok = self.next()
        if tok.code != code:
            if code == L.TK_STRING:
                self.check_string_error(tok)
            names = {L.TK_STRING: "TK_STRING", L.TK_INTEGER: "TK_INTEGER",
                     L.TK_IPADDR: "TK_IPADDR", L.TK_IPADDR6: "TK_IPADDR6", L.TK_ON: "TK_ON"}
            raise self.pe_expected_got(names.get(code, chr(code) if code < 256 else str(code)),
                                       tok)
        return tok

    def check_string_error(self, tok: Token) -> None:
        err = L.string_error(tok, self.lx.filename)
        if err is not None:
            raise self.fatal(str(err))

    def expect_string_or_int(self) -> Token:
        tok = self.next()
        if tok.code in (L.TK_INTEGER, L.TK_STRING, L.TK_ON):
            return tok
        self.check_string_error(tok)
        raise self.pe_expected_got("TK_STRING | TK_INTEGER", tok)

    def _uniq(self, table: dict[str, str], what: str, key: str) -> None:
        here = self.where
        first = table.get(key)
        if first is None:
            table[key] = here
            return
        # drbdadm-84 is built with EXIT_ON_CONFLICT: the first conflict ends parsing
        raise self.fatal(f"{here}: conflicting use of {what} '{key}' ...\n"
                         f"{first}: {what} '{key}' first used here.")

    def check_uniq(self, what: str, key: str) -> None:
        self._uniq(self.uniq, what, key)

    def check_upr(self, what: str, key: str) -> None:
        self._uniq(self.upr, what, key)

    def number(self, name: str, text: str, scale: str, lo: int, hi: int) -> int:
        """m_strtoll_range(): convert, and report (not raise) an out-of-range value."""
        try:
            value = strtoll(text, scale)
        except ConfigError as e:
            # drbdadm-84 prints these bare and exits 20; we add FILE:LINE
            raise self.fatal(f"{self.where}: {e}", e.exit_code) from None
        if not lo <= value <= hi:
            self.error(range_message(self.where, name, text, value, lo, hi, scale))
        return value

    # --- files ----------------------------------------------------------------------
    def parse_file(self, display: str, abs_path: str, text: str) -> None:
        saved = (self.lx, self.file_abs, self.fline, self.tok)
        self.lx, self.file_abs = Lexer(text, display), abs_path
        self.files.append(abs_path)
        try:
            self.top_level()
        finally:
            self.lx, self.file_abs, self.fline, self.tok = saved

    def seen(self, path: str) -> bool:
        real = os.path.realpath(path)
        if real in self.seen_files:
            return True
        self.seen_files.add(real)
        return False

    def include(self, pattern: str) -> None:
        base_dir = os.path.dirname(self.file_abs)
        display_dir = os.path.dirname(self.lx.filename)
        if os.path.isabs(pattern):
            matches = sorted(glob.glob(pattern))
        else:
            matches = sorted(glob.glob(pattern, root_dir=base_dir))
        if not matches:
            if not any(c in pattern for c in "?*["):
                self.error(f"{self.lx.filename}:{self.lx.line}: "
                           f"Failed to open include file '{pattern}'.")
            return
        for match in matches:
            abs_path = os.path.normpath(os.path.join(base_dir, match))
            display = match if os.path.isabs(match) else os.path.join(display_dir, match)
            if os.path.isdir(abs_path) or self.seen(abs_path):
                continue
            try:
                with open(abs_path, encoding="utf-8", errors="surrogateescape") as f:
                    text = f.read()
            except OSError:
                self.error(f"{self.lx.filename}:{self.lx.line}: "
                           f"Failed to open include file '{match}'.")
                continue
            self.parse_file(display, canonify(abs_path), text)

    # --- top level ------------------------------------------------------------------
    def top_level(self) -> None:
        while True:
            tok = self.next()
            self.fline = tok.line
            k = tok.kind
            if k == L.TK_GLOBAL:
                self.parse_global()
            elif k == L.TK_COMMON:
                self.expect(ord("{"))
                self.common = self.parse_resource("common", common=True)
            elif k == L.TK_RESOURCE:
                name = self.expect(L.TK_STRING).text
                self.sane_resource_name(name)
                self.expect(ord("{"))
                self.resources.append(self.parse_resource(name))
            elif k == L.TK_SKIP:
                self.parse_skip()
            elif k == L.TK_INCLUDE:
                pattern = self.expect(L.TK_STRING).text
                self.expect(ord(";"))
                self.include(pattern)
            elif tok.code == L.TK_EOF:
                return
            else:
                raise self.pe_expected("global | common | resource | skip | include")

    def sane_resource_name(self, name: str) -> None:
        if not name:
            raise self.fatal("Resource name is empty.", E_USAGE)
        if any(ord(c) < 32 or c == "\x7f" for c in name):
            raise self.fatal("Resource name is invalid - please don't use control characters.",
                             E_USAGE)

    def parse_skip(self) -> None:
        """``skip [words] { ... }``: ignore a section and everything nested in it."""
        self.fline = self.tok.line
        tok = self.next()
        # 8.4 allows one word; we allow any words (``skip resource r0 {``), see module doc
        while tok.code not in (ord("{"), L.TK_EOF, ord("}"), ord(";")) and tok.code < 0x1000 \
                and tok.kind not in (L.TK_ERR_STRING_TOO_LONG, L.TK_ERR_DQSTRING,
                                     L.TK_ERR_DQSTRING_TOO_LONG):
            tok = self.next()
        if tok.code != ord("{"):
            self.check_string_error(tok)
            raise self.pe_expected("[ some_text ] {")
        level = 1
        while level:
            tok = self.next()
            if tok.code == ord("{"):
                level += 1
            elif tok.code == ord("}"):
                level -= 1
            elif tok.code == L.TK_EOF:
                raise self.fatal(f"{self.where}: reached eof while parsing this skip block.")

    def parse_global(self) -> None:
        self.check_uniq("global section", "global")
        if self.resources:
            self.warnings.append(f"{self.lx.filename}:{self.lx.line}: You should put the "
                                 "global {} section\n\tin front of any resource {} section")
        self.expect(ord("{"))
        g = self.global_options
        while True:
            tok = self.next()
            self.fline = tok.line
            k = tok.kind
            if k == L.TK_UDEV_ALWAYS_USE_VNR:
                g["udev-always-use-vnr"] = True
            elif k == L.TK_DISABLE_IP_VERIFICATION:
                g["disable-ip-verification"] = True
            elif k in (L.TK_MINOR_COUNT, L.TK_DIALOG_REFRESH, L.TK_CMD_TIMEOUT_SHORT,
                       L.TK_CMD_TIMEOUT_MEDIUM, L.TK_CMD_TIMEOUT_LONG):
                value = self.expect(L.TK_INTEGER).text
                lo, hi = GLOBAL_RANGES[tok.text]
                g[tok.text] = self.number(tok.text, value, "1", lo, hi)
                self.global_explicit.add(tok.text)
            elif k == L.TK_USAGE_COUNT:
                answer = self.next()
                if answer.kind not in (L.TK_YES, L.TK_NO, L.TK_ASK):
                    raise self.pe_expected("yes | no | ask")
                g["usage-count"] = answer.text
            elif tok.code == ord("}"):
                return
            else:
                raise self.pe_expected("dialog-refresh | minor-count | disable-ip-verification")
            self.expect(ord(";"))

    # --- resource / common ------------------------------------------------------------
    def parse_resource(self, name: str, common: bool = False) -> _Res:
        self.upr = {}
        self.check_uniq("resource section", name)
        res = _Res(name, self.lx.filename, self.file_abs, self.lx.line)
        while True:
            tok = self.next()
            self.fline = tok.line
            k = tok.kind
            if k == L.TK_NET_OPTION and tok.text == "protocol":
                self.check_upr("protocol statement", f"{name}: protocol")
                value = self.expect(L.TK_STRING)
                res.settings["net"].append(Setting("protocol", self.protocol(value.text),
                                                   tok.line))
                self.expect(ord(";"))
            elif k == L.TK_ON:
                names = self.parse_hosts(ord("{"))
                self.parse_host_section(res, names)
            elif k == L.TK_FLOATING:
                self.parse_host_section(res, None)
            elif k == L.TK_IGNORE:
                self.expect(L.TK_STRING)
                self.warnings.append(f"{self.lx.filename}:{self.lx.line}: in resource {name}, "
                                     "WARN: The 'ignore-on' keyword is deprecated.")
                self.expect(ord(";"))
            elif k == L.TK_DISK:
                sub = self.next()
                if sub.code == L.TK_STRING:
                    self.volume0(res.volumes).disk = sub.text
                    self.expect(ord(";"))
                elif sub.code == ord("{"):
                    self.check_upr("disk section", f"{name}:disk")
                    res.settings["disk"] += self.parse_options("disk")
                else:
                    self.check_string_error(sub)
                    raise self.pe_expected_got("TK_STRING | {", sub)
            elif k == L.TK_NET:
                self.check_upr("net section", f"{name}:net")
                self.expect(ord("{"))
                res.settings["net"] += self.parse_options("net")
            elif k == L.TK_SYNCER:
                self.check_upr("syncer section", f"{name}:syncer")
                self.expect(ord("{"))
                self.parse_syncer(res)
            elif k == L.TK_STARTUP:
                self.check_upr("startup section", f"{name}:startup")
                self.expect(ord("{"))
                res.settings["startup"] = self.parse_options("startup", res)
            elif k == L.TK_HANDLER:
                self.check_upr("handlers section", f"{name}:handlers")
                self.expect(ord("{"))
                res.settings["handlers"] = self.parse_options("handlers")
            elif k == L.TK_OPTIONS:
                self.check_upr("resource options section", f"{name}:res_options")
                self.expect(ord("{"))
                res.settings["options"] += self.parse_options("options")
            elif k in (L.TK_DEVICE, L.TK_META_DISK, L.TK_FLEX_META_DISK):
                if k == L.TK_DEVICE:
                    self.check_upr("device statement", f"{name}:device")
                self.volume_stmt(self.volume0(res.volumes), None, tok)
            elif k == L.TK_VOLUME:
                vnr = self.volume_number()
                _insert_sorted(res.volumes, self.parse_volume(vnr, None))
            elif k == L.TK_SKIP:
                self.parse_skip()
            elif k in (L.TK_STACKED, L.TK_PROXY):
                raise self.fatal(f"{self.where}: '{tok.text}' is not supported by udrbd.")
            elif tok.code == ord("}"):
                break
            elif tok.code == L.TK_EOF:
                # drbdadm-84 accepts a resource cut off by the end of the file; we do not
                raise self.pe_expected_got("}", tok)
            else:
                raise self.pe_expected_got(_RESOURCE_EXPECTED, tok)
        if common and res.hosts:
            self.error(f"{self.lx.filename}:{self.c_section_start}: in the common section, "
                       "there are no host sections allowed.")
        self.check_volumes_hosts(res)
        return res

    def protocol(self, text: str) -> str:
        if len(text) == 1 and text.upper() in "ABC":
            return text.upper()
        # drbdadm-84 prints this without FILE:LINE
        self.error(f"{self.where}: unknown protocol '{text}', should be one of A,B,C")
        return text

    def volume_number(self) -> int:
        text = self.expect(L.TK_INTEGER).text
        digits = "".join(c for c in text if c.isdigit())   # atoi()
        return int(digits)

    def parse_hosts(self, delimiter: int) -> list[str]:
        names: list[str] = []
        while True:
            tok = self.next()
            if tok.code == L.TK_STRING:
                names.append(tok.text)
            elif tok.code == delimiter:
                if not names:
                    raise self.pe_expected_got("TK_STRING", tok)
                return names
            else:
                raise self.pe_expected_got(f"TK_STRING | '{chr(delimiter)}'", tok)

    # --- hosts ----------------------------------------------------------------------
    def parse_host_section(self, res: _Res, names: list[str] | None) -> None:
        self.c_section_start = self.lx.line
        self.fline = self.lx.line
        host = _Host(names or [], self.c_section_start, floating=names is None)
        in_braces = True
        if host.floating:
            host.address = self.parse_address_value()
            a = host.address
            self.check_uniq("IP", f"{a.host}:{a.port}")
            host.names = [f"ipv6 [{a.host}]:{a.port}" if a.af == "ipv6" else f"{a.host}:{a.port}"]
            tok = self.next()
            if tok.code == ord(";"):
                in_braces = False
            elif tok.code != ord("{"):
                raise self.pe_expected_got("{ | ;", tok)
        for h in host.names:
            self.check_upr("host section", f"{res.name}: on {h}")
        res.hosts.append(host)

        statements = {L.TK_DISK: "disk", L.TK_DEVICE: "device", L.TK_META_DISK: "meta-disk",
                      L.TK_FLEX_META_DISK: "meta-disk"}
        while in_braces:
            tok = self.next()
            self.fline = tok.line
            k = tok.kind
            if k in statements:
                for h in host.names:
                    self.check_upr(f"{statements[k]} statement", f"{res.name}:{h}:{statements[k]}")
                self.volume_stmt(self.volume0(host.volumes), host.names, tok)
            elif k == L.TK_ADDRESS:
                if host.floating:
                    raise self.fatal(f"{self.where}: address statement not allowed for "
                                     "floating {} host sections")
                for h in host.names:
                    self.check_upr("address statement", f"{res.name}:{h}:address")
                host.address = self.parse_address(host.names)
                # drbdadm-84 checks the port a second time here (and reports twice)
                lo, hi = PORT_RANGE
                self.number("port", str(host.address.port_text), "1", lo, hi)
            elif k == L.TK_VOLUME:
                vnr = self.volume_number()
                _insert_sorted(host.volumes, self.parse_volume(vnr, host.names))
            elif k == L.TK_OPTIONS:
                self.expect(ord("{"))
                host.option_settings = self.parse_options("options")
            elif k == L.TK_SKIP:
                self.parse_skip()
            elif k in (L.TK_PROXY, L.TK_ALT_ADDRESS):
                raise self.fatal(f"{self.where}: '{tok.text}' is not supported by udrbd.")
            elif tok.code == ord("}"):
                in_braces = False
            else:
                raise self.pe_expected("disk | device | address | meta-disk "
                                       "| flexible-meta-disk")
        self.inherit_volumes(res.volumes, host)
        for vol in host.volumes:
            if vol.meta_disk is not None and vol.meta_disk != "internal":
                for h in host.names:
                    self.check_uniq("meta-disk", f"{h}:{vol.meta_disk}[{vol.meta_index}]")
        if host.address is None:
            self.derror(res, host, "address")
        self.check_volumes_complete(res, host)

    def derror(self, res: _Res, host: _Host, what: str) -> None:
        self.error(f"{self.lx.filename}:{self.c_section_start}: in resource {res.name}, "
                   f"on {' '.join(host.names)} {{ ... }}: '{what}' keyword missing.")

    def check_volumes_complete(self, res: _Res, host: _Host) -> None:
        for vol in host.volumes:
            if vol.device is None and vol.minor == -1:
                self.derror(res, host, "device")
            if vol.disk is None:
                self.derror(res, host, "disk")
            if vol.meta_disk is None:
                self.derror(res, host, "meta-disk")
            if vol.meta_index is None:
                self.derror(res, host, "meta-index")
        if any(v.implicit for v in host.volumes) and any(v.vnr for v in host.volumes):
            self.error(f"{self.lx.filename}:{self.lx.line}: in resource {res.name}: "
                       "you must not mix implicit and explicit volumes")

    def check_volumes_hosts(self, res: _Res) -> None:
        """Every host section must define the same volumes."""
        if not res.hosts:
            return
        first = res.hosts[0]
        for other in res.hosts[1:]:
            mine = {v.vnr: v for v in first.volumes}
            theirs = {v.vnr: v for v in other.volumes}
            a_name, b_name = " ".join(first.names), " ".join(other.names)
            for vnr in sorted(set(mine) | set(theirs)):
                where = f"{self.lx.filename}:{self.lx.line}: in resource {res.name}"
                if vnr not in theirs:
                    self.error(f"{where}, on {a_name} {{ ... }}: volume {vnr} not defined "
                               f"on {b_name}")
                elif vnr not in mine:
                    self.error(f"{where}, on {a_name} {{ ... }}: volume {vnr} missing "
                               f"(present on {b_name})")
                elif mine[vnr].implicit != theirs[vnr].implicit:
                    self.error(f"{where}, on {a_name} resp. {b_name}: volume {vnr} must not "
                               "be implicit on one but not the other")

    def inherit_volumes(self, source: list[_Vol], host: _Host) -> None:
        for s in source:
            t = _find_volume(host.volumes, s.vnr)
            if t is None:
                t = _Vol(s.vnr, s.implicit)
                _insert_sorted(host.volumes, t)
            if t.disk is None and s.disk is not None:
                t.disk = s.disk
                for h in host.names:
                    self.check_uniq("disk", f"disk:{h}:{t.disk}")
            if t.device is None and s.device is not None:
                t.device = s.device
            if t.minor == -1 and s.minor != -1:
                t.minor = s.minor
                for h in host.names:
                    self.check_uniq("device-minor", f"device-minor:{h}:{t.minor}")
            if t.meta_disk is None and s.meta_disk is not None:
                t.meta_disk, t.meta_index = s.meta_disk, s.meta_index
            # 8.4 drops the disk options of resource-level volumes; we inherit them
            own = {x.name for x in t.disk_settings}       # the host's own win
            t.disk_settings = [x for x in s.disk_settings if x.name not in own] + \
                list(t.disk_settings)

    def volume0(self, vols: list[_Vol]) -> _Vol:
        if not vols:
            vol = _Vol(0, implicit=True)
            vols.append(vol)
            return vol
        vol = vols[0]
        if not (len(vols) == 1 and vol.vnr == 0 and vol.implicit):
            self.error(f"{self.lx.filename}:{self.lx.line}: mixing explicit and implicit "
                       "volumes is not allowed")
        return vol

    def parse_volume(self, vnr: int, hosts: list[str] | None) -> _Vol:
        vol = _Vol(vnr, implicit=False)
        self.expect(ord("{"))
        while True:
            tok = self.next()
            if tok.code == ord("}"):
                return vol
            if not self.volume_stmt(vol, hosts, tok):
                raise self.pe_expected_got("device | disk | meta-disk | flex-meta-disk | }", tok)

    def volume_stmt(self, vol: _Vol, hosts: list[str] | None, tok: Token) -> bool:
        k = tok.kind
        if k == L.TK_DISK:
            sub = self.next()
            if sub.code == L.TK_STRING:
                vol.disk = sub.text
                self.expect(ord(";"))
            elif sub.code == ord("{"):
                vol.disk_settings = self.parse_options("disk")
            else:
                self.check_string_error(sub)
                raise self.pe_expected_got("TK_STRING | {", sub)
        elif k == L.TK_DEVICE:
            self.parse_device(hosts, vol)
        elif k == L.TK_META_DISK:
            vol.meta_disk = self.expect(L.TK_STRING).text
            if vol.meta_disk == "internal":
                vol.meta_index = "internal"
                self.expect(ord(";"))
            else:
                sub = self.next()
                if sub.code == ord("["):
                    vol.meta_index = self.expect(L.TK_INTEGER).text
                    self.expect(ord("]"))
                    self.expect(ord(";"))
                elif sub.code == ord(";"):
                    vol.meta_index = "flexible"
                else:
                    raise self.pe_expected("[ | ;")
        elif k == L.TK_FLEX_META_DISK:
            vol.meta_disk = self.expect(L.TK_STRING).text
            vol.meta_index = "internal" if vol.meta_disk == "internal" else "flexible"
            self.expect(ord(";"))
        else:
            return False
        return True

    def parse_device(self, hosts: list[str] | None, vol: _Vol) -> None:
        tok = self.next()
        if tok.code == L.TK_STRING:
            name = tok.text
            vol.device = "/dev/" + name if name.startswith("drbd") else name
            sub = self.next()
            if sub.code == ord(";"):
                suffix = vol.device[9:]
                if vol.device.startswith("/dev/drbd") and suffix.isdigit():
                    vol.minor = int(suffix)
                else:
                    vol.minor = -1
                    self.error(f"{self.where}: no minor given nor device name contains a "
                               "minor number")
                self.device_uniq(hosts, vol)
                return
            if sub.code != L.TK_MINOR:
                raise self.pe_expected("minor | ;")
        elif tok.code != L.TK_MINOR:
            return      # like drbdadm-84: nothing set, "'device' keyword missing" follows
        vol.minor = self.volume_number()
        self.expect(ord(";"))
        if vol.device is not None:
            self.check_minor_nonsense(vol.device, vol.minor)
        self.device_uniq(hosts, vol)

    def check_minor_nonsense(self, device: str, minor: int) -> None:
        if not device.startswith("/dev/drbd"):
            return      # any path is fine with an explicit minor (see module doc)
        rest = device[9:]
        if rest.isdigit() or rest == "":
            if int(rest or "0") == minor:
                return
            self.error(f"{self.where}: explicit minor number must match with device name\n"
                       f"\tTry \"device /dev/drbd{minor} minor {minor};\",\n"
                       "\tor leave off either device name or explicit minor.\n"
                       "\tArbitrary device names must start with /dev/drbd_\n"
                       "\tmind the '_'! (/dev/ is optional, but drbd_ is required)")
        elif rest.startswith("_"):
            self.warnings.append(
                f"{self.where}: arbitrary device names (/dev/drbd_...) are no longer "
                f"generated from current udev rules.\n\tYou may need to manually mknod "
                f"{device} b 147 {minor}\n\tYou should no longer use them.")
        else:
            self.error(f"{self.where}: explicit device names should be of the form "
                       "/dev/drbd<minor>")

    def device_uniq(self, hosts: list[str] | None, vol: _Vol) -> None:
        for h in hosts or ():
            self.check_uniq("device-minor", f"device-minor:{h}:{vol.minor}")
            if vol.device is not None:
                self.check_uniq("device", f"device:{h}:{vol.device}")

    # --- addresses --------------------------------------------------------------------
    def parse_address_value(self) -> Address:
        tok = self.next()
        k = tok.kind
        if k == L.TK_SCI:
            af = "ssocks"
            self.expect(L.TK_IPADDR)
        elif k in (L.TK_SSOCKS, L.TK_SDP, L.TK_IPV4):
            af = tok.text
            self.expect(L.TK_IPADDR)
        elif k == L.TK_IPV6:
            af = "ipv6"
            self.expect(ord("["))
            self.expect(L.TK_IPADDR6)
        elif k == L.TK_IPADDR:
            af = "ipv4"
        else:
            raise self.pe_expected("ssocks | sdp | ipv4 | ipv6 | <ipv4 address> ")
        addr = self.tok.text
        if af == "ipv6":
            self.expect(ord("]"))
        self.expect(ord(":"))
        port_text = self.expect(L.TK_INTEGER).text
        lo, hi = PORT_RANGE
        port = self.number("port", port_text, "1", lo, hi)
        return _PortAddress(af, addr, port if lo <= port <= hi else 0, port_text)

    def parse_address(self, hosts: list[str]) -> Address:
        a = self.parse_address_value()
        if _is_loopback(a.host):
            for h in hosts:
                self.check_uniq("IP", f"{h}:{a.host}:{a.port_text}")
        else:
            self.check_uniq("IP", f"{a.host}:{a.port_text}")
        self.expect(ord(";"))
        return a

    # --- option sections ----------------------------------------------------------------
    def parse_options(self, section: str, res: _Res | None = None) -> list[Setting]:
        """parse_options_d(): the body of net/disk/startup/options/handlers { }."""
        flag, no_flag, option, delegate = {
            "net": (L.TK_NET_FLAG, L.TK_NET_NO_FLAG, L.TK_NET_OPTION, L.TK_NET_DELEGATE),
            "disk": (L.TK_DISK_FLAG, L.TK_DISK_NO_FLAG, L.TK_DISK_OPTION, None),
            "startup": (L.TK_STARTUP_FLAG, None, L.TK_STARTUP_OPTION, L.TK_STARTUP_DELEGATE),
            "options": (None, None, L.TK_RES_OPTION, None),
            "handlers": (None, None, L.TK_HANDLER_OPTION, None),
        }[section]
        self.c_section_start = self.lx.line
        self.fline = self.lx.line
        out: list[Setting] = []
        while True:
            tok = self.next()
            k = tok.kind
            self.fline = tok.line
            if tok.code == L.TK_EOF:
                raise self.pe_expected("an option")
            if k == flag and flag is not None:
                value = self.next()
                if value.kind in (L.TK_YES, L.TK_NO):
                    out.append(Setting(tok.text, value.text, tok.line))
                elif value.code == ord(";"):
                    out.append(Setting(tok.text, "yes", tok.line))   # bare flag means yes
                    continue
                else:
                    raise self.pe_expected("yes | no | ;")
            elif k == no_flag and no_flag is not None:
                out.append(Setting(tok.text[3:], "no", tok.line))
            elif k == option:
                name = _ALIASES.get((option, tok.text), tok.text)
                value = self.expect_string_or_int()
                out.append(Setting(name, self.check_value(section, name, value.text), tok.line))
            elif delegate is not None and k == delegate:
                if section == "startup" and res is not None and tok.text == "become-primary-on":
                    res.become_primary_on = self.parse_hosts(ord(";"))
                    continue
                if section == "startup" and res is not None and tok.text == "stacked-timeouts":
                    res.stacked_timeouts = True
                    self.expect(ord(";"))
                    continue
                raise self.pe_expected("an option keyword")
            elif k == L.TK_DEPRECATED_OPTION:
                self.expect_string_or_int()      # silently ignored, like drbdadm-84
            elif tok.code == ord("}"):
                return out
            else:
                raise self.pe_expected("an option keyword")
            self.expect(ord(";"))

    def parse_syncer(self, res: _Res) -> None:
        """8.3's syncer { }: each option goes to its 8.4 section (rate -> disk resync-rate)."""
        self.c_section_start = self.lx.line
        homes = {L.TK_NET_FLAG: "net", L.TK_NET_OPTION: "net", L.TK_DISK_FLAG: "disk",
                 L.TK_DISK_OPTION: "disk", L.TK_RES_OPTION: "options"}
        while True:
            tok = self.next()
            self.fline = tok.line
            if tok.code >= L.TK_GLOBAL and not tok.code & L.TK_SYNCER_OLD_OPT:
                raise self.pe_expected("a syncer option keyword")
            if tok.code == ord("}"):
                return
            code = tok.code & ~L.TK_SYNCER_OLD_OPT
            section = homes.get(code)
            if section is None:
                raise self.pe_expected("a syncer option keyword")
            if code in (L.TK_NET_FLAG, L.TK_DISK_FLAG):
                value = self.next()
                text = "no" if value.kind == L.TK_NO else "yes"
                res.settings[section].append(Setting(tok.text, text, tok.line))
                end = self.next() if value.kind in (L.TK_YES, L.TK_NO) else value
            else:
                name = _ALIASES.get((code, tok.text), tok.text)
                value = self.expect_string_or_int()
                res.settings[section].append(
                    Setting(name, self.check_value(section, name, value.text), tok.line))
                end = self.next()
            if end.code != ord(";"):
                raise self.pe_expected(";")

    def check_value(self, section: str, name: str, text: str) -> str:
        """Validate one option value; returns the text as dump prints it."""
        opt = SECTIONS[section].get(name)
        if opt is None:
            return text
        if name == "protocol":
            return self.protocol(text)
        if opt.kind == "int":
            self.number(name, text, opt.scale, opt.lo, opt.hi)
        elif opt.kind == "enum" and text not in opt.values and not (
                name == "after-sb-0pri" and text.startswith("discard-node-")):
            # drbdadm-84 leaves this to drbdsetup; we report it now, in drbdadm 9's words
            self.error(enum_message(self.where, name, text, opt.values))
        elif name == "shared-secret" and len(text) > SHARED_SECRET_MAX:
            self.error(f"{self.where}: shared-secret is too long "
                       f"({len(text)} > {SHARED_SECRET_MAX} characters).")
        return text


@dataclass(frozen=True)
class _PortAddress(Address):
    """An Address that remembers how its port was written (for drbdadm's key texts)."""
    port_text: str = ""
