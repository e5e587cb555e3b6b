"""Recognise data already on a device before create-md overwrites it.

drbdmeta's ``check_for_existing_data``: look at the first 68 KiB for swap,
LVM2, ext2/3/4, XFS, JFS and reiserfs signatures and estimate the size the
filesystem uses.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

SO_MUCH = 68 * 1024          # bytes examined (reiserfs superblock is at 64 KiB)


@dataclass
class Found:
    """What was found: ``kind`` as drbdmeta words it, the bytes used if known,
    and ``refuse`` when the size cannot be trusted (swap, LVM)."""

    kind: str
    used_bytes: int = 0
    refuse: bool = False
    size_unknown: bool = False


def _le32(d: bytes, o: int) -> int:
    return struct.unpack_from("<I", d, o)[0]


def detect(head: bytes) -> Found | None:
    """Classify the first ``SO_MUCH`` bytes; None when they are all zero."""
    if not head.strip(b"\0"):
        return None
    for off in (4096 - 10, 8192 - 10):
        if head[off:off + 10] in (b"SWAP-SPACE", b"SWAPSPACE2"):
            return Found("swap space signature", refuse=True)
    if head[0x218:0x21C] == b"LVM2":
        # drbdmeta asks pvs(8) for the size; we do not run LVM tools: refuse like its error path
        return Found("LVM2 physical volume signature", refuse=True, size_unknown=True)
    if struct.unpack_from("<H", head, 0x438)[0] == 0xEF53:
        kind = "ext3 filesystem" if head[0x45C] & 4 else "ext2 filesystem"
        blocks = _le32(head, 0x404)
        log = _le32(head, 0x418)
        bsize = {0: 1024, 1: 2048, 2: 4096}.get(log, 4096)
        return Found(kind, blocks * bsize)
    if head[0:4] == b"XFSB":
        bsize = struct.unpack_from(">I", head, 4)[0]
        blocks = struct.unpack_from(">Q", head, 8)[0]
        return Found("xfs filesystem", bsize * blocks)
    if head[0x8000:0x8004] == b"JFS1":
        blocks = struct.unpack_from("<Q", head, 0x8008)[0]
        bsize = _le32(head, 0x8018)
        return Found("JFS filesystem", blocks * bsize)
    if head[0x10034:0x1003C] == b"ReIsErFs" or head[0x10034:0x1003D] == b"ReIsEr2Fs":
        blocks = _le32(head, 0x10000)
        bsize = struct.unpack_from("<H", head, 0x1002C)[0]
        return Found("reiser filesystem", blocks * bsize)
    return Found("some data")
