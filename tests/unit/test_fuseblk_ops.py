"""fuseblk request logic without a mount: clamping, errno mapping, open bookkeeping, fallocate."""
from __future__ import annotations

import errno
import os
import stat

import pyfuse3
import pytest
import trio

from fuseblk import _lowlevel
from fuseblk.engine import BlockEngine
from fuseblk.mount import _unescape_mountinfo
from fuseblk.ops import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, BlockOps
from fuseblk.workers import WorkerPool

SIZE = 1 << 20


class FakeEngine:
    def __init__(self, size=SIZE):
        self.data = bytearray(size)
        self.calls = []
        self.fail = None
        self.refuse = 0
        self.opens = []

    def size(self):
        return len(self.data)

    async def read(self, offset, length):
        self.calls.append(("read", offset, length))
        if self.fail:
            raise self.fail
        return bytes(self.data[offset:offset + length])

    async def write(self, offset, data):
        self.calls.append(("write", offset, len(data)))
        if self.fail:
            raise self.fail
        self.data[offset:offset + len(data)] = data
        return len(data)

    async def flush(self):
        self.calls.append(("flush",))

    async def discard(self, offset, length):
        self.calls.append(("discard", offset, length))
        self.data[offset:offset + length] = bytes(length)

    def may_open(self, writable):
        return self.refuse if writable else 0

    def opened(self, writable):
        self.opens.append(("opened", writable))

    def released(self, writable):
        self.opens.append(("released", writable))


def go(fn, *args):
    return trio.run(fn, *args)


def test_fake_engine_satisfies_protocol():
    assert isinstance(FakeEngine(), BlockEngine)


def test_reads_are_clamped_to_the_size():
    e = FakeEngine()
    ops = BlockOps(e)
    assert go(ops.read, 1, SIZE - 10, 100) == bytes(10)
    assert e.calls[-1] == ("read", SIZE - 10, 10)
    n = len(e.calls)
    assert go(ops.read, 1, SIZE, 100) == b""
    assert len(e.calls) == n  # the engine is not asked past the end


def test_writes_past_the_end_are_short_or_enospc():
    e = FakeEngine()
    ops = BlockOps(e)
    assert go(ops.write, 1, SIZE - 3, b"abcdef") == 3
    assert e.data[-3:] == b"abc"
    with pytest.raises(pyfuse3.FUSEError) as exc:
        go(ops.write, 1, SIZE, b"x")
    assert exc.value.errno == errno.ENOSPC


@pytest.mark.parametrize("error,want", [
    (RuntimeError("bug"), errno.EIO),
    (OSError(errno.ENOSPC, "full"), errno.ENOSPC),
    (OSError("no errno"), errno.EIO),
    (pyfuse3.FUSEError(errno.EMEDIUMTYPE), errno.EMEDIUMTYPE),
])
def test_engine_exceptions_become_errnos(error, want):
    e = FakeEngine()
    e.fail = error
    ops = BlockOps(e)
    for call in (lambda: ops.read(1, 0, 10), lambda: ops.write(1, 0, b"x")):
        async def attempt():
            await call()
        with pytest.raises(pyfuse3.FUSEError) as exc:
            trio.run(attempt)
        assert exc.value.errno == want


def test_open_refusal_and_counts():
    e = FakeEngine()
    e.refuse = errno.EMEDIUMTYPE
    ops = BlockOps(e)
    with pytest.raises(pyfuse3.FUSEError) as exc:
        go(ops.open, pyfuse3.ROOT_INODE, os.O_RDWR, None)
    assert exc.value.errno == errno.EMEDIUMTYPE
    assert e.opens == []
    fi = go(ops.open, pyfuse3.ROOT_INODE, os.O_RDONLY, None)
    assert fi.direct_io and not fi.keep_cache
    assert e.opens == [("opened", False)]
    go(ops.release, fi.fh)
    go(ops.release, fi.fh)  # a second release of the same fh is ignored
    assert e.opens == [("opened", False), ("released", False)]


def test_sync_open_flushes_after_each_write_only_in_direct_io_mode():
    for direct_io, flushes in ((True, 1), (False, 0)):
        e = FakeEngine()
        ops = BlockOps(e, direct_io=direct_io)
        fi = go(ops.open, pyfuse3.ROOT_INODE, os.O_WRONLY | os.O_DSYNC, None)
        go(ops.write, fi.fh, 0, b"x")
        assert e.calls.count(("flush",)) == flushes
        plain = go(ops.open, pyfuse3.ROOT_INODE, os.O_WRONLY, None)
        go(ops.write, plain.fh, 0, b"x")
        assert e.calls.count(("flush",)) == flushes


