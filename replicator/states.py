"""DRBD 8.4 states: roles, connection states, disk states, the validity rules and log lines.

Pure logic: no I/O. The names are DRBD's exact words (drbd-reference.md §3); the numeric
order matters because the rules compare states (``conn >= Connected``).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, fields, replace


class Role(enum.IntEnum):
    Unknown = 0
    Primary = 1
    Secondary = 2


class Conn(enum.IntEnum):
    StandAlone = 0
    Disconnecting = 1
    Unconnected = 2
    Timeout = 3
    BrokenPipe = 4
    NetworkFailure = 5
    ProtocolError = 6
    TearDown = 7
    WFConnection = 8
    WFReportParams = 9
    Connected = 10
    StartingSyncS = 11
    StartingSyncT = 12
    WFBitMapS = 13
    WFBitMapT = 14
    WFSyncUUID = 15
    SyncSource = 16
    SyncTarget = 17
    VerifyS = 18
    VerifyT = 19
    PausedSyncS = 20
    PausedSyncT = 21
    Ahead = 22
    Behind = 23


class Disk(enum.IntEnum):
    Diskless = 0
    Attaching = 1
    Failed = 2
    Negotiating = 3
    Inconsistent = 4
    Outdated = 5
    DUnknown = 6
    Consistent = 7
    UpToDate = 8


SYNCING = frozenset({Conn.SyncSource, Conn.SyncTarget, Conn.PausedSyncS, Conn.PausedSyncT})


@dataclass(frozen=True)
class State:
    """One device's view: own role/disk, the peer's role/disk, the connection state."""
    role: Role = Role.Secondary
    peer: Role = Role.Unknown
    conn: Conn = Conn.StandAlone
    disk: Disk = Disk.Diskless
    pdsk: Disk = Disk.DUnknown
    susp: bool = False          # I/O suspended by the admin (suspend-io)
    susp_fen: bool = False      # frozen while the fence-peer handler decides (stonith)
    susp_nod: bool = False      # frozen while no data is accessible (on-no-data-accessible)
    aftr_isp: bool = False
    peer_isp: bool = False
    user_isp: bool = False

    def with_(self, **changes: object) -> "State":
        return replace(self, **changes)

    @property
    def suspended(self) -> bool:
        """Application I/O waits (8.4's is_susp: by the admin, fencing, or for data)."""
        return self.susp or self.susp_fen or self.susp_nod


class StateError(Exception):
    """A refused state change: DRBD's SS_* code and text."""

    def __init__(self, code: int, text: str):
        super().__init__(f"({code}) {text}")
        self.code = code
        self.text = text


# SS_* codes and texts (drbd-reference.md §3.6)
TWO_PRIMARIES = (-1, "Multiple primaries not allowed by config")
NO_UP_TO_DATE_DISK = (-2, "Need access to UpToDate data")
NO_LOCAL_DISK = (-4, "Can not resync without local disk")
NO_REMOTE_DISK = (-5, "Can not resync without remote disk")
CONNECTED_OUTDATES = (-6, "Refusing to be Outdated while Connected")
PRIMARY_NOP = (-7, "Refusing to be Primary while peer is not outdated")
RESYNC_RUNNING = (-8, "Can not start OV/resync since it is already active")
ALREADY_STANDALONE = (-9, "Can not disconnect a StandAlone device")
CW_FAILED_BY_PEER = (-10, "State change was refused by peer node")
IS_DISKLESS = (-11, "Device is diskless, the requested operation requires a disk")
DEVICE_IN_USE = (-12, "Device is held open by someone")
NO_NET_CONFIG = (-13, "Have no net/connection configuration")
NO_VERIFY_ALG = (-14, "Need a verify algorithm to start online verify")
NEED_CONNECTION = (-15, "Need a connection to start verify or resync")
LOWER_THAN_OUTDATED = (-16, "Disk state is lower than outdated")
IN_TRANSIENT_STATE = (-18, "In transient state, retry after next state change")


def check_valid(new: State, *, device_open: bool = False, allow_two_primaries: bool = False,
                fencing: str = "dont-care", verify_alg: bool = True) -> None:
    """Raise StateError if `new` breaks one of 8.4's ``is_valid_state`` rules (first match wins)."""
    def fail(err: tuple[int, str]) -> None:
        raise StateError(*err)

    primary = new.role == Role.Primary
    if primary and new.peer == Role.Primary and not allow_two_primaries:
        fail(TWO_PRIMARIES)
    if new.role == Role.Secondary and device_open:
        fail(DEVICE_IN_USE)
    if primary and new.conn < Conn.Connected and new.disk < Disk.UpToDate:
        fail(NO_UP_TO_DATE_DISK)
    if (fencing != "dont-care" and primary and new.conn < Conn.Connected
            and new.pdsk >= Disk.DUnknown):
        fail(PRIMARY_NOP)
    if primary and new.disk <= Disk.Inconsistent and new.pdsk <= Disk.Inconsistent:
        fail(NO_UP_TO_DATE_DISK)
    if new.conn > Conn.Connected and new.disk < Disk.Inconsistent:
        fail(NO_LOCAL_DISK)
    if new.conn > Conn.Connected and new.pdsk < Disk.Inconsistent:
        fail(NO_REMOTE_DISK)
    if new.conn > Conn.Connected and new.disk < Disk.UpToDate and new.pdsk < Disk.UpToDate:
        fail(NO_UP_TO_DATE_DISK)
    if (new.conn in (Conn.Connected, Conn.WFBitMapS, Conn.SyncSource, Conn.PausedSyncS)
            and new.disk == Disk.Outdated):
        fail(CONNECTED_OUTDATES)
    if new.conn in (Conn.VerifyS, Conn.VerifyT) and not verify_alg:
        fail(NO_VERIFY_ALG)
    if primary and new.disk < Disk.UpToDate and new.pdsk < Disk.UpToDate:
        fail(NO_UP_TO_DATE_DISK)
    if new.conn in (Conn.StartingSyncS, Conn.StartingSyncT) and new.pdsk == Disk.DUnknown:
        fail(NEED_CONNECTION)


_ENUM_FIELDS = ("role", "peer", "conn", "disk", "pdsk")
_FLAG_FIELDS = ("aftr_isp", "peer_isp", "user_isp")


_TARGET_SIDE = (Conn.WFBitMapT, Conn.PausedSyncT, Conn.StartingSyncT, Conn.WFSyncUUID,
                Conn.Behind)
_SOURCE_SIDE = (Conn.WFBitMapS, Conn.PausedSyncS, Conn.StartingSyncS, Conn.Ahead)


def _disk_limits(conn: Conn) -> tuple[Disk, Disk]:
    """The best disk and peer disk state ``conn`` allows (8.4's disk_max, pdsk_max)."""
    if conn in _TARGET_SIDE:
        return Disk.Outdated, Disk.UpToDate
    if conn in _SOURCE_SIDE:
        return Disk.UpToDate, Disk.Consistent     # (8.4: "Outdated would be nice")
    if conn == Conn.SyncTarget:
        return Disk.Inconsistent, Disk.UpToDate
    if conn == Conn.SyncSource:
        return Disk.UpToDate, Disk.Inconsistent
    if conn < Conn.Connected:
        return Disk.UpToDate, Disk.DUnknown
    return Disk.UpToDate, Disk.UpToDate


def sanitize(s: State) -> State:
    """8.4's sanitize_state, the parts udrbd's state changes need:
    * Consistent and Outdated vanish when connected: the handshake found the data equal
      (or chose this side as the source), so they are UpToDate;
    * the connection state caps the disk states: a side waiting to become SyncTarget is
      at best Outdated, the SyncTarget Inconsistent, and without a connection nothing is
      known of the peer's disk (8.4's lower bounds, which it only warns about, are left
      to the code that sets the states); without a connection, what is known of the
      peer's disk stays only if it is Inconsistent or Outdated (a fenced peer stays
      fenced), anything else is DUnknown;
    * a resync with a pause flag set (pause-sync here or on the peer) is a paused one,
      and without it a running one again."""
    disk, pdsk, conn = s.disk, s.pdsk, s.conn
    if Conn.Connected <= conn < Conn.Ahead:
        if disk in (Disk.Consistent, Disk.Outdated):
            disk = Disk.UpToDate
        if pdsk in (Disk.Consistent, Disk.Outdated):
            pdsk = Disk.UpToDate
    disk_max, pdsk_max = _disk_limits(conn)
    disk, pdsk = min(disk, disk_max), min(pdsk, pdsk_max)
    if conn < Conn.Connected and pdsk < Disk.Inconsistent:
        pdsk = Disk.DUnknown
    paused = s.user_isp or s.peer_isp or s.aftr_isp
    conn = {Conn.SyncSource: Conn.PausedSyncS, Conn.SyncTarget: Conn.PausedSyncT}.get(
        conn, conn) if paused else {Conn.PausedSyncS: Conn.SyncSource,
                                    Conn.PausedSyncT: Conn.SyncTarget}.get(conn, conn)
    if (disk, pdsk, conn) == (s.disk, s.pdsk, s.conn):
        return s
    return s.with_(disk=disk, pdsk=pdsk, conn=conn)


def describe_change(old: State, new: State) -> str:
    """The changed fields in DRBD's words and order: ``role( Secondary -> Primary ) disk( … )``."""
    parts = []
    for name in _ENUM_FIELDS:
        a, b = getattr(old, name), getattr(new, name)
        if a != b:
            parts.append(f"{name}( {a.name} -> {b.name} )")
    for name in _FLAG_FIELDS:
        a, b = getattr(old, name), getattr(new, name)
        if a != b:
            parts.append(f"{name}( {int(a)} -> {int(b)} )")
    if old.suspended != new.suspended:         # one flag in the log, whatever the reason
        parts.append(f"susp( {int(old.suspended)} -> {int(new.suspended)} )")
    return " ".join(parts)


def changed_fields(old: State, new: State) -> list[str]:
    return [f.name for f in fields(State) if getattr(old, f.name) != getattr(new, f.name)]
