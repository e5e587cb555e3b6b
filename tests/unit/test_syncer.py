"""Syncer: group commit of fdatasync, and the anticipated sync for fsync-heavy writers."""
from __future__ import annotations

import os
import threading

import pytest
import trio
import trio.testing

from replicator import syncer as S


class FakeSync:
    """Stands in for os.fdatasync: counts calls, can fail or hold the caller."""

    def __init__(self) -> None:
        self.calls = 0
        self.fail: OSError | None = None
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def __call__(self, fd: int) -> None:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(5)
        if self.fail is not None:
            raise self.fail


@pytest.fixture
def fake(monkeypatch, tmp_path):
    f = FakeSync()
    monkeypatch.setattr(S.os, "fdatasync", f)
    fd = os.open(tmp_path / "disk", os.O_RDWR | os.O_CREAT)
    yield f, fd
    os.close(fd)


def make(fd: int) -> tuple[S.Syncer, list]:
    errors: list = []
    return S.Syncer(fd, errors.append, aio=False), errors    # (os.fdatasync is faked)


def test_first_sync_always_syncs_then_only_after_writes(fake):
    f, fd = fake

    async def main() -> None:
        s, _ = make(fd)
        assert await s.sync() and f.calls == 1      # dirty pages of a previous daemon
        assert await s.sync() and f.calls == 1      # nothing written since
        s.wrote(4096)
        assert await s.sync(inline_ok=True) and f.calls == 2
    trio.run(main)


async def sync_together(s: S.Syncer, f: FakeSync, callers: int) -> list[bool]:
    """``callers`` tasks call sync() while the first fdatasync is held; then it goes on."""
    f.gate = threading.Event()
    results: list[bool] = []

    async def caller() -> None:
        results.append(await s.sync())
    async with trio.open_nursery() as n:
        for _ in range(callers):
            n.start_soon(caller)
        await trio.to_thread.run_sync(f.entered.wait)
        f.gate.set()
    return results


def test_concurrent_callers_share_one_fdatasync(fake):
    f, fd = fake

    async def main() -> None:
        s, _ = make(fd)
        assert await sync_together(s, f, 5) == [True] * 5
    trio.run(main)
    assert f.calls == 1


def test_a_write_during_a_sync_needs_the_next_one(fake):
    f, fd = fake
    f.gate = threading.Event()

    async def main() -> None:
        s, _ = make(fd)
        async with trio.open_nursery() as n:
            n.start_soon(s.sync)
            await trio.to_thread.run_sync(f.entered.wait)
            s.wrote(4096)                  # lands after that fdatasync began
            second = trio.Event()

            async def later() -> None:
                assert await s.sync()
                second.set()
            n.start_soon(later)
            await trio.sleep(0.05)
            assert not second.is_set()     # not covered by the running one
            f.gate.set()
        assert f.calls == 2 and s.durable == s.generation
    trio.run(main)


def test_failure_reaches_every_waiter_and_the_handler_once(fake):
    f, fd = fake
    f.fail = OSError(5, "Input/output error")

    async def main() -> None:
        s, errors = make(fd)
        assert await sync_together(s, f, 3) == [False] * 3
        assert len(errors) == 1 and s.durable == 0
    trio.run(main)


def test_anticipation_only_for_fsync_heavy_writers(fake):
    f, fd = fake

    async def main() -> None:
        s, _ = make(fd)
        async with trio.open_nursery() as n:
            s.wrote(4096)
            s.anticipate(n)                # no flush seen yet: buffered until shown otherwise
            await trio.testing.wait_all_tasks_blocked()
            assert f.calls == 0
            await s.sync()                 # one write, then a flush: fsync-heavy
            s.wrote(4096)
            s.anticipate(n)
            await trio.testing.wait_all_tasks_blocked()
            await s.quiesce()
            assert f.calls == 2 and s.anticipated == 1
            calls = f.calls
            assert await s.sync()          # the application's fsync finds it done
            assert f.calls == calls
            for _ in range(S.ANTICIPATE_GAP + 1):   # now it stops flushing
                s.wrote(4096)
            s.anticipate(n)
            await trio.testing.wait_all_tasks_blocked()
            assert f.calls == calls and s.anticipated == 1
            await s.sync()                 # many writes per flush: buffered
            s.wrote(4096)
            s.anticipate(n)
            await trio.testing.wait_all_tasks_blocked()
            assert s.anticipated == 1
    trio.run(main)


