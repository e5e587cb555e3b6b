"""Open a backing or meta device: a block device (size by BLKGETSIZE64) or a
regular file (size by fstat), with exact pread/pwrite helpers.

Every error is a ``DeviceError`` whose message names the path, in the style
``'/dev/sdb1': No such file or directory``.
"""
from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct

BLKGETSIZE64 = 0x80081272


class DeviceError(OSError):
    """An I/O or open error on a named device; ``str()`` is one clear line."""

    def __init__(self, path: str, message: str, err: int = 0):
        super().__init__(err, message)
        self.path = path
        self.message = message

    def __str__(self) -> str:
        return f"'{self.path}': {self.message}"


class DeviceBusy(DeviceError):
    """Another process holds the device: ``exclusive_open`` says O_EXCL failed
    (mounted, or claimed by the kernel), otherwise another process holds our flock."""

    exclusive_open = False


def _err(path: str, exc: OSError) -> DeviceError:
    return DeviceError(path, exc.strerror or str(exc), exc.errno or 0)


class BackingDevice:
    """An open block device or regular file.

    ``lock=True`` takes a non-blocking exclusive ``flock`` for as long as the
    device is open, so two udrbd processes (the daemon and drbdmeta) never
    modify the same metadata at once.  Block devices are additionally opened
    with ``O_EXCL`` when ``exclusive`` is set, which fails while the device is
    mounted or claimed by the kernel.
    """

    def __init__(self, path: str, *, readonly: bool = False, lock: bool = True,
                 exclusive: bool = False):
        self.path = path
        self.readonly = readonly
        flags = (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC
        try:
            st = os.stat(path)
        except OSError as e:
            raise _err(path, e) from None
        self.is_block = stat.S_ISBLK(st.st_mode)
        if not self.is_block and not stat.S_ISREG(st.st_mode):
            raise DeviceError(path, "not a block device or regular file")
        if self.is_block and exclusive:
            flags |= os.O_EXCL
        try:
            self.fd = os.open(path, flags)
        except OSError as e:
            if e.errno == errno.EBUSY:
                busy = DeviceBusy(path, "Device or resource busy (mounted, or in use by "
                                        "another process)", e.errno)
                busy.exclusive_open = True
                raise busy from None
            raise _err(path, e) from None
        try:
            if lock:
                try:
                    fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise DeviceBusy(path, "in use by another process (locked)",
                                     errno.EBUSY) from None
            self.size = self._size()
        except BaseException:
            os.close(self.fd)
            raise

    def refresh_size(self) -> int:
        """Re-read the size (the device or file grew or shrank since it was opened)."""
        self.size = self._size()
        return self.size

    def _size(self) -> int:
        if self.is_block:
            buf = fcntl.ioctl(self.fd, BLKGETSIZE64, b"\0" * 8)
            return struct.unpack("Q", buf)[0]
        return os.fstat(self.fd).st_size

    def pread(self, length: int, offset: int) -> bytes:
        """Read exactly ``length`` bytes at ``offset``."""
        if offset < 0 or offset + length > self.size:
            raise DeviceError(self.path, f"read of {length} bytes at offset {offset} is beyond "
                                         f"the end of the device ({self.size} bytes)")
        try:
            chunks = []
            done = 0
            while done < length:
                data = os.pread(self.fd, length - done, offset + done)
                if not data:
                    raise DeviceError(self.path, f"short read at offset {offset + done}")
                chunks.append(data)
                done += len(data)
        except DeviceError:
            raise
        except OSError as e:
            raise _err(self.path, e) from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        """Write all of ``data`` at ``offset``."""
        view = memoryview(data).cast("B")
        if offset < 0 or offset + len(view) > self.size:
            raise DeviceError(self.path, f"write of {len(view)} bytes at offset {offset} is "
                                         f"beyond the end of the device ({self.size} bytes)")
        try:
            done = 0
            while done < len(view):
                done += os.pwrite(self.fd, view[done:], offset + done)
        except OSError as e:
            raise _err(self.path, e) from None

    def fdatasync(self) -> None:
        try:
            os.fdatasync(self.fd)
        except OSError as e:
            raise _err(self.path, e) from None

    def fsync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as e:
            raise _err(self.path, e) from None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)   # releases the flock too
            self.fd = -1

    def __enter__(self) -> "BackingDevice":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "block device" if self.is_block else "file"
        return f"<BackingDevice {self.path!r} {kind} {self.size} bytes>"
