"""The CPU floor of a replicated 1 MiB write, measured here: ``python -m bench.floor``.

What it measures: the CPU time per MiB (``time.thread_time()`` of the thread doing it, not
wall time) of the work a 1 MiB write cannot avoid, each piece in its own process on 1 MiB
buffers, after a warm-up, over several rounds (median and range printed):

1. The copy out of the kernel into a user buffer, as the daemon's read of /dev/fuse does,
   two ways. ``os.readv`` of 1 MiB from a pipe (grown to 1 MiB where ``fs.pipe-max-size``
   allows) that another process fills: the kernel's copy of data another process wrote,
   with the reader sleeping and waking as the daemon does, but also freeing the pipe's
   pages, which /dev/fuse does not. And ``os.preadv`` of 1 MiB from a cached file, cycling
   over its first 4 MiB (fio's buffers at qd4 are as many; the data stays in the caches):
   the bare copy. Not a memcpy into a reused buffer, which is not the kernel's copy (one
   is printed for reference, not summed).
2. A buffered ``pwrite`` of 1 MiB into an existing, written-out file whose pages are
   cached (the copy into the page cache each node makes), on the file system of
   ``--workdir``; each round rewrites the file once, sequentially, then ``fdatasync``.
   2w is what getting those pages to the disk costs besides, which 2's thread time does
   not show: the fdatasync's thread time plus the CPU of every kernel thread (flushers,
   kworkers, ksoftirqd; each one's CPU clock) over the pwrites and the fdatasync, minus
   the kernel threads' CPU on the idle machine over as long. The machine's busy time from
   /proc/stat over the same window is printed too, as a cross-check: it is tick-sampled
   and counts every other process running meanwhile.
3. TCP over loopback between two processes: ``sendall`` of 1 MiB (TCP_NODELAY, as
   replicator/link.py) on one side, ``recv_into`` a preallocated 1 MiB buffer on the
   other, each side's CPU apart. On loopback the sender's thread time includes the
   kernel's delivery into the receiver's socket, unless the kernel defers it to ksoftirqd:
   3k is the kernel threads' CPU over the receiver's loop, minus theirs on the idle
   machine, and counts on the peer.
4. CRC32C of 1 MiB with the ``crc32c`` package (as replicator/protocol.py uses it), over
   a reused, cache-warm buffer, as after the copy that brought the data in.

The two-process pieces (the pipe, 3) run twice: both processes pinned to one core (the
data is still in that core's cache: the cheapest case) and pinned to two cores (it has
to come from the other core's cache). The sums take the cheapest variant of 1 and the
cheaper placement of 3 (of 3s + 3r + 3k together), so they err low; per node: Primary
1 + 2 + 3s + 4, peer 3r + 3k + 4 + 2, and a FUSE write that is not replicated 1 + 2. For
each it prints the throughput the sum allows on ``os.cpu_count()`` cores if nothing else
ran and nothing else cost CPU, with and without 2w.

What it does not measure: FUSE's request handling and page pinning around the copy out of
/dev/fuse, any Python, framing, the acks, the activity log, fio's and the loop driver's
CPU (they need the same cores), and the pieces' contention for caches and memory bandwidth
when they run at once (here they run one at a time). Each adds CPU, so the real ceiling is
lower than the one printed: this is a lower bound on the cost, an upper bound on MB/s.
"""
from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

MIB = 1 << 20
PREAD_REGION = 4            # MiB: the 1 MiB buffers fio keeps at iodepth 4
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- measurement helpers (run in the workers) --------------------------------------------
def machine_busy() -> float:
    """Seconds of CPU the whole machine has spent busy since boot, all cores (/proc/stat:
    user, nice, system, irq, softirq; not idle, iowait or steal)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[1:8])
    return (user + nice + system + irq + softirq) / CLK_TCK


_libc = ctypes.CDLL(None, use_errno=True)


def kthreads_cpu() -> dict[int, float]:
    """CPU seconds of every kernel thread (kthreadd's children: flushers, kworkers,
    ksoftirqd...), from each one's process CPU clock (exact, not tick-sampled)."""
    out = {}
    clock = ctypes.c_int()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
            if ppid != 2 or _libc.clock_getcpuclockid(int(name), ctypes.byref(clock)):
                continue
            out[int(name)] = time.clock_gettime(clock.value)
        except (OSError, ValueError, IndexError):
            continue                        # gone meanwhile
    return out