def test_already_durable_answers_without_io_and_counts_as_a_flush(fake):
    """The peer's FLUSH found the writes synced by the anticipated fdatasync: answered
    without I/O, and the workload still counts as fsync-heavy for the next writes."""
    f, fd = fake

    async def main() -> None:
        s, _ = make(fd)
        await s.sync()
        s.wrote(4096)
        assert not s.already_durable(s.generation)     # not synced yet
        assert await s.sync() and f.calls == 2         # one write per flush: fsync-heavy
        async with trio.open_nursery() as n:
            for _ in range(S.ANTICIPATE_GAP + 3):
                s.wrote(4096)
                s.anticipate(n)
                await s.quiesce()
                assert s.already_durable(s.generation)
        assert s.anticipated == S.ANTICIPATE_GAP + 3 and f.calls == 2 + s.anticipated
    trio.run(main)


def test_a_cancelled_sync_does_not_count(fake):
    f, fd = fake

    async def main() -> None:
        s, _ = make(fd)
        await s.sync()
        s.wrote(4096)
        await s.sync()                     # fsync-heavy now
        s.wrote(4096)
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as n:
                s.anticipate(n)            # its task starts in a cancelled scope
                scope.cancel()
        assert s.durable < s.generation and s._running is None
        calls = f.calls
        assert await s.sync() and f.calls == calls + 1
    trio.run(main)


def test_quiesce_waits_for_the_running_sync(fake):
    f, fd = fake
    f.gate = threading.Event()

    async def main() -> None:
        s, _ = make(fd)
        async with trio.open_nursery() as n:
            n.start_soon(s.sync)
            await trio.to_thread.run_sync(f.entered.wait)
            with trio.move_on_after(0.05):
                await s.quiesce()
                raise AssertionError("quiesce returned while a sync ran")
            f.gate.set()
            await s.quiesce()
            assert s._running is None
    trio.run(main)


def test_native_aio_sync_of_a_real_file(tmp_path):
    """The default path: the kernel runs the fdatasync (IOCB_CMD_FDSYNC) and signals an
    eventfd; a sync in a cancelled scope still completes and leaves nothing behind."""
    fd = os.open(tmp_path / "disk", os.O_RDWR | os.O_CREAT)
    fds_before = len(os.listdir("/proc/self/fd"))

    async def main() -> None:
        errors: list = []
        s = S.Syncer(fd, errors.append)
        assert s._aio is not None, "native AIO unavailable on this machine"
        for i in range(3):
            os.pwrite(fd, b"x" * 4096, i * 4096)
            s.wrote(4096)
            with trio.CancelScope() as scope:
                scope.cancel()
                assert await s.sync()
            assert s.durable == s.generation and s.syncs == i + 1
        assert s._aio is not None and not errors    # no fallback to threads was needed
        s.close()
    try:
        trio.run(main)
        assert len(os.listdir("/proc/self/fd")) == fds_before      # the eventfd is closed
    finally:
        os.close(fd)


def test_a_file_without_fsync_falls_back_to_threads_and_reports_the_error():
    r, w = os.pipe()

    async def main() -> None:
        errors: list = []
        s = S.Syncer(w, errors.append)
        s.wrote(1)
        assert not await s.sync()          # io_submit refuses a pipe; so does fdatasync
        assert s._aio is None and len(errors) == 1 and errors[0].errno == 22
    try:
        trio.run(main)
    finally:
        os.close(r)
        os.close(w)


