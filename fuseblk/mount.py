"""Mount an engine as one regular file and serve it from inside a trio run.

    async with trio.open_nursery() as nursery:
        await nursery.start(fuseblk.serve, "/dev/drbd0", engine)   # returns once mounted
        ...                                   # network, control socket, ...
        nursery.cancel_scope.cancel()         # -> unmounted, file removed if serve created it

pyfuse3 keeps one session per process, so a process serves one mount at a time.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import stat
import subprocess
from typing import Optional

import pyfuse3
import trio

from fuseblk import _lowlevel
from fuseblk.engine import BlockEngine
from fuseblk.ops import BlockOps

log = logging.getLogger(__name__)

_serving: Optional[str] = None
_ops: Optional[BlockOps] = None
_io_flusher_tried = False
MNT_DETACH = 2


def _unescape_mountinfo(field: str) -> str:
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_fstype(path: str) -> Optional[str]:
    """File system type of the topmost mount exactly at ``path`` (None when not a mount point)."""
    path = os.path.abspath(path)
    fstype = None
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) > 4 and _unescape_mountinfo(fields[4]) == path:
                    fstype = right.split()[0]  # later lines are mounted on top
    except OSError:
        return None
    return fstype


def is_fuse_mount(path: str) -> bool:
    t = mount_fstype(path)
    return t is not None and t.startswith("fuse") and t != "fusectl"


def unmount(path: str, *, lazy: bool = True) -> bool:
    """Unmount a FUSE mount at ``path`` (stale or live). True if something was unmounted.

    ``lazy`` detaches it even while a loop device or a process still holds the file open
    (their I/O then fails once the server is gone), so a stale mount never stays behind.
    """
    if not is_fuse_mount(path):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(os.fsencode(os.path.abspath(path)), MNT_DETACH if lazy else 0) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.EPERM:  # not root: the setuid helper can do it for our own mounts
        args = ["fusermount3", "-u"] + (["-z"] if lazy else []) + [path]
        if subprocess.run(args, capture_output=True, check=False).returncode == 0:
            return True
    raise OSError(err, f"cannot unmount {path}: {os.strerror(err)}")


def replace_engine(engine: BlockEngine) -> None:
    """Serve the mounted file from ``engine`` from the next request on (requests already
    running finish on the old one). The open files stay open: the new engine takes over
    their count (``opened`` was called on the old one). RuntimeError when nothing is
    mounted."""
    if _ops is None:
        raise RuntimeError("fuseblk serves no mount in this process")
    _ops.engine = engine


def serving(engine: BlockEngine) -> bool:
    """Whether the mounted file is served from ``engine`` now."""
    return _ops is not None and _ops.engine is engine


async def invalidate_size() -> None:
    """Tell the kernel the size changed (after a resize). Never call from inside an engine
    call that serves a request: the kernel may wait for that very request."""
    await trio.to_thread.run_sync(pyfuse3.invalidate_inode, pyfuse3.ROOT_INODE, True)


def _prepare_mountpoint(path: str) -> bool:
    """Make sure ``path`` is a regular file we can mount on; True if we created it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        os.close(fd)
        return True
    except OSError as e:
        if e.errno != errno.ENOTCONN:
            raise
        log.warning("%s: stale FUSE mount (server gone), detaching it", path)
        unmount(path)
        return _prepare_mountpoint(path)
    if is_fuse_mount(path):
        raise OSError(errno.EBUSY, f"{path} is already a FUSE mount point")
    if stat.S_ISDIR(st.st_mode):
        raise OSError(errno.EISDIR, f"{path} is a directory; the device mounts on a file")
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, f"{path} exists and is not a regular file")
    return False