class MachineWindow:
    """Kernel threads' CPU and the machine's busy time (/proc/stat) over a window."""

    def __enter__(self) -> "MachineWindow":
        self.k0, self.b0, self.w0 = kthreads_cpu(), machine_busy(), time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.monotonic() - self.w0
        self.busy = machine_busy() - self.b0
        k1 = kthreads_cpu()
        self.kthreads = sum(t - self.k0.get(pid, 0.0) for pid, t in k1.items())

    def result(self) -> dict:
        return {"m_wall": self.wall, "m_busy": self.busy, "m_kthreads": self.kthreads}


class CpuWindow:
    """The thread's CPU time (and the wall time) over one loop."""

    def __enter__(self) -> "CpuWindow":
        self.wall0 = time.monotonic()
        self.cpu0 = time.thread_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu = time.thread_time() - self.cpu0
        self.wall = time.monotonic() - self.wall0

    def result(self, mib: int, **extra: object) -> dict:
        return {"cpu": self.cpu, "wall": self.wall, "mib": mib, **extra}


def read_exact(fd: int, view: memoryview) -> int:
    """Fill ``view`` from ``fd``; returns the number of read calls it took."""
    off, calls = 0, 0
    while off < len(view):
        n = os.readv(fd, [view[off:]])
        if n == 0:
            raise EOFError("the pipe's writer went away")
        off += n
        calls += 1
    return calls


def write_all(fd: int, view: memoryview) -> None:
    off = 0
    while off < len(view):
        off += os.write(fd, view[off:])


# --- workers: python -m bench.floor --worker KIND ARG... (one JSON line on stdout) --------
def worker_pipe_write(fd: int, mib: int, warmup: int) -> dict:
    buf = memoryview(bytearray(os.urandom(MIB)))
    for _ in range(warmup + mib):
        write_all(fd, buf)
    os.close(fd)
    return {}


def worker_pipe_read(fd: int, mib: int, warmup: int) -> dict:
    view = memoryview(bytearray(MIB))
    for _ in range(warmup):
        read_exact(fd, view)
    calls = 0
    with CpuWindow() as w:
        for _ in range(mib):
            calls += read_exact(fd, view)
    return w.result(mib, calls=calls)


def worker_pread(path: str, mib: int, warmup: int) -> dict:
    """1 MiB preads of the cached file's first PREAD_REGION MiB, round and round."""
    view = memoryview(bytearray(MIB))
    fd = os.open(path, os.O_RDONLY)
    try:
        for i in range(warmup):
            os.preadv(fd, [view], (i % PREAD_REGION) * MIB)
        with CpuWindow() as w:
            for i in range(mib):
                os.preadv(fd, [view], (i % PREAD_REGION) * MIB)
    finally:
        os.close(fd)
    return w.result(mib)


def worker_memcpy(mib: int, warmup: int) -> dict:
    src, dst = bytearray(os.urandom(MIB)), bytearray(MIB)
    s = ctypes.addressof((ctypes.c_char * MIB).from_buffer(src))
    d = ctypes.addressof((ctypes.c_char * MIB).from_buffer(dst))
    for _ in range(warmup):
        ctypes.memmove(d, s, MIB)
    with CpuWindow() as w:
        for _ in range(mib):
            ctypes.memmove(d, s, MIB)
    return w.result(mib)


def worker_idle(seconds: float) -> dict:
    """The machine without us: kernel threads' CPU and /proc/stat busy over ``seconds``."""
    with MachineWindow() as m:
        time.sleep(seconds)
    return m.result()


