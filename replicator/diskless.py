"""The device file while no disk is attached (from new-minor until attach, after detach),
and I/O served by the peer alone (8.4's diskless Primary).

DRBD 8.4's /dev/drbdN exists from new-minor to down. Here the device is a FUSE mount on a
regular file, and without one the bare mount-point file would take whatever is written to it
(``dd of=/dev/drbd0`` succeeding into the root file system, and hidden again under the next
attach). So a minor without a disk is served too. As 8.4's diskless node it has the size of
its peer's device once connected, refuses opens on a Secondary (EROFS for writing,
EMEDIUMTYPE for reading), and as a Primary connected to an UpToDate peer it shows the peer's
data: every read, write and flush goes over the network.

The functions below are shared with :class:`replicator.device.Device`, whose Primary goes
on the same way once its own disk failed.
"""
from __future__ import annotations

import errno
from typing import Any, Awaitable, Callable, Union

import pyfuse3
import trio

from meta.metadata import ppsize
from replicator.states import NO_UP_TO_DATE_DISK, Disk, Role, State


def open_error(state: State, writable: bool) -> int:
    """8.4's drbd_open: on a Secondary EROFS for a writable open, else EMEDIUMTYPE; a
    Primary with no UpToDate copy anywhere (and no suspend-io to wait with) ENODATA."""
    if state.role != Role.Primary:
        return errno.EROFS if writable else errno.EMEDIUMTYPE
    if state.disk < Disk.UpToDate and state.pdsk < Disk.UpToDate and not state.susp_nod:
        return errno.ENODATA
    return 0


async def thawed(res: Any) -> None:
    """Wait while application I/O is suspended; EIO if the admin failed it meanwhile."""
    if res.state.suspended and not await res.io_allowed():
        raise pyfuse3.FUSEError(errno.EIO)


async def frozen_while_no_data(res: Any, io: Callable[[], Awaitable[Any]]) -> Any:
    """Run ``io``; an I/O error for lack of data freezes it instead, and it runs again once
    data is back (8.4's on-no-data-accessible suspend-io)."""
    while True:
        await thawed(res)
        try:
            return await io()
        except pyfuse3.FUSEError as e:
            if e.errno != errno.EIO or not res.state.susp_nod:
                raise


async def read_from_peer(res: Any, offset: int, length: int) -> bytes:
    """The peer's copy of the blocks; EIO if it cannot deliver them."""
    peer = res.peer
    data = await peer.remote_read(offset, length) if peer is not None else None
    if data is None:
        raise pyfuse3.FUSEError(errno.EIO)
    return data


async def write_to_peer(res: Any, offset: int, data: Union[bytes, memoryview]) -> None:
    """Write to the peer's disk only (its copy is the data); EIO if it did not take it."""
    peer = res.peer
    if peer is None or not peer.mirroring() or res.state.pdsk < Disk.UpToDate:
        raise pyfuse3.FUSEError(errno.EIO)
    pending = peer.submit_write(offset, data)
    await pending.done.wait()
    if pending.lost:
        raise pyfuse3.FUSEError(errno.EIO)


async def flush_peer(res: Any) -> None:
    """fsync of a device whose data is the peer's: EIO unless the peer's flush succeeded."""
    peer = res.peer
    if not (peer is not None and peer.mirroring() and await peer.flush()):
        raise pyfuse3.FUSEError(errno.EIO)


async def demote_once_closed(res: Any, engine: Any) -> tuple[int, str]:
    """Secondary, once ``engine``'s device file is closed: a loop device detaching after
    umount releases the file a moment later, so wait up to 2 s for that."""
    deadline = trio.current_time() + 2.0
    while engine.open_count and trio.current_time() < deadline:
        await trio.sleep(0.02)
    return res.try_change("device", role=Role.Secondary)


