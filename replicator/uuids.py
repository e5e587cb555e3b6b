"""Generation UUIDs (DRBD 8.4): how they change. Pure functions on ``[C, B, H1, H2]``.

Bit 0 of the current UUID records "was Primary"; comparisons mask it (drbd-reference.md §5).
"""
from __future__ import annotations

import secrets

UUID_JUST_CREATED = 4
UUID_NEW_BM_OFFSET = 0x0001000000000000
MASK64 = (1 << 64) - 1

Uuids = list[int]   # [current, bitmap, history1, history2]


def fmt(uuids: Uuids) -> str:
    """``C:B:H1:H2`` as the kernel prints them (``%016llX`` each)."""
    return ":".join(f"{u:016X}" for u in uuids)


def with_role_bit(value: int, primary: bool) -> int:
    return (value | 1) if primary else (value & ~1 & MASK64)


def new_current(uuids: Uuids, primary: bool, rand: int | None = None) -> Uuids:
    """``drbd_uuid_new_current``: B := C; C := random (bit 0 = role)."""
    value = secrets.randbits(64) if rand is None else rand
    return [with_role_bit(value, primary), uuids[0], uuids[2], uuids[3]]


def set_bitmap(uuids: Uuids, value: int) -> Uuids:
    """``drbd_uuid_set_bm``: B := value (bit 0 cleared); clearing it (value 0) rotates history."""
    c, b, h1, h2 = uuids
    if value == 0:
        if b == 0:
            return list(uuids)
        return [c, 0, b, h1]
    return [c, value & ~1 & MASK64, h1, h2]


def rotate_bitmap_into_history(uuids: Uuids) -> Uuids:
    """``drbd_uuid_set(B, 0)`` as new-current-uuid does: the old B (if any) goes to H1."""
    return set_bitmap(uuids, 0)


# --- resync start / end (8.4 drbd_gen_and_send_sync_uuid, receive_sync_uuid, drbd_resync_finished)

def uuid_set(uuids: Uuids, idx: int, value: int, primary: bool = False) -> Uuids:
    """``drbd_uuid_set``: a non-zero old value at `idx` is pushed into history (H2 := H1,
    H1 := old); then uuid[idx] := value (stored as is, except bit 0 = role for the current)."""
    u = list(uuids)
    if u[idx]:
        u[3], u[2] = u[2], u[idx]
    u[idx] = with_role_bit(value, primary) if idx == 0 else value & MASK64
    return u


def gen_sync_uuid(uuids: Uuids, rand: int | None = None) -> tuple[Uuids, int]:
    """SyncSource at resync start: new B := B + UUID_NEW_BM_OFFSET (random if B is 0 or 4),
    the old B rotated into history. Returns (new UUIDs, the value sent in P_SYNC_UUID)."""
    b = uuids[1]
    if b and b != UUID_JUST_CREATED:
        value = (b + UUID_NEW_BM_OFFSET) & MASK64
    else:
        value = secrets.randbits(64) if rand is None else rand & MASK64
    return uuid_set(uuids, 1, value), value


def receive_sync_uuid(uuids: Uuids, value: int, primary: bool) -> Uuids:
    """SyncTarget on P_SYNC_UUID: C := value (bit 0 = role), B := 0, history untouched."""
    return [with_role_bit(value, primary), 0, uuids[2], uuids[3]]


def resync_finished_target(uuids: Uuids, peer_uuids: Uuids, primary: bool) -> Uuids:
    """SyncTarget after a successful resync: take the source's B..H2 (`peer_uuids` = what we
    received in P_UUIDS), push own C into B, C := source's C, then clear B into history."""
    u = [uuids[0], peer_uuids[1], peer_uuids[2], peer_uuids[3]]
    u = uuid_set(u, 1, u[0])
    u[0] = with_role_bit(peer_uuids[0], primary)
    return set_bitmap(u, 0)


def resync_finished_source(uuids: Uuids) -> Uuids:
    """SyncSource after a successful resync: ``drbd_uuid_set_bm(0)``."""
    return set_bitmap(uuids, 0)