def test_while_a_flush_runs_writes_leave_the_event_loop_and_keep_their_order(fake, monkeypatch):
    """Where fsync holds the inode lock (FUSE, btrfs) a write waits for the flush: not on
    the event loop. Writes made meanwhile keep their order, a read after them sees them,
    and once all is quiet writes are inline again."""
    f, fd = fake
    log: list = []
    hold = threading.Event()
    real_pwrite = S.os.pwrite

    def pwrite(fd_: int, data, off: int) -> int:
        on_loop = threading.current_thread() is threading.main_thread()
        log.append((on_loop, bytes(data[:1])))
        if not on_loop and bytes(data[:1]) == b"b":
            hold.wait(5)                 # the first one waits, as for the flush's lock
        return real_pwrite(fd_, data, off)
    monkeypatch.setattr(S.os, "pwrite", pwrite)

    async def main() -> None:
        s, _ = make(fd)
        await s.write(b"a" * 4096, 0)
        f.gate = threading.Event()
        got: list = []

        async def read() -> None:
            got.append(await s.read(1, 0))
        async with trio.open_nursery() as n:
            n.start_soon(s.sync)
            await trio.to_thread.run_sync(f.entered.wait)
            for ch in b"bcd":
                n.start_soon(s.write, bytes([ch]) * 4096, 0)
                await trio.testing.wait_all_tasks_blocked()
            n.start_soon(read)
            await trio.testing.wait_all_tasks_blocked()
            assert not got                          # queued behind the writes
            f.gate.set()
            hold.set()
        assert got == [b"d"]
        await s.write(b"e" * 4096, 0)
        assert log == [(True, b"a"), (False, b"b"), (False, b"c"), (False, b"d"), (True, b"e")]
        assert s.generation == 6                    # 1 + five recorded writes
        await s.quiesce()
        s.close()
    trio.run(main)


def test_a_refused_aio_sync_leaves_the_writer_thread_working(tmp_path, monkeypatch):
    """The AIO fallback used to close the writer thread with the AIO context: the next
    write made during a sync then waited forever."""
    fd = os.open(tmp_path / "disk", os.O_RDWR | os.O_CREAT)

    async def main() -> None:
        s = S.Syncer(fd, [].append)
        assert s._aio is not None, "native AIO unavailable on this machine"

        def refuse() -> None:
            raise OSError(22, "refused")
        monkeypatch.setattr(s._aio, "submit", refuse)
        s._running = S._Run(s.generation)           # a sync runs: writes use the thread
        await s.write(b"a" * 4096, 0)
        s._running = None
        s.wrote(1)
        assert await s.sync() and s._aio is None    # fell back to a thread
        assert not s._lane._closed                  # (a closed one would hang the write)
        s._running = S._Run(s.generation)
        with trio.fail_after(5):
            await s.write(b"b" * 4096, 0)
        s._running = None
        assert os.pread(fd, 1, 0) == b"b"
        await s.quiesce()
        s.close()
    try:
        trio.run(main)
    finally:
        os.close(fd)


def test_writes_and_discards_on_the_writer_thread_keep_order_and_outlive_cancellation(
        tmp_path, monkeypatch):
    """While a metadata flush runs, a write then a discard of the same block go to the
    writer thread in that order; cancelling the writer does not skip its write (the peer
    may have it already)."""
    fd = os.open(tmp_path / "disk", os.O_RDWR | os.O_CREAT)
    os.ftruncate(fd, 1 << 20)
    gate = threading.Event()
    on_loop: list[bool] = []
    real = S.pwrite_all

    def pwrite_all(*args) -> None:
        on_loop.append(threading.current_thread() is threading.main_thread())
        real(*args)
    monkeypatch.setattr(S, "pwrite_all", pwrite_all)

    async def main() -> None:
        s = S.Syncer(fd, [].append, aio=False)
        async with trio.open_nursery() as n:
            n.start_soon(s.flushing, gate.wait, 5)          # holds the "flush" open
            await trio.testing.wait_all_tasks_blocked()
            with trio.CancelScope() as scope:
                scope.cancel()
                await s.write(b"x" * 4096, 0)             # cancelled, lands anyway
            assert os.pread(fd, 1, 0) == b"x" and s._lane_jobs == 0
            n.start_soon(s.write, b"y" * 4096, 4096)
            await trio.testing.wait_all_tasks_blocked()
            n.start_soon(s.discard, 4096, 4096)
            await trio.testing.wait_all_tasks_blocked()
            gate.set()
        assert os.pread(fd, 4096, 4096) == bytes(4096)    # the discard came last
        assert on_loop == [False, False]                  # both writes left the loop
        assert s.generation == 4
        await s.quiesce()
        s.close()
    try:
        trio.run(main)
    finally:
        os.close(fd)
