"""The v08 superblock (``struct md_on_disk_08``): 4096 bytes, big-endian.

v08 has no checksum, so ``validate`` checks everything that has a knowable
value: the magic, offsets and sizes against the computed layout,
bm_bytes_per_bit, the activity log geometry and size, known flag bits, the
peer bio size and that reserved bytes are zero.  Only the UUIDs, the device
UUID, la_size_sect (below the device size) and known flag bits can be
flipped without being noticed.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from meta.layout import FLEX_EXTERNAL, SB_SECT, SECTOR, MetaLayout, bm_bytes_for_sectors

DRBD_MAGIC = 0x83740267
MD_MAGIC_07 = 0x8374026A
MD_MAGIC_08 = 0x8374026B
MD_MAGIC_84_UNCLEAN = 0x8374026C
MD_MAGIC_09 = 0x8374026D

UUID_JUST_CREATED = 4
SB_SIZE = 4096
BM_BYTES_PER_BIT = 4096
AL_EXTENTS_MIN, AL_EXTENTS_MAX = 7, 65534      # drbd_limits.h (8.4)
MAX_BIO_SIZE = 1 << 20

# offset 0x00: la_size, uuid[4], device_uuid, reserved_u64; 0x38: flags, magic,
# md_size_sect, al_offset, al_nr_extents, bm_offset, bm_bytes_per_bit,
# la_peer_max_bio_size, al_stripes, al_stripe_size_4k, reserved_u32
_FMT = struct.Struct(">QQQQQQQ IIIiIiIIIII")
assert _FMT.size == 0x64


class MDF(enum.IntFlag):
    """``md.flags`` bits of DRBD 8.4 (``enum mdf_flag``)."""

    CONSISTENT = 0x001
    PRIMARY_IND = 0x002
    CONNECTED_IND = 0x004
    FULL_SYNC = 0x008
    WAS_UP_TO_DATE = 0x010
    PEER_OUT_DATED = 0x020
    CRASHED_PRIMARY = 0x040
    AL_CLEAN = 0x080
    AL_DISABLED = 0x100


KNOWN_FLAGS = 0x1FF


class SuperblockError(ValueError):
    """The superblock is missing, of another version or damaged."""


@dataclass
class Superblock:
    """Decoded v08 superblock; field names follow the on-disk struct."""

    la_size_sect: int = 0
    uuids: list[int] = field(default_factory=lambda: [UUID_JUST_CREATED, 0, 0, 0])
    device_uuid: int = 0
    reserved_u64: int = 0
    flags: int = MDF.AL_CLEAN
    magic: int = MD_MAGIC_08
    md_size_sect: int = 0
    al_offset: int = 0
    al_nr_extents: int = 257
    bm_offset: int = 0
    bm_bytes_per_bit: int = BM_BYTES_PER_BIT
    la_peer_max_bio_size: int = 0
    al_stripes: int = 1
    al_stripe_size_4k: int = 8
    reserved_u32: int = 0
    nonzero_padding_at: int | None = None   # first non-zero byte in 0x64..0xfff

    @classmethod
    def fresh(cls, layout: MetaLayout, peer_max_bio_size: int = 0) -> "Superblock":
        """What ``drbdmeta create-md`` writes (C=UUID_JUST_CREATED, flags AL_CLEAN)."""
        return cls(md_size_sect=layout.md_size_sect, al_offset=layout.al_offset_sect,
                   bm_offset=layout.bm_offset_sect, al_stripes=layout.al_stripes,
                   al_stripe_size_4k=layout.al_stripe_size_4k,
                   la_peer_max_bio_size=peer_max_bio_size)

    @classmethod
    def unpack(cls, buf: bytes) -> "Superblock":
        if len(buf) < SB_SIZE:
            raise SuperblockError(f"superblock needs {SB_SIZE} bytes, got {len(buf)}")
        v = _FMT.unpack_from(buf)
        sb = cls(la_size_sect=v[0], uuids=list(v[1:5]), device_uuid=v[5], reserved_u64=v[6],
                 flags=v[7], magic=v[8], md_size_sect=v[9], al_offset=v[10],
                 al_nr_extents=v[11], bm_offset=v[12], bm_bytes_per_bit=v[13],
                 la_peer_max_bio_size=v[14], al_stripes=v[15], al_stripe_size_4k=v[16],
                 reserved_u32=v[17])
        pad = bytes(buf[_FMT.size:SB_SIZE])
        stripped = pad.lstrip(b"\0")
        if stripped:
            sb.nonzero_padding_at = SB_SIZE - len(stripped)
        if sb.al_stripes == 0 and sb.al_stripe_size_4k == 0:
            sb.al_stripes, sb.al_stripe_size_4k = 1, 8   # pre-8.4 superblock: fixed 32 KiB AL
        return sb

    def pack(self) -> bytes:
        head = _FMT.pack(self.la_size_sect, *self.uuids, self.device_uuid, self.reserved_u64,
                         self.flags, self.magic, self.md_size_sect, self.al_offset,
                         self.al_nr_extents, self.bm_offset, self.bm_bytes_per_bit,
                         self.la_peer_max_bio_size, self.al_stripes, self.al_stripe_size_4k,
                         self.reserved_u32)
        return head + bytes(SB_SIZE - len(head))

    # -- convenience -------------------------------------------------------
    @property
    def current_uuid(self) -> int:
        return self.uuids[0]

    @property
    def bitmap_uuid(self) -> int:
        return self.uuids[1]

    def has(self, flag: int) -> bool:
        return bool(self.flags & flag)

    def set_flag(self, flag: int, on: bool = True) -> None:
        self.flags = (self.flags | flag) if on else (self.flags & ~flag)

    @property
    def is_clean(self) -> bool:
        """drbdmeta's ``al_is_clean``: magic not 84_UNCLEAN and AL_CLEAN set."""
        return self.magic != MD_MAGIC_84_UNCLEAN and bool(self.flags & MDF.AL_CLEAN)


