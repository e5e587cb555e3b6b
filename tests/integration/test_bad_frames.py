"""A peer that sends well-formed frames with bad contents: the daemon drops the connection
(ProtocolError, one log line) and never reads or writes outside its device.

The rogue peer is a plain socket speaking udrbd's wire format from the peer's address; it
passes the handshake by echoing the daemon's own PARAMS back.
"""
from __future__ import annotations

import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from replicator.protocol import PROTOCOL_VERSION, FrameReader, Msg, encode
from tests.integration.nodes import WALKTHROUGH_CONF, Cluster, Node

NO_AUTH = WALKTHROUGH_CONF.replace('cram-hmac-alg sha1;\nshared-secret "secret";\n', "")


class Rogue:
    def __init__(self, port: int):
        self.sock = socket.socket()
        self.sock.settimeout(10)
        self.sock.bind(("127.0.0.2", 0))
        self.sock.connect(("127.0.0.1", port))
        self.reader = FrameReader(1 << 20)

    def send(self, msg: Msg, body: object = None, data: bytes | None = None) -> None:
        self.sock.sendall(b"".join(bytes(b) for b in encode(msg, body, data)))

    def receive(self, want: Msg):
        while True:
            frame = self.reader.next_frame()
            if frame is not None:
                if frame.type == want:
                    return frame
                continue
            n = self.sock.recv_into(self.reader.space())
            if n == 0:
                raise ConnectionError("daemon closed the connection")
            self.reader.advance(n)

    def handshake(self) -> dict:
        self.send(Msg.HELLO, {"v": PROTOCOL_VERSION, "nonce": 1 << 61})
        assert self.receive(Msg.HELLO).body.get("ok")
        params = self.receive(Msg.PARAMS).body
        self.send(Msg.PARAMS, params)           # same settings, same data generation
        return params

    def close(self) -> None:
        self.sock.close()


@contextmanager
def node1_and_rogue(tmp_path: Path) -> Iterator[tuple[Node, Rogue]]:
    """node1 up and listening, and a rogue connected to it from node2's address (not yet
    through the handshake); everything is undone afterwards, even on failure."""
    c = Cluster(tmp_path, conf_template=NO_AUTH)
    rogue = None
    try:
        n1 = c.node1
        n1.drbdadm("create-md", "r0")
        n1.drbdadm("up", "r0")
        n1.wait_for(lambda s: s["conn"] == "WFConnection", what="listening")
        rogue = Rogue(c.port)
        yield n1, rogue
    finally:
        if rogue is not None:
            rogue.close()
        c.cleanup()


@pytest.mark.parametrize("name, frame", [
    ("write past the end", lambda size: (Msg.DATA, {"seq": 1, "off": size}, b"x" * 4096)),
    ("write at a negative offset", lambda size: (Msg.DATA, {"seq": 1, "off": -4096}, b"x" * 4096)),
    ("read past the end", lambda size: (Msg.READ_REQUEST, {"id": 1, "off": size - 4096,
                                                           "len": 8192}, None)),
    ("huge read", lambda size: (Msg.READ_REQUEST, {"id": 1, "off": 0, "len": 1 << 30}, None)),
    ("discard past the end", lambda size: (Msg.DISCARD, {"seq": 1, "off": 0,
                                                         "len": size + 4096}, None)),
    ("write without a sequence number", lambda size: (Msg.DATA, {"off": 0}, b"x" * 4096)),
    ("body of the wrong kind", lambda size: (Msg.FLUSH, [1, 2, 3], None)),
])
def test_a_bad_frame_ends_the_connection_and_touches_nothing(tmp_path: Path, name, frame):
    with node1_and_rogue(tmp_path) as (n1, rogue):
        rogue.handshake()
        n1.wait_for(lambda s: s["conn"] == "Connected", what="Connected to the rogue")
        size = n1.snapshot()["size_kib"] * 1024
        with open(n1.disk, "rb") as f:
            f.seek(size)
            beyond = f.read(8192)                # where the metadata (bitmap) begins
        rogue.send(*frame(size))
        n1.wait_for(lambda s: s["conn"] in ("Unconnected", "WFConnection"), what="dropped")
        msgs = n1.log_messages()
        assert any(m.startswith("drbd r0: protocol error: ") for m in msgs), msgs[-5:]
        assert any("conn( Connected -> ProtocolError )" in m for m in msgs)
        n1.drbdadm("down", "r0")
        with open(n1.disk, "rb") as f:
            assert f.read(size) == bytes(size)   # nothing written to the data area
            assert f.read(8192) == beyond        # nor past its end


def test_a_peer_of_another_wire_version_is_refused(tmp_path: Path):
    """The payload checksum changed with version 2: an older peer must not get to send data."""
    with node1_and_rogue(tmp_path) as (n1, rogue):
        rogue.send(Msg.HELLO, {"v": PROTOCOL_VERSION - 1, "nonce": 1 << 61})
        with pytest.raises(ConnectionError):
            rogue.receive(Msg.HELLO)
        want = (f"drbd r0: incompatible udrbd dialects: I support {PROTOCOL_VERSION},"
                f" peer supports {PROTOCOL_VERSION - 1}")
        assert want in n1.log_messages()
        assert n1.snapshot()["conn"] == "WFConnection"
