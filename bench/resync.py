"""Resync numbers between two local nodes: ``python -m bench.resync`` (part of make bench).

- Full sync: node1's data area holds data and node2's zeros (both written out and not
  cached); ``primary --force`` on node1 starts the initial sync, unthrottled
  (``c-plan-ahead 0; resync-rate 4G``), timed until both nodes are UpToDate/UpToDate.
- Bitmap resync: node2 disconnects, node1 writes random 4-64 KiB pieces, node2 reconnects;
  the payload node2 received during the resync (its ``nr_kib``) is compared with the
  dirty 4 KiB blocks node1 wrote.

Both data areas are compared after each step, so a number never comes from a wrong sync.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.targets import make_sparse
from bench.udrbd_targets import UdrbdTarget
from replicator import control

BLOCK = 4096


class ResyncPair(UdrbdTarget):
    name = "udrbd-resync"
    description = "two nodes, unthrottled resync"
    nodes = 2
    disk_opts = "\n  disk { c-plan-ahead 0; resync-rate 4G; }"
    data_size = 0                     # bytes, once the daemons are up (size_kib)

    def snapshot(self, node: str) -> dict:
        with control.Client(str(self.run_dir(node) / "r0.sock"), timeout=10) as c:
            return c.call("snapshot")["snapshot"]

    def wait(self, what: str, pred, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not all(pred(self.snapshot(n)) for n in ("node1", "node2")):
            if time.monotonic() > deadline:
                raise TimeoutError(f"resync bench: {what} not reached after {timeout:.0f} s")
            time.sleep(0.02)

    def wait_in_sync(self) -> None:
        self.wait("UpToDate/UpToDate", lambda s: s["conn"] == "Connected"
                  and s["disk"] == "UpToDate" and s["pdsk"] == "UpToDate")

    def log_line(self, node: str, marker: str) -> str:
        lines = (self.run_dir(node) / "r0.log").read_text().splitlines()
        found = [ln.partition(" ")[2] for ln in lines if marker in ln]
        return found[-1] if found else "-"

    def check_identical(self) -> None:
        digests = {n: data_digest(self.disk_image(n), self.data_size) for n in ("node1", "node2")}
        if digests["node1"] != digests["node2"]:
            raise RuntimeError("resync bench: the data areas differ after the resync")


def data_digest(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = size
        while left:
            chunk = f.read(min(left, 4 << 20))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def fill(path: Path, size: int, data: bool) -> None:
    """Write the whole data area (distinct data in every MiB, or zeros) and drop it from
    the page cache: an allocated, uncached disk, as a partition would be. (Writing into
    a sparse file's holes runs at ~400 MB/s on the test VM: ext4's block allocation, not
    the resync, would be measured.)"""
    chunk = bytearray(os.urandom(1 << 20) if data else bytes(1 << 20))
    fd = os.open(path, os.O_WRONLY)
    try:
        for mib in range(size >> 20):
            if data:
                chunk[:8] = mib.to_bytes(8, "little")
            os.pwrite(fd, chunk, mib << 20)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def dirty_writes(device: Path, size: int, count: int, seed: int) -> set[int]:
    """``count`` writes of 1-16 blocks at random offsets; returns the blocks touched."""
    rng = random.Random(seed)
    blocks: set[int] = set()
    fd = os.open(device, os.O_WRONLY)
    try:
        for _ in range(count):
            n = rng.randint(1, 16)
            first = rng.randrange(size // BLOCK - n)
            os.pwrite(fd, rng.randbytes(n * BLOCK), first * BLOCK)
            blocks.update(range(first, first + n))
        os.fsync(fd)
    finally:
        os.close(fd)
    return blocks


def run(pair: ResyncPair, writes: int) -> list[str]:
    out = []
    for n in ("node1", "node2"):
        (pair.workdir / n).mkdir(exist_ok=True)
        image = pair.disk_image(n)
        fill(make_sparse(image, pair.size), pair.size, data=n == "node1")
    pair.up()
    size = pair.snapshot("node1")["size_kib"] << 10     # the data area (the metadata is
    pair.data_size = size                                # at the image's end)

    t0 = time.monotonic()
    pair.adm("node1", "primary", "--force", "r0")
    pair.wait_in_sync()
    full_s = time.monotonic() - t0
    pair.check_identical()
    out.append(f"full sync      {size / 2**20:,.0f} MiB in {full_s:.2f} s: "
               f"{size / full_s / 1e6:,.0f} MB/s (from primary --force to UpToDate/UpToDate;"
               f" node2's log: {pair.log_line('node2', 'Resync done')})")

    pair.adm("node2", "disconnect", "r0")
    pair.wait("node1 without its peer", lambda s: s["conn"] != "Connected")
    blocks = dirty_writes(pair.device("node1"), size, writes, seed=size)
    marked_kib = pair.snapshot("node1")["oos_kib"]
    t0 = time.monotonic()
    pair.adm("node2", "connect", "r0")
    pair.wait_in_sync()
    bitmap_s = time.monotonic() - t0
    moved_kib = pair.snapshot("node2").get("nr_kib", 0)
    dirty_kib = len(blocks) * BLOCK >> 10
    pair.adm("node1", "secondary", "r0")
    pair.check_identical()
    out.append(f"bitmap resync  {writes} writes dirtied {dirty_kib:,} KiB (bitmap: {marked_kib:,}"
               f" KiB); node2 received {moved_kib:,} KiB = {moved_kib / dirty_kib:.3f}x the dirty"
               f" bytes, in {bitmap_s:.2f} s from connect to UpToDate/UpToDate")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.resync", description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=1 << 30,
                   help="each backing disk in bytes (1 GiB; the metadata takes ~100 KiB)")
    p.add_argument("--writes", type=int, default=2000,
                   help="random writes while the peer is away (2000)")
    p.add_argument("--workdir", default=None, help="where images go (default: a tmp dir)")
    args = p.parse_args(argv)
    if args.writes < 1 or args.size < (64 << 20):
        p.error("--writes must be at least 1 and --size at least 64 MiB")
    if os.geteuid() != 0:
        print("bench.resync: needs root (FUSE mounts)", file=sys.stderr)
        return 1

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    with tempfile.TemporaryDirectory(prefix="udrbd-resync-", dir=args.workdir) as tmp:
        pair = ResyncPair(Path(tmp), args.size)
        try:
            lines = run(pair, args.writes)
        except KeyboardInterrupt:
            print("bench.resync: interrupted", file=sys.stderr)
            return 1
        finally:
            pair.stop()
    print(f"\n# resync between two local nodes, {time.strftime('%Y-%m-%d %H:%M')}, "
          f"c-plan-ahead 0; resync-rate 4G")
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
