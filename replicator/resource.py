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

from replicator.settings import resource_options
from replicator.states import (Conn, Disk, Role, State, StateError, check_valid,
                               describe_change, sanitize)
from replicator.statelog import ResourceLog

Listener = Callable[[str, dict], None]

# connected, but the peer may not know yet that it lacks writes (a resync is being agreed)
_SETTLING = frozenset({Conn.WFBitMapS, Conn.WFBitMapT, Conn.WFSyncUUID, Conn.StartingSyncS,
                       Conn.StartingSyncT})


class Resource:
    def __init__(self, name: str, log: ResourceLog):
        self.name = name
        self.log = log
        self.state = State()
        self.minor: int | None = None
        self.volume_nr = 0
        self.device_path: str | None = None
        self.device = None            # replicator.device.Device once attached
        self.diskless = None          # replicator.diskless.DisklessEngine (serves no disk)
        self.peer = None              # replicator.peer.Peer while a net config exists
        self.net: dict[str, Any] | None = None   # connect options (issue: replication)
        self.resource_options: dict[str, Any] = resource_options({})   # options { } typed
        self.resource_given: dict[str, Any] = {}                       # ... as given
        self.listeners: list[Listener] = []
        self.nursery = None           # the daemon's, for work started by events
        self.state_changed_at = time.monotonic()
        self._resumed = trio.Event()  # set (and replaced) whenever suspended I/O may go on
        self._failed_frozen = 0       # resume-io calls that failed the frozen I/O

    # -- state machine -------------------------------------------------------------------
    def engine(self) -> Any:
        """What serves the device file now: the attached Device, else the diskless engine."""
        return self.device if self.device is not None else self.diskless

    def device_open(self) -> bool:
        engine = self.engine()
        return engine is not None and engine.open_count > 0

    def diskless_view(self) -> Any:
        """What the device shows while no disk of its own serves it (8.4's diskless
        Primary shows its peer's data): the Device whose disk failed, or the diskless
        engine; None while a disk serves."""
        if self.device is not None:
            return self.device if self.device.failed else None
        return self.diskless

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
        new = self._no_data_freeze(old, self._fencing_freeze(old, new))
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
        until the fence-peer handler has fenced the peer, or the connection is back and
        the peer knows which blocks it lacks (the writes it missed are resynced)."""
        dev = self.device
        if dev is not None and not dev.failed and dev.fencing == "resource-and-stonith":
            def unfenced(s: State) -> bool:
                return s.role == Role.Primary and s.conn < Conn.Connected and s.pdsk > Disk.Outdated
            if unfenced(new) and not unfenced(old):
                new = new.with_(susp_fen=True)
        if new.susp_fen and new.conn >= Conn.Connected and new.conn not in _SETTLING:
            new = new.with_(susp_fen=False)     # back, and the peer knows what it lacks
        return new

    def _no_data_freeze(self, old: State, new: State) -> State:
        """8.4's on-no-data-accessible suspend-io: a Primary left with neither an UpToDate
        disk nor an UpToDate peer freezes I/O (instead of failing it) until data is back
        or the admin runs resume-io."""
        def no_data(s: State) -> bool:
            return s.role == Role.Primary and s.disk < Disk.UpToDate and s.pdsk < Disk.UpToDate
        if (self.resource_options["on-no-data-accessible"] == "suspend-io"
                and no_data(new) and not no_data(old)):
            return new.with_(susp_nod=True)
        return new.with_(susp_nod=False) if new.susp_nod and not no_data(new) else new

    async def io_allowed(self) -> bool:
        """Wait while application I/O is suspended (suspend-io, fencing, no data); False if
        the admin failed the frozen I/O meanwhile (resume-io without data: 8.4's
        FAIL_FROZEN_DISK_IO)."""
        failed = self._failed_frozen
        while self.state.suspended:
            await self._resumed.wait()
            if self._failed_frozen != failed:
                return False
        return True

    def fail_frozen_io(self) -> None:
        """resume-io while no disk is there: what waits for data gets an I/O error."""
        self._failed_frozen += 1
        self._resumed.set()
        self._resumed = trio.Event()

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
