"""Tokenizer for drbd.conf, behaving like drbd-utils' 8.4 flex scanner.

Like flex, the longest match wins and ties go to the earlier rule, so ``disk`` is a
keyword, ``disk0`` a plain string and ``123`` an integer. Token codes are the ones
drbdadm-84 prints in its parse errors (``... but got '}' (TK 125)``); single-character
tokens use their ASCII code, end of input is 0.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ConfigError

# --- token codes (drbdadm-84's enum yytokentype) -----------------------------------
(TK_GLOBAL, TK_RESOURCE, TK_ON, TK_STACKED, TK_IGNORE, TK_NET, TK_DISK, TK_SKIP, TK_SYNCER,
 TK_STARTUP, TK_DISABLE_IP_VERIFICATION, TK_DIALOG_REFRESH, TK_PROTOCOL, TK_HANDLER,
 TK_COMMON, TK_ADDRESS, TK_ALT_ADDRESS, TK_DEVICE, TK_MINOR, TK_META_DISK,
 TK_FLEX_META_DISK, TK_MINOR_COUNT, TK_IPADDR, TK_INTEGER, TK_STRING, TK_ELSE,
 TK_DISK_FLAG, TK_DISK_NO_FLAG, TK_DISK_OPTION, TK_NET_FLAG, TK_NET_NO_FLAG,
 TK_NET_OPTION, TK_SYNCER_FLAG, TK_SYNCER_OPTION, TK_STARTUP_FLAG, TK_STARTUP_OPTION,
 TK_STARTUP_DELEGATE, TK_HANDLER_OPTION, TK_USAGE_COUNT, TK_ASK, TK_YES, TK_NO,
 TK__THIS_HOST, TK__REMOTE_HOST, TK_PROXY, TK_INSIDE, TK_OUTSIDE, TK_MEMLIMIT,
 TK_PROXY_OPTION, TK_PROXY_DELEGATE, TK_ERR_STRING_TOO_LONG, TK_ERR_DQSTRING_TOO_LONG,
 TK_ERR_DQSTRING, TK_SCI, TK_SDP, TK_SSOCKS, TK_IPV4, TK_IPV6, TK_IPADDR6,
 TK_NET_DELEGATE, TK_INCLUDE, TK_BWLIMIT, TK_FLOATING, TK_DEPRECATED_OPTION, TK_VOLUME,
 TK_CMD_TIMEOUT_SHORT, TK_CMD_TIMEOUT_MEDIUM, TK_CMD_TIMEOUT_LONG, TK_RES_OPTION,
 TK_OPTIONS) = range(258, 328)
TK_UDEV_ALWAYS_USE_VNR = 328  # not printed by any message we reproduce
TK_SYNCER_OLD_OPT = 0x2000    # or'ed to options that 8.3's syncer {} section knew
TK_PROXY_GROUP = 0x3000
TK_EOF = 0


def base(code: int) -> int:
    """The token code without its group bits."""
    return code & 0xFFF


_SO = TK_SYNCER_OLD_OPT
# keyword -> token code, in the scanner's rule order (earlier rules win ties)
KEYWORDS: dict[str, int] = {
    "on": TK_ON, "ignore-on": TK_IGNORE, "stacked-on-top-of": TK_STACKED,
    "floating": TK_FLOATING, "no": TK_NO, "net": TK_NET, "yes": TK_YES, "ask": TK_ASK,
    "skip": TK_SKIP, "disk": TK_DISK, "proxy": TK_PROXY, "minor": TK_MINOR,
    "inside": TK_INSIDE, "volume": TK_VOLUME, "cmd-timeout-short": TK_CMD_TIMEOUT_SHORT,
    "cmd-timeout-medium": TK_CMD_TIMEOUT_MEDIUM, "cmd-timeout-long": TK_CMD_TIMEOUT_LONG,
    "syncer": TK_SYNCER, "device": TK_DEVICE, "global": TK_GLOBAL, "common": TK_COMMON,
    "options": TK_OPTIONS, "outside": TK_OUTSIDE, "address": TK_ADDRESS,
    "alternate-link-address": TK_ALT_ADDRESS, "startup": TK_STARTUP,
    "include": TK_INCLUDE, "handlers": TK_HANDLER, "minor-count": TK_MINOR_COUNT,
    "disable-ip-verification": TK_DISABLE_IP_VERIFICATION,
    "udev-always-use-vnr": TK_UDEV_ALWAYS_USE_VNR,
    "dialog-refresh": TK_DIALOG_REFRESH, "resource": TK_RESOURCE,
    "meta-disk": TK_META_DISK, "flexible-meta-disk": TK_FLEX_META_DISK,
    "usage-count": TK_USAGE_COUNT, "_this_host": TK__THIS_HOST,
    "_remote_host": TK__REMOTE_HOST, "sci": TK_SCI, "ssocks": TK_SSOCKS, "sdp": TK_SDP,
    "ipv4": TK_IPV4, "ipv6": TK_IPV6,
    # disk {}
    "size": TK_DISK_OPTION, "on-io-error": TK_DISK_OPTION, "fencing": TK_DISK_OPTION,
    "max-bio-bvecs": TK_DISK_OPTION, "disk-timeout": TK_DISK_OPTION,
    "read-balancing": TK_DISK_OPTION, "rs-discard-granularity": TK_DISK_OPTION,
    "use-bmbv": TK_DISK_FLAG, "disk-barrier": TK_DISK_FLAG, "disk-flushes": TK_DISK_FLAG,
    "disk-drain": TK_DISK_FLAG, "md-flushes": TK_DISK_FLAG,
    "no-disk-barrier": TK_DISK_NO_FLAG, "no-disk-flushes": TK_DISK_NO_FLAG,
    "no-disk-drain": TK_DISK_NO_FLAG, "no-md-flushes": TK_DISK_NO_FLAG,
    # net {}
    "timeout": TK_NET_OPTION, "protocol": TK_NET_OPTION, "ko-count": TK_NET_OPTION,
    "ping-int": TK_NET_OPTION, "max-buffers": TK_NET_OPTION,
    "sndbuf-size": TK_NET_OPTION | TK_PROXY_GROUP, "rcvbuf-size": TK_NET_OPTION | TK_PROXY_GROUP,
    "connect-int": TK_NET_OPTION, "cram-hmac-alg": TK_NET_OPTION,
    "shared-secret": TK_NET_OPTION, "max-epoch-size": TK_NET_OPTION,
    "after-sb-0pri": TK_NET_OPTION, "after-sb-1pri": TK_NET_OPTION,
    "after-sb-2pri": TK_NET_OPTION, "rr-conflict": TK_NET_OPTION,
    "ping-timeout": TK_NET_OPTION | TK_PROXY_GROUP, "unplug-watermark": TK_NET_OPTION,
    "data-integrity-alg": TK_NET_OPTION, "on-congestion": TK_NET_OPTION,
    "socket-check-timeout": TK_NET_OPTION, "congestion-fill": TK_NET_OPTION,
    "congestion-extents": TK_NET_OPTION, "allow-two-primaries": TK_NET_FLAG,
    "always-asbp": TK_NET_FLAG, "no-tcp-cork": TK_NET_NO_FLAG, "tcp-cork": TK_NET_FLAG,
    "discard-my-data": TK_NET_DELEGATE,
    # syncer {} (8.3) keywords and their 8.4 homes
    "rate": _SO | TK_DISK_OPTION, "resync-rate": TK_DISK_OPTION,
    "after": _SO | TK_DISK_OPTION, "resync-after": TK_DISK_OPTION,
    "verify-alg": _SO | TK_NET_OPTION, "csums-alg": _SO | TK_NET_OPTION,
    "csums-after-crash-only": TK_NET_FLAG, "al-extents": _SO | TK_DISK_OPTION,
    "al-updates": TK_DISK_FLAG, "discard-zeroes-if-aligned": TK_DISK_FLAG,
    "cpu-mask": _SO | TK_RES_OPTION, "use-rle": _SO | TK_NET_FLAG,
    "delay-probe-volume": TK_DEPRECATED_OPTION, "delay-probe-interval": TK_DEPRECATED_OPTION,
    "c-plan-ahead": _SO | TK_DISK_OPTION, "c-delay-target": _SO | TK_DISK_OPTION,
    "c-fill-target": _SO | TK_DISK_OPTION, "c-max-rate": _SO | TK_DISK_OPTION,
    "c-min-rate": _SO | TK_DISK_OPTION, "throttle-threshold": TK_DEPRECATED_OPTION,
    "hold-off-threshold": TK_DEPRECATED_OPTION,
    "on-no-data-accessible": _SO | TK_RES_OPTION,
    # startup {}
    "wfc-timeout": TK_STARTUP_OPTION, "degr-wfc-timeout": TK_STARTUP_OPTION,
    "outdated-wfc-timeout": TK_STARTUP_OPTION, "stacked-timeouts": TK_STARTUP_DELEGATE,
    "become-primary-on": TK_STARTUP_DELEGATE, "wait-after-sb": TK_STARTUP_FLAG,
    # handlers {}
    "pri-on-incon-degr": TK_HANDLER_OPTION, "pri-lost-after-sb": TK_HANDLER_OPTION,
    "pri-lost": TK_HANDLER_OPTION, "initial-split-brain": TK_HANDLER_OPTION,
    "split-brain": TK_HANDLER_OPTION, "outdate-peer": TK_HANDLER_OPTION,
    "fence-peer": TK_HANDLER_OPTION, "unfence-peer": TK_HANDLER_OPTION,
    "local-io-error": TK_HANDLER_OPTION, "before-resync-target": TK_HANDLER_OPTION,
    "after-resync-target": TK_HANDLER_OPTION, "before-resync-source": TK_HANDLER_OPTION,
    "out-of-sync": TK_HANDLER_OPTION,
    # DRBD proxy (recognised so the errors name them like drbdadm does)
    "memlimit": TK_PROXY_OPTION | TK_PROXY_GROUP, "read-loops": TK_PROXY_OPTION | TK_PROXY_GROUP,
    "compression": TK_PROXY_OPTION | TK_PROXY_GROUP, "bwlimit": TK_PROXY_OPTION | TK_PROXY_GROUP,
    "plugin": TK_PROXY_DELEGATE,
}

_WS = " \t\r"
_OPCHARS = "{};[]:"
_STRING = re.compile(r"[a-zA-Z0-9/._-]{1,129}")
_SNUM = r"[0-9]{1,3}"
_IPV4 = re.compile(rf"(?:{_SNUM}\.){{3}}{_SNUM}")
_NUM = re.compile(r"[0-9]{1,8}[MKGs]?")
# IPv6 as the scanner's {IPV6ADDR}: hex groups with at least two colons, optional %scope,
# or ::ffff:a.b.c.d
_IPV6 = re.compile(r"::[fF]{4}:(?:[0-9]{1,3}\.){3}[0-9]{1,3}"
                   r"|[0-9a-fA-F:]*:[0-9a-fA-F]*:[0-9a-fA-F:]*(?:%[a-zA-Z0-9/._-]{1,128})?")
_DQ = re.compile(r'"((?:[^"\\\n]|\\[^\n]){0,255})"')
_DQ_LONG = re.compile(r'"(?:[^"\\\n]|\\[^\n]){255}.')
_DQ_ERR = re.compile(r'"(?:[^"\\\n]|\\[^\n]){0,255}[\\\n]')


def unescape(text: str) -> str:
    """drbd-utils' unescape(): drop double quotes, a backslash keeps the next character."""
    out = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            i += 1
            continue
        if ch == "\\":
            i += 1
            if i >= len(text):
                break
            ch = text[i]
        out.append(ch)
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class Token:
    code: int     # token code (see above)
    text: str     # yytext: the matched text, unescaped for quoted strings
    line: int

    @property
    def kind(self) -> int:
        return base(self.code)


