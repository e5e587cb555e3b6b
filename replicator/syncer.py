"""fdatasync of a backing file as a group commit, started early when fsyncs are expected.

Writes bump a generation number (``wrote``). ``sync()`` returns once an fdatasync that
*started after* the caller's writes has finished: a sync already running that began after
them is joined, otherwise one more is started. Concurrent callers share one fdatasync.

Anticipation: when the workload fsyncs after (almost) every write, as databases and
``O_DSYNC`` writers do, ``anticipate()`` starts the fdatasync as soon as the writes go
quiet (a mirrored write on the Primary: once it is on the local disk, while the peer's
ack is on its way). It runs while the application is still on its way to its fsync, and
that fsync then finds its data already on stable storage or nearly there. It only runs
when the last flush came within ``ANTICIPATE_GAP`` writes of the one before, and never
more than once per ``ANTICIPATE_GAP`` writes without a flush: a buffered workload does
not pay.

Everything here runs on the trio thread. The fdatasync itself runs inline (small ones,
when nobody else waits on the loop), in the kernel through native AIO
(``replicator.aio_fsync``), or where that is unavailable in a worker thread.

The writes to the file go through ``write()`` as well: inline on the trio thread (a
page-cache pwrite costs less than a thread hand-off), except while an fdatasync of the file
runs, ours or a metadata write's (``flushing()``). Where fsync holds the file's inode lock
(FUSE, btrfs) a write waits for the flush to end, and inline it would stall the whole event
loop for as long, pings and all; so meanwhile writes go to one writer thread, in the order
they were issued, and discards and the reads that must see them (``read()``) queue behind.
"""
from __future__ import annotations

import errno
import os
from typing import Callable

import trio

from fuseblk.workers import WorkerPool
from replicator.aio_fsync import open_aio_fsync

INLINE_MAX = 256 << 10        # sync inline (no thread round trip) when this little is dirty
ANTICIPATE_GAP = 2            # writes between flushes that make a workload "fsync-heavy"


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """pwrite all of ``data`` at ``offset`` (OSError on failure, ENOSPC if nothing fits)."""
    view, done = memoryview(data), 0
    while done < len(view):
        n = os.pwrite(fd, view[done:], offset + done)
        if n <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        done += n


class _Run:
    """One fdatasync in progress: it covers every write up to ``covers``."""

    def __init__(self, covers: int):
        self.covers = covers
        self.ok = False
        self.ran = False            # False: cancelled before its fdatasync was made
        self.done = trio.Event()


