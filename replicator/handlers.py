"""Handlers (drbd.conf ``handlers { split-brain "..."; }``): how the daemon calls them.

As the kernel does, the daemon runs ``drbdadm <handler> minor-<N>``; drbdadm looks the
command up in the configuration and runs it with DRBD's environment (DRBD_RESOURCE,
DRBD_MINOR, DRBD_PEER_ADDRESS...). Each call is logged in the kernel's words:
``helper command: drbdadm split-brain minor-0`` and ``... exit code 0 (0x0)``.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

DRBDADM = str(Path(sys.executable).parent / "drbdadm")


async def call(res: Any, name: str, connection: bool = False) -> int:
    """Run one handler to completion; returns its exit code (0 when none is configured).
    ``connection``: a connection's handler (fence-peer), which 8.4 calls with the resource
    name and logs with the resource's prefix; the others get ``minor-N``."""
    target = res.name if connection else f"minor-{res.minor}"
    cmd = [DRBDADM, name, target]
    label = f"helper command: drbdadm {name} {target}"
    log = res.log.resource_line if connection else res.log.device
    log(label)
    try:
        proc = await trio.run_process(cmd, check=False, stdin=subprocess.DEVNULL,
                                      capture_stdout=True, capture_stderr=True)
        rc = proc.returncode
    except OSError as e:
        log(f"{label} failed: {e.strerror}")
        return 1
    log(f"{label} exit code {rc} (0x{(rc & 0xff) << 8:x})")
    return rc