class Lexer:
    """Produces tokens from one file's text; ``line`` is the scanner's current line."""

    def __init__(self, text: str, filename: str) -> None:
        self.text = text
        self.filename = filename
        self.pos = 0
        self.line = 1

    def _skip_blank(self) -> None:
        text, n = self.text, len(self.text)
        while self.pos < n:
            ch = text[self.pos]
            if ch == "\n":
                self.line += 1
                self.pos += 1
            elif ch in _WS:
                self.pos += 1
            elif ch == "#":
                end = text.find("\n", self.pos)
                self.pos = n if end < 0 else end
            else:
                return

    def next(self) -> Token:
        self._skip_blank()
        text, pos = self.text, self.pos
        if pos >= len(text):
            return Token(TK_EOF, "", self.line)
        ch = text[pos]
        if ch in _OPCHARS and not (ch == ":" and _IPV6.match(text, pos)):
            self.pos += 1
            return Token(ord(ch), ch, self.line)
        if ch == '"':
            return self._dqstring()
        # longest match among keyword/IPv4/IPv6/integer/string, ties to the earlier rule
        candidates: list[tuple[int, int, int]] = []   # (length, -priority, code)
        m = _STRING.match(text, pos)
        s_len = m.end() - pos if m else 0
        if m and m.group() in KEYWORDS:
            candidates.append((s_len, -0, KEYWORDS[m.group()]))
        for prio, (regex, code) in enumerate(((_IPV4, TK_IPADDR), (_IPV6, TK_IPADDR6),
                                              (_NUM, TK_INTEGER)), start=1):
            mm = regex.match(text, pos)
            if mm and mm.end() > pos:
                candidates.append((mm.end() - pos, -prio, code))
        if s_len:
            if s_len > 128:
                self.pos = pos + s_len
                return Token(TK_ERR_STRING_TOO_LONG, text[pos:pos + s_len], self.line)
            candidates.append((s_len, -5, TK_STRING))
        if not candidates:
            self.pos += 1
            return Token(TK_ELSE, ch, self.line)
        length, _, code = max(candidates)
        self.pos = pos + length
        return Token(code, text[pos:pos + length], self.line)

    def _dqstring(self) -> Token:
        text, pos = self.text, self.pos
        m = _DQ.match(text, pos)
        if m:
            self.pos = m.end()
            return Token(TK_STRING, unescape(m.group()), self.line)
        m = _DQ_LONG.match(text, pos)
        if m:
            self.pos = m.end()
            return Token(TK_ERR_DQSTRING_TOO_LONG, m.group(), self.line)
        m = _DQ_ERR.match(text, pos)
        if m:
            self.pos = m.end()
            tok = Token(TK_ERR_DQSTRING, m.group(), self.line)
            if m.group().endswith("\n"):
                self.line += 1
            return tok
        # an unterminated string at the very end of the file
        self.pos = len(text)
        return Token(TK_ERR_DQSTRING, text[pos:], self.line)


def string_error(tok: Token, filename: str) -> ConfigError | None:
    """The scanner-level errors drbdadm reports for overlong or unterminated strings."""
    msgs = {TK_ERR_STRING_TOO_LONG: "Token too long",
            TK_ERR_DQSTRING_TOO_LONG: "Double quoted string too long",
            TK_ERR_DQSTRING: "Unterminated double quoted string\n  we don't allow embedded newlines\n "}
    msg = msgs.get(tok.code)
    if msg is None:
        return None
    return ConfigError(f"{filename}:{tok.line}: {msg} >>>{tok.text[:20]}...<<<")
