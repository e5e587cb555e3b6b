"""Benchmark targets: things that give a file to put a loop device on.

A target owns whatever it needs (image file, server process, mount) between ``start()`` and
``stop()``. To add a column (udrbd standalone, two-node per protocol...), subclass
:class:`Target`, implement ``start()`` (return the file path; use ``self.spawn`` for servers so
they are torn down by pid) and add it with :func:`register`.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from fuseblk.mount import is_fuse_mount, unmount

REPO = Path(__file__).resolve().parent.parent
POSIX_FADV_DONTNEED = 4


def make_sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def wait_for(pred: Callable[[], bool], timeout: float, what: str,
             proc: Optional[subprocess.Popen] = None) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: server exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout}s")
        time.sleep(0.02)


class Target:
    """Base class. ``name`` is the column title; ``is_reference`` marks the ratio base."""

    name = "target"
    description = ""
    is_reference = False

    def __init__(self, workdir: Path, size: int) -> None:
        self.workdir = workdir / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.size = size
        self.procs: list[subprocess.Popen] = []
        self.mountpoints: list[Path] = []
        self.path: Optional[str] = None

    # --- to implement -------------------------------------------------------------------
    def start(self) -> str:
        raise NotImplementedError

    # --- helpers ------------------------------------------------------------------------
    def spawn(self, args: list[str], log_name: str) -> subprocess.Popen:
        log = open(self.workdir / log_name, "wb")
        try:
            p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log,
                                 stdin=subprocess.DEVNULL, start_new_session=True,
                                 cwd=REPO)
        finally:
            log.close()
        self.procs.append(p)
        return p

    @property
    def server_pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def drop_cache(self) -> None:
        """Drop the kernel's page cache of the exported file (not of the image behind it),
        so reads through a plain loop reach the server instead of the FUSE page cache."""
        if self.path is None or not self.mountpoints:
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)

    def prefill(self) -> None:
        """Write the whole exported file once (through the target), then sync: runs then
        measure the target, not the host file system allocating blocks of a sparse image."""
        assert self.path is not None
        chunk = os.urandom(1 << 20)
        fd = os.open(self.path, os.O_WRONLY)
        try:
            for off in range(0, self.size, len(chunk)):
                os.pwrite(fd, chunk[:min(len(chunk), self.size - off)], off)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.sync()

    def stop(self) -> None:
        """Terminate servers by pid (SIGTERM, then SIGKILL) and make sure nothing stays mounted."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
            if p.stdout:
                p.stdout.close()
        self.procs.clear()
        for mp in self.mountpoints:
            if is_fuse_mount(str(mp)):
                unmount(str(mp))
        self.mountpoints.clear()


class PlainFile(Target):
    name = "file"
    description = "a sparse file on the host file system, on loop (the ceiling)"

    def start(self) -> str:
        self.path = str(make_sparse(self.workdir / "image", self.size))
        return self.path


class QemuFuse(Target):
    name = "qemu-fuse"
    description = "qemu-storage-daemon FUSE export of a file (cache.direct=off)"
    is_reference = True

    def start(self) -> str:
        image = make_sparse(self.workdir / "image", self.size)
        mnt = self.workdir / "export"
        mnt.touch()
        self.mountpoints.append(mnt)
        p = self.spawn(["qemu-storage-daemon",
                        "--blockdev", f"driver=file,node-name=f,filename={image},cache.direct=off",
                        "--export", f"type=fuse,id=e,node-name=f,mountpoint={mnt},writable=on"],
                       "qemu.log")
        wait_for(lambda: is_fuse_mount(str(mnt)), 15, self.name, p)
        self.path = str(mnt)
        return self.path


class Fuseblk(Target):
    name = "fuseblk"
    description = "fuseblk FileEngine passthrough (python -m fuseblk), as shipped"
    extra_args: list[str] = []

    def start(self) -> str:
        image = make_sparse(self.workdir / "image", self.size)
        mnt = self.workdir / "dev"
        self.mountpoints.append(mnt)
        p = self.spawn([sys.executable, "-m", "fuseblk", str(image), str(mnt),
                        *self.extra_args], "fuseblk.log")
        line = p.stdout.readline().decode().strip()
        if line != "ready":
            p.wait(timeout=10)
            raise RuntimeError(f"{self.name}: server did not start: see {self.workdir}/fuseblk.log")
        self.path = str(mnt)
        return self.path


TARGETS: dict[str, type[Target]] = {}


def register(cls: type[Target]) -> type[Target]:
    TARGETS[cls.name] = cls
    return cls


for _cls in (PlainFile, QemuFuse, Fuseblk):
    register(_cls)


def variant(name: str, base: type[Target], *extra: str, description: str = "") -> type[Target]:
    """A Fuseblk-like target with extra command line arguments (for experiments)."""
    return type(name, (base,), {"name": name, "extra_args": list(extra),
                                "description": description or f"{base.name} {' '.join(extra)}"})


register(variant("fuseblk-pagecache", Fuseblk, "--page-cache",
                 description="fuseblk without FOPEN_DIRECT_IO (kernel page cache on the file)"))
register(variant("fuseblk-thr", Fuseblk, "--inline-max", "0",
                 description="fuseblk, every pread/pwrite in the engine's thread pool"))
register(variant("fuseblk-t256", Fuseblk, "--inline-max", "262144",
                 description="fuseblk, pread/pwrite > 256 KiB in the engine's thread pool"))
register(variant("fuseblk-splice", Fuseblk, "--splice-read",
                 description="fuseblk with libfuse's splice receive"))
register(variant("fuseblk-slowwait", Fuseblk, "--no-fast-wait",
                 description="fuseblk waiting for each request through pyfuse3's trio wait"))
register(variant("fuseblk-bg64", Fuseblk, "--max-background", "64",
                 description="fuseblk with max_background=64"))