def test_fsync_and_close():
    e = FakeEngine()
    ops = BlockOps(e)
    go(ops.flush, 1)  # close(2)
    assert ("flush",) not in e.calls
    go(ops.fsync, 1, True)
    go(ops.fsyncdir, 1, False)
    assert e.calls.count(("flush",)) == 2


def test_getattr_follows_engine_size():
    e = FakeEngine()
    ops = BlockOps(e, mode=0o640)
    a = go(ops.getattr, pyfuse3.ROOT_INODE, None)
    assert stat.S_ISREG(a.st_mode) and stat.S_IMODE(a.st_mode) == 0o640
    assert a.st_size == SIZE
    e.data.extend(bytes(4096))
    assert go(ops.getattr, pyfuse3.ROOT_INODE, None).st_size == SIZE + 4096
    with pytest.raises(pyfuse3.FUSEError):
        go(ops.getattr, pyfuse3.ROOT_INODE + 1, None)


def test_setattr_size_rules():
    e = FakeEngine()
    ops = BlockOps(e)

    async def set_size(n):
        attr = pyfuse3.EntryAttributes()
        attr.st_size = n
        # pyfuse3.SetattrFields is read-only from Python: a stand-in with its attributes.
        class F:
            update_size = True
            update_mode = update_uid = update_gid = update_atime = update_mtime = False
        return await ops.setattr(pyfuse3.ROOT_INODE, attr, F, None, None)

    assert trio.run(set_size, 0).st_size == SIZE      # O_TRUNC: ignored
    assert trio.run(set_size, SIZE).st_size == SIZE
    with pytest.raises(pyfuse3.FUSEError) as exc:
        trio.run(set_size, 4096)
    assert exc.value.errno == errno.EINVAL


@pytest.mark.parametrize("mode,off,length,want,discarded", [
    (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 8192, 0, (4096, 8192)),
    (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, SIZE - 10, 100, 0, (SIZE - 10, 10)),
    (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, SIZE + 10, 100, 0, None),
    (FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 0, 512, 0, (0, 512)),
    (FALLOC_FL_ZERO_RANGE, 0, 512, 0, (0, 512)),
    (FALLOC_FL_ZERO_RANGE, SIZE - 1, 2, errno.ENOSPC, None),
    (0, 0, SIZE, 0, None),                   # plain allocation inside the device: nothing to do
    (0, 0, SIZE + 1, errno.ENOSPC, None),    # cannot grow
    (FALLOC_FL_KEEP_SIZE, 0, SIZE + 1, 0, None),
    (0x08, 0, 4096, errno.EOPNOTSUPP, None),  # COLLAPSE_RANGE
    (0x20, 0, 4096, errno.EOPNOTSUPP, None),  # INSERT_RANGE
    (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 0, errno.EINVAL, None),
])
def test_fallocate_modes(mode, off, length, want, discarded):
    e = FakeEngine()
    ops = BlockOps(e)
    assert go(ops._do_fallocate, mode, off, length) == want
    calls = [c for c in e.calls if c[0] == "discard"]
    assert calls == ([("discard", *discarded)] if discarded else [])


def test_pyfuse3_symbols_found_for_the_session_hook():
    syms = _lowlevel._elf_symbols(pyfuse3.__file__, {"PyInit_pyfuse3",
                                                     "__pyx_v_7pyfuse3_session",
                                                     "__pyx_v_7pyfuse3_fuse_ops"})
    assert all(v > 0 for v in syms.values())
    assert _lowlevel.SLOT["fallocate"] == 40 and _lowlevel.SLOT["write_buf"] == 36


def test_mountinfo_unescape():
    assert _unescape_mountinfo(r"/tmp/a\040b\011c\134d") == "/tmp/a b\tc\\d"


def test_worker_pool_results_errors_and_parallelism():
    async def main():
        pool = WorkerPool(2)
        try:
            assert await pool.run(sum, [1, 2, 3]) == 6
            with pytest.raises(OSError):
                await pool.run(os.fstat, -1)
            import time
            async with trio.open_nursery() as n:
                for _ in range(2):
                    n.start_soon(pool.run, time.sleep, 0.3)
            assert len(pool._threads) == 2  # two blocked calls got two threads
        finally:
            pool.close()
    trio.run(main)
