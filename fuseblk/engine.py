"""The interface between the FUSE front end and whatever stores the data.

fuseblk knows nothing of replication: it turns FUSE requests on its single regular file into
calls on an object that satisfies :class:`BlockEngine`. The replicator supplies one that writes
locally and to the peer; :class:`fuseblk.file_engine.FileEngine` is the plain file-backed one.

Contract (what fuseblk guarantees the engine, and what it expects back):

* ``size()`` is the device size in bytes. fuseblk asks it on every ``getattr`` (so a resize
  shows up on the next stat once the attribute cache expires; see ``mount.invalidate_size``)
  and clamps every request to it: ``read``/``write``/``discard`` are only called with
  ``0 <= offset`` and ``offset + length <= size()``. A write starting at or past the end fails
  with ENOSPC, one crossing the end is shortened (a short write), as a block device does.
* ``read(offset, length)`` returns exactly ``length`` bytes (``bytes``, ``bytearray`` or a
  contiguous ``memoryview``). The buffer is consumed before fuseblk's next checkpoint, so an
  engine may hand out a view of a buffer it reuses once the call has returned.
* ``write(offset, data)`` stores all of ``data`` (``bytes`` or a contiguous ``memoryview``)
  and returns the number of bytes written. ``data`` is usually a view of libfuse's receive
  buffer (no copy, see ``_lowlevel.WriteHandlers``): it is valid until ``write``
  returns, and released then. An engine that needs the data afterwards (to send it to a
  peer later, say) copies it. When ``write`` returns the
  data has reached the engine: fuseblk never uses FUSE's writeback cache, so a write the
  kernel completes is one the engine has accepted (for DRBD: acknowledged per protocol).
* ``flush()`` is the durability point (a disk cache flush; for DRBD also a flush round trip to
  the peer). It is called for FUSE ``fsync`` and ``fsyncdir`` -- which is what ``fsync(2)``/
  ``fdatasync(2)`` on the file and a loop device's REQ_PREFLUSH/FUA (ext3 barriers, journal
  commits, fio ``fsync=1``) become. It is *not* called for FUSE ``flush``, which the kernel
  sends on every ``close(2)``: like closing a block device, closing the file is not a
  durability point, and since every write has already reached the engine there is nothing to
  push. Applications that need durability call fsync, exactly as on a block device.
* ``discard(offset, length)``: afterwards the range reads as zeros. Both
  ``fallocate(PUNCH_HOLE|KEEP_SIZE)`` (a loop device's discard, ``blkdiscard``, ``fstrim``,
  mke2fs's discard pass) and ``fallocate(ZERO_RANGE)`` (a loop device's write-zeroes) map to it.
* ``may_open(writable)`` returns 0 to allow an ``open(2)`` or an errno to refuse it (DRBD
  8.4 on a Secondary: ``EROFS`` for a writable open, ``EMEDIUMTYPE`` for a read-only one).
  ``opened(writable)`` follows
  every successful open and ``released(writable)`` every final close of that open file
  description, so the engine can keep the open count ("Device is held open by someone").
  These three are plain (non-async) calls made on the trio thread; keep them quick.
* Errors: raise ``pyfuse3.FUSEError(errno)`` or ``OSError`` and the caller of the system call
  sees that errno. Any other exception is logged with its traceback and becomes ``EIO``; the
  mount stays up.

All async methods run on the trio thread that serves FUSE. Blocking work belongs in
``trio.to_thread.run_sync`` (fsync, slow disks); page-cache-sized pread/pwrite were measured
to be cheaper inline (see bench/ and fuseblk/file_engine.py).
"""
from __future__ import annotations

from typing import Protocol, Union, runtime_checkable

Buffer = Union[bytes, bytearray, memoryview]


@runtime_checkable
class BlockEngine(Protocol):
    def size(self) -> int:
        """Device size in bytes."""
        ...

    async def read(self, offset: int, length: int) -> Buffer:
        """Return exactly ``length`` bytes at ``offset``."""
        ...

    async def write(self, offset: int, data: Union[bytes, memoryview]) -> int:
        """Store ``data`` at ``offset``; return the number of bytes written."""
        ...

    async def flush(self) -> None:
        """Make every write that has returned durable."""
        ...

    async def discard(self, offset: int, length: int) -> None:
        """Make the range read as zeros (and free it where possible)."""
        ...

    def may_open(self, writable: bool) -> int:
        """0 to allow an open, or the errno to refuse it with."""
        ...

    def opened(self, writable: bool) -> None:
        """An open succeeded."""
        ...

    def released(self, writable: bool) -> None:
        """The last reference to an open file description was closed."""
        ...