class Syncer:
    def __init__(self, fd: int, on_error: Callable[[OSError], None], aio: bool = True):
        self.fd = fd
        self.on_error = on_error        # called once per failed fdatasync
        self.generation = 1             # bumped by every write; 1: the file may hold dirty
                                        # pages from before us (a crashed daemon's)
        self.durable = 0                # every write up to here is on stable storage
        self.dirty = 0                  # bytes written since the last fdatasync started
        self.syncs = 0                  # fdatasync calls made (statistics, tests)
        self.anticipated = 0            # ... of which started by anticipate()
        self._running: _Run | None = None
        self._since_flush = 0           # writes since the last sync() call
        self._fsync_heavy = False
        self._aio = open_aio_fsync(fd) if aio else None    # None: worker threads
        self._lane = WorkerPool(1, name="disk-writer")     # one thread: issue order kept
        self._lane_jobs = 0             # writes/reads queued on it or running there
        self._lane_idle = trio.Event()
        self._lane_idle.set()
        self._flushing = 0              # metadata writes + fdatasyncs running in threads

    async def write(self, data: bytes | memoryview, offset: int) -> None:
        """pwrite all of ``data`` at ``offset`` and record it (OSError if that failed):
        inline, or on the writer thread while an fdatasync runs or writes wait there.
        Not cancellable: the peer may have this write already, so it must land here too."""
        if self._running is None and not self._flushing and not self._lane_jobs:
            pwrite_all(self.fd, data, offset)
        else:
            with trio.CancelScope(shield=True):
                await self._in_lane(pwrite_all, self.fd, data, offset)
        self.wrote(len(data))

    async def discard(self, offset: int, length: int) -> None:
        """Punch a hole, in order with the writes (always on the writer thread: it may
        take long). Not cancellable, as write()."""
        from fuseblk.file_engine import punch_hole
        with trio.CancelScope(shield=True):
            await self._in_lane(punch_hole, self.fd, offset, length)
        self.wrote(0)

    async def flushing(self, call: Callable, *args: object):
        """Run ``call`` (a metadata write and its fdatasync of this file) in a worker
        thread; writes meanwhile go to the writer thread, as during our own fdatasync."""
        self._flushing += 1
        try:
            return await trio.to_thread.run_sync(call, *args)
        finally:
            self._flushing -= 1

    async def read(self, length: int, offset: int) -> bytes:
        """pread that sees every write issued through ``write()`` before it."""
        if not self._lane_jobs:
            return os.pread(self.fd, length, offset)
        return await self._in_lane(os.pread, self.fd, length, offset)

    async def _in_lane(self, call: Callable, *args: object):
        if not self._lane_jobs:
            self._lane_idle = trio.Event()
        self._lane_jobs += 1
        try:
            return await self._lane.run(call, *args)
        finally:
            self._lane_jobs -= 1
            if not self._lane_jobs:
                self._lane_idle.set()

    def wrote(self, nbytes: int) -> None:
        """Record a write to the file (call it once the pwrite returned)."""
        self.generation += 1
        self.dirty += nbytes
        self._since_flush += 1

    async def sync(self, upto: int | None = None, inline_ok: bool = False) -> bool:
        """Make every write up to generation ``upto`` (default: all so far) durable; False
        if an fdatasync failed. ``inline_ok``: nobody else waits on this event loop, so a
        small sync may block it rather than pay for a worker thread."""
        target = self.generation if upto is None else upto
        self._flush_requested()
        while self.durable < target:
            run = self._running
            if run is None:
                run = self._new_run()
                await self._fdatasync(run, inline_ok)
            else:
                await run.done.wait()
            if run.covers >= target and run.ran:
                return run.ok
            # that one began before our writes (or never ran): the next one covers them
        return True

    def already_durable(self, upto: int) -> bool:
        """``sync(upto)`` without waiting: True if every write up to ``upto`` is on stable
        storage already (counted as a flush, as sync() would)."""
        if self.durable < upto:
            return False
        self._flush_requested()
        return True

    def _flush_requested(self) -> None:
        self._fsync_heavy = self._since_flush <= ANTICIPATE_GAP
        self._since_flush = 0

    async def quiesce(self) -> None:
        """Wait until no fdatasync, write or metadata write is running (before the file is
        closed)."""
        while self._running is not None or self._lane_jobs or self._flushing:
            if self._running is not None:
                await self._running.done.wait()
            elif self._lane_jobs:
                await self._lane_idle.wait()
            else:
                await trio.sleep(0.005)         # a metadata write in a worker thread

    def close(self) -> None:
        """Release the AIO context and the writer thread (after quiesce(), before the file
        is closed)."""
        self._lane.close()
        if self._aio is not None:
            self._aio.close()
            self._aio = None

    def anticipate(self, nursery: trio.Nursery | None) -> None:
        """The writes went quiet: if an fsync is likely to follow, start the sync now."""
        if (nursery is None or not self._fsync_heavy or self._running is not None
                or self.durable >= self.generation or self._since_flush > ANTICIPATE_GAP):
            return
        self.anticipated += 1
        nursery.start_soon(self._fdatasync, self._new_run(), False)

    def _new_run(self) -> _Run:
        run = _Run(self.generation)
        self._running = run
        return run

    async def _fdatasync(self, run: _Run, inline_ok: bool) -> None:
        inline = inline_ok and self.dirty <= INLINE_MAX
        dirty, self.dirty = self.dirty, 0
        error = None
        try:
            if inline:
                os.fdatasync(self.fd)
            elif self._aio_submitted():
                await self._aio.wait()
            else:
                await trio.to_thread.run_sync(os.fdatasync, self.fd)
            run.ran = True
        except OSError as e:
            run.ran, error = True, e
        finally:                      # also when cancelled before the thread started
            if not run.ran:
                self.dirty += dirty
            self._done(run, error)
        self.syncs += 1

    def _aio_submitted(self) -> bool:
        """Start the fdatasync through AIO; False (and threads from now on) if refused."""
        if self._aio is None:
            return False
        try:
            self._aio.submit()
            return True
        except OSError:
            self._aio.close()
            self._aio = None
            return False

    def _done(self, run: _Run, error: OSError | None) -> None:
        if self._running is run:
            self._running = None
        run.ok = run.ran and error is None
        if run.ok:
            self.durable = max(self.durable, run.covers)
        run.done.set()
        if error is not None:
            self.on_error(error)
