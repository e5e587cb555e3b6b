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
