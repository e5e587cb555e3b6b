"""Loop devices for integration tests: always detached, even when the test fails."""
from __future__ import annotations

import contextlib
import subprocess
import time
from typing import Iterator


def attach(path: str, direct_io: bool = False) -> str:
    args = ["losetup", "-f", "--show"]
    if direct_io:
        args.append("--direct-io=on")
    out = subprocess.run(args + [path], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def detach(dev: str, attempts: int = 50) -> None:
    """losetup -d, retried while the device is briefly busy (udev probing it)."""
    for _ in range(attempts):
        r = subprocess.run(["losetup", "-d", dev], capture_output=True, text=True, check=False)
        if r.returncode == 0 or "No such device" in r.stderr:
            return
        time.sleep(0.1)
    raise RuntimeError(f"losetup -d {dev} failed: {r.stderr.strip()}")


@contextlib.contextmanager
def loop_device(path: str, direct_io: bool = False) -> Iterator[str]:
    """``losetup -f --show [--direct-io=on] path``; yields ``/dev/loopN``; always detaches."""
    dev = attach(path, direct_io)
    try:
        yield dev
    finally:
        detach(dev)
