"""``$UDRBD_RUN_DIR/proc``: the /proc/drbd (8.4) text of every resource of the run dir.

Each daemon owns one part, ``proc.d/<minor>``, and after writing it regenerates ``proc`` from
all parts in minor order (tmp file + rename, under an flock so two daemons never interleave).
The part is rewritten on every state change and once a second while something may have
changed (every second during a resync, so ``watch -n1 cat /run/drbd/proc`` shows progress);
during a resync each tick also tells the event listeners (events2, drbdmon) about the progress.
On exit the part is removed and ``proc`` regenerated without it.
"""
from __future__ import annotations

import fcntl
import os
from typing import Any

import trio

from replicator import report, rundir, snapshot, udrbd_version

TICK = 1.0
_SYNCING = ("SyncSource", "SyncTarget", "PausedSyncS", "PausedSyncT", "VerifyS", "VerifyT")


def build_line() -> str:
    return f"srcversion: udrbd-{udrbd_version()}"


def parts_dir() -> str:
    return os.path.join(rundir.run_dir(), "proc.d")


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _read_parts() -> dict[int, str]:
    parts: dict[int, str] = {}
    try:
        names = os.listdir(parts_dir())
    except FileNotFoundError:
        return parts
    for n in names:
        if not n.isdigit():
            continue
        try:
            with open(os.path.join(parts_dir(), n)) as f:
                parts[int(n)] = f.read()
        except FileNotFoundError:
            pass
    return parts


def publish(minor: int | None, text: str | None, old_minor: int | None = None) -> None:
    """Store this daemon's part (None: remove it) and regenerate the combined file."""
    os.makedirs(parts_dir(), mode=0o755, exist_ok=True)
    with open(os.path.join(rundir.run_dir(), "proc.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if old_minor is not None and old_minor != minor:
            _remove(old_minor)
        if minor is not None:
            if text is None:
                _remove(minor)
            else:
                _write_atomic(os.path.join(parts_dir(), str(minor)), text)
        _write_atomic(rundir.proc_path(), report.proc_text(build_line(), _read_parts()))


def _remove(minor: int) -> None:
    try:
        os.unlink(os.path.join(parts_dir(), str(minor)))
    except FileNotFoundError:
        pass


class ProcWriter:
    def __init__(self, res: Any):
        self.res = res
        self.minor: int | None = None
        self.last: str | None = None
        self.dirty = trio.Event()

    def _listener(self, kind: str, data: dict) -> None:
        if kind != "progress":
            self.dirty.set()

    def write(self) -> None:
        snap = snapshot.take(self.res)
        minor = snap.get("minor")
        text = report.proc_device(snap) if minor is not None else None
        if minor == self.minor and text == self.last:
            return
        publish(minor, text, old_minor=self.minor)
        self.minor, self.last = minor, text

    async def run(self) -> None:
        res = self.res
        res.listeners.append(self._listener)
        try:
            while True:
                with trio.move_on_after(TICK):
                    await self.dirty.wait()
                self.dirty = trio.Event()
                if res.state.conn.name in _SYNCING:
                    res.notify("progress", {})   # events2/drbdmon: done:, speed, eta moved
                try:
                    self.write()
                except OSError as e:
                    res.log.resource_line(f"cannot write {rundir.proc_path()}: {e.strerror}")
                    await trio.sleep(TICK)
        finally:
            res.listeners.remove(self._listener)
            if self.minor is not None:
                try:
                    publish(None, None, old_minor=self.minor)
                except OSError:
                    pass


async def run(daemon: Any) -> None:
    """The daemon's task: keep this resource's part of ``$RUN_DIR/proc`` current."""
    await ProcWriter(daemon.resource).run()
