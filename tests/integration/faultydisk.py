"""A backing disk that fails on command: a small pyfuse3 filesystem for the disk-error tests.

    python -m tests.integration.faultydisk IMAGE MOUNTPOINT

exposes ``MOUNTPOINT/disk.img`` (every read, write and fsync goes to IMAGE) and
``MOUNTPOINT/ctl``: write ``fail write``, ``fail fsync``, ``fail read`` (several may be
active; reads and writes may be limited to a byte range: ``fail write OFFSET LENGTH``) or
``ok`` to it, and the named operations on disk.img answer EIO from then on, the way a dying
disk does. ``slow fsync SECONDS`` (or ``write``) makes every fsync (write) take that long (a busy or hung disk). ``FaultyDisk`` starts and stops it from a test.
"""
from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

DISK_INODE, CTL_INODE = 2, 3
NAMES = {b"disk.img": DISK_INODE, b"ctl": CTL_INODE}


def _serve(image: str, mountpoint: str) -> None:
    import pyfuse3
    import trio

    fd = os.open(image, os.O_RDWR)
    failing: dict[str, tuple[int, int]] = {}      # operation -> failing byte range
    slow: dict[str, float] = {}                    # operation -> seconds it takes

    def fails(op: str, off: int = 0, size: int = 0) -> bool:
        start, length = failing.get(op, (0, -1))
        return length < 0 and op in failing or start < off + size and off < start + length

    class Ops(pyfuse3.Operations):
        def _attr(self, inode: int) -> pyfuse3.EntryAttributes:
            a = pyfuse3.EntryAttributes()
            a.st_ino = inode
            if inode == pyfuse3.ROOT_INODE:
                a.st_mode, a.st_nlink = stat.S_IFDIR | 0o755, 2
            else:
                a.st_mode, a.st_nlink = stat.S_IFREG | 0o644, 1
                a.st_size = os.fstat(fd).st_size if inode == DISK_INODE else 0
            a.attr_timeout = a.entry_timeout = 0
            return a

        async def getattr(self, inode, ctx=None):
            return self._attr(inode)

        async def lookup(self, parent, name, ctx=None):
            if parent != pyfuse3.ROOT_INODE or name not in NAMES:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return self._attr(NAMES[name])

        async def setattr(self, inode, attr, fields, fh, ctx):
            return self._attr(inode)

        async def opendir(self, inode, ctx):
            return inode

        async def readdir(self, fh, start, token):
            for i, (name, inode) in enumerate(NAMES.items()):
                if i >= start and not pyfuse3.readdir_reply(token, name, self._attr(inode), i + 1):
                    return

        async def open(self, inode, flags, ctx):
            return pyfuse3.FileInfo(fh=inode, direct_io=True)

        async def read(self, fh, off, size):
            if fh == CTL_INODE:
                return " ".join(sorted(failing)).encode()[off:off + size]
            if fails("read", off, size):
                raise pyfuse3.FUSEError(errno.EIO)
            return os.pread(fd, size, off)

        async def write(self, fh, off, buf):
            if fh == CTL_INODE:
                words = buf.decode().split()
                if words[:1] == ["ok"]:
                    failing.clear()
                    slow.clear()
                elif words[:1] == ["slow"] and len(words) == 3:
                    slow[words[1]] = float(words[2])
                elif words[:1] == ["fail"] and len(words) in (2, 4):
                    failing[words[1]] = (int(words[2]), int(words[3])) if words[2:] else (0, -1)
                return len(buf)
            await trio.sleep(slow.get("write", 0))
            if fails("write", off, len(buf)):
                raise pyfuse3.FUSEError(errno.EIO)
            return os.pwrite(fd, buf, off)

        async def fsync(self, fh, datasync):
            if fh == DISK_INODE:
                await trio.sleep(slow.get("fsync", 0))
                if fails("fsync"):
                    raise pyfuse3.FUSEError(errno.EIO)
                os.fdatasync(fd)

        async def flush(self, fh):
            pass

        async def release(self, fh):
            pass

    options = set(pyfuse3.default_options) | {"fsname=faultydisk"}
    pyfuse3.init(Ops(), mountpoint, options)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)


class FaultyDisk:
    """Serve ``image`` as ``mountpoint/disk.img`` from a child process; ``fail``/``heal``."""

    def __init__(self, image: Path, mountpoint: Path):
        self.image, self.mountpoint = image, mountpoint
        self.proc: subprocess.Popen | None = None

    @property
    def path(self) -> Path:
        return self.mountpoint / "disk.img"

    def start(self) -> "FaultyDisk":
        from tests.leaks import track_pid
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        root = Path(__file__).resolve().parents[2]
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.integration.faultydisk",
                                      str(self.image), str(self.mountpoint)], cwd=root)
        track_pid(self.proc.pid)
        deadline = time.monotonic() + 10
        while not self.path.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the faulty disk did not come up")
            time.sleep(0.05)
        return self

    def fail(self, what: str, offset: int = 0, length: int = -1) -> None:
        where = f" {offset} {length}" if length >= 0 else ""
        (self.mountpoint / "ctl").write_text(f"fail {what}{where}\n")

    def slow(self, what: str, seconds: float) -> None:
        (self.mountpoint / "ctl").write_text(f"slow {what} {seconds}\n")

    def heal(self) -> None:
        (self.mountpoint / "ctl").write_text("ok\n")

    def stop(self) -> None:
        subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], capture_output=True)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2])
