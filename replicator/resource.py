"""One resource's runtime state inside its daemon: the state machine and its side effects.

Every state change goes through :meth:`Resource.change`: it validates the new state with
DRBD's rules (unless the change is "hard", i.e. forced by events such as a network failure),
logs one line in DRBD's words, records the metadata flags the new state implies and tells the
event listeners (events2, drbdmon, the /proc file).
"""
from __future__ import annotations

import time
from typing import Any, Callable

import trio

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
        self._resumed = trio.Event()  # set (and replaced) whenever suspended I/O may go on

    # -- state machine -------------------------------------------------------------------
    def device_open(self) -> bool:
        return self.device is not None and self.device.open_count > 0

    def validate(self, new: State, old: State | None = None) -> None:
        """DRBD's rules for ``new``; as 8.4, a change out of a state that already broke the
        same rule is let through (e.g. resume-io on a Primary the fence-peer handler could
        not fence: the admin must be able to act on it)."""
        net = self.net or {}
        def check(s: State) -> None:
            check_valid(s, device_open=self.device_open(),
                        allow_two_primaries=bool(net.get("allow-two-primaries", False)),
                        fencing=(self.device.fencing if self.device else "dont-care"),
                        verify_alg=bool(net.get("verify-alg")))
        try:
            check(new)
        except StateError as e:
            if old is None:
                raise
            try:
                check(old)
            except StateError as was:
                if was.code == e.code:
                    return
            raise e from None

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
        new = self._fencing_freeze(old, new)
        if new == old:
            return old
        if not hard:
            self.validate(new, old)
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
        if old.suspended and not new.suspended:
            self._resumed.set()
            self._resumed = trio.Event()
        if new.susp_fen and old.pdsk > Disk.Outdated >= new.pdsk:
            return self.change(scope, hard=True, susp_fen=False)     # the peer is fenced
        return new

    def _fencing_freeze(self, old: State, new: State) -> State:
        """8.4's resource-and-stonith: a Primary that loses its UpToDate peer freezes I/O
        until the fence-peer handler has fenced the peer (or the connection is back)."""
        dev = self.device
        if dev is not None and not dev.failed and dev.fencing == "resource-and-stonith":
            def unfenced(s: State) -> bool:
                return s.role == Role.Primary and s.conn < Conn.Connected and s.pdsk > Disk.Outdated
            if unfenced(new) and not unfenced(old):
                new = new.with_(susp_fen=True)
        if new.susp_fen and old.conn < Conn.Connected <= new.conn:
            new = new.with_(susp_fen=False)
        return new

    async def io_allowed(self) -> None:
        """Wait while application I/O is suspended (suspend-io, or fencing)."""
        while self.state.suspended:
            await self._resumed.wait()

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
