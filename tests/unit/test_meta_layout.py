"""Metadata placement and usable size (meta.layout), against drbdmeta's verified table."""
import pytest

from meta.layout import (FLEX_EXTERNAL, INTERNAL, LayoutError, bm_bytes_for_sectors,
                         compute_layout, usable_data_size)
from meta.metadata import Metadata, MetaSpec
from meta.superblock import MD_MAGIC_08, MDF

MiB, GiB = 1 << 20, 1 << 30

# drbd-reference.md §6.2: drbdmeta 9.22 create-md on sparse files, dump-md comments
TABLE = [  # size, md_size_sect, md_offset, bm_offset (absolute)
    (100 * MiB, 80, 104853504, 104816640),
    (1 * GiB, 136, 1073737728, 1073672192),
    (10 * GiB, 712, 10737414144, 10737053696),
    (1000 * GiB, 64072, 1073741819904, 1073709019136),
]


@pytest.mark.parametrize("size,md_size_sect,md_offset,bm_offset", TABLE)
def test_internal_layout_matches_drbdmeta(size, md_size_sect, md_offset, bm_offset):
    lay = compute_layout(size)
    assert lay.md_size_sect == md_size_sect
    assert lay.md_offset == md_offset
    assert lay.bm_offset == bm_offset
    assert lay.al_offset == md_offset - 32768
    assert (lay.al_offset_sect, lay.bm_offset_sect) == (-64, -md_size_sect + 8)
    assert lay.area_end == md_offset + 4096
    assert usable_data_size(size) == bm_offset          # data ends where the bitmap starts


def test_100mib_al_offset_from_reference():
    assert compute_layout(100 * MiB).al_offset == 104820736


def test_odd_sizes_round_like_drbdmeta():
    # superblock in the last whole 4 KiB block; bitmap bits in 64-bit words, bytes in 4 KiB
    size = 100 * MiB + 3000
    lay = compute_layout(size)
    assert lay.md_offset == 100 * MiB - 4096
    assert bm_bytes_for_sectors(size // 512) == 4096
    assert usable_data_size(size) % 4096 == 0


def test_bitmap_bytes_formula():
    assert bm_bytes_for_sectors(0) == 0
    assert bm_bytes_for_sectors(1) == 4096               # one bit, rounded to 64 bits, to 4 KiB
    assert bm_bytes_for_sectors(409512) == 8192          # la-size-sect of the reference dump
    assert bm_bytes_for_sectors(2 ** 31) == 32 * MiB     # 1 TiB -> 2^28 bits


def test_flexible_external_layout():
    lay = compute_layout(128 * MiB, FLEX_EXTERNAL)
    assert (lay.md_offset, lay.al_offset, lay.bm_offset) == (0, 4096, 4096 + 32768)
    assert lay.md_size_sect == 128 * MiB // 512
    assert (lay.al_offset_sect, lay.bm_offset_sect) == (8, 72)
    # every whole 64-bit word of bitmap describes 64 * 4 KiB
    bm_area = 128 * MiB - 36864
    assert lay.max_data_sect == bm_area * 8 // 64 * 64 * 8
    assert usable_data_size(10 * GiB + 512, FLEX_EXTERNAL, 128 * MiB) == 10 * GiB + 512
    assert usable_data_size(10 ** 15, FLEX_EXTERNAL, 128 * MiB) == lay.max_data_sect * 512


def test_indexed_external_layout():
    lay = compute_layout(3 * 128 * MiB, 2)
    assert lay.md_offset == 2 * 128 * MiB
    assert lay.md_size_sect == 262144
    assert (lay.al_offset_sect, lay.bm_offset_sect) == (8, 72)
    # reference: indexed MD max (262144-64-8)*32768 sectors, about 4 TiB
    assert lay.max_data_sect == (262144 - 64 - 8) * 32768
    assert usable_data_size(1 * GiB, 0, 128 * MiB) == 1 * GiB
    with pytest.raises(LayoutError, match="index 2 needs"):
        compute_layout(2 * 128 * MiB, 2)


def test_external_needs_meta_device_size():
    with pytest.raises(LayoutError):
        usable_data_size(GiB, FLEX_EXTERNAL)


def test_too_small_and_bad_geometry():
    with pytest.raises(LayoutError, match="not enough"):
        compute_layout(64 * 1024)
    with pytest.raises(LayoutError, match="too small"):
        compute_layout(GiB, INTERNAL, 1, 4)
    with pytest.raises(LayoutError, match="too large"):
        compute_layout(GiB, INTERNAL, 2, 8192)
    lay = compute_layout(GiB, INTERNAL, 2, 16)             # 128 KiB activity log
    assert lay.al_offset_sect == -256 and lay.al_blocks == 32


@pytest.mark.parametrize("size,md_size_sect,md_offset,bm_offset", TABLE)
def test_create_md_on_sparse_file(tmp_path, size, md_size_sect, md_offset, bm_offset):
    path = tmp_path / "disk.img"
    with open(path, "wb") as f:
        f.truncate(size)
    Metadata.create(str(path)).close()
    with Metadata.open(str(path), MetaSpec()) as md:
        assert md.sb.md_size_sect == md_size_sect
        assert md.layout.md_offset == md_offset
        assert md.layout.bm_offset == bm_offset
        assert md.sb.magic == MD_MAGIC_08 and md.sb.flags == MDF.AL_CLEAN
        assert md.uuids == [4, 0, 0, 0]
        assert md.data_bytes == bm_offset
    with open(path, "rb") as f:
        f.seek(md_offset + 0x3C)
        assert f.read(4) == bytes.fromhex("8374026b")      # MD_MAGIC_08, big-endian


def test_create_md_on_1tib_sparse_file_timing(tmp_path, capsys):
    """Prints how long create-md takes on 1 TiB (no timing assertion: machines differ)."""
    import time
    path = tmp_path / "big.img"
    with open(path, "wb") as f:
        f.truncate(1 << 40)
    t = time.monotonic()
    Metadata.create(str(path)).close()
    elapsed = time.monotonic() - t
    with Metadata.open(str(path)) as md:
        assert md.layout.bm_area_bytes == 32 * MiB
        assert md.load_bitmap().nbytes == 32 * MiB
    with capsys.disabled():
        print(f"\n  create-md on a 1 TiB sparse file: {elapsed:.2f} s")
