"""What a test run can leave behind: FUSE mounts, loop devices, processes it started."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

_tracked_pids: set[int] = set()


def track_pid(pid: int) -> None:
    """Register a process a test started; it must be gone when the session ends."""
    _tracked_pids.add(pid)


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def fuse_mounts() -> set[str]:
    mounts = set()
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[2].startswith("fuse") and parts[2] != "fusectl":
                mounts.add(f"FUSE mount {parts[1]} ({parts[2]})")
    return mounts


def loop_devices() -> set[str]:
    try:
        out = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=False).stdout
    except FileNotFoundError:
        return set()
    return {f"loop device {line.strip()}" for line in out.splitlines() if line.strip()}


@dataclass
class Snapshot:
    mounts: set[str] = field(default_factory=set)
    loops: set[str] = field(default_factory=set)


def snapshot() -> Snapshot:
    return Snapshot(fuse_mounts(), loop_devices())


def leaked_since(before: Snapshot) -> list[str]:
    now = snapshot()
    leaked = sorted(now.mounts - before.mounts) + sorted(now.loops - before.loops)
    leaked += [f"process {pid} still running" for pid in sorted(_tracked_pids) if _pid_alive(pid)]
    return leaked