class DisklessEngine:
    """The fuseblk engine of a minor without a disk: empty and closed to opens, except on a
    Primary, which reads and writes the peer's disk."""

    def __init__(self, res: Any):
        self.res = res
        self.log = res.log
        self.peer_size = 0          # the connected peer's device size (8.4 takes it over)
        self.exposed_uuid = 0       # as a Primary: the peer's data generation it shows
        self.open_count = 0
        self.writers = 0
        self.read_kib = 0
        self.written_kib = 0

    def size(self) -> int:
        return self.peer_size

    async def adopt_size(self, size: int) -> None:
        """The connected peer's device size is this device's (8.4's receive_sizes on a
        diskless node), when connecting and after an online resize; I/O beyond it fails."""
        if size == self.peer_size:
            return
        self.peer_size = size
        self.log.device(f"size = {ppsize(size >> 10)} ({size >> 10} KB)")
        self.res.notify("size", {"size": size})
        import fuseblk
        if fuseblk.serving(self):       # (else the next mount reads the size)
            from replicator import resize
            await resize.expose(self, self.res.device_path)

    async def promote(self) -> tuple[int, str]:
        """Primary on the peer's data: only while connected to an UpToDate peer. (8.4's
        state rules would also take a Consistent or Outdated peer, whose every read and
        write then fails; udrbd refuses that as they refuse no peer at all.)"""
        res = self.res
        if res.state.pdsk != Disk.UpToDate:
            res.log.device(f"State change failed: {NO_UP_TO_DATE_DISK[1]}")
            return NO_UP_TO_DATE_DISK
        code, text = res.try_change("device", role=Role.Primary)
        if not code and res.peer is not None:
            self.exposed_uuid = res.peer.peer_uuids[0]
        return code, text

    async def demote(self) -> tuple[int, str]:
        return await demote_once_closed(self.res, self)

    def may_open(self, writable: bool) -> int:
        s = self.res.state
        if s.role == Role.Primary and not self.peer_size:
            return errno.ENOMEDIUM          # (never connected: no size, no data)
        return open_error(s, writable)

    def _within(self, offset: int, length: int) -> None:
        if offset + length > self.peer_size:      # (the peer's device shrank meanwhile)
            raise pyfuse3.FUSEError(errno.EIO)

    async def read(self, offset: int, length: int) -> bytes:
        self._within(offset, length)
        data = await frozen_while_no_data(
            self.res, lambda: read_from_peer(self.res, offset, length))
        self.read_kib += length >> 10
        return data

    async def write(self, offset: int, data: Union[bytes, memoryview]) -> int:
        self._within(offset, len(data))
        await frozen_while_no_data(self.res, lambda: write_to_peer(self.res, offset, data))
        self.written_kib += len(data) >> 10
        return len(data)

    async def flush(self) -> None:
        await frozen_while_no_data(self.res, lambda: flush_peer(self.res))

    async def discard(self, offset: int, length: int) -> None:
        raise pyfuse3.FUSEError(errno.EOPNOTSUPP)

    def statistics(self) -> dict:
        return {"size_kib": self.peer_size >> 10, "read_kib": self.read_kib,
                "written_kib": self.written_kib, "open_count": self.open_count}

    def opened(self, writable: bool) -> None:
        self.open_count += 1
        self.writers += int(writable)

    def released(self, writable: bool) -> None:
        self.open_count = max(0, self.open_count - 1)
        self.writers = max(0, self.writers - int(writable))


class DisklessFile:
    """Serves the resource's :class:`DisklessEngine` at its device path until stopped."""

    def __init__(self, daemon: Any):
        self.daemon = daemon
        self.engine = DisklessEngine(daemon.resource)
        daemon.resource.diskless = self.engine
        self._scope: trio.CancelScope | None = None
        self._done = trio.Event()

    @property
    def mounted(self) -> bool:
        return self._scope is not None

    async def start(self) -> None:
        """Mount it (OSError if the device path cannot be used); no-op when mounted."""
        if self._scope is None:
            self._done = trio.Event()
            await self.daemon.nursery.start(self._serve)

    async def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
            await self._done.wait()

    def hand_over(self) -> tuple[trio.CancelScope, trio.Event]:
        """A disk takes over the mounted file while it stays open: the cancel scope that
        unmounts it and the event set once unmounted now belong to the new engine."""
        assert self._scope is not None
        handed = self._scope, self._done
        self._scope, self._done = None, trio.Event()
        return handed

    async def _serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        import fuseblk
        res = self.daemon.resource
        done, scope = self._done, None
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                await fuseblk.serve(res.device_path, self.engine,
                                    fsname=f"drbd{res.minor}", task_status=task_status)
        finally:
            if self._scope is scope:
                self._scope = None
            done.set()
