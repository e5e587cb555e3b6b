"""Where DRBD v08 metadata lives on disk, and how much data space is left.

Three placements (DRBD's meta-disk index):

* ``INTERNAL`` (-3, "flexible internal", ``meta-disk internal``)::

      [data ........ | bitmap | activity log | 4 KiB superblock | pad]
                       ^bm      ^al            ^md_offset = (size & ~4095) - 4096

* ``FLEX_EXTERNAL`` (-2, ``meta-disk /dev/X``): the whole meta device is
  ``[superblock 4K][activity log][bitmap ...]``.
* indexed external (``>= 0``, ``meta-disk /dev/X [i]``): the same layout in a
  fixed 128 MiB slot at ``i * 128 MiB``.

The formulas are drbdmeta's ``re_initialize_md_offsets``/``bm_bytes`` and the
kernel's ``drbd_md_set_sector_offsets``/``drbd_get_max_capacity`` (identical
results).  Offsets stored in the superblock are signed sectors relative to it.
"""
from __future__ import annotations

from dataclasses import dataclass

SECTOR = 512
BM_BLOCK_SIZE = 4096                 # bytes of data per bitmap bit
BM_SECT_PER_BIT = BM_BLOCK_SIZE // SECTOR
AL_EXTENT_SHIFT = 22                 # one activity log extent = 4 MiB
AL_EXTENT_SIZE = 1 << AL_EXTENT_SHIFT
BITS_PER_AL_EXTENT = AL_EXTENT_SIZE // BM_BLOCK_SIZE   # 1024

INTERNAL = -3                        # DRBD_MD_INDEX_FLEX_INT
FLEX_EXTERNAL = -2                   # DRBD_MD_INDEX_FLEX_EXT

SB_SECT = 8                          # the superblock occupies 4 KiB
MD_128MB_SECT = 128 << 11            # one indexed external slot
MIN_MD_DEVICE_BYTES = 68 * 1024      # drbdmeta refuses anything smaller ("SO_MUCH")
MAX_FLEX_SECT = 1 << 41              # 1 PiB: drbdmeta's bm_bytes() assertion
DEFAULT_AL_STRIPES = 1
DEFAULT_AL_STRIPE_SIZE_4K = 8
MAX_AL_4K = 32 * 1024 * 1024 // 4096  # drbdmeta's buffer limit for the AL ring


class LayoutError(ValueError):
    """The device cannot hold DRBD metadata in the requested placement."""


