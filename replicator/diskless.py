"""The device file while no disk is attached (from new-minor until attach, after detach).

DRBD 8.4's /dev/drbdN exists from new-minor to down; without a disk it has no data and
refuses opens. Here the device is a FUSE mount on a regular file, and without one the bare
mount-point file would take whatever is written to it (``dd of=/dev/drbd0`` succeeding into
the root file system, and hidden again under the next attach). So a minor without a disk is
served too: an empty file whose opens are refused as 8.4 refuses them on a Secondary
(EROFS for writing, EMEDIUMTYPE for reading), and with ENOMEDIUM on a diskless Primary,
whose I/O through the peer udrbd does not offer.
"""
from __future__ import annotations

import errno
from typing import Any, Union

import pyfuse3
import trio

from replicator.states import Role


class DisklessEngine:
    """A fuseblk engine of size 0 that never lets an open through."""

    def __init__(self, res: Any):
        self.res = res

    def size(self) -> int:
        return 0

    def may_open(self, writable: bool) -> int:
        if self.res.state.role != Role.Primary:
            return errno.EROFS if writable else errno.EMEDIUMTYPE
        return errno.ENOMEDIUM

    async def read(self, offset: int, length: int) -> bytes:
        raise pyfuse3.FUSEError(errno.ENOMEDIUM)

    async def write(self, offset: int, data: Union[bytes, memoryview]) -> int:
        raise pyfuse3.FUSEError(errno.ENOMEDIUM)

    async def flush(self) -> None:
        return None

    async def discard(self, offset: int, length: int) -> None:
        raise pyfuse3.FUSEError(errno.ENOMEDIUM)

    def opened(self, writable: bool) -> None:
        return None

    def released(self, writable: bool) -> None:
        return None


class DisklessFile:
    """Serves :class:`DisklessEngine` at the resource's device path until stopped."""

    def __init__(self, daemon: Any):
        self.daemon = daemon
        self._scope: trio.CancelScope | None = None
        self._done = trio.Event()

    async def start(self) -> None:
        """Mount it (OSError if the device path cannot be used); no-op when mounted."""
        if self._scope is None:
            self._done = trio.Event()
            await self.daemon.nursery.start(self._serve)

    async def stop(self) -> None:
        if self._scope is not None:
            self._scope.cancel()
            await self._done.wait()

    async def _serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        import fuseblk
        res = self.daemon.resource
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                await fuseblk.serve(res.device_path, DisklessEngine(res),
                                    fsname=f"drbd{res.minor}", task_status=task_status)
        finally:
            self._scope = None
            self._done.set()
