"""The control socket between drbdsetup and a resource daemon.

One Unix stream socket per resource (mode 0600). Frames are a 4-byte big-endian length and a
msgpack map. A request is ``{"cmd": str, "args": {...}}``; the answer is
``{"rc": int, "out": str, "err": str}``. The ``events`` command instead streams one map per
event until the client goes away.
"""
from __future__ import annotations

import socket
import struct
from typing import Any

import msgpack

MAX_FRAME = 16 << 20
_LEN = struct.Struct(">I")


class ControlError(Exception):
    """The daemon could not be reached or answered garbage."""


def encode(obj: Any) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return _LEN.pack(len(body)) + body


def decode_length(header: bytes) -> int:
    (length,) = _LEN.unpack(header)
    if length > MAX_FRAME:
        raise ControlError(f"control frame of {length} bytes exceeds {MAX_FRAME}")
    return length


def decode_body(body: bytes) -> Any:
    try:
        return msgpack.unpackb(body, raw=False)
    except (ValueError, msgpack.UnpackException) as e:   # FormatError, ExtraData, ...
        raise ControlError(f"undecodable control frame ({e})") from None


def _reason(e: OSError) -> str:
    if isinstance(e, TimeoutError):
        return "the resource daemon is not responding (timed out)"
    return f"the control connection failed: {e.strerror or e}"


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ControlError("daemon closed the control connection")
        buf += chunk
    return bytes(buf)


class Client:
    """Blocking client used by the CLIs."""

    def __init__(self, path: str, timeout: float | None = 60.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as e:
            self.sock.close()
            raise ControlError(f"{path}: {e.strerror}") from e

    def send(self, obj: Any) -> None:
        try:
            self.sock.sendall(encode(obj))
        except OSError as e:
            raise ControlError(_reason(e)) from e

    def recv(self) -> Any:
        try:
            length = decode_length(_recv_exact(self.sock, _LEN.size))
            return decode_body(_recv_exact(self.sock, length))
        except OSError as e:
            raise ControlError(_reason(e)) from e

    def call(self, cmd: str, **args: Any) -> dict:
        self.send({"cmd": cmd, "args": args})
        return self.recv()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
