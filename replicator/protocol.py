"""The peer-to-peer wire format: framing, message types, limits. Pure code, no sockets.

A frame is a 20-byte header, a msgpack body and an optional raw payload (block data, never
copied through msgpack)::

    magic u16 | type u8 | flags u8 | body_len u32 | data_len u32 | data_crc u32 | hdr_crc u32

``hdr_crc`` is CRC32C (crcmod) over the first 16 header bytes and the body, so it also
covers ``data_crc``. ``data_crc`` is the payload's CRC32C from the ``crc32c`` package, which
uses the CPU's CRC32 instruction: measured here, 1 MiB takes 38 us with it, 247 us with
zlib.crc32 and 2.2 ms with crcmod, and the payload is where the bytes are. Every length is
bounded before anything is allocated; a bad magic, type, length or checksum raises
ProtocolError and the connection is dropped.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Any

import crc32c as _hw_crc32c    # hardware CRC32C (SSE4.2 / ARMv8), C fallback
import crcmod
import msgpack

MAGIC = 0x55D8
HEADER = struct.Struct(">HBBIIII")
HEADER_SIZE = HEADER.size          # 20
MAX_BODY = 64 << 10
MAX_DATA = 1 << 20                 # largest block payload in one frame (writes, resync)
PROTOCOL_VERSION = 2               # 2: payload checksum CRC32C (was zlib's CRC-32)

payload_crc = _hw_crc32c.crc32c

crc32c = crcmod.mkCrcFun(0x11EDC6F41, initCrc=0, xorOut=0, rev=True)


class ProtocolError(Exception):
    """The peer sent something this node cannot accept; the connection must end."""


class Msg(enum.IntEnum):
    HELLO = 1             # version, features, who I am (node name, address), nonce
    AUTH_CHALLENGE = 2
    AUTH_RESPONSE = 3
    PARAMS = 4            # protocol, settings to check, sizes, uuids, bits, flags, state
    STATE = 5             # my state changed (role, disk, conn-relevant bits)
    DATA = 6              # application write: seq, offset (+ payload)
    RECV_ACK = 7          # protocol B
    WRITE_ACK = 8         # protocol C
    NEG_ACK = 9           # the peer could not write it
    FLUSH = 10            # make everything before this durable
    FLUSH_ACK = 11
    PING = 12
    PING_ACK = 13
    BITMAP = 14           # a chunk of the bitmap (offset in bytes + raw words, zlib'd)
    SYNC_UUID = 15
    RS_REQUEST = 16       # resync: offset, length (+ digest with csums-alg)
    RS_REPLY = 17         # resync data (+ payload)
    RS_IN_SYNC = 18       # checksum matched, nothing to transfer
    RS_WRITE_ACK = 19     # target wrote resync data: source may clear its bits
    READ_REQUEST = 20     # a SyncTarget Primary reads an out-of-sync block from the peer
    READ_REPLY = 21
    OV_REQUEST = 22       # online verify: digest of a range, please
    OV_REPLY = 23
    DISCARD = 24          # application discard: offset, length (no payload)
    UUIDS = 25            # my generation UUIDs changed
    DISCONNECT = 26       # graceful teardown
    STATE_REQ = 27        # ask the peer to change state (invalidate-remote, pause...)
    STATE_REPLY = 28
    RS_DONE = 29          # the target finished the resync
    OV_DONE = 30
    OV_RESULT = 31        # blocks the verify source found different: mark them too
    SYNC_PARAM = 32       # disk-options changed the resync rate settings: adopt them
    SIZES = 33            # online resize: what I can offer, what I show (8.4's P_SIZES)


_VALID_TYPES = frozenset(int(m) for m in Msg)


@dataclass
class Frame:
    type: Msg
    body: Any
    data: memoryview | bytes | None = None


def encode(msg: Msg, body: Any = None, data: bytes | memoryview | None = None,
           flags: int = 0) -> list[bytes | memoryview]:
    """The frame as buffers to send (header+body, then the payload untouched)."""
    packed = msgpack.packb(body, use_bin_type=True) if body is not None else b""
    if len(packed) > MAX_BODY:
        raise ProtocolError(f"{msg.name} body of {len(packed)} bytes exceeds {MAX_BODY}")
    dlen = len(data) if data is not None else 0
    if dlen > MAX_DATA:
        raise ProtocolError(f"{msg.name} payload of {dlen} bytes exceeds {MAX_DATA}")
    dcrc = payload_crc(data) if dlen else 0
    head = HEADER.pack(MAGIC, int(msg), flags, len(packed), dlen, dcrc, 0)
    hcrc = crc32c(packed, crc32c(head[:16]))
    head = head[:16] + hcrc.to_bytes(4, "big")
    if dlen:
        return [head + packed, data]  # type: ignore[list-item]
    return [head + packed]


@dataclass
class Header:
    type: Msg
    flags: int
    body_len: int
    data_len: int
    data_crc: int
    hdr_crc: int
    raw: bytes

    @property
    def total(self) -> int:
        return HEADER_SIZE + self.body_len + self.data_len


def parse_header(buf: bytes | memoryview) -> Header:
    """Check the fixed header's magic, type and bounds (before reading the rest)."""
    magic, mtype, flags, blen, dlen, dcrc, hcrc = HEADER.unpack(buf[:HEADER_SIZE])
    if magic != MAGIC:
        raise ProtocolError(f"bad frame magic 0x{magic:04x}")
    if mtype not in _VALID_TYPES:
        raise ProtocolError(f"unknown frame type {mtype}")
    if blen > MAX_BODY:
        raise ProtocolError(f"frame body of {blen} bytes exceeds {MAX_BODY}")
    if dlen > MAX_DATA:
        raise ProtocolError(f"frame payload of {dlen} bytes exceeds {MAX_DATA}")
    return Header(Msg(mtype), flags, blen, dlen, dcrc, hcrc, bytes(buf[:16]))


