"""Client side of the daemons' event streams, for ``drbdsetup events2`` and ``drbdmon``.

Each resource daemon answers the control command ``events`` with its current snapshot
(``{"kind": "exists", ...}``) and then one snapshot per state change (and once a second of
resync progress). A ``Subscriber`` follows the resources of the run directory: one reader
thread per daemon feeds a queue with ``(resource, message)``; ``(resource, None)`` means the
stream ended (the daemon went away). New daemons are found by looking for new control sockets
in the run directory.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from typing import Any

from replicator import control, rundir


class Subscriber:
    def __init__(self, target: str = "all", rescan_interval: float = 1.0):
        self.target = target
        self.queue: "queue.Queue[tuple[str, Any]]" = queue.Queue()
        self.clients: dict[str, control.Client] = {}
        self.must_vanish: set[str] = set()    # ended streams whose socket is still there
        self.rescan_interval = rescan_interval
        self._last_scan = 0.0

    def wanted(self) -> list[str]:
        names = rundir.running_resources()
        self.must_vanish &= set(names)
        if self.target != "all":
            names = [n for n in names if n == self.target]
        return [n for n in names if n not in self.clients and n not in self.must_vanish]

    def open(self, res: str, timeout: float = 10.0) -> dict | None:
        """Subscribe to ``res``; its first snapshot, or None if the daemon did not answer."""
        try:
            c = control.Client(rundir.socket_path(res), timeout=timeout)
        except control.ControlError:
            return None
        try:
            c.send({"cmd": "events", "args": {}})
            first = c.recv()
        except (control.ControlError, OSError):
            c.close()
            return None
        c.sock.settimeout(None)
        self.clients[res] = c
        return first.get("snapshot") if isinstance(first, dict) else None

    def start(self, res: str) -> None:
        threading.Thread(target=self._reader, args=(res, self.clients[res]), daemon=True,
                         name=f"events-{res}").start()

    def _reader(self, res: str, c: control.Client) -> None:
        try:
            while True:
                msg = c.recv()
                self.queue.put((res, msg))
        except (control.ControlError, OSError, ValueError):
            pass
        finally:
            self.queue.put((res, None))

    def ended(self, res: str) -> None:
        c = self.clients.pop(res, None)
        if c is not None:
            c.close()
        if os.path.exists(rundir.socket_path(res)):
            self.must_vanish.add(res)

    def new_resources(self) -> list[tuple[str, dict]]:
        """Subscribe to daemons that appeared since the last look (at most once per interval)."""
        now = time.monotonic()
        if now - self._last_scan < self.rescan_interval:
            return []
        self._last_scan = now
        found = []
        for res in self.wanted():
            snap = self.open(res)
            if snap is not None:
                self.start(res)
                found.append((res, snap))
        return found

    def get(self, timeout: float) -> tuple[str, Any] | None:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        for c in self.clients.values():
            c.close()
        self.clients.clear()