def worker_pwrite(path: str, mib: int, warmup: int) -> dict:
    """Rewrite the (written-out, cached) file once in 1 MiB pwrites, then fdatasync."""
    buf = memoryview(bytearray(os.urandom(MIB)))
    fd = os.open(path, os.O_WRONLY)
    try:
        for i in range(warmup):
            os.pwrite(fd, buf, (i % mib) * MIB)
        os.fdatasync(fd)
        with MachineWindow() as m:
            with CpuWindow() as w:
                for i in range(mib):
                    buf[:8] = i.to_bytes(8, "little")
                    os.pwrite(fd, buf, i * MIB)
            with CpuWindow() as s:
                os.fdatasync(fd)
    finally:
        os.close(fd)
    return w.result(mib, sync_cpu=s.cpu, sync_wall=s.wall, **m.result())


def worker_tcp_send(port: int, mib: int, warmup: int) -> dict:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = memoryview(bytearray(os.urandom(MIB)))
    try:
        for _ in range(warmup):
            sock.sendall(buf)
        with CpuWindow() as w:
            for _ in range(mib):
                sock.sendall(buf)
        sock.shutdown(socket.SHUT_WR)
        sock.recv(1)                        # the receiver closes once it has everything
    finally:
        sock.close()
    return w.result(mib)


def worker_tcp_recv(listen_fd: int, mib: int, warmup: int) -> dict:
    lsock = socket.socket(fileno=listen_fd)
    sock, _ = lsock.accept()
    lsock.close()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    view = memoryview(bytearray(MIB))

    def recv_mib() -> int:
        off, calls = 0, 0
        while off < MIB:
            n = sock.recv_into(view[off:])
            if n == 0:
                raise EOFError("the sender went away")
            off += n
            calls += 1
        return calls

    try:
        for _ in range(warmup):
            recv_mib()
        calls = 0
        with MachineWindow() as m, CpuWindow() as w:
            for _ in range(mib):
                calls += recv_mib()
    finally:
        sock.close()
    return w.result(mib, calls=calls, **m.result())


def worker_crc(mib: int, warmup: int) -> dict:
    import crc32c
    buf = memoryview(bytearray(os.urandom(MIB)))
    crc = 0
    for _ in range(warmup):
        crc = crc32c.crc32c(buf)
    with CpuWindow() as w:
        for _ in range(mib):
            crc = crc32c.crc32c(buf)
    return w.result(mib, crc=crc)


WORKERS = {"pipe-write": worker_pipe_write, "pipe-read": worker_pipe_read,
           "pread": worker_pread, "memcpy": worker_memcpy, "pwrite": worker_pwrite,
           "tcp-send": worker_tcp_send, "tcp-recv": worker_tcp_recv, "crc": worker_crc,
           "idle": worker_idle}


def run_worker(kind: str, cpu: int, args: list[str]) -> int:
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})

    def conv(a: str) -> object:
        for t in (int, float):
            try:
                return t(a)
            except ValueError:
                pass
        return a
    try:
        result = WORKERS[kind](*(conv(a) for a in args))
    except KeyboardInterrupt:
        return 130
    print(json.dumps(result), flush=True)
    return 0


