"""Where a node keeps its runtime files: control sockets, logs, the /proc/drbd-style text."""
from __future__ import annotations

import os


def run_dir() -> str:
    """``$UDRBD_RUN_DIR``, default ``/run/drbd`` (one per node when two nodes share a machine)."""
    return os.environ.get("UDRBD_RUN_DIR") or "/run/drbd"


def ensure_run_dir() -> str:
    path = run_dir()
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def socket_path(resource: str) -> str:
    return os.path.join(run_dir(), f"{resource}.sock")


def log_path(resource: str) -> str:
    return os.path.join(run_dir(), f"{resource}.log")


def pid_path(resource: str) -> str:
    return os.path.join(run_dir(), f"{resource}.pid")


def proc_path() -> str:
    return os.path.join(run_dir(), "proc")


def running_resources() -> list[str]:
    """Names of the resources whose daemon has a control socket in the run directory."""
    try:
        names = os.listdir(run_dir())
    except FileNotFoundError:
        return []
    return sorted(n[:-5] for n in names if n.endswith(".sock"))
