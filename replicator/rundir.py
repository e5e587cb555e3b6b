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


SUN_PATH_MAX = 107            # bytes of an AF_UNIX socket path (sun_path[108], NUL-ended)


def socket_path_problem(resource: str) -> str | None:
    """Why the resource's control socket cannot be created, or None."""
    path = socket_path(resource)
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        return (f"{resource}: resource name too long: its control socket {path} would be "
                f"longer than the {SUN_PATH_MAX} bytes a socket path may have")
    return None


def log_path(resource: str) -> str:
    return os.path.join(run_dir(), f"{resource}.log")


def pid_path(resource: str) -> str:
    return os.path.join(run_dir(), f"{resource}.pid")


ALREADY_RUNNING = 75     # a daemon's exit code when another one holds the resource's lock


def lock_path(resource: str) -> str:
    """Held (flock) by the resource's daemon for as long as it runs."""
    return os.path.join(run_dir(), f"{resource}.lock")


def proc_path() -> str:
    return os.path.join(run_dir(), "proc")


def device_record_path(resource: str) -> str:
    """``MINOR DEVICE-PATH``, written at new-minor: what to clean up if the daemon dies."""
    return os.path.join(run_dir(), f"{resource}.device")


def daemon_pid(resource: str) -> int | None:
    try:
        with open(pid_path(resource)) as f:
            return int(f.readline())
    except (FileNotFoundError, ValueError):
        return None


def _is_daemon(pid: int) -> bool:
    """A live resource daemon (not just any process that reused the pid)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"replicator.daemon" in f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False


def has_exited(pid: int) -> bool:
    """The process is gone, or a zombie whose threads have all ended (its files and locks
    are released): it only waits for its parent (init, for a daemon) to reap it, which can
    take a while."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            zombie = f.read().rpartition(b")")[2].split()[0] == b"Z"
        return zombie and len(os.listdir(f"/proc/{pid}/task")) <= 1
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


def _names_with(suffix: str) -> set[str]:
    try:
        return {n[:-len(suffix)] for n in os.listdir(run_dir()) if n.endswith(suffix)}
    except FileNotFoundError:
        return set()


def dead_resources() -> list[str]:
    """Resources whose daemon died without cleaning up (kill -9, a crash): its pid file
    names a process that is gone."""
    return sorted(n for n in _names_with(".pid") if not _is_daemon(daemon_pid(n) or 0))


def running_resources() -> list[str]:
    """Names of the resources whose daemon has a control socket in the run directory and is
    alive (one that is still starting has no pid file yet)."""
    dead = set(dead_resources())
    return sorted(_names_with(".sock") - dead)


def device_record(resource: str) -> tuple[int, str] | None:
    try:
        with open(device_record_path(resource)) as f:
            minor, path = f.readline().rstrip("\n").split(" ", 1)
        return int(minor), path
    except (FileNotFoundError, ValueError):
        return None


def dead_minor(minor: int) -> str | None:
    """The dead resource that had ``minor``."""
    return next((r for r in dead_resources() if (device_record(r) or (None,))[0] == minor),
                None)


def gone_message(resource: str) -> str:
    return (f"{resource}: the resource daemon (pid {daemon_pid(resource)}) is gone; "
            f"'drbdadm down {resource}' cleans up after it, 'drbdadm up {resource}' "
            "starts it again")