# --- the parent: spawns the workers, one piece at a time -----------------------------------
class Runner:
    def __init__(self, workdir: Path, mib: int, warmup: int) -> None:
        self.workdir = workdir
        self.mib = mib
        self.warmup = warmup
        self.procs: list[subprocess.Popen] = []
        self.file = workdir / "floor-pwrite.img"
        self.pipe_size = 0

    def spawn(self, kind: str, *args: object, cpu: int = -1,
              pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-m", "bench.floor", "--worker", kind, str(cpu),
                              *(str(a) for a in args)],
                             stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                             pass_fds=pass_fds, cwd=Path(__file__).resolve().parent.parent)
        self.procs.append(p)
        return p

    def collect(self, p: subprocess.Popen, timeout: float = 300) -> dict:
        out, _ = p.communicate(timeout=timeout)
        self.procs.remove(p)
        if p.returncode != 0:
            raise RuntimeError(f"bench.floor: worker {p.args[4]} exited with {p.returncode}")
        return json.loads(out)

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        self.procs.clear()

    def prefill(self) -> None:
        """The pwrite target: written out, synced, and in the page cache."""
        buf = os.urandom(MIB)
        fd = os.open(self.file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for i in range(self.mib):
                os.pwrite(fd, buf, i * MIB)
            os.fsync(fd)
        finally:
            os.close(fd)

    def pipe(self, cpus: tuple[int, int]) -> dict:
        """The reader on ``cpus[0]``, the writer on ``cpus[1]``."""
        r, w = os.pipe()
        try:
            try:
                fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, MIB)
            except OSError:
                pass                        # fs.pipe-max-size below 1 MiB: more reads
            self.pipe_size = fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)
            reader = self.spawn("pipe-read", r, self.mib, self.warmup, cpu=cpus[0],
                                pass_fds=(r,))
            writer = self.spawn("pipe-write", w, self.mib, self.warmup, cpu=cpus[1],
                                pass_fds=(w,))
        finally:
            os.close(r)
            os.close(w)
        res = self.collect(reader)
        self.collect(writer)
        return res

    def pwrite(self) -> dict:
        return self.collect(self.spawn("pwrite", self.file, self.mib, self.warmup))

    def pread(self) -> dict:
        return self.collect(self.spawn("pread", self.file, self.mib, self.warmup))

    def idle(self, seconds: float = 0.5) -> dict:
        return self.collect(self.spawn("idle", seconds))

    def tcp(self, cpus: tuple[int, int]) -> tuple[dict, dict]:
        """The sender on ``cpus[0]``, the receiver on ``cpus[1]``."""
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            lsock.bind(("127.0.0.1", 0))
            lsock.listen(1)
            port = lsock.getsockname()[1]
            receiver = self.spawn("tcp-recv", lsock.fileno(), self.mib, self.warmup,
                                  cpu=cpus[1], pass_fds=(lsock.fileno(),))
        finally:
            lsock.close()
        sender = self.spawn("tcp-send", port, self.mib, self.warmup, cpu=cpus[0])
        return self.collect(sender), self.collect(receiver)

    def simple(self, kind: str) -> dict:
        return self.collect(self.spawn(kind, self.mib, self.warmup))


def us_per_mib(r: dict, key: str = "cpu") -> float:
    return r[key] / r["mib"] * 1e6


def fs_of(path: Path) -> str:
    """'/mountpoint (fstype, device)' of the file system holding ``path``."""
    best = ("?", "?", "?")
    with open("/proc/self/mounts") as f:
        for line in f:
            dev, mnt, fstype = line.split()[:3]
            mnt = mnt.replace("\\040", " ")
            if (str(path) + "/").startswith(mnt.rstrip("/") + "/") and len(mnt) >= len(best[1]):
                best = (dev, mnt, fstype)
    return f"{best[1]} ({best[2]}, {best[0]})"


def mb_s(cores: float, us: float) -> float:
    """MB/s (10^6 bytes) that ``us`` of CPU per MiB allows on ``cores`` cores."""
    return cores * 1e6 / us * MIB / 1e6


# piece -> title; the pieces in PLACED have a row per placement ("@1": one core, "@2": two)
TITLES = {
    "1": "1  copy to user: pipe (os.readv)",
    "1f": "   copy to user: pread, cached file",
    "2": "2  buffered pwrite into the cached file",
    "2w": "2w its writeback (*)",
    "3s": "3s TCP loopback sendall (incl. delivery)",
    "3r": "3r TCP loopback recv_into",
    "3k": "3k kernel threads during 3, beyond idle",
    "4": "4  CRC32C (crc32c package)",
    "memcpy": "   reference, not summed: user memcpy",
}
PLACED = ("1", "3s", "3r", "3k")
PLACES = {"@1": "one core", "@2": "two cores"}