def parse_frame(head: Header, body: bytes | memoryview, data: memoryview | None) -> Frame:
    """Verify the checksums and decode the body; ``data`` stays a view into the buffer."""
    if crc32c(bytes(body), crc32c(head.raw)) != head.hdr_crc:
        raise ProtocolError(f"{head.type.name}: header checksum mismatch")
    if head.data_len and payload_crc(data) != head.data_crc:
        raise ProtocolError(f"{head.type.name}: payload checksum mismatch")
    try:
        decoded = msgpack.unpackb(body, raw=False, max_bin_len=MAX_BODY, max_str_len=MAX_BODY,
                                  max_array_len=4096, max_map_len=1024) if head.body_len else None
    except Exception as e:  # msgpack raises several types for garbage
        raise ProtocolError(f"{head.type.name}: undecodable body ({e})") from None
    return Frame(head.type, decoded, data)


class FrameReader:
    """Incremental parser over a preallocated receive buffer (``recv_into``)."""

    def __init__(self, size: int = 4 << 20):
        self.buf = bytearray(max(size, 2 * (HEADER_SIZE + MAX_BODY + MAX_DATA)))
        self.view = memoryview(self.buf)
        self.start = 0
        self.end = 0

    def space(self) -> memoryview:
        """Where the next recv_into should write; compacts when the tail is short."""
        if len(self.buf) - self.end < HEADER_SIZE + MAX_BODY + MAX_DATA:
            pending = self.end - self.start
            self.buf[:pending] = self.buf[self.start:self.end]
            self.start, self.end = 0, pending
        return self.view[self.end:]

    def advance(self, n: int) -> None:
        self.end += n

    def _complete_header(self) -> Header | None:
        """The next frame's header if the whole frame is buffered, else None."""
        avail = self.end - self.start
        if avail < HEADER_SIZE:
            return None
        head = parse_header(self.view[self.start:self.start + HEADER_SIZE])
        return head if avail >= head.total else None

    def frame_ready(self) -> bool:
        """Whether a complete frame is buffered (``next_frame`` would return one)."""
        return self._complete_header() is not None

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None. Its payload is valid until the next ``space()``."""
        head = self._complete_header()
        if head is None:
            return None
        b0 = self.start + HEADER_SIZE
        d0 = b0 + head.body_len
        self.start += head.total
        data = self.view[d0:d0 + head.data_len] if head.data_len else None
        return parse_frame(head, self.view[b0:d0], data)
