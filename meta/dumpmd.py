"""``drbdmeta dump-md`` text (v08) and the restore-md/verify-dump parser.

The format follows drbd-utils' ``meta_dump_md``/``fprintf_bm`` exactly, with
one deliberate difference: drbd-utils up to 9.32 (Debian's 9.22 included)
prints ``flags 0x00000000`` in the v08 ``uuid`` block whatever the real flags
are (it prints the unused v09 peer slot's flags; fixed in 9.33.0, commit
725d989e).  We print the real superblock flags, as 9.33 does, so that
dump-md -> restore-md keeps them.  The parser accepts both.

Bitmap rules: 64-bit words (the little-endian value, printed as
``0x%08X%08X`` high then low 32-bit word), four per line; a run of at least
eight equal words (16 equal 32-bit words, counted in multiples of 8) starting
at a line start is written ``N times 0x...;``; ``# at NkB`` marks every 8 MiB
of data (64 32-bit words).
"""
from __future__ import annotations

import re
import sys
from array import array
from dataclasses import dataclass, field

from meta.superblock import Superblock

_CHUNK_WORDS = 32 * 1024 * 1024 // 4    # drbdmeta reads the bitmap in 32 MiB buffers


# --------------------------------------------------------------------------------- dumping
def _words(data: bytes) -> array:
    w = array("I")
    w.frombytes(data[:len(data) // 4 * 4])
    if sys.byteorder != "little":
        w.byteswap()
    return w


def _run_end(data: bytes, i: int, end: int, cw: int) -> int:
    """First word index >= i (and < end) whose value differs from cw, else end."""
    pat = cw.to_bytes(4, "little")
    step = 1024
    block = pat * step
    while i + step <= end and data[4 * i:4 * (i + step)] == block:
        i += step
    while i < end and data[4 * i:4 * i + 4] == pat:
        i += 1
    return i


def format_bitmap(data: bytes) -> tuple[str, int]:
    """The ``{ ... }`` bitmap block of dump-md and the number of set bits."""
    words = _words(data)
    n = len(words)
    out = ["{"]
    i = count = bits = lw = cw = 0
    while i < n:
        if count == 0:
            cw = words[i]
        if i % 8 == 0:
            if not count:
                out.append(f"\n   # at {128 * i}kB\n   " if i % 64 == 0 else "\n   ")
            buf_end = min(n, (i // _CHUNK_WORDS + 1) * _CHUNK_WORDS)
            j = _run_end(data, i, buf_end, cw)
            tmp = (j - i) // 8 * 8
            if tmp > 8:
                count += tmp
                i += tmp
                if j >= buf_end and i < n:
                    continue
            if count:
                out.append(f" {count // 2} times 0x{cw:08X}{cw:08X};")
                bits += count * cw.bit_count()
                count = 0
                if i >= n:
                    break
                continue
        w = words[i]
        if i & 1 == 0:
            lw = w
        else:
            out.append(f" 0x{w:08X}{lw:08X};")
        bits += w.bit_count()
        i += 1
    out.append("\n}\n")
    return "".join(out), bits


def format_dump(sb: Superblock, md_offset: int, al_offset: int, bm_offset: int,
                bitmap: bytes, header: str = "", unclean: bool = False) -> tuple[str, int]:
    """Full dump-md text for a v08 superblock and its bitmap (bm_bytes(la_size) bytes).

    ``header`` is the ``# DRBD meta data dump`` comment block (see ``dump_header``).
    Returns (text, bits set).
    """
    u = sb.uuids
    bm_text, bits = format_bitmap(bitmap)
    parts = [header, 'version "v08";\n\n']
    if unclean:
        parts.append("This_is_an_unclean_meta_data_dump._Don't_trust_the_bitmap.\n"
                     "# You should \"apply-al\" first, if you plan to restore this.\n\n")
    parts += [
        f"# md_size_sect {sb.md_size_sect}\n",
        f"# md_offset {md_offset}\n# al_offset {al_offset}\n# bm_offset {bm_offset}\n\n",
        "uuid {\n",
        f"    0x{u[0]:016X}; 0x{u[1]:016X}; 0x{u[2]:016X}; 0x{u[3]:016X};\n",
        f"    flags 0x{sb.flags:08X};\n",   # the real flags (drbd-utils <= 9.32 prints 0)
        "}\n",
        f"# al-extents {sb.al_nr_extents};\n",
        f"la-size-sect {sb.la_size_sect};\n",
        f"bm-byte-per-bit {sb.bm_bytes_per_bit};\n",
        f"device-uuid 0x{sb.device_uuid:016X};\n",
        f"la-peer-max-bio-size {sb.la_peer_max_bio_size};\n",
        f"al-stripes {sb.al_stripes};\n",
        f"al-stripe-size-4k {sb.al_stripe_size_4k};\n",
        f"# bm-bytes {len(bitmap)};\n",
        "bm ", bm_text,
        f"# bits-set {bits};\n",
    ]
    return "".join(parts), bits


def dump_header(argv: list[str], hostname: str, when: float | None = None) -> str:
    """``# DRBD meta data dump`` / date / ``# host> argv`` / ``#`` block."""
    import time
    t = time.localtime(when)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %z", t) + f" [{int(time.mktime(t))}]"
    return f"# DRBD meta data dump\n# {stamp}\n# {hostname}>{''.join(' ' + a for a in argv)}\n#\n\n"


# --------------------------------------------------------------------------------- parsing
class DumpParseError(ValueError):
    """restore-md/verify-dump input is not a valid dump; str() is drbdmeta's message."""


@dataclass
class DumpData:
    version: str = ""
    uuids: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    flags: int = 0
    la_size_sect: int = 0
    bm_bytes_per_bit: int = 4096
    device_uuid: int = 0
    la_peer_max_bio_size: int = 0
    al_stripes: int = 1
    al_stripe_size_4k: int = 8
    bitmap: bytes = b""          # little-endian, as on disk

    def superblock(self, base: Superblock) -> Superblock:
        """``base`` (a fresh superblock for the layout) with the dumped values."""
        sb = Superblock.unpack(base.pack())
        sb.uuids = list(self.uuids)
        sb.flags = self.flags
        sb.la_size_sect = self.la_size_sect
        sb.bm_bytes_per_bit = self.bm_bytes_per_bit
        sb.device_uuid = self.device_uuid
        sb.la_peer_max_bio_size = self.la_peer_max_bio_size
        sb.al_stripes, sb.al_stripe_size_4k = self.al_stripes, self.al_stripe_size_4k
        return sb


_KEYWORDS = {"gc", "bm", "uuid", "version", "la-size-sect", "bm-byte-per-bit", "device-uuid",
             "times", "flags", "al-stripes", "al-stripe-size-4k", "la-peer-max-bio-size",
             "node-id", "current-uuid", "bitmap", "bitmap-uuid", "bitmap-dagtag",
             "history-uuids", "peer", "hash", "max-peers", "bitmap-index"}
# (name, regex) in flex rule order: the longest match wins, ties go to the earlier rule.
_RULES = [
    ("WS", r"[ \r\t\n]+"), ("COMMENT", r"#[^\n]*"), ("OP", r"[{};\[\]]"),
    ("STRING", r'"[^"\r\n]{1,20}"'), ("U64", r"0x[0-9A-Fa-f]{16}"), ("U32", r"0x[0-9A-Fa-f]{8}"),
    ("NUM", r"-?[0-9]{1,19}"), ("KEYWORD", "|".join(sorted(map(re.escape, _KEYWORDS), key=len,
                                                      reverse=True))),
    ("INVALID_STRING", r'"[^"\r\n]{1,20}'), ("EMPTY_STRING", r'""?'),
    ("INVALID_HEX", r"0x[0-9A-Fa-f]{0,17}"), ("NUM_TOO_LONG", r"-?[0-9]{1,19}[0-9]"),
    ("INVALID_TOKEN", r"[-_a-zA-Z0-9]{1,100}"), ("INVALID_CHAR", r'[^-_a-zA-Z0-9 \t\r\n";{}]'),
]
_COMPILED = [(name, re.compile(rx)) for name, rx in _RULES]
_BAD = {"INVALID_STRING": "invalid string", "EMPTY_STRING": "invalid string",
        "INVALID_HEX": "invalid hex number (only 8 or 16 hex digits accepted)",
        "NUM_TOO_LONG": "number too big", "INVALID_TOKEN": "unknown token"}
_EXPECT = {";": "semicolon (;)", "{": "opening brace ({)", "}": "closing brace (})",
           "EOF": "end of file", "NUM": "number ([0-9], up to 20 digits)",
           "STRING": 'short quoted string ("..up to 20 characters, no newline..")',
           "U32": "an 8-digit hex number", "U64": "a 16-digit hex number"}


@dataclass
class _Tok:
    kind: str          # OP char, keyword text, NUM, U32, U64, STRING, INVALID, INVALID_CHAR, EOF
    text: str
    line: int
    value: int = 0


class _Lexer:
    def __init__(self, text: str):
        self.text, self.pos, self.line = text, 0, 1
        self.notes: list[str] = []           # scanner messages ("line N: ...")

    def next(self) -> _Tok:
        text = self.text
        while True:
            if self.pos >= len(text):
                return _Tok("EOF", "", self.line)
            best, best_len = "", 0
            for name, rx in _COMPILED:
                m = rx.match(text, self.pos)
                if m and len(m.group()) > best_len:
                    best, best_len = name, len(m.group())
            if not best_len:             # cannot happen: INVALID_CHAR/WS cover everything
                best, best_len = "INVALID_CHAR", 1
            s = text[self.pos:self.pos + best_len]
            self.pos += best_len
            self.line += s.count("\n")
            if best in ("WS", "COMMENT"):
                continue
            if best == "OP":
                return _Tok(s, s, self.line)
            if best == "KEYWORD":
                return _Tok(s, s, self.line)
            if best in ("U64", "U32"):
                return _Tok(best, s, self.line, int(s, 16))
            if best == "NUM":
                return _Tok(best, s, self.line, int(s) & ((1 << 64) - 1))
            if best == "STRING":
                return _Tok(best, s[1:-1].replace("\\", ""), self.line)
            if best == "INVALID_CHAR":
                return _Tok(best, s, self.line)
            self.notes.append(f"line {self.line}: {_BAD[best]}: {s} ...")
            return _Tok("INVALID", s, self.line)


class _Parser:
    def __init__(self, text: str):
        self.lex = _Lexer(text)

    def fail(self, expected: str, tok: _Tok, etext: str | None = None) -> DumpParseError:
        if etext is None:
            if expected in _EXPECT:
                etext = _EXPECT[expected]
            elif expected in _KEYWORDS:
                etext = f"keyword '{expected}'"
            else:
                etext = " invalid/unexpected token!"
        msg = f"Parse error in line {tok.line}: {etext}{':' if etext[0] == ' ' else ' expected'}"
        if tok.kind == "EOF":
            msg += ", but end of file encountered"
        elif tok.kind == "INVALID_CHAR":
            msg += f"; got invalid input character '\\x{ord(tok.text):02x}' [{tok.text}]"
        elif tok.kind in (";", "{", "}"):
            msg += f", not '{tok.kind}'"
        elif tok.kind in ("NUM", "U32", "U64"):
            msg += ", not some number"
        elif tok.kind != "INVALID":
            msg += f", not '{tok.text}'"
        return DumpParseError("\n".join(self.lex.notes + [msg]))

    def exp(self, kind: str) -> _Tok:
        tok = self.lex.next()
        if tok.kind != kind:
            raise self.fail(kind, tok)
        return tok

    def parse(self, want_version: str = "v08") -> DumpData:
        d = DumpData()
        self.exp("version")
        d.version = self.exp("STRING").text
        if d.version != want_version:
            raise DumpParseError(f"dump is '{d.version}' you requested '{want_version}'.")
        self.exp(";")
        self.exp("uuid")
        self.exp("{")
        for i in range(4):
            d.uuids[i] = self.exp("U64").value
            self.exp(";")
        self.exp("flags")
        d.flags = self.exp("U32").value
        self.exp(";")
        self.exp("}")
        d.la_size_sect = self._kv("la-size-sect", "NUM")
        d.bm_bytes_per_bit = self._kv("bm-byte-per-bit", "NUM")
        v = d.bm_bytes_per_bit
        if v < 4096 or v & (v - 1):
            raise DumpParseError("Invalid value for bm-byte-per-bit: "
                                 "value must be a power-of-two multiple of 4096")
        d.device_uuid = self._kv("device-uuid", "U64")
        d.la_peer_max_bio_size = self._kv("la-peer-max-bio-size", "NUM")
        d.al_stripes = self._kv("al-stripes", "NUM")
        d.al_stripe_size_4k = self._kv("al-stripe-size-4k", "NUM")
        d.bitmap = self._bitmap()
        self.exp("EOF")
        return d

    def _kv(self, key: str, kind: str) -> int:
        self.exp(key)
        v = self.exp(kind).value
        self.exp(";")
        return v

    def _bitmap(self) -> bytes:
        self.exp("bm")
        self.exp("{")
        parts: list[bytes] = []
        while True:
            tok = self.lex.next()
            if tok.kind == "U64":
                self.exp(";")
                parts.append(tok.value.to_bytes(8, "little"))
            elif tok.kind == "NUM":
                self.exp("times")
                value = self.exp("U64").value
                self.exp(";")
                parts.append(value.to_bytes(8, "little") * tok.value)
            elif tok.kind == "}":
                return b"".join(parts)
            else:
                raise self.fail("", tok, "repeat count, 16-digit hex number, or closing brace (})")


def parse_dump(text: str, version: str = "v08") -> DumpData:
    """Parse dump-md output (ours, or drbd-utils'); raise DumpParseError."""
    return _Parser(text).parse(version)
