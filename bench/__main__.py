"""fio through a loop device on every target, in one invocation: ``python -m bench``.

For each target (see bench/targets.py) and each loop mode (plain ``losetup``, what ``mount``
does, and ``losetup --direct-io=on``) it runs the workloads below with libaio and direct=1 on
the loop device, then prints MB/s or IOPS with the ratio to the reference (qemu's export).
Needs root, fio, losetup and qemu-storage-daemon.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bench import udrbd_targets  # noqa: F401  (registers the udrbd columns)
from bench.targets import TARGETS, Target

DEFAULT_TARGETS = ["file", "qemu-fuse", "fuseblk", "udrbd", "udrbd-C", "udrbd-B", "udrbd-A"]
MODES = {"loop": False, "loop-dio": True}


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    rw: str
    bs: str
    iodepth: int
    fsync: bool = False
    unit: str = "IOPS"  # or "MB/s"

    def fio_args(self) -> list[str]:
        args = [f"--rw={self.rw}", f"--bs={self.bs}", f"--iodepth={self.iodepth}"]
        if self.fsync:
            args.append("--fsync=1")
        return args


WORKLOADS = [
    Workload("seqwrite", "seq write 1M qd4", "write", "1M", 4, unit="MB/s"),
    Workload("randwrite", "rand write 4k qd16", "randwrite", "4k", 16),
    Workload("syncwrite", "sync write 4k qd1 fsync", "write", "4k", 1, fsync=True),
    Workload("randread", "rand read 4k qd16", "randread", "4k", 16),
]


# --- environment ----------------------------------------------------------------------------
def cpu_busy_fraction(interval: float = 1.0) -> float:
    def sample():
        with open("/proc/stat") as f:
            vals = [int(x) for x in f.readline().split()[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        return sum(vals), idle
    t0, i0 = sample()
    time.sleep(interval)
    t1, i1 = sample()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def top_cpu_processes(n: int = 3, interval: float = 0.5) -> list[str]:
    def sample():
        out = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    s = f.read()
            except OSError:
                continue
            name = s[s.index("(") + 1:s.rindex(")")]
            fields = s[s.rindex(")") + 2:].split()
            out[int(pid)] = (name, int(fields[11]) + int(fields[12]))
        return out
    a = sample()
    time.sleep(interval)
    b = sample()
    hz = os.sysconf("SC_CLK_TCK")
    use = [((b[p][1] - a[p][1]) / hz / interval, p, b[p][0]) for p in b if p in a]
    use.sort(reverse=True)
    return [f"{name}[{pid}] {frac * 100:.0f}%" for frac, pid, name in use[:n] if frac > 0.05]


def check_idle() -> None:
    busy = cpu_busy_fraction()
    load1 = os.getloadavg()[0]
    if busy > 0.15 or load1 > 0.8:
        who = ", ".join(top_cpu_processes()) or "?"
        print(f"WARNING: the machine is not idle (CPU {busy * 100:.0f}% busy, load {load1:.2f};"
              f" top: {who}); numbers will be skewed", file=sys.stderr)
    else:
        print(f"# CPU idle check: {busy * 100:.0f}% busy, load {load1:.2f}", file=sys.stderr)


def proc_cpu_seconds(pids: list[int]) -> float:
    hz = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / hz


# --- loop devices -----------------------------------------------------------------------------
def loop_attach(path: str, direct_io: bool) -> str:
    args = ["losetup", "-f", "--show"] + (["--direct-io=on"] if direct_io else []) + [path]
    dev = subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()
    if direct_io:
        with open(f"/sys/block/{os.path.basename(dev)}/loop/dio") as f:
            if f.read().strip() != "1":
                loop_detach(dev)
                raise RuntimeError(f"{path}: loop direct I/O refused by the kernel")
    return dev


def loop_detach(dev: str) -> None:
    for _ in range(50):
        r = subprocess.run(["losetup", "-d", dev], capture_output=True, text=True, check=False)
        if r.returncode == 0 or "No such device" in r.stderr:
            return
        time.sleep(0.1)
    print(f"WARNING: losetup -d {dev}: {r.stderr.strip()}", file=sys.stderr)


# --- fio ------------------------------------------------------------------------------------
def run_fio(dev: str, wl: Workload, runtime: float, ramp: float, size: int) -> dict:
    args = ["fio", "--name=" + wl.key, f"--filename={dev}", "--ioengine=libaio", "--direct=1",
            f"--size={size}", f"--runtime={runtime}s", "--time_based",
            f"--ramp_time={ramp}s", "--group_reporting", "--output-format=json",
            "--randrepeat=0", *wl.fio_args()]
    r = subprocess.run(args, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"fio failed ({r.returncode}): {r.stderr.strip()[-500:]}")
    job = json.loads(r.stdout[r.stdout.index("{"):])["jobs"][0]
    side = job["read"] if wl.rw.endswith("read") else job["write"]
    if job.get("error"):
        raise RuntimeError(f"fio job error {job['error']}")
    return {"MB/s": side["bw_bytes"] / 1e6, "IOPS": side["iops"]}


@dataclass
class Result:
    value: Optional[float]
    cpu: Optional[float] = None  # server CPU seconds per wall second
    error: str = ""


def bench_target(cls: type[Target], workdir: Path, args, workloads, modes,
                 results: dict) -> None:
    target = cls(workdir, args.size)
    dev = None
    try:
        path = target.start()
        if args.prefill:
            t0 = time.monotonic()
            target.prefill()
            print(f"  {cls.name:14} prefilled {args.size >> 20} MiB in "
                  f"{time.monotonic() - t0:.1f} s", file=sys.stderr)
        for mode in modes:
            dev = loop_attach(path, MODES[mode])
            for wl in workloads:
                os.sync()  # no dirty data from an earlier run is flushed inside this one
                if wl.rw.endswith("read"):
                    target.drop_cache()
                pids = target.server_pids
                c0, t0 = proc_cpu_seconds(pids), time.monotonic()
                try:
                    out = run_fio(dev, wl, args.runtime, args.ramp, args.size)
                    cpu = (proc_cpu_seconds(pids) - c0) / (time.monotonic() - t0) if pids else None
                    res = Result(out[wl.unit], cpu)
                except RuntimeError as exc:
                    res = Result(None, error=str(exc))
                results[(wl.key, mode, cls.name)] = res
                shown = f"{res.value:.0f} {wl.unit}" if res.value is not None else res.error
                cpu_s = f" (server CPU {res.cpu * 100:.0f}%)" if res.cpu is not None else ""
                print(f"  {cls.name:14} {mode:9} {wl.title:24} {shown}{cpu_s}", file=sys.stderr)
            loop_detach(dev)
            dev = None
    finally:
        if dev is not None:
            loop_detach(dev)
        target.stop()


def print_table(results: dict, targets: list[str], workloads, modes, show_cpu: bool) -> None:
    ref = next((t for t in targets if TARGETS[t].is_reference), None)
    cols = []
    for t in targets:
        cols.append((t, "value"))
        if ref and t != ref and not t == "file":
            cols.append((t, "ratio"))
    header = ["workload", "loop mode"] + [
        (t if kind == "value" else f"{t}/{ref}") for t, kind in cols]
    rows = []
    for wl in workloads:
        for mode in modes:
            row = [f"{wl.title} [{wl.unit}]", mode]
            base = results.get((wl.key, mode, ref)) if ref else None
            for t, kind in cols:
                r = results.get((wl.key, mode, t))
                if r is None or r.value is None:
                    row.append("error" if r is not None else "-")
                elif kind == "value":
                    cell = f"{r.value:,.0f}"
                    if show_cpu and r.cpu is not None:
                        cell += f" ({r.cpu * 100:.0f}%cpu)"
                    row.append(cell)
                else:
                    row.append(f"{r.value / base.value:.2f}x"
                               if base and base.value else "-")
            rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = "  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths))))


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 s per run, no ramp")
    p.add_argument("--runtime", type=float, default=6.0, help="seconds per fio run (6)")
    p.add_argument("--ramp", type=float, default=1.0, help="fio ramp time, seconds (1)")
    p.add_argument("--size", type=int, default=1 << 30, help="image size in bytes (1 GiB)")
    p.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                   help=f"comma list from: {', '.join(TARGETS)}")
    p.add_argument("--workloads", default=",".join(w.key for w in WORKLOADS))
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--no-prefill", dest="prefill", action="store_false",
                   help="measure on the sparse image as created (host fs allocation included)")
    p.add_argument("--cpu", action="store_true", help="show the servers' CPU use per cell")
    p.add_argument("--workdir", default=None, help="where images go (default: a tmp dir)")
    p.add_argument("--list", action="store_true", help="list targets and workloads")
    args = p.parse_args(argv)
    if args.quick:
        args.runtime, args.ramp = 2.0, 0.0
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        for name, cls in TARGETS.items():
            print(f"{name:16} {cls.description}")
        for wl in WORKLOADS:
            print(f"{wl.key:16} {wl.title}")
        return 0
    if os.geteuid() != 0:
        print("bench: needs root (loop devices, FUSE mounts)", file=sys.stderr)
        return 1
    targets = [t for t in args.targets.split(",") if t]
    unknown = [t for t in targets if t not in TARGETS]
    wl_by_key = {w.key: w for w in WORKLOADS}
    workloads = [wl_by_key[k] for k in args.workloads.split(",") if k]
    modes = [m for m in args.modes.split(",") if m]
    if unknown or any(m not in MODES for m in modes):
        print(f"bench: unknown target or mode: {unknown or modes}", file=sys.stderr)
        return 1

    # Ctrl-C and SIGTERM unwind through the finally blocks that detach and stop everything.
    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)

    check_idle()
    print(f"# fio {args.runtime:g}s (+{args.ramp:g}s ramp) per run, libaio direct=1 on the loop "
          f"device, {args.size >> 20} MiB sparse image; targets: {', '.join(targets)}",
          file=sys.stderr)
    results: dict = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="udrbd-bench-", dir=args.workdir) as tmp:
        try:
            for name in targets:
                bench_target(TARGETS[name], Path(tmp), args, workloads, modes, results)
        except KeyboardInterrupt:
            print("bench: interrupted; partial results:", file=sys.stderr)
    print(f"\n# {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, "
          f"{time.monotonic() - started:.0f} s; values: MB/s or IOPS; ratio = target/qemu")
    print_table(results, targets, workloads, modes, args.cpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