def report(rows: dict[str, list[float]], extra: dict[str, list[float]], cores: int,
           header: list[str]) -> list[str]:
    """The table: every piece's us/MiB, the per-node sums and the ceilings they imply."""
    med = {k: statistics.median(v) for k, v in rows.items() if v}
    xmed = {k: statistics.median(v) for k, v in extra.items() if v}
    places = [p for p in PLACES if f"1{p}" in med]
    tcp_at = min(places, key=lambda p: sum(med[f"3{x}{p}"] for x in "srk"))
    copy_at = min([f"1{p}" for p in places] + ["1f"], key=lambda k: med[k])
    summed = {copy_at} | {f"3{x}{tcp_at}" for x in "srk"}
    floor = {k: med[k] for k in ("2", "2w", "4")}       # what the sums take
    floor.update({"1": med[copy_at], **{f"3{x}": med[f"3{x}{tcp_at}"] for x in "srk"}})
    out = [*header, "",
           f"{'piece: CPU per MiB of the thread doing it':42s} {'placement':10s} "
           f"{'us/MiB':>6s}  {'range':>9s}"]
    for k, title in TITLES.items():
        for key, place in ([(k + p, p) for p in places] if k in PLACED else [(k, "")]):
            v = rows[key]
            mark = "  <- summed" if key in summed else ""
            out.append(f"{title:42s} {PLACES.get(place, ''):10s} {med[key]:6.0f}  "
                       f"{f'{min(v):.0f}-{max(v):.0f}':>9s}{mark}")
            title = ""
    sums = {"fuse": ("FUSE write, not replicated: 1+2", ("1", "2")),
            "primary": ("Primary: 1+2+3s+4", ("1", "2", "3s", "4")),
            "peer": ("peer: 3r+3k+4+2", ("3r", "3k", "4", "2"))}
    out += ["", f"{'per node (medians)':34s} us/MiB  one core allows   +2w  one core allows"]
    us: dict[str, tuple[float, float]] = {}
    for key, (title, keys) in sums.items():
        u = sum(floor[k] for k in keys)
        us[key] = (u, u + floor["2w"])
        out.append(f"{title:34s} {u:6.0f}  {mb_s(1, u):9,.0f} MB/s  {u + floor['2w']:6.0f}"
                   f"  {mb_s(1, u + floor['2w']):9,.0f} MB/s")
    fuse, pri, peer = us["fuse"], us["primary"], us["peer"]

    def both(w: int) -> float:
        return mb_s(cores, pri[w] + peer[w])

    def one_thread(w: int) -> float:
        return min(both(w), mb_s(1, max(pri[w], peer[w])))

    out += ["",
            f"ceiling on {cores} cores (os.cpu_count()) with zero other overhead and nothing "
            "else running (fio, the loop",
            "driver, FUSE's request handling and Python need CPU too: the real one is lower):",
            f"  {'FUSE write, not replicated (1+2)':50s} {mb_s(cores, fuse[0]):7,.0f} MB/s"
            f"   with 2w {mb_s(cores, fuse[1]):7,.0f} MB/s",
            f"  {'replicated, both nodes on these cores':50s} {both(0):7,.0f} MB/s"
            f"   with 2w {both(1):7,.0f} MB/s",
            f"  {'  and each node no faster than one core allows':50s} {one_thread(0):7,.0f} MB/s"
            f"   with 2w {one_thread(1):7,.0f} MB/s",
            "",
            f"(*) 2w: the fdatasync's thread time ({xmed['sync']:.0f} us/MiB) + all kernel "
            "threads' CPU over the pwrites and the",
            "    fdatasync, minus theirs on the idle machine over as long "
            f"({xmed['k_idle'] * 100:.1f} % of a core); interrupts landing on an idle",
            "    core are not counted. /proc/stat over the same window (tick-sampled, every "
            f"process): {xmed['busy_2']:.0f} us/MiB",
            f"    busy in all, against 2 + 2w = {floor['2'] + floor['2w']:.0f} (the idle "
            f"machine: {xmed['b_idle'] * 100:.0f} % of a core busy).",
            "    Reads per MiB in 1, recv_into per MiB in 3r: "
            + ", ".join(f"{xmed['pipe_calls' + p]:.1f} and {xmed['tcp_calls' + p]:.1f} on "
                        f"{PLACES[p]}" for p in places) + "."]
    return out


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return run_worker(argv[1], int(argv[2]), argv[3:])
    p = argparse.ArgumentParser(prog="python -m bench.floor",
                                description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=int, default=256,
                   help="1 MiB operations per piece and round (256; also the pwrite file's size)")
    p.add_argument("--rounds", type=int, default=5, help="rounds over all pieces (5)")
    p.add_argument("--warmup", type=int, default=32, help="1 MiB operations before measuring (32)")
    p.add_argument("--workdir", default=None,
                   help="where the pwrite file goes (default: a tmp dir)")
    args = p.parse_args(argv)
    if args.mib < 16 or args.rounds < 1 or args.warmup < 0:
        p.error("--mib must be at least 16, --rounds at least 1, --warmup at least 0")

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    cores = os.cpu_count() or 1
    allowed = sorted(os.sched_getaffinity(0))
    placements = {"@1": (allowed[0], allowed[0])}
    if len(allowed) > 1:
        placements["@2"] = (allowed[0], allowed[1])
    rows: dict[str, list[float]] = {}
    extra: dict[str, list[float]] = {}

    def add(key: str, value: float, to: dict[str, list[float]] = rows) -> None:
        to.setdefault(key, []).append(value)

    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="udrbd-floor-", dir=args.workdir) as tmp:
        runner = Runner(Path(tmp), args.mib, args.warmup)
        where = fs_of(Path(tmp).resolve())
        try:
            runner.prefill()
            for _ in range(args.rounds):
                idle = runner.idle()
                k_rate = idle["m_kthreads"] / idle["m_wall"]      # kernel threads, idle
                b_rate = idle["m_busy"] / idle["m_wall"]          # the machine, idle
                add("k_idle", k_rate, extra)
                add("b_idle", b_rate, extra)
                for place, cpus in placements.items():
                    r = runner.pipe(cpus)
                    add("1" + place, us_per_mib(r))
                    add("pipe_calls" + place, r["calls"] / r["mib"], extra)
                    snd, rcv = runner.tcp(cpus)
                    add("3s" + place, us_per_mib(snd))
                    add("3r" + place, us_per_mib(rcv))
                    add("3k" + place, (rcv["m_kthreads"] - k_rate * rcv["m_wall"])
                        / rcv["mib"] * 1e6)
                    add("tcp_calls" + place, rcv["calls"] / rcv["mib"], extra)
                r = runner.pwrite()
                add("2", us_per_mib(r))
                add("2w", (r["sync_cpu"] + r["m_kthreads"] - k_rate * r["m_wall"])
                    / r["mib"] * 1e6)
                add("sync", us_per_mib(r, "sync_cpu"), extra)
                add("busy_2", r["m_busy"] / r["mib"] * 1e6, extra)
                add("1f", us_per_mib(runner.pread()))
                add("4", us_per_mib(runner.simple("crc")))
                add("memcpy", us_per_mib(runner.simple("memcpy")))
        except KeyboardInterrupt:
            print("bench.floor: interrupted", file=sys.stderr)
            return 1
        finally:
            runner.kill_all()
    header = [f"# CPU floor of a 1 MiB write, {time.strftime('%Y-%m-%d %H:%M')}: {cores} cores, "
              f"{args.rounds} rounds x {args.mib} MiB per piece after {args.warmup} MiB of "
              f"warm-up ({time.monotonic() - t_start:.0f} s)",
              f"# pipe {runner.pipe_size >> 10} KiB; pwrite file on {where}; "
              f"medians over the rounds and their range"]
    print("\n".join(report(rows, extra, cores, header)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