async def serve(mountpoint: str, engine: BlockEngine, *, fsname: str = "udrbd",
                subtype: str = "udrbd", direct_io: bool = True,
                min_tasks: int = 2, max_tasks: int = 64,
                max_background: Optional[int] = None, splice_read: bool = False,
                allow_other: bool = True, mode: int = 0o660, debug: bool = False,
                fast_wait: bool = True, zero_copy_write: bool = True,
                task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Mount ``engine`` as the regular file ``mountpoint`` and serve it until cancelled.

    Creates ``mountpoint`` if missing (and removes it again after unmounting). Use with
    ``await nursery.start(serve, ...)``: started() is signalled once the file is mounted.
    Returns when the file system is unmounted from outside (``umount``/``fusermount3 -u``);
    on cancellation it unmounts (lazily, see :func:`unmount`) before re-raising.

    ``min_tasks``/``max_tasks``: pyfuse3 worker tasks. A task reads the next request while
    others wait in the engine, so ``max_tasks`` bounds the requests in flight (the kernel's
    ``max_background``, default 12, bounds the asynchronous ones; raising it measured no gain).
    A pool that stays (8-16) measured within noise of 2-64 for mirrored 4 KiB writes and
    keeps up to 16 MiB more resident (each task's 1 MiB receive buffer): not worth it.
    ``fast_wait`` (default on): take waiting requests without a trio round trip, see
    :func:`_lowlevel.install_fast_wait`. ``zero_copy_write`` (default on): hand large
    writes to the engine as views of libfuse's buffer, see :class:`_lowlevel.WriteHandlers`.
    ``direct_io`` (default on): open with FOPEN_DIRECT_IO, see BlockOps. ``splice_read``: let libfuse receive through a pipe
    (measured slower here; off).
    """
    global _serving, _io_flusher_tried, _ops
    if _serving is not None:
        raise RuntimeError(f"pyfuse3 serves one mount per process; already serving {_serving}")
    if not _io_flusher_tried:
        _io_flusher_tried = True
        _lowlevel.set_io_flusher()

    mountpoint = os.path.abspath(mountpoint)
    ops = BlockOps(engine, direct_io=direct_io, mode=mode)
    ops.max_background = max_background
    ops.splice_read = splice_read
    options = {f"fsname={fsname}", f"subtype={subtype}", "default_permissions"}
    if allow_other:
        options.add("allow_other")
    if debug:
        options.add("debug")

    created = _prepare_mountpoint(mountpoint)
    _serving = mountpoint
    mounted = False
    try:
        pyfuse3.init(ops, mountpoint, options)
        mounted = True
        try:
            _lowlevel.patch_session(ops.conn_init, ops.fallocate)
        except Exception as exc:  # noqa: BLE001
            log.warning("FUSE fallocate/INIT hook not installed (%s): discard unsupported, "
                        "default connection settings", exc)
        if zero_copy_write:
            try:
                ops.write_handlers = _lowlevel.WriteHandlers(ops.write_request)
            except Exception as exc:  # noqa: BLE001
                log.warning("FUSE zero-copy writes not installed (%s)", exc)
        if fast_wait:
            try:
                _lowlevel.install_fast_wait()
            except Exception as exc:  # noqa: BLE001
                log.warning("FUSE fast request path not installed (%s)", exc)
        log.info("%s: mounted (%d bytes)", mountpoint, engine.size())
        async with trio.open_nursery() as nursery:
            _ops = ops
            ops.set_nursery(nursery)
            task_status.started()
            try:
                await pyfuse3.main(min_tasks=min_tasks, max_tasks=max_tasks)
            finally:
                ops.set_nursery(None)
                nursery.cancel_scope.cancel()
        log.info("%s: unmounted from outside", mountpoint)
    finally:
        _serving = _ops = None
        _lowlevel.remove_fast_wait()
        if mounted:
            try:
                pyfuse3.close(unmount=True)
            except Exception:  # noqa: BLE001
                log.exception("pyfuse3.close failed")
            if ops.write_handlers is not None:
                try:
                    _lowlevel.drop_stale_retval()
                except Exception:  # noqa: BLE001
                    log.exception("releasing pyfuse3's last handler result failed")
            try:
                unmount(mountpoint)  # in case libfuse's unmount did not take
            except OSError as exc:
                log.error("%s", exc)
        if created:
            try:
                if not is_fuse_mount(mountpoint):
                    os.unlink(mountpoint)
            except OSError:
                pass
