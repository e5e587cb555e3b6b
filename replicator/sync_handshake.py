"""The 8.4 resync decision: ``drbd_uuid_compare`` and ``drbd_sync_handshake``.

Pure logic, no I/O (drbd-reference.md §5.3, §5.4). Both nodes run `sync_handshake` with
mirrored inputs when the peer's state arrives; the results agree (one SyncSource, one
SyncTarget, or both Connected) unless one side drops the connection.

Rule order, UUID corrections, log texts and after-split-brain policies follow the 8.4 kernel
(``drbd_receiver.c`` of late 8.4, which has rule 41). Everything the kernel would *do*
(log a line, run a handler, give up the Primary role) is returned as an ordered list of
`Decision.events`; the caller performs them in that order.

hg values: 0 no sync; 1/2 become SyncSource (bitmap/full); -1/-2 SyncTarget (bitmap/full);
100 split brain, auto-recover possible; -100 split brain, disconnect; -1000 unrelated data;
-1091 needs protocol 91; below -0x10000 needs a protocol version and feature flags.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator, Optional

from replicator import uuids as U
from replicator.states import Conn, Disk, Role

UuidTuple = tuple[int, int, int, int]
Event = tuple[str, str]     # (kind, text); kind: info|warn|err|alert|handler|demote

# UI_FLAGS bits of P_UUIDS
UI_FLAG_DISCARD_MY_DATA = 1
UI_FLAG_CRASHED_PRIMARY = 2
UI_FLAG_INCONSISTENT = 4
UI_FLAG_SKIP_INITIAL_SYNC = 8

PRO_VERSION_MAX = 101
DRBD_FF_WSAME = 4
FEATURES_84 = 0x7           # TRIM | THIN_RESYNC | WSAME, as 8.4.11 agrees with itself

LOG_KINDS = ("info", "warn", "err", "alert")

AFTER_SB_POLICIES = (
    "disconnect", "discard-younger-primary", "discard-older-primary", "discard-zero-changes",
    "discard-least-changes", "discard-local", "discard-remote", "consensus",
    "discard-secondary", "call-pri-lost-after-sb", "violently-as0p",
)
RR_CONFLICT_POLICIES = ("disconnect", "call-pri-lost", "violently")

_INVALID_0P = {"consensus", "discard-secondary", "call-pri-lost-after-sb", "violently-as0p"}
_INVALID_1P = {"discard-younger-primary", "discard-older-primary", "discard-least-changes",
               "discard-local", "discard-remote", "discard-zero-changes"}
_INVALID_2P = _INVALID_1P | {"consensus", "discard-secondary"}

_FALLBACK_WARNING = ("Discard younger/older primary did not find a decision\n"
                     "Using discard-least-changes instead")


def _m(value: int) -> int:
    """Mask bit 0 ("was Primary"), as every comparison in ``drbd_uuid_compare`` does."""
    return value & ~1 & U.MASK64


@dataclass(frozen=True)
class PeerInfo:
    """One side's P_UUIDS + P_STATE content: UUIDs (C, B, H1, H2), UI_SIZE, UI_FLAGS, role, disk.

    For the local side, `bits` is the number of set bits in the own bitmap and `flags` what it
    would send (2 = crashed primary is the one that matters; 1 = discard-my-data is the
    default for `sync_handshake`'s ``discard_my_data``).
    """
    uuids: UuidTuple
    bits: int = 0
    flags: int = 0
    role: Role = Role.Secondary
    disk: Disk = Disk.UpToDate

    def __post_init__(self) -> None:
        uuids = tuple(int(u) for u in self.uuids)
        if len(uuids) != 4 or any(not 0 <= u <= U.MASK64 for u in uuids):
            raise ValueError(f"need four 64-bit UUIDs, got {self.uuids!r}")
        object.__setattr__(self, "uuids", uuids)
        object.__setattr__(self, "role", Role(self.role))
        object.__setattr__(self, "disk", Disk(self.disk))


def uuid_dump(text: str, uuids: UuidTuple | list[int], bits: int, flags: int) -> str:
    """``drbd_uuid_dump``: ``self C:B:H1:H2 bits:N flags:F`` (flags in hex)."""
    return f"{text} {U.fmt(list(uuids))} bits:{bits} flags:{flags:X}"


def effective_disk(info: PeerInfo) -> Disk:
    """The disk state the handshake compares: Negotiating means "attaching while connected";
    UI_FLAGS bit 4 tells Inconsistent, anything else counts as Consistent (8.4
    ``receive_state``'s real_peer_disk; for the local side equivalent to new_state_tmp)."""
    if info.disk != Disk.Negotiating:
        return info.disk
    return Disk.Inconsistent if info.flags & UI_FLAG_INCONSISTENT else Disk.Consistent


# ---------------------------------------------------------------------------------------
# drbd_uuid_compare

@dataclass(frozen=True)
class Compare:
    """Result of `uuid_compare`. Iterates as ``(hg, rule)``.

    fix_self: rules 34 and 71 corrected the *local* UUIDs; the caller must store them
              (``drbd_md_mark_dirty``) before going on. None if unchanged.
    fix_peer: rules 35 and 51 corrected our *copy* of the peer's UUIDs (``p_uuid``); the
              caller keeps that as its view of the peer (the peer fixes its own side by the
              mirrored rule 34/71). None if unchanged.
    events:   the lines the kernel logs inside ``drbd_uuid_compare``.
    """
    hg: int
    rule: int
    fix_self: Optional[UuidTuple] = None
    fix_peer: Optional[UuidTuple] = None
    events: tuple[Event, ...] = ()

    def __iter__(self) -> Iterator[int]:
        return iter((self.hg, self.rule))


def _self_dump(info: PeerInfo, uuids: UuidTuple) -> Event:
    bits = info.bits if info.disk >= Disk.Negotiating else 0
    return ("info", uuid_dump("self", uuids, bits, 0))


def _peer_dump(info: PeerInfo, uuids: UuidTuple) -> Event:
    return ("info", uuid_dump("peer", uuids, info.bits, info.flags))


def _same_current(me: PeerInfo, peer: PeerInfo, resolve_conflicts: bool, peer_proto: int,
                  peer_features: int) -> Compare:
    """Rules 34-41: both current UUIDs equal."""
    s, p = me.uuids, peer.uuids
    if p[1] == 0 and s[1] != 0:
        if peer_proto < 91:
            return Compare(-1091, 30)
        if _m(s[1]) == _m(p[2]) and _m(s[2]) == _m(p[3]):
            fixed = tuple(U.set_bitmap(list(s), 0))
            return Compare(1, 34, fix_self=fixed, events=(
                ("info", "was SyncSource, missed the resync finished event, corrected myself:"),
                _self_dump(me, fixed)))
        return Compare(1, 36, events=(("info", "was SyncSource (peer failed to write sync_uuid)"),))
    if s[1] == 0 and p[1] != 0:
        if peer_proto < 91:
            return Compare(-1091, 30)
        if _m(s[2]) == _m(p[1]) and _m(s[3]) == _m(p[2]):
            fixed = (p[0], 0, p[1], p[2])
            return Compare(-1, 35, fix_peer=fixed, events=(
                ("info", "was SyncTarget, peer missed the resync finished event, corrected peer:"),
                _peer_dump(peer, fixed)))
        return Compare(-1, 37, events=(("info", "was SyncTarget (failed to write sync_uuid)"),))
    return _crashed_primary(me, peer, resolve_conflicts, peer_features)


def _crashed_primary(me: PeerInfo, peer: PeerInfo, resolve_conflicts: bool,
                     peer_features: int) -> Compare:
    """Rules 40/41: equal current UUIDs, no bitmap UUID to tell; who was (or is) Primary."""
    rct = (1 if me.flags & UI_FLAG_CRASHED_PRIMARY else 0) + (peer.flags & UI_FLAG_CRASHED_PRIMARY)
    if rct == 0:
        return Compare(0, 40)
    i_pri, peer_pri = me.role == Role.Primary, peer.role == Role.Primary
    if i_pri or peer_pri:
        if not peer_features & DRBD_FF_WSAME:
            return Compare(-(0x10000 | PRO_VERSION_MAX | (DRBD_FF_WSAME << 8)), 41, events=(
                ("warn", "Equivalent unrotated UUIDs, but current primary present."),))
        if i_pri and peer_pri:
            return Compare(-100, 41, events=(
                ("err", "Equivalent unrotated UUIDs, but both are primary. "
                        "Can not resolve this."),))
        return Compare(1 if i_pri else -1, 41)
    if rct == 3:
        return Compare(-1 if resolve_conflicts else 1, 40)
    return Compare(1 if rct == 1 else -1, 40)


def _rule51(me: PeerInfo, peer: PeerInfo, peer_proto: int) -> Optional[Compare]:
    s, p = me.uuids, peer.uuids
    if _m(s[0]) != _m(p[2]):
        return None
    if peer_proto < 96:
        hit = _m(s[2]) == _m(p[3])
    else:
        hit = (_m(p[2]) + U.UUID_NEW_BM_OFFSET) & U.MASK64 == _m(p[1])
    if not hit:
        return None
    if peer_proto < 91:
        return Compare(-1091, 51)
    fixed = (p[0], p[2], p[3], p[3])
    return Compare(-1, 51, fix_peer=fixed, events=(
        ("info", "Lost last syncUUID packet, corrected:"), _peer_dump(peer, fixed)))


def _rule71(me: PeerInfo, peer: PeerInfo, peer_proto: int) -> Optional[Compare]:
    s, p = me.uuids, peer.uuids
    if _m(s[2]) != _m(p[0]):
        return None
    if peer_proto < 96:
        hit = _m(s[3]) == _m(p[2])
    else:
        hit = (_m(s[2]) + U.UUID_NEW_BM_OFFSET) & U.MASK64 == _m(s[1])
    if not hit:
        return None
    if peer_proto < 91:
        return Compare(-1091, 71)
    fixed = (s[0], s[2], s[3], s[3])
    return Compare(1, 71, fix_self=fixed, events=(
        ("info", "Last syncUUID did not get through, corrected:"), _self_dump(me, fixed)))


def uuid_compare(self: PeerInfo, peer: PeerInfo, *, resolve_conflicts: bool,
                 peer_proto: int = PRO_VERSION_MAX, peer_features: int = FEATURES_84) -> Compare:
    """``drbd_uuid_compare`` (8.4, exact rule order). ``hg, rule = uuid_compare(...)`` works.

    `resolve_conflicts`: this node accepted the meta socket (RESOLVE_CONFLICTS flag).
    `peer_proto` / `peer_features`: the agreed protocol version and feature flags.
    """
    s, p = self.uuids, peer.uuids
    sc, pc = _m(s[0]), _m(p[0])
    just = U.UUID_JUST_CREATED
    if sc == just and pc == just:
        return Compare(0, 10)
    if sc in (just, 0) and pc != just:
        return Compare(-2, 20)
    if sc != just and pc in (just, 0):
        return Compare(2, 30)
    if sc == pc:
        return _same_current(self, peer, resolve_conflicts, peer_proto, peer_features)
    if sc == _m(p[1]):
        return Compare(-1, 50)
    found = _rule51(self, peer, peer_proto)
    if found:
        return found
    if sc in (_m(p[2]), _m(p[3])):
        return Compare(-2, 60)
    if _m(s[1]) == pc:
        return Compare(1, 70)
    found = _rule71(self, peer, peer_proto)
    if found:
        return found
    if pc in (_m(s[2]), _m(s[3])):
        return Compare(2, 80)
    if _m(s[1]) == _m(p[1]) and _m(s[1]) != 0:
        return Compare(100, 90)
    if any(_m(a) == _m(b) for a in s[2:] for b in p[2:]):
        return Compare(-100, 100)
    return Compare(-1000, 100)


# ---------------------------------------------------------------------------------------
# after-split-brain recovery (drbd_asb_recover_{0,1,2}p)

def convert_after_sb(policy: str) -> str:
    """The peer's policy as seen from here (``convert_after_sb``): local <-> remote."""
    swap = {"discard-local": "discard-remote", "discard-remote": "discard-local"}
    return swap.get(policy, policy)


def discard_node_policy(policy: str, my_name: str) -> str:
    """drbdadm-84 turns ``discard-node-NAME`` into discard-local on NAME, else discard-remote."""
    if not policy.startswith("discard-node-"):
        return policy
    return "discard-local" if policy[len("discard-node-"):] == my_name else "discard-remote"


@dataclass
class _Asb:
    """Inputs of the recovery functions plus the events they emit."""
    me: PeerInfo
    peer: PeerInfo
    resolve_conflicts: bool
    policy_0p: str
    can_demote: bool
    events: list[Event]
    role: Role


def _zero_or_least(a: _Asb, policy: str) -> int:
    """discard-zero-changes, falling through to discard-least-changes unless that is the policy."""
    ch_self, ch_peer = a.me.bits, a.peer.bits
    tie = -1 if a.resolve_conflicts else 1
    if policy != "discard-least-changes":
        if ch_peer == 0 and ch_self == 0:
            return tie
        if ch_peer == 0:
            return 1
        if ch_self == 0:
            return -1
        if policy == "discard-zero-changes":
            return -100
    if ch_self != ch_peer:
        return -1 if ch_self < ch_peer else 1
    return tie


def _asb_recover_0p(a: _Asb) -> int:
    """No primary left: decide by the 0pri policy (1 = keep mine, -1 = discard mine, -100 none)."""
    policy = a.policy_0p
    if policy in _INVALID_0P:
        a.events.append(("err", "Configuration error."))
        return -100
    if policy == "disconnect":
        return -100
    if policy in ("discard-local", "discard-remote"):
        return -1 if policy == "discard-local" else 1
    if policy in ("discard-younger-primary", "discard-older-primary"):
        s, p = a.me.uuids[1] & 1, a.peer.uuids[1] & 1     # bit 0 of Bitmap: Primary at the split
        if s != p:
            keep_older = policy == "discard-younger-primary"
            return (1 if s == 1 else -1) if keep_older else (1 if s == 0 else -1)
        a.events.append(("warn", _FALLBACK_WARNING))
    return _zero_or_least(a, policy)


def _call_pri_lost(a: _Asb, hg: int) -> int:
    """call-pri-lost-after-sb: the losing Primary gives up its role, else the handler runs."""
    if a.can_demote:
        a.events.append(("demote", "Secondary"))
        a.events.append(("warn", "Successfully gave up primary role."))
        a.role = Role.Secondary
        return hg
    a.events.append(("handler", "pri-lost-after-sb"))
    return -100


def _asb_recover_1p(a: _Asb, policy: str) -> int:
    """One primary: consensus, discard-secondary, call-pri-lost-after-sb, violently-as0p."""
    if policy in _INVALID_1P:
        a.events.append(("err", "Configuration error."))
        return -100
    if policy == "consensus":
        hg = _asb_recover_0p(a)
        if (hg == -1 and a.role == Role.Secondary) or (hg == 1 and a.role == Role.Primary):
            return hg
        return -100
    if policy == "violently-as0p":
        return _asb_recover_0p(a)
    if policy == "discard-secondary":
        return 1 if a.role == Role.Primary else -1
    if policy == "call-pri-lost-after-sb":
        hg = _asb_recover_0p(a)
        return _call_pri_lost(a, hg) if hg == -1 and a.role == Role.Primary else hg
    return -100                                          # disconnect


def _asb_recover_2p(a: _Asb, policy: str) -> int:
    """Two primaries: violently-as0p, call-pri-lost-after-sb, disconnect."""
    if policy in _INVALID_2P:
        a.events.append(("err", "Configuration error."))
        return -100
    if policy == "violently-as0p":
        return _asb_recover_0p(a)
    if policy == "call-pri-lost-after-sb":
        hg = _asb_recover_0p(a)
        return _call_pri_lost(a, hg) if hg == -1 else hg
    return -100                                          # disconnect


# ---------------------------------------------------------------------------------------
# drbd_sync_handshake

_ACTION_CONN = {"sync_source": Conn.WFBitMapS, "sync_target": Conn.WFBitMapT,
                "connected": Conn.Connected}


@dataclass(frozen=True)
class Decision:
    """What ``drbd_sync_handshake`` decided.

    action:    'sync_source' (-> WFBitMapS), 'sync_target' (-> WFBitMapT), 'connected'
               (-> Connected) or 'disconnect' (C_MASK: drop the connection).
    full_sync: set every bitmap bit before the bitmap exchange (|hg| >= 2).
    hg:        the final value after all post-processing; `compare` holds uuid_compare's.
    events:    in order: ('info'|'warn'|'err'|'alert', line) to log (a text may hold two
               lines), ('handler', name) to run a handler, ('demote', 'Secondary') to change
               the local role to Secondary right there (an after-sb policy gave it up).
    """
    action: str
    full_sync: bool
    hg: int
    compare: Compare
    events: tuple[Event, ...]

    @property
    def rule(self) -> int:
        return self.compare.rule

    @property
    def log(self) -> list[str]:
        """The logged lines in order (without the ``block drbdN: `` prefix)."""
        return [line for kind, text in self.events if kind in LOG_KINDS
                for line in text.split("\n")]

    @property
    def handlers(self) -> list[str]:
        """Handlers to run, in order (initial-split-brain, pri-lost-after-sb, split-brain,
        pri-lost)."""
        return [text for kind, text in self.events if kind == "handler"]

    @property
    def split_brain(self) -> bool:
        """Unresolved split brain: run the ``split-brain`` handler (connection is dropped)."""
        return "split-brain" in self.handlers

    @property
    def initial_split_brain(self) -> bool:
        return "initial-split-brain" in self.handlers

    @property
    def pri_lost_after_sb(self) -> bool:
        return "pri-lost-after-sb" in self.handlers

    @property
    def pri_lost(self) -> bool:
        return "pri-lost" in self.handlers

    @property
    def demote(self) -> bool:
        """An after-sb policy made this Primary give up its role (do it before going on)."""
        return any(kind == "demote" for kind, _ in self.events)

    @property
    def uuids(self) -> Optional[UuidTuple]:
        """Own UUIDs to write to the meta data (rule 34/71 correction), or None."""
        return self.compare.fix_self

    @property
    def peer_uuids(self) -> Optional[UuidTuple]:
        """Corrected copy of the peer's UUIDs (rule 35/51), or None."""
        return self.compare.fix_peer

    @property
    def conn(self) -> Optional[Conn]:
        """The connection state to enter, None when disconnecting."""
        return _ACTION_CONN.get(self.action)


def _check_policies(after_sb: tuple[str, str, str], rr_conflict: str) -> None:
    for policy in after_sb:
        if policy not in AFTER_SB_POLICIES:
            raise ValueError(f"unknown after-sb policy {policy!r}")
    if rr_conflict not in RR_CONFLICT_POLICIES:
        raise ValueError(f"unknown rr-conflict policy {rr_conflict!r}")


def _with_role(info: PeerInfo, primary: Optional[bool]) -> PeerInfo:
    if primary is None or (info.role == Role.Primary) == primary:
        return info
    return replace(info, role=Role.Primary if primary else Role.Secondary)


def _disk_override(hg: int, mydisk: Disk, peer_disk: Disk, events: list[Event]) -> int:
    """Exactly one side Inconsistent: the disk states decide the direction."""
    if not ((mydisk == Disk.Inconsistent and peer_disk > Disk.Inconsistent) or
            (peer_disk == Disk.Inconsistent and mydisk > Disk.Inconsistent)):
        return hg
    full = hg == -100 or abs(hg) == 2
    hg = 1 if mydisk > Disk.Inconsistent else -1
    if full:
        hg *= 2
    events.append(("info", f"Becoming sync {'source' if hg > 0 else 'target'} due to disk states."))
    return hg


def _refusal(hg: int) -> Optional[Event]:
    """-1000 and the protocol-too-old values abort the handshake."""
    if hg == -1000:
        return ("alert", "Unrelated data, aborting!")
    if hg < -0x10000:
        code = -hg
        return ("alert", "To resolve this both sides have to support at least protocol "
                         f"{code & 0xff} and feature flags 0x{(code >> 8) & 0xff:x}")
    if hg < -1000:
        return ("alert", "To resolve this both sides have to support at least protocol "
                         f"{-hg - 1000}")
    return None


def _sync_from(hg: int) -> str:
    return "peer" if hg < 0 else "this"


def _auto_recover(hg: int, a: _Asb, after_sb: tuple[str, str, str]) -> int:
    """Split brain (hg 100, or -100 with always-asbp): the after-sb-Npri policy for N primaries."""
    pcount = (a.me.role == Role.Primary) + (a.peer.role == Role.Primary)
    forced = hg == -100
    if pcount == 0:
        hg = _asb_recover_0p(a)
    elif pcount == 1:
        hg = _asb_recover_1p(a, after_sb[1])
    else:
        hg = _asb_recover_2p(a, after_sb[2])
    if abs(hg) < 100:
        a.events.append(("warn", f"Split-Brain detected, {pcount} primaries, automatically solved. "
                                 f"Sync from {_sync_from(hg)} node"))
        if forced:
            a.events.append(("warn", "Doing a full sync, since UUIDs where ambiguous."))
            hg *= 2
    return hg


def _manual_recover(discard_mine: bool, peer: PeerInfo, events: list[Event]) -> int:
    """``--discard-my-data`` on exactly one side resolves hg -100."""
    peer_discards = bool(peer.flags & UI_FLAG_DISCARD_MY_DATA)
    if discard_mine == peer_discards:
        return -100
    hg = -1 if discard_mine else 1
    events.append(("warn", "Split-Brain detected, manually solved. "
                           f"Sync from {_sync_from(hg)} node"))
    return hg


def _rr_conflict(policy: str, events: list[Event]) -> bool:
    """I shall become SyncTarget while Primary. Returns True to drop the connection."""
    if policy == "violently":
        events.append(("warn", "Becoming SyncTarget, violating the stable-data assumption"))
        return False
    if policy == "call-pri-lost":
        events.append(("handler", "pri-lost"))
    events.append(("err", "I shall become SyncTarget, but I am primary!"))
    return True


def _dry_run(hg: int) -> Event:
    if hg == 0:
        return ("info", "dry-run connect: No resync, would become Connected immediately.")
    conn = "SyncSource" if hg > 0 else "SyncTarget"
    kind = "full" if abs(hg) >= 2 else "bit-map based"
    return ("info", f"dry-run connect: Would become {conn}, doing a {kind} resync.")


def sync_handshake(self: PeerInfo, peer: PeerInfo, *, resolve_conflicts: bool,
                   after_sb_0pri: str = "disconnect", after_sb_1pri: str = "disconnect",
                   after_sb_2pri: str = "disconnect", always_asbp: bool = False,
                   discard_my_data: Optional[bool] = None, rr_conflict: str = "disconnect",
                   i_am_primary: Optional[bool] = None, peer_is_primary: Optional[bool] = None,
                   can_demote: bool = True, dry_run: bool = False,
                   peer_proto: int = PRO_VERSION_MAX,
                   peer_features: int = FEATURES_84) -> Decision:
    """``drbd_sync_handshake`` (8.4): uuid_compare plus the post-processing, in kernel order.

    `self`/`peer`: current roles and disks (a Negotiating disk is resolved by UI_FLAGS bit 4).
    `i_am_primary`/`peer_is_primary` override the roles in `self`/`peer` when given.
    `discard_my_data`: this side's ``--discard-my-data`` (default: ``self.flags & 1``); the
    peer's comes from ``peer.flags & 1``. The after-sb policies are this node's settings,
    already converted (`discard_node_policy`). `can_demote`: would a change to Secondary
    succeed now (False when the device is held open) -- used by call-pri-lost-after-sb.
    `dry_run`: ``connect --tentative``/``--dry-run``: log what would happen, then disconnect.
    """
    after_sb = (after_sb_0pri, after_sb_1pri, after_sb_2pri)
    _check_policies(after_sb, rr_conflict)
    me, peer = _with_role(self, i_am_primary), _with_role(peer, peer_is_primary)
    discard_mine = bool(me.flags & UI_FLAG_DISCARD_MY_DATA) if discard_my_data is None \
        else discard_my_data
    events: list[Event] = [("info", "drbd_sync_handshake:"),
                           ("info", uuid_dump("self", me.uuids, me.bits, 0)),
                           ("info", uuid_dump("peer", peer.uuids, peer.bits, peer.flags))]
    cmp = uuid_compare(me, peer, resolve_conflicts=resolve_conflicts,
                       peer_proto=peer_proto, peer_features=peer_features)
    events += cmp.events
    events.append(("info", f"uuid_compare()={cmp.hg} by rule {cmp.rule}"))

    def done(action: str, hg: int, full: bool = False) -> Decision:
        return Decision(action, full, hg, cmp, tuple(events))

    refusal = _refusal(cmp.hg)
    if refusal:
        events.append(refusal)
        return done("disconnect", cmp.hg)
    if cmp.fix_peer is not None:
        peer = replace(peer, uuids=cmp.fix_peer)
    if cmp.fix_self is not None:
        me = replace(me, uuids=cmp.fix_self)
    mydisk = effective_disk(me)
    hg = _disk_override(cmp.hg, mydisk, effective_disk(peer), events)
    if abs(hg) == 100:
        events.append(("handler", "initial-split-brain"))
    asb = _Asb(me, peer, resolve_conflicts, after_sb_0pri, can_demote, events, me.role)
    if hg == 100 or (hg == -100 and always_asbp):
        hg = _auto_recover(hg, asb, after_sb)
    if hg == -100:
        hg = _manual_recover(discard_mine, peer, events)
    if hg == -100:
        events.append(("alert", "Split-Brain detected but unresolved, dropping connection!"))
        events.append(("handler", "split-brain"))
        return done("disconnect", hg)
    if hg > 0 and mydisk <= Disk.Inconsistent:
        events.append(("err", "I shall become SyncSource, but I am inconsistent!"))
        return done("disconnect", hg)
    # by intention the real (not the negotiated) disk state, and the role after any demotion
    if hg < 0 and asb.role == Role.Primary and me.disk >= Disk.Consistent:
        if _rr_conflict(rr_conflict, events):
            return done("disconnect", hg)
    if dry_run:
        events.append(_dry_run(hg))
        return done("disconnect", hg)
    full = abs(hg) >= 2
    if full:
        events.append(("info", "Writing the whole bitmap, full sync required after "
                               "drbd_sync_handshake."))
    if hg > 0:
        return done("sync_source", hg, full)
    if hg < 0:
        return done("sync_target", hg, full)
    if me.bits:
        events.append(("info", f"No resync, but {me.bits} bits in bitmap!"))
    return done("connected", hg)
