"""Replay of the pre-8.4 (DRBD 0.7 .. 8.3) activity log, for upgrades.

512-byte sectors ``{be32 magic=DRBD_MAGIC, be32 tr_number, 62 x {be32 pos,
be32 extent}, be32 xor_sum, be32 pad}``; valid when the magic matches and the
xor of all extents equals xor_sum.  drbdmeta's ``replay_al_07``.
"""
from __future__ import annotations

import struct

from meta.activity_log import LC_FREE, AL_EXTENTS_MAX, ReplayResult, _s32

DRBD_MAGIC = 0x83740267
AL_EXTENTS_PT = 61
_SECTOR = struct.Struct(">II124III")


def replay_07(al: bytes, al_nr_extents: int) -> ReplayResult:
    """Hot extents of an 8.3-style activity log (status 0 when nothing usable)."""
    mx = min(1 + -(-al_nr_extents // AL_EXTENTS_PT), len(al) // 512)
    sectors: list[tuple[int, list[tuple[int, int]]] | None] = []
    valid = 0
    oldest = newest = (0, 0)
    for b in range(mx):
        v = _SECTOR.unpack_from(al, b * 512)
        magic, tr, pairs, xor_sum = v[0], v[1], v[2:126], v[126]
        updates = list(zip(pairs[0::2], pairs[1::2]))
        x = 0
        for _, ext in updates:
            x ^= ext
        if magic != DRBD_MAGIC or x != xor_sum:
            sectors.append(None)
            continue
        sectors.append((tr, updates))
        valid += 1
        if valid == 1:
            oldest = newest = (b, tr)
            continue
        if _s32(tr - oldest[1]) < 0:
            oldest = (b, tr)
        if _s32(tr - newest[1]) > 0:
            newest = (b, tr)
    warnings: list[str] = []
    if not valid:
        return ReplayResult(0, {}, ["No usable activity log found."], [])
    if valid != mx:
        warnings += [f"{mx - valid} corrupt or uninitialized AL transactions found",
                     "You can safely ignore this if this node was cleanly stopped (no crash)."]
    hot: dict[int, int] = {}
    last = newest[0] + (mx if newest[0] < oldest[0] else 0)
    for b in range(oldest[0], last + 1):
        entry = sectors[b % mx]
        if entry is None:
            continue
        for slot, ext in reversed(entry[1][:AL_EXTENTS_PT + 1]):
            if ext == LC_FREE:
                continue
            if slot >= AL_EXTENTS_MAX:
                warnings.append(f"slot number out of range: tr:{b % mx} slot:{slot}")
                continue
            hot[slot] = ext
    return ReplayResult(valid, hot, warnings, [], newest[1])