def check_magic(sb: Superblock) -> None:
    """Raise SuperblockError unless the magic is v08 (clean or 8.4-unclean)."""
    if sb.magic in (MD_MAGIC_08, MD_MAGIC_84_UNCLEAN):
        return
    if sb.magic == MD_MAGIC_07:
        raise SuperblockError("Found old (0.7) meta data magic. Did you \"drbdadm create-md\"?")
    if sb.magic == MD_MAGIC_09:
        raise SuperblockError("Found v09 meta data magic; udrbd reads and writes v08 only")
    raise SuperblockError("Meta data magic not found. Did you \"drbdadm create-md\"? "
                          f"(found 0x{sb.magic:08x})")


def validate(sb: Superblock, layout: MetaLayout, strict: bool = True) -> None:
    """Raise SuperblockError naming the first field that cannot be right.

    ``layout`` is the layout computed for the device with the superblock's own
    AL stripe settings (see ``meta.layout.compute_layout``).  The non-strict
    checks are the ones drbdmeta and the kernel make (magic, geometry, offsets);
    ``strict`` adds the plausibility checks that catch damaged bytes elsewhere
    (``check_plausible``).
    """
    check_magic(sb)
    if sb.bm_bytes_per_bit != BM_BYTES_PER_BIT:
        raise SuperblockError(f"unexpected bm_bytes_per_bit: {sb.bm_bytes_per_bit} "
                              f"(expected {BM_BYTES_PER_BIT})")
    if (sb.al_stripes, sb.al_stripe_size_4k) != (layout.al_stripes, layout.al_stripe_size_4k):
        raise SuperblockError(f"activity log geometry al_stripes={sb.al_stripes} "
                              f"al_stripe_size_4k={sb.al_stripe_size_4k} does not match "
                              f"the layout ({layout.al_stripes}/{layout.al_stripe_size_4k})")
    offsets = (sb.al_offset, sb.bm_offset)
    expected = (layout.al_offset_sect, layout.bm_offset_sect)
    if offsets != expected or (layout.index != FLEX_EXTERNAL and
                               sb.md_size_sect != layout.md_size_sect):
        raise SuperblockError(
            "meta data offsets don't make sense: "
            f"idx={layout.index} al_s={sb.al_stripes}, al_sz4k={sb.al_stripe_size_4k}, "
            f"al_offset={sb.al_offset}, bm_offset={sb.bm_offset}, "
            f"md_size_sect={sb.md_size_sect}, la_size={sb.la_size_sect} "
            f"(expected al_offset={layout.al_offset_sect}, bm_offset={layout.bm_offset_sect}, "
            f"md_size_sect={layout.md_size_sect})")
    if layout.index == FLEX_EXTERNAL:
        dev_sect = layout.md_dev_bytes // SECTOR
        need = SB_SECT + sb.al_stripes * sb.al_stripe_size_4k * 8 + \
            bm_bytes_for_sectors(sb.la_size_sect) // SECTOR
        if not need <= sb.md_size_sect <= dev_sect:
            raise SuperblockError(f"meta data offsets don't make sense: md_size_sect="
                                  f"{sb.md_size_sect} (meta device has {dev_sect} sectors, "
                                  f"at least {need} needed)")
    if strict:
        check_plausible(sb)


def check_plausible(sb: Superblock) -> None:
    """Fields with a known range, and bytes that must be zero."""
    if not AL_EXTENTS_MIN <= sb.al_nr_extents <= AL_EXTENTS_MAX:
        raise SuperblockError(f"al_nr_extents {sb.al_nr_extents} out of range "
                              f"{AL_EXTENTS_MIN}..{AL_EXTENTS_MAX}")
    if sb.flags & ~KNOWN_FLAGS:
        raise SuperblockError(f"flags 0x{sb.flags:08x} has unknown bits "
                              f"0x{sb.flags & ~KNOWN_FLAGS:08x} set")
    if sb.la_peer_max_bio_size > MAX_BIO_SIZE or sb.la_peer_max_bio_size % SECTOR:
        raise SuperblockError(f"la_peer_max_bio_size {sb.la_peer_max_bio_size} is not a "
                              f"multiple of {SECTOR} up to {MAX_BIO_SIZE}")
    if sb.reserved_u64 or sb.reserved_u32:
        raise SuperblockError("reserved superblock fields are not zero "
                              f"(0x30: 0x{sb.reserved_u64:016x}, 0x60: 0x{sb.reserved_u32:08x})")
    if sb.nonzero_padding_at is not None:
        raise SuperblockError("superblock padding is not zero "
                              f"(first non-zero byte at offset 0x{sb.nonzero_padding_at:03x})")


def check_la_size(sb: Superblock, max_data_sect: int) -> None:
    """Raise if the last agreed size exceeds what the device can hold."""
    if sb.la_size_sect > max_data_sect:
        raise SuperblockError(f"la_size_sect {sb.la_size_sect} exceeds the usable size of "
                              f"{max_data_sect} sectors (device shrunk, or superblock damaged)")