def _align(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def bm_bytes_for_sectors(sectors: int, bm_bytes_per_bit: int = BM_BLOCK_SIZE) -> int:
    """On-disk bitmap bytes needed for ``sectors`` of storage (one peer, v08).

    Bits are rounded up to 64-bit words and the byte count to 4 KiB.
    """
    spb = bm_bytes_per_bit // SECTOR
    bits = _align(-(-sectors // spb), 64)
    return _align(bits // 8, 4096)


def bm_bits_for_sectors(sectors: int) -> int:
    """Number of meaningful bitmap bits for ``sectors`` of data (not rounded)."""
    return -(-sectors // BM_SECT_PER_BIT)


def check_al_geometry(al_stripes: int, al_stripe_size_4k: int) -> None:
    """Raise LayoutError for activity log stripe settings drbdmeta would reject."""
    n = al_stripes * al_stripe_size_4k
    if al_stripes < 1 or al_stripe_size_4k < 1 or n < 8:
        raise LayoutError(f"invalid (too small) al-stripe* settings: al_stripes={al_stripes}, "
                          f"al_stripe_size_4k={al_stripe_size_4k}")
    if n > MAX_AL_4K:
        raise LayoutError(f"invalid (too large) al-stripe* settings: al_stripes={al_stripes}, "
                          f"al_stripe_size_4k={al_stripe_size_4k}")


@dataclass(frozen=True)
class MetaLayout:
    """Absolute byte positions and sizes of one metadata area."""

    index: int                 # INTERNAL, FLEX_EXTERNAL or >= 0
    md_dev_bytes: int          # size of the device that holds the metadata
    md_offset: int             # superblock, absolute bytes
    al_offset: int             # activity log, absolute bytes
    bm_offset: int             # bitmap, absolute bytes
    md_size_sect: int          # superblock field md_size_sect
    al_offset_sect: int        # superblock field al_offset (signed, relative)
    bm_offset_sect: int        # superblock field bm_offset (signed, relative)
    al_stripes: int
    al_stripe_size_4k: int
    bm_area_bytes: int         # bytes reserved for the bitmap on disk
    max_data_sect: int         # data sectors the metadata can describe

    @property
    def al_blocks(self) -> int:
        """Number of 4 KiB transaction blocks in the activity log ring."""
        return self.al_stripes * self.al_stripe_size_4k

    @property
    def al_size_bytes(self) -> int:
        return self.al_blocks * 4096

    @property
    def area_start(self) -> int:
        """Lowest byte of the metadata area."""
        return min(self.md_offset, self.al_offset, self.bm_offset)

    @property
    def area_end(self) -> int:
        """One past the highest byte of the metadata area."""
        return self.area_start + self.md_size_sect * SECTOR

    @property
    def is_internal(self) -> bool:
        return self.index == INTERNAL


def compute_layout(md_dev_bytes: int, index: int = INTERNAL,
                   al_stripes: int = DEFAULT_AL_STRIPES,
                   al_stripe_size_4k: int = DEFAULT_AL_STRIPE_SIZE_4K) -> MetaLayout:
    """Layout of v08 metadata on a device of ``md_dev_bytes`` bytes.

    For internal metadata the device is the backing disk itself; for external
    metadata it is the meta device.
    """
    check_al_geometry(al_stripes, al_stripe_size_4k)
    if index < INTERNAL or index == -1:
        raise LayoutError(f"unsupported meta-disk index {index}")
    if md_dev_bytes < MIN_MD_DEVICE_BYTES:
        raise LayoutError(f"device is only {md_dev_bytes} bytes. That's not enough.")
    al_sect = al_stripes * al_stripe_size_4k * 8
    dev_sect = md_dev_bytes // SECTOR

    if index == INTERNAL:
        if dev_sect > MAX_FLEX_SECT:
            raise LayoutError("Bitmap for that device got too large "
                              f"({md_dev_bytes} bytes; at most 1 PiB with flexible meta data)")
        bm_bytes = bm_bytes_for_sectors(dev_sect)
        md_size_sect = bm_bytes // SECTOR + SB_SECT + al_sect
        md_offset = (md_dev_bytes & ~4095) - 4096
        al_rel, bm_rel = -al_sect, -md_size_sect + SB_SECT
        bm_offset = md_offset + bm_rel * SECTOR
        if bm_offset < 0:
            raise LayoutError(f"device is only {md_dev_bytes} bytes, too small for its "
                              f"{md_size_sect * SECTOR} bytes of internal meta data")
        return MetaLayout(index, md_dev_bytes, md_offset, md_offset + al_rel * SECTOR, bm_offset,
                          md_size_sect, al_rel, bm_rel, al_stripes, al_stripe_size_4k,
                          bm_bytes, bm_offset // SECTOR)

    if index == FLEX_EXTERNAL:
        md_offset, md_size_sect = 0, dev_sect
    else:
        md_offset, md_size_sect = index * MD_128MB_SECT * SECTOR, MD_128MB_SECT
        if md_dev_bytes < md_offset + MD_128MB_SECT * SECTOR:
            raise LayoutError(f"meta device is only {md_dev_bytes} bytes; index {index} needs "
                              f"{md_offset + MD_128MB_SECT * SECTOR} bytes "
                              f"(128 MiB per index)")
    al_rel, bm_rel = SB_SECT, SB_SECT + al_sect
    if md_size_sect <= bm_rel:
        raise LayoutError(f"meta device is only {md_dev_bytes} bytes, no room for a bitmap")
    bm_area = (md_size_sect - bm_rel) * SECTOR
    # drbdmeta max_usable_sectors(): whole 64-bit words of bitmap, 8 sectors per bit
    max_data = (bm_area * 8 // 64 * 64) * BM_SECT_PER_BIT
    return MetaLayout(index, md_dev_bytes, md_offset, md_offset + al_rel * SECTOR,
                      md_offset + bm_rel * SECTOR, md_size_sect, al_rel, bm_rel,
                      al_stripes, al_stripe_size_4k, bm_area, min(max_data, MAX_FLEX_SECT))


def data_sectors(layout: MetaLayout, backing_bytes: int) -> int:
    """Usable data sectors of a backing device with metadata ``layout``."""
    if layout.index == INTERNAL:
        return layout.max_data_sect
    return min(backing_bytes // SECTOR, layout.max_data_sect)


def usable_data_size(backing_bytes: int, index: int = INTERNAL,
                     md_dev_bytes: int | None = None,
                     al_stripes: int = DEFAULT_AL_STRIPES,
                     al_stripe_size_4k: int = DEFAULT_AL_STRIPE_SIZE_4K) -> int:
    """Usable data size in bytes of a backing device (the exported device size).

    ``index`` is ``INTERNAL`` (metadata at the end of the backing device),
    ``FLEX_EXTERNAL`` or an external slot number; for external metadata pass
    the meta device size as ``md_dev_bytes``.  Internal: the data ends where
    the bitmap starts (always a multiple of 4 KiB).  External: the backing
    device size in whole sectors, clipped to what the bitmap can describe.
    """
    if index == INTERNAL:
        return compute_layout(backing_bytes, INTERNAL, al_stripes, al_stripe_size_4k).bm_offset
    if md_dev_bytes is None:
        raise LayoutError("external meta data: the meta device size is needed")
    layout = compute_layout(md_dev_bytes, index, al_stripes, al_stripe_size_4k)
    return data_sectors(layout, backing_bytes) * SECTOR
