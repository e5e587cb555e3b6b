"""A FUSE write's data as fuseblk hands it to the engine: a view of libfuse's buffer, or
a copy when libfuse received the request through a pipe (splice)."""
from __future__ import annotations

import ctypes
import os

import pytest

from fuseblk._lowlevel import (FUSE_BUF_IS_FD, FuseBufvec, keeps_buffer_until_handled,
                              request_data)


def bufvec_over(buf: ctypes.Array, size: int, off: int = 0) -> FuseBufvec:
    bv = FuseBufvec(count=1, idx=0, off=off)
    bv.buf[0].size = size
    bv.buf[0].mem = ctypes.addressof(buf)
    return bv


def test_one_piece_of_memory_is_viewed_not_copied():
    buf = ctypes.create_string_buffer(b"".join(bytes([i]) * 4096 for i in range(8)))
    bv = bufvec_over(buf, 8192, off=4096)         # the request: bytes 4096..12287
    data = request_data(ctypes.addressof(bv))
    assert isinstance(data, memoryview) and data.format == "B"
    assert len(data) == 4096 and data.tobytes() == bytes([1]) * 4096
    buf[4096] = b"\x99"                             # the same memory
    assert data[0] == 0x99
    data.release()


def test_requests_of_every_size_see_exactly_their_bytes():
    big = ctypes.create_string_buffer(3 << 20)
    ctypes.memmove(big, os.urandom(3 << 20), 3 << 20)
    for size in (1, 4096, 1 << 20, (1 << 20) + 1, 3 << 20):   # across the cached view's span
        bv = bufvec_over(big, size)
        data = request_data(ctypes.addressof(bv))
        assert data.tobytes() == ctypes.string_at(big, size)


def test_data_in_a_pipe_is_copied_out():
    r, w = os.pipe()
    try:
        payload = os.urandom(60000)
        os.write(w, payload)
        bv = FuseBufvec(count=1, idx=0, off=0)
        bv.buf[0].size = len(payload)
        bv.buf[0].flags = FUSE_BUF_IS_FD
        bv.buf[0].fd = r
        data = request_data(ctypes.addressof(bv))
        assert data.tobytes() == payload
    finally:
        os.close(r)
        os.close(w)


def test_a_failing_pipe_read_is_an_oserror():
    r, w = os.pipe()
    os.close(w)
    os.close(r)                                    # fd r is now invalid
    bv = FuseBufvec(count=1, idx=0, off=0)
    bv.buf[0].size = 4096
    bv.buf[0].flags = FUSE_BUF_IS_FD
    bv.buf[0].fd = r
    with pytest.raises(OSError):
        request_data(ctypes.addressof(bv))


def test_zero_copy_only_with_pyfuse3_releases_whose_loop_was_read():
    assert keeps_buffer_until_handled("3.5.0") and keeps_buffer_until_handled("3.3.0")
    for version in ("3.2.1", "3.6.0", "4.0.0", "?", "", "x.y"):
        assert not keeps_buffer_until_handled(version), version
    import pyfuse3
    assert keeps_buffer_until_handled(pyfuse3.__version__)   # what the tests run with
