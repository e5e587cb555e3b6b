"""A BlockEngine on a plain file (or block device): the reference engine and bench baseline."""
from __future__ import annotations

import ctypes
import errno
import os
from typing import Optional, Union

from fuseblk.workers import WorkerPool

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02

_libc = ctypes.CDLL(None, use_errno=True)
_fallocate = _libc.fallocate
_fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_fallocate.restype = ctypes.c_int


def punch_hole(fd: int, offset: int, length: int) -> None:
    """fallocate(PUNCH_HOLE|KEEP_SIZE); falls back to writing zeros where unsupported."""
    if _fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return
    err = ctypes.get_errno()
    if err not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.ENODEV):
        raise OSError(err, os.strerror(err))
    zeros = bytes(min(length, 1 << 20))
    end = offset + length
    while offset < end:
        offset += os.pwrite(fd, memoryview(zeros)[:min(len(zeros), end - offset)], offset)


class FileEngine:
    """pread/pwrite on one fd, fdatasync for flush, PUNCH_HOLE for discard.

    Reads and writes of up to ``inline_max`` bytes run inline on the trio thread: against
    the page cache a 4 KiB-1 MiB pread/pwrite costs less than a hand-off to a worker thread
    and back (bench/README.md: all in threads 0.3-0.6x, > 256 KiB in threads 0.4-0.75x of
    all inline).
    Larger ones, flush and discard go to a small thread pool (fuseblk.workers, cheaper than
    ``trio.to_thread``) so a slow disk does not stall the other requests. ``inline_max=None`` keeps every read/write inline, 0 sends
    all of them to threads.
    """

    def __init__(self, path: str, *, size: Optional[int] = None,
                 inline_max: Optional[int] = None, readonly: bool = False,
                 threads: int = 2) -> None:
        self.path = path
        self.fd = os.open(path, (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC)
        try:
            real = os.lseek(self.fd, 0, os.SEEK_END)
            self._size = real if size is None else size
            if self._size > real:
                raise ValueError(f"{path}: {real} bytes, smaller than the size {self._size}")
        except BaseException:
            os.close(self.fd)
            raise
        self.inline_max = inline_max
        self._pool = WorkerPool(threads, name="file-engine")
        self.open_count = 0
        self.open_writable = 0

    def close(self) -> None:
        self._pool.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def size(self) -> int:
        return self._size

    async def read(self, offset: int, length: int) -> bytes:
        im = self.inline_max
        if im is None or length <= im:
            data = os.pread(self.fd, length, offset)
        else:
            data = await self._pool.run(os.pread, self.fd, length, offset)
        if len(data) != length:  # only if the file shrank underneath us
            data += bytes(length - len(data))
        return data

    async def write(self, offset: int, data: Union[bytes, memoryview]) -> int:
        im = self.inline_max
        if im is None or len(data) <= im:
            n = os.pwrite(self.fd, data, offset)
        else:
            n = await self._pool.run(os.pwrite, self.fd, data, offset)
        if n != len(data):  # a regular file writes short only when full: finish or fail
            mv = memoryview(data)
            while n < len(mv):
                k = os.pwrite(self.fd, mv[n:], offset + n)
                if k <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                n += k
        return n

    async def flush(self) -> None:
        await self._pool.run(os.fdatasync, self.fd)

    async def discard(self, offset: int, length: int) -> None:
        await self._pool.run(punch_hole, self.fd, offset, length)

    def may_open(self, writable: bool) -> int:
        return 0

    def opened(self, writable: bool) -> None:
        self.open_count += 1
        self.open_writable += writable

    def released(self, writable: bool) -> None:
        self.open_count -= 1
        self.open_writable -= writable
