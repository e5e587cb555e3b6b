"""One resource's runtime state inside its daemon: the state machine and its side effects.

Every state change goes through :meth:`Resource.change`: it validates the new state with
DRBD's rules (unless the change is "hard", i.e. forced by events such as a network failure),
logs one line in DRBD's words, records the metadata flags the new state implies and tells the
event listeners (events2, drbdmon, the /proc file).
"""
from __future__ import annotations

import time
from typing import Any, Callable

from replicator.states import (Conn, Disk, Role, State, StateError, check_valid,
                               describe_change, sanitize)
from replicator.statelog import ResourceLog

Listener = Callable[[str, dict], None]


class Resource:
    def __init__(self, name: str, log: ResourceLog):
        self.name = name
        self.log = log
        self.state = State()
        self.minor: int | None = None
        self.volume_nr = 0
        self.device_path: str | None = None
        self.device = None            # replicator.device.Device once attached
        self.peer = None              # replicator.peer.Peer while a net config exists
        self.net: dict[str, Any] | None = None   # connect options (issue: replication)
        self.resource_options: dict[str, Any] = {}
        self.listeners: list[Listener] = []
        self.nursery = None           # the daemon's, for work started by events
        self.state_changed_at = time.monotonic()

    # -- state machine -------------------------------------------------------------------
    def device_open(self) -> bool:
        return self.device is not None and self.device.open_count > 0

    def validate(self, new: State) -> None:
        net = self.net or {}
        check_valid(new, device_open=self.device_open(),
                    allow_two_primaries=bool(net.get("allow-two-primaries", False)),
                    fencing=(self.device.fencing if self.device else "dont-care"),
                    verify_alg=bool(net.get("verify-alg")))

    def change(self, scope: str = "device", *, hard: bool = False, **changes: Any) -> State:
        """Apply a state change; raise StateError if DRBD's rules refuse it.

        ``scope`` chooses the log prefix as 8.4 does: ``device`` -> ``block drbdN:``,
        ``resource`` -> ``drbd RES:`` (connection-wide changes such as connect/disconnect).
        """
        old = self.state
        new = sanitize(old.with_(**changes))
        dev = self.device
        if new.disk == Disk.Negotiating and new.conn < Conn.Connected and dev is not None \
                and dev.negotiating_disk is not None:    # the connection broke before the
            new = new.with_(disk=dev.negotiating_disk)   # handshake: the disk's own state
        if new == old:
            return old
        if not hard:
            self.validate(new)
        self.state = new
        if dev is not None and new.disk != Disk.Negotiating:
            dev.negotiating_disk = None
        self.state_changed_at = time.monotonic()
        text = describe_change(old, new)
        if scope == "device":
            self.log.device(text)
        else:
            self.log.resource_line(text)
        if self.device is not None:
            self.device.state_changed(old, new)
        if self.peer is not None:
            self.peer.state_changed(old, new)
        self.notify("state", {"old": old, "new": new})
        return new

    def try_change(self, scope: str = "device", **changes: Any) -> tuple[int, str]:
        """Like change(), for commands: (0, "") or (SS code, DRBD's text)."""
        try:
            self.change(scope, **changes)
        except StateError as e:
            self.log.device(f"State change failed: {e.text}")
            return e.code, e.text
        return 0, ""

    def notify(self, kind: str, data: dict) -> None:
        for listener in list(self.listeners):
            listener(kind, data)

    # -- reporting -----------------------------------------------------------------------
    def role_text(self) -> str:
        s = self.state
        if s.conn == Conn.StandAlone and s.disk == Disk.Diskless and self.minor is None:
            return "Unconfigured"
        return f"{s.role.name}/{s.peer.name}"

    def cstate_text(self) -> str:
        return self.state.conn.name

    def dstate_text(self) -> str:
        return f"{self.state.disk.name}/{self.state.pdsk.name}"


__all__ = ["Resource", "Role", "Conn", "Disk", "State", "StateError"]
