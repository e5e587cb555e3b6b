"""Wire frames: round trips, bounds and corruption (replicator.protocol)."""
import struct

import pytest

from replicator.protocol import (HEADER, HEADER_SIZE, MAGIC, MAX_BODY, MAX_DATA, FrameReader,
                                 Msg, ProtocolError, encode)


def wire(*frames) -> bytes:
    return b"".join(bytes(b) for f in frames for b in f)


def feed(reader: FrameReader, data: bytes, step: int) -> list:
    out = []
    for i in range(0, len(data), step):
        chunk = data[i:i + step]
        space = reader.space()
        space[:len(chunk)] = chunk
        reader.advance(len(chunk))
        while (f := reader.next_frame()) is not None:
            out.append((f.type, f.body, bytes(f.data) if f.data is not None else None))
    return out


@pytest.mark.parametrize("step", [1, 7, 20, 4096, 1 << 20])
def test_round_trip_in_any_chunking(step):
    payload = bytes(range(256)) * 64
    data = wire(encode(Msg.PING), encode(Msg.DATA, {"seq": 1, "off": 4096}, payload),
                encode(Msg.WRITE_ACK, {"seq": 1}))
    got = feed(FrameReader(), data, step)
    assert got == [(Msg.PING, None, None), (Msg.DATA, {"seq": 1, "off": 4096}, payload),
                   (Msg.WRITE_ACK, {"seq": 1}, None)]


def test_payload_is_not_copied_through_msgpack():
    frame = encode(Msg.DATA, {"seq": 9}, memoryview(b"x" * 4096))
    assert len(frame) == 2 and isinstance(frame[1], memoryview)


def test_data_crc_is_the_standard_crc32c_of_the_payload():
    """The check value of CRC-32C (Castagnoli) is 0xE3069283; a view checksums its bytes."""
    head = HEADER.unpack(bytes(encode(Msg.DATA, {"seq": 1}, b"123456789")[0][:HEADER_SIZE]))
    assert head[5] == 0xE3069283
    buf = bytearray(b"xx123456789yy")
    view_head = encode(Msg.DATA, {"seq": 1}, memoryview(buf)[2:11])[0][:HEADER_SIZE]
    assert HEADER.unpack(bytes(view_head))[5] == 0xE3069283


def corrupt(data: bytes, pos: int) -> bytes:
    b = bytearray(data)
    b[pos] ^= 0x40
    return bytes(b)


def test_flipped_payload_byte_is_detected():
    data = wire(encode(Msg.DATA, {"seq": 1}, b"a" * 1000))
    with pytest.raises(ProtocolError, match="payload checksum"):
        feed(FrameReader(), corrupt(data, len(data) - 10), 4096)


def test_flipped_body_byte_is_detected():
    data = wire(encode(Msg.DATA, {"seq": 1, "off": 77}, b"a" * 100))
    with pytest.raises(ProtocolError, match="header checksum"):
        feed(FrameReader(), corrupt(data, HEADER_SIZE + 2), 4096)


def test_flipped_data_crc_field_is_detected():
    data = wire(encode(Msg.DATA, {"seq": 1}, b"a" * 100))
    with pytest.raises(ProtocolError, match="header checksum"):
        feed(FrameReader(), corrupt(data, 13), 4096)


def test_bad_magic_and_type():
    data = wire(encode(Msg.PING))
    with pytest.raises(ProtocolError, match="magic"):
        feed(FrameReader(), corrupt(data, 0), 4096)
    bad = HEADER.pack(MAGIC, 250, 0, 0, 0, 0, 0)
    with pytest.raises(ProtocolError, match="unknown frame type"):
        feed(FrameReader(), bad, 4096)


def test_huge_lengths_are_refused_from_the_header_alone():
    for blen, dlen in ((MAX_BODY + 1, 0), (0, MAX_DATA + 1), (0xFFFFFFFF, 0xFFFFFFFF)):
        head = HEADER.pack(MAGIC, int(Msg.DATA), 0, blen, dlen, 0, 0)
        with pytest.raises(ProtocolError, match="exceeds"):
            feed(FrameReader(), head, 4096)


def test_encode_refuses_oversize():
    with pytest.raises(ProtocolError):
        encode(Msg.DATA, None, bytes(MAX_DATA + 1))
    with pytest.raises(ProtocolError):
        encode(Msg.PARAMS, {"x": "y" * (MAX_BODY + 1)})


def test_garbage_body_is_a_protocol_error():
    from replicator.protocol import crc32c
    body = b"\xc1\xc1\xc1"            # 0xc1 is never valid msgpack
    head = HEADER.pack(MAGIC, int(Msg.STATE), 0, len(body), 0, 0, 0)
    hcrc = crc32c(body, crc32c(head[:16]))
    frame = head[:16] + struct.pack(">I", hcrc) + body
    with pytest.raises(ProtocolError, match="undecodable"):
        feed(FrameReader(), frame, 4096)


def test_frame_ready_says_whether_next_frame_would_return_one():
    data = wire(encode(Msg.DATA, {"seq": 1}, b"d" * 5000), encode(Msg.PING))
    for cut, ready in [(0, False), (19, False), (20, False), (len(data) - 21, False),
                       (len(data) - 20, True)]:
        reader = FrameReader()
        reader.space()[:cut] = data[:cut]
        reader.advance(cut)
        assert reader.frame_ready() is ready, cut
    reader.space()[:20] = data[-20:]
    reader.advance(20)
    assert reader.next_frame().type == Msg.DATA and reader.frame_ready()
    assert reader.next_frame().type == Msg.PING and not reader.frame_ready()


def test_reader_compacts_and_keeps_going_for_many_frames():
    reader = FrameReader(size=1)
    payload = b"z" * MAX_DATA
    data = wire(*(encode(Msg.RS_REPLY, {"off": i}, payload) for i in range(12)))
    got = feed(reader, data, 300_000)
    assert [b["off"] for _, b, _ in got] == list(range(12))
    assert all(d == payload for _, _, d in got)
