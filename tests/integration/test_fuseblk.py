"""fuseblk end to end: a FileEngine served from a subprocess, used as users use /dev/drbd0.

Every test cleans up even when it fails: file systems unmounted, loop devices detached, the
FUSE mount removed and the server killed by pid (tests/conftest.py fails the session if any
of them is left behind).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import random
import select
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fuseblk.mount import is_fuse_mount, mount_fstype
from tests.integration.loopdev import detach, loop_device
from tests.leaks import track_pid

REPO = Path(__file__).resolve().parents[2]
SIZE = 256 << 20
BOOM_AT = 200 << 20       # RuntimeError in the engine -> EIO
OSERROR_AT = 201 << 20    # OSError(ENOSPC) -> ENOSPC
FUSEERROR_AT = 202 << 20  # FUSEError(EROFS) -> EROFS

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")


def run(*args, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, **kw)


def fs_unmount(path: Path) -> None:
    """Unmount a (loop) file system, lazily if busy; never raises."""
    if mount_fstype(str(path)) is None:
        return
    if run("umount", path, check=False).returncode != 0:
        run("umount", "-l", path, check=False)


def loops_of(path: Path) -> list[str]:
    out = run("losetup", "-j", path, check=False).stdout
    return [line.split(":", 1)[0] for line in out.splitlines() if line.strip()]


class Server:
    """The fuseblk test server in a subprocess, and everything to undo it."""

    def __init__(self, tmp: Path, *extra: str, image: Path | None = None) -> None:
        self.tmp = tmp
        self.image = image or tmp / "image"
        if not self.image.exists():
            with open(self.image, "wb") as f:
                f.truncate(SIZE)
        self.mount = tmp / "drbd0"
        self.events_path = tmp / "events"
        self.log = tmp / "server.log"
        self.extra = extra
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Server":
        args = [sys.executable, "-m", "tests.fuseblk_server", str(self.image), str(self.mount),
                "--events", str(self.events_path), "--boom-at", str(BOOM_AT),
                "--oserror-at", str(OSERROR_AT), "--fuseerror-at", str(FUSEERROR_AT),
                *self.extra]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=log,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        track_pid(self.proc.pid)
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        if line != "ready":
            raise RuntimeError(f"server did not start ({line!r}): {self.log.read_text()}")
        return self

    def events(self) -> list[str]:
        try:
            return self.events_path.read_text().splitlines()
        except FileNotFoundError:
            return []

    def count(self, word: str) -> int:
        return sum(1 for e in self.events() if e.split()[0] == word)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Signal the server by pid and wait for it; SIGKILL if it does not exit."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc.stdout.close()
        rc = self.proc.returncode
        self.proc = None
        return rc

    def cleanup(self) -> None:
        """Undo everything, whatever state the test left: loops, mount, process."""
        for dev in loops_of(self.mount):
            with contextlib.suppress(Exception):
                detach(dev)
        self.stop()
        if is_fuse_mount(str(self.mount)):
            if run("fusermount3", "-u", "-z", self.mount, check=False).returncode != 0:
                run("umount", "-l", self.mount, check=False)


@pytest.fixture
def cleanup_paths():
    """File systems the test mounted: unmounted at teardown, whatever happened."""
    paths: list[Path] = []
    yield paths
    for p in reversed(paths):
        fs_unmount(p)


@pytest.fixture
def server_factory(tmp_path, cleanup_paths):
    servers: list[Server] = []

    def make(*extra: str, start: bool = True, image: Path | None = None) -> Server:
        s = Server(tmp_path, *extra, image=image)
        servers.append(s)
        return s.start() if start else s
    yield make
    for p in reversed(cleanup_paths):  # file systems on the device go first
        fs_unmount(p)
    for s in reversed(servers):
        s.cleanup()


@pytest.fixture
def server(server_factory) -> Server:
    return server_factory()


def pattern(i: int, n: int) -> bytes:
    """n bytes that differ for every i."""
    return (hashlib.sha256(str(i).encode()).digest() * (n // 32 + 1))[:n]


def assert_image_holds(image: Path, writes: list[tuple[int, int]]) -> None:
    """The backing image holds pattern(i, n) at each (offset, n) of ``writes``."""
    with open(image, "rb") as f:
        for i, (off, n) in enumerate(writes):
            f.seek(off)
            assert f.read(n) == pattern(i, n), (off, n)


# --- the file itself -------------------------------------------------------------------------
def test_mount_is_one_regular_file_of_engine_size(server):
    st = os.stat(server.mount)
    assert stat.S_ISREG(st.st_mode)
    assert st.st_size == SIZE
    assert mount_fstype(str(server.mount)) == "fuse.udrbd"
    with open("/proc/self/mounts") as f:
        line = next(l for l in f if l.split()[1] == str(server.mount))
    assert line.split()[0] == "udrbd"
    assert "not installed" not in server.log.read_text()   # fallocate hook and fast wait


def test_mountpoint_created_and_removed_again(server):
    # The fixture's mount path did not exist before the server started.
    assert server.mount.exists()
    assert server.stop() == 0
    assert not is_fuse_mount(str(server.mount))
    assert not server.mount.exists()


def test_existing_mountpoint_file_is_kept(server_factory, tmp_path):
    s = server_factory(start=False)
    s.mount.write_bytes(b"")
    s.start()
    assert os.stat(s.mount).st_size == SIZE
    assert s.stop() == 0
    assert not is_fuse_mount(str(s.mount))
    assert s.mount.exists() and s.mount.stat().st_size == 0


def test_pwrite_pread_odd_offsets_and_sizes(server):
    cases = [(0, 1), (1, 4095), (4097, 12345), (5 * 2**20 - 1, 2**20 + 3),
             (SIZE - 4096 - 18, 4096 + 17), (SIZE - 1, 1), (77 * 2**20 + 511, 3 * 2**20 + 1)]

    fd = os.open(server.mount, os.O_RDWR)
    try:
        for i, (off, n) in enumerate(cases):
            assert os.pwrite(fd, pattern(i, n), off) == n
        for i, (off, n) in enumerate(cases):
            assert os.pread(fd, n, off) == pattern(i, n), (off, n)
    finally:
        os.close(fd)
    # What the engine stored is what was written (read back from the image directly).
    assert_image_holds(server.image, cases)

    fd = os.open(server.mount, os.O_RDWR)
    try:
        # Crossing the end is a short write, at the end there is no space, reads stop there.
        assert os.pwrite(fd, b"x" * 100, SIZE - 10) == 10
        with pytest.raises(OSError) as e:
            os.pwrite(fd, b"y", SIZE)
        assert e.value.errno == errno.ENOSPC
        assert os.pread(fd, 100, SIZE - 10) == b"x" * 10
        assert os.pread(fd, 100, SIZE) == b""
    finally:
        os.close(fd)
    assert os.stat(server.mount).st_size == SIZE


def test_o_trunc_open_is_ignored_like_a_block_device(server):
    with open(server.mount, "r+b") as f:
        f.write(b"keep me")
    with open(server.mount, "wb") as f:  # O_TRUNC, as `dd of=` or shell `>` do
        f.write(b"K")
    assert os.stat(server.mount).st_size == SIZE
    with open(server.mount, "rb") as f:
        assert f.read(7) == b"Keep me"
    assert run("truncate", "-s", "1M", server.mount, check=False).returncode != 0


def test_fsync_reaches_engine_flush_and_close_does_not(server):
    fd = os.open(server.mount, os.O_RDWR)
    try:
        os.pwrite(fd, b"a" * 4096, 0)
        before = server.count("flush")
        os.fsync(fd)
        assert server.count("flush") == before + 1
        os.pwrite(fd, b"b" * 4096, 4096)
        os.fdatasync(fd)
        assert server.count("flush") == before + 2
    finally:
        os.close(fd)
    assert server.count("flush") == before + 2  # close(2) is not a durability point
    # O_SYNC/O_DSYNC writes are durable when they return: each one reaches flush.
    for flag in (os.O_DSYNC, os.O_SYNC):
        n = server.count("flush")
        fd = os.open(server.mount, os.O_RDWR | flag)
        try:
            os.pwrite(fd, b"c" * 4096, 8192)
            assert server.count("flush") == n + 1
            os.pwrite(fd, b"d" * 4096, 8192)
            assert server.count("flush") == n + 2
        finally:
            os.close(fd)


def test_open_count_reaches_engine(server):
    fds = [os.open(server.mount, os.O_RDONLY), os.open(server.mount, os.O_RDWR)]
    assert server.count("opened") == 2
    for fd in fds:
        os.close(fd)
    deadline = time.monotonic() + 5  # RELEASE is asynchronous in the kernel
    while server.count("released") < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    ev = server.events()
    assert sorted(e for e in ev if e.startswith("opened")) == ["opened 0", "opened 1"]
    assert sorted(e for e in ev if e.startswith("released")) == ["released 0", "released 1"]


def test_may_open_refusal_gives_errno_to_open(server_factory):
    s = server_factory("--refuse-writable", str(errno.EMEDIUMTYPE))
    for flags in (os.O_RDWR, os.O_WRONLY):
        with pytest.raises(OSError) as e:
            os.open(s.mount, flags)
        assert e.value.errno == errno.EMEDIUMTYPE
    fd = os.open(s.mount, os.O_RDONLY)  # read-only opens are still allowed
    os.close(fd)
    r = run("losetup", "-f", "--show", s.mount, check=False)
    if r.returncode == 0:  # must not happen; detach before failing
        detach(r.stdout.strip())
    assert r.returncode != 0
    assert s.count("opened") == 1


def test_engine_errors_reach_the_caller_and_the_mount_survives(server):
    fd = os.open(server.mount, os.O_RDWR)
    try:
        for at, want in ((BOOM_AT, errno.EIO), (OSERROR_AT, errno.ENOSPC),
                         (FUSEERROR_AT, errno.EROFS)):
            with pytest.raises(OSError) as e:
                os.pread(fd, 4096, at)
            assert e.value.errno == want
            with pytest.raises(OSError) as e:
                os.pwrite(fd, b"z" * 4096, at)
            assert e.value.errno == want
        assert server.alive()
        os.pwrite(fd, b"still alive", 4096)
        assert os.pread(fd, 11, 4096) == b"still alive"
    finally:
        os.close(fd)
    assert "injected engine bug" in server.log.read_text()  # logged with its traceback


def test_punch_hole_reaches_engine_discard(server):
    fd = os.open(server.mount, os.O_RDWR)
    try:
        os.pwrite(fd, os.urandom(4 << 20), 1 << 20)
        os.fsync(fd)
    finally:
        os.close(fd)
    blocks_before = os.stat(server.image).st_blocks
    run("fallocate", "--punch-hole", "--offset", 2 << 20, "--length", 1 << 20, server.mount)
    assert f"discard {2 << 20} {1 << 20}" in server.events()
    with open(server.mount, "rb") as f:
        f.seek(2 << 20)
        assert f.read(1 << 20) == bytes(1 << 20)
        assert f.read(4096) != bytes(4096)  # the rest is untouched
    assert os.stat(server.image).st_blocks < blocks_before
    # ZERO_RANGE is a discard as well (the range must read back as zeros).
    run("fallocate", "--zero-range", "--keep-size", "--offset", 4 << 20, "--length", 4096,
        server.mount)
    assert f"discard {4 << 20} 4096" in server.events()
    assert os.stat(server.mount).st_size == SIZE


# --- as users use it: losetup, mkfs, mount -------------------------------------------------
def _write_tree(root: Path, n: int = 20) -> dict[str, str]:
    sums = {}
    for i in range(n):
        data = os.urandom(1000 + i * 7919)
        p = root / f"file{i}"
        p.write_bytes(data)
        sums[p.name] = hashlib.sha256(data).hexdigest()
    big = os.urandom(3 << 20)
    (root / "big").write_bytes(big)
    sums["big"] = hashlib.sha256(big).hexdigest()
    return sums


def _check_tree(root: Path, sums: dict[str, str]) -> None:
    for name, digest in sums.items():
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == digest, name


def test_losetup_mkfs_mount_remount_verify(server_factory, tmp_path, cleanup_paths):
    s = server_factory()
    mnt = tmp_path / "mnt"
    mnt.mkdir()

    with loop_device(str(s.mount)) as dev:
        assert dev.startswith("/dev/loop")
        assert int(run("blockdev", "--getsize64", dev).stdout) == SIZE

    # mkfs.ext3 on the file, as typed (no -F: a prompt would read EOF and fail).
    run("mkfs.ext3", "-q", s.mount)

    # mount FILE DIR: mount(8) sets up the loop device itself.
    cleanup_paths.append(mnt)
    run("mount", s.mount, mnt)
    sums = _write_tree(mnt)
    run("umount", mnt)
    assert loops_of(s.mount) == []  # the automatic loop device went with the umount

    # Through an explicit loop device, with direct I/O on it.
    with loop_device(str(s.mount), direct_io=True) as dev:
        run("mount", dev, mnt)
        try:
            _check_tree(mnt, sums)
            (mnt / "big").unlink()
            run("sync")
            discards = s.count("discard")
            run("fstrim", mnt)  # the loop device's discards become engine discards
            assert s.count("discard") > discards
        finally:
            fs_unmount(mnt)
    del sums["big"]

    # Restart the server on the same image: the data is in the engine, not in a cache.
    assert s.stop() == 0
    assert not is_fuse_mount(str(s.mount))
    s2 = server_factory(image=s.image)
    run("mount", s2.mount, mnt)
    try:
        _check_tree(mnt, sums)
        assert not (mnt / "big").exists()
    finally:
        fs_unmount(mnt)
    run("e2fsck", "-fn", s2.mount)


def test_page_cache_mode_also_works(server_factory, tmp_path, cleanup_paths):
    s = server_factory("--page-cache")
    fd = os.open(s.mount, os.O_RDWR | os.O_DSYNC)  # the kernel sends FSYNC itself here
    try:
        os.pwrite(fd, b"c" * 4096, 8192)
        assert s.count("flush") == 1
    finally:
        os.close(fd)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    run("mkfs.ext3", "-q", s.mount)
    cleanup_paths.append(mnt)
    run("mount", s.mount, mnt)
    sums = _write_tree(mnt, 5)
    run("umount", mnt)
    run("mount", "-o", "ro", s.mount, mnt)
    _check_tree(mnt, sums)
    run("umount", mnt)


# --- never a stale mount -------------------------------------------------------------------
def test_sigterm_unmounts_even_with_a_loop_device_attached(server):
    dev = run("losetup", "-f", "--show", server.mount).stdout.strip()
    try:
        assert server.stop(signal.SIGTERM) == 0
        assert not is_fuse_mount(str(server.mount))
    finally:
        detach(dev)


def test_killed_server_leaves_stale_mount_that_next_server_replaces(server_factory):
    s = server_factory()
    s.stop(signal.SIGKILL)
    assert is_fuse_mount(str(s.mount))  # nothing could unmount it
    with pytest.raises(OSError) as e:
        os.stat(s.mount)
    assert e.value.errno == errno.ENOTCONN
    s.start()  # serve() detaches the stale mount and mounts again
    assert os.stat(s.mount).st_size == SIZE
    assert s.stop() == 0
    assert not is_fuse_mount(str(s.mount))


def test_concurrent_requests_with_slow_handlers_never_hang(server_factory):
    """Handlers that wait in threads while new requests arrive: the fast request path must
    never leave a worker reading /dev/fuse after another took the request (that read would
    block the server's only thread: every request in flight would hang)."""
    server = server_factory("--inline-max", "0")       # every pread/pwrite in a thread
    errors: list[BaseException] = []

    def hammer(seed: int) -> None:
        rnd = random.Random(seed)
        fd = os.open(server.mount, os.O_RDWR)
        try:
            for _ in range(1500):
                off = rnd.randrange(SIZE // 4096) * 4096
                if rnd.random() < 0.5:
                    os.pwrite(fd, bytes([seed]) * 4096, off)
                else:
                    os.pread(fd, 4096, off)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        finally:
            os.close(fd)

    threads = [threading.Thread(target=hammer, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "requests hung"
    assert errors == []


def test_large_writes_reach_the_engine_without_a_copy(server):
    """After a write of 128 KiB or more the next one is handed over as a view of libfuse's
    buffer, after a smaller one pyfuse3 copies it (cheaper for small writes). Both paths
    store exactly what was written, reply errors and sizes, and honour O_DSYNC."""
    big, small = 512 << 10, 4096
    plan = [(0, small), (1 << 20, big), (2 << 20, big), (3 << 20, big), (5 << 20, small),
            (6 << 20, small), (7 << 20, big + 4095), (9 << 20, 1)]
    fd = os.open(server.mount, os.O_RDWR)
    try:
        for i, (off, n) in enumerate(plan):
            assert os.pwrite(fd, pattern(i, n), off) == n
        writes = [e.split() for e in server.events() if e.startswith("write ")]
        assert [(int(w[1]), int(w[2])) for w in writes] == plan    # one request each
        assert [w[3] for w in writes] == ["copy", "copy", "view", "view", "view", "copy",
                                          "copy", "view"]
        for i, (off, n) in enumerate(plan):
            assert os.pread(fd, n, off) == pattern(i, n), (off, n)
        # Errors, and a write crossing the end of the device, through the zero-copy path.
        os.pwrite(fd, pattern(0, big), 10 << 20)
        for at, want in ((BOOM_AT, errno.EIO), (OSERROR_AT, errno.ENOSPC),
                         (FUSEERROR_AT, errno.EROFS)):
            with pytest.raises(OSError) as e:
                os.pwrite(fd, b"z" * big, at)
            assert e.value.errno == want
        assert os.pwrite(fd, pattern(1, big), SIZE - 1000) == 1000
        assert server.events()[-1].split()[1:] == [str(SIZE - 1000), "1000", "view"]
    finally:
        os.close(fd)
    assert_image_holds(server.image, plan)
    with open(server.image, "rb") as f:
        f.seek(SIZE - 1000)
        assert f.read() == pattern(1, big)[:1000]
    # O_DSYNC: each write is durable when it returns, on the zero-copy path too.
    fd = os.open(server.mount, os.O_RDWR | os.O_DSYNC)
    try:
        n = server.count("flush")
        for k in range(3):
            os.pwrite(fd, pattern(k, big), k * big)
            assert server.count("flush") == n + k + 1
        assert server.events()[-2].split()[3] == "view"
    finally:
        os.close(fd)
    assert server.alive()
