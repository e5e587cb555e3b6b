"""The Metadata object the daemon uses (meta.metadata), on files in tmp_path."""
import os

import pytest

from meta.activity_log import BLOCK, initialized_block, replay
from meta.bitmap import Bitmap
from meta.layout import compute_layout, usable_data_size
from meta.metadata import Metadata, MetadataError, MetaSpec, UncleanMetadata, ppsize
from meta.superblock import MD_MAGIC_08, MD_MAGIC_84_UNCLEAN, MDF

MiB = 1 << 20


def make_file(path, size):
    with open(path, "wb") as f:
        f.truncate(size)
    return str(path)


@pytest.fixture
def disk(tmp_path):
    path = make_file(tmp_path / "disk.img", 200 * MiB)
    Metadata.create(path).close()
    return path


def read_at(path, offset, length):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def test_meta_spec_parsing():
    assert MetaSpec.parse("internal") == MetaSpec() and MetaSpec().is_internal
    assert MetaSpec.parse("/dev/sdc1") == MetaSpec("/dev/sdc1", None)
    assert MetaSpec.parse("/dev/sdc1 [3]") == MetaSpec("/dev/sdc1", 3)
    assert MetaSpec.parse("/dev/sdc1[0]").md_index == 0
    assert MetaSpec.parse("/dev/sdc1").md_index == -2 and MetaSpec().md_index == -3
    assert str(MetaSpec("/x", 2)) == "/x [2]"


def test_ppsize_like_drbd_utils():
    assert ppsize(8192) == "8192 KB"
    assert ppsize(12288) == "12 MB"
    assert ppsize(10000) == "10 MB"
    assert ppsize(4 * 1024 * 1024 * 1024) == "4096 GB"


def test_create_writes_superblock_last_and_fresh_state(disk):
    lay = compute_layout(200 * MiB)
    assert read_at(disk, lay.al_offset, BLOCK) == initialized_block()
    assert read_at(disk, lay.al_offset + 7 * BLOCK, BLOCK) == initialized_block()
    with Metadata.open(disk) as md:
        assert md.uuids == [4, 0, 0, 0] and md.flags == MDF.AL_CLEAN
        assert md.data_bytes == usable_data_size(200 * MiB) == lay.bm_offset
        bm = md.load_bitmap()
        assert bm.count() == 0 and bm.nbits == lay.bm_offset // 4096


def test_open_errors_name_the_device(tmp_path):
    with pytest.raises(MetadataError, match=r"'/nonexistent/x': No such file or directory"):
        Metadata.open("/nonexistent/x")
    blank = make_file(tmp_path / "blank.img", 10 * MiB)
    with pytest.raises(MetadataError, match=r"blank.img': Meta data magic not found. "
                                            r"Did you \"drbdadm create-md\"\?"):
        Metadata.open(blank)
    tiny = make_file(tmp_path / "tiny.img", 4096)
    with pytest.raises(MetadataError, match="tiny.img'.*not enough"):
        Metadata.create(tiny)


def test_second_opener_is_refused_while_locked(disk):
    with Metadata.open(disk):
        with pytest.raises(MetadataError, match="in use by another process"):
            Metadata.open(disk)
        Metadata.open(disk, readonly=True, lock=False).close()


def test_flipped_superblock_byte_is_reported_not_used(disk):
    lay = compute_layout(200 * MiB)
    with open(disk, "r+b") as f:
        f.seek(lay.md_offset + 0x200)                # padding must be zero
        f.write(b"\x01")
    with pytest.raises(MetadataError, match="superblock padding is not zero"):
        Metadata.open(disk)
    with open(disk, "r+b") as f:
        f.seek(lay.md_offset + 0x200)
        f.write(b"\x00")
        f.seek(lay.md_offset + 0x50)                 # bm_bytes_per_bit 4096 -> 4097
        f.write(b"\x00\x00\x10\x01")
    with pytest.raises(MetadataError, match="unexpected bm_bytes_per_bit: 4097"):
        Metadata.open(disk)


def test_attach_write_path_crash_and_apply_al(disk):
    md = Metadata.open(disk)
    notes = md.attach(al_extents=61)
    assert notes == []
    assert md.sb.magic == MD_MAGIC_84_UNCLEAN and not md.sb.has(MDF.AL_CLEAN)
    assert md.sb.la_size_sect == md.data_sectors           # standalone first attach
    md.set_flag(MDF.PRIMARY_IND | MDF.CONSISTENT)
    md.write_superblock()
    for off, length in [(0, 4096), (5 * MiB, 4 * MiB), (40 * MiB, 4096)]:
        first, last = Bitmap.extents_of_range(off, length)
        md.al.begin_io(first, last)
        md.al.end_io(first, last)
    md.bitmap.set_range(100 * MiB, 4096)
    md.flush_bitmap()
    assert sorted(md.al.hot_extents()) == [0, 1, 2, 10]
    md.close()                                             # crash: no detach

    again = Metadata.open(disk)
    with pytest.raises(UncleanMetadata, match='Found unclean meta data. Did you "drbdadm apply-al"'):
        again.attach()
    res = again.apply_al()
    assert res.rc == 0
    assert res.messages == ["Marked additional 16 MB as out-of-sync based on AL."]
    assert res.additional_bits == 4 * 1024
    assert again.sb.magic == MD_MAGIC_08 and again.sb.has(MDF.AL_CLEAN)
    assert again.sb.has(MDF.PRIMARY_IND)                   # apply-al must not touch it
    bm = again.load_bitmap()
    assert bm.count() == 4 * 1024 + 1
    assert [r for r in bm.runs()] == [(0, 3072), (10240, 1024), (25600, 1)]
    again.close()
    # the AL is re-initialised: a second apply-al has nothing to do
    with Metadata.open(disk) as md3:
        assert md3.replay_al().status == 0
        assert md3.apply_al().messages == []


def test_apply_al_skips_replay_when_not_primary(disk):
    md = Metadata.open(disk)
    md.attach()
    md.al.begin_io(3, 3)
    md.close()
    with Metadata.open(disk) as md2:
        assert md2.replay_al().extents == [3]
        res = md2.apply_al()
        assert res.rc == 0 and res.messages == []
        assert md2.load_bitmap().count() == 0
        assert md2.sb.is_clean


def test_corrupt_al_slot_is_warned_about_and_not_applied(disk):
    md = Metadata.open(disk)
    md.attach()
    md.set_flag(MDF.PRIMARY_IND)
    md.write_superblock()
    md.al.begin_io(3, 3)
    md.al.begin_io(7, 7)
    al_offset = md.layout.al_offset
    md.close()
    with open(disk, "r+b") as f:                           # damage transaction 1 (extent 7)
        f.seek(al_offset + 1 * BLOCK + 300)
        f.write(b"\xAA")
    with Metadata.open(disk) as md2:
        res = md2.apply_al()
        assert any("activity log block 1 is corrupt" in m and "crc32c" in m
                   for m in res.messages)
        assert "1 corrupt AL transactions found" in res.messages
        assert "Marked additional 4096 KB as out-of-sync based on AL." in res.messages
        assert [r for r in md2.load_bitmap().runs()] == [(3072, 1024)]


def test_detach_is_clean_and_keeps_bitmap(disk):
    md = Metadata.open(disk)
    md.attach()
    md.set_flag(MDF.PRIMARY_IND)
    md.al.begin_io(1, 1)
    md.bitmap.set_range(6 * MiB, 8192)
    md.detach()
    with Metadata.open(disk) as md2:
        assert md2.sb.is_clean and md2.sb.magic == MD_MAGIC_08
        assert replay(md2.read_al(), 1, 8).status == 0        # AL emptied after bitmap flush
        assert list(md2.load_bitmap().runs()) == [(1536, 2)]


def test_full_sync_flag_sets_all_bits_on_attach(disk):
    with Metadata.open(disk) as md:
        md.set_flag(MDF.FULL_SYNC)
        md.write_superblock()
    md = Metadata.open(disk)
    assert md.attach() == ["Assuming that all blocks are out of sync (aka FullSync)"]
    assert md.bitmap.count() == md.bitmap.nbits and not md.sb.has(MDF.FULL_SYNC)
    md.detach()
    with Metadata.open(disk) as md2:
        assert md2.load_bitmap().count() == md2.bitmap.nbits


def test_eviction_flushes_bitmap_pages_first(disk):
    md = Metadata.open(disk)
    md.attach(al_extents=7)
    for e in range(7):
        md.al.begin_io(e, e)
        md.al.end_io(e, e)
    md.bitmap.set_range(0, 4096)                 # extent 0, not yet flushed
    assert md.bitmap.dirty_pages() == [0]
    md.al.begin_io(40, 40)                       # evicts extent 0 -> its page is written first
    assert md.bitmap.dirty_pages() == []
    md.close()


def test_external_flexible_and_indexed(tmp_path):
    data = make_file(tmp_path / "data.img", 300 * MiB)
    meta = make_file(tmp_path / "meta.img", 2 * 128 * MiB)
    md = Metadata.create(data, MetaSpec(meta, None))
    assert md.layout.md_offset == 0 and md.data_bytes == 300 * MiB
    md.close()
    md = Metadata.create(data, MetaSpec(meta, 1))
    assert md.layout.md_offset == 128 * MiB and md.data_bytes == 300 * MiB
    md.close()
    with Metadata.open(data, f"{meta} [1]") as md:
        assert md.sb.al_offset == 8 and md.sb.bm_offset == 72 and md.sb.md_size_sect == 262144
        md.attach()
        md.bitmap.set_range(299 * MiB, MiB)
        md.detach()
    with Metadata.open(data, MetaSpec(meta, 1)) as md:
        assert md.load_bitmap().count() == 256
    with pytest.raises(MetadataError, match="index 2 needs"):
        Metadata.create(data, MetaSpec(meta, 2))
    assert os.path.getsize(data) == 300 * MiB                # data device untouched


def test_relocate_moves_internal_meta_data_to_the_new_end_keeping_bits_and_hot_extents(disk):
    md = Metadata.open(disk)
    md.attach(al_extents=61)
    md.set_flag(MDF.PRIMARY_IND | MDF.CONSISTENT)
    old_layout, old_size = md.layout, md.data_bytes
    for off, length in [(0, 4096), (40 * MiB, 4096)]:
        first, last = Bitmap.extents_of_range(off, length)
        md.al.begin_io(first, last)
        md.al.end_io(first, last)
    md.bitmap.set_range(100 * MiB, 8192)
    os.truncate(disk, 300 * MiB)                           # the admin grew the disk
    layout = md.layout_for_current_size()
    assert layout.md_offset > old_layout.md_offset
    grown = md.bitmap.resized(md.max_data_bytes(layout), mark=(old_size, 1 << 40))
    md.relocate(layout, grown, md.max_data_bytes(layout) // 512)
    md.close()                                             # crash right after: no detach

    again = Metadata.open(disk)                            # found at the new end
    assert again.layout == layout and not again.sb.has(MDF.FULL_SYNC)
    assert again.sb.la_size_sect * 512 == again.data_bytes > old_size
    assert again.replay_al().extents == [0, 10]            # what was hot is hot there
    assert again.apply_al().rc == 0
    bm = again.load_bitmap()
    new_bits = (again.data_bytes - old_size) // 4096
    assert bm.count() == 2 + 1024 * 2 + new_bits           # old bits, AL extents, new area
    assert bm.test(100 * MiB // 4096) and bm.test(old_size // 4096)
    again.close()


def test_relocate_refuses_a_disk_that_shrank_under_its_meta_data(disk):
    with Metadata.open(disk) as md:
        md.attach()
        os.truncate(disk, 150 * MiB)
        layout = md.layout_for_current_size()
        with pytest.raises(MetadataError, match="shrank under its internal meta data"):
            md.relocate(layout, md.bitmap, md.sb.la_size_sect)


def test_a_superblock_image_made_before_a_move_is_written_as_the_moved_one(disk):
    with Metadata.open(disk) as md:
        md.attach()
        moves, stale = md.moves, md.superblock_image()     # the daemon's writer packed it
        os.truncate(disk, 220 * MiB)                       # (offsets and md size unchanged)
        layout = md.layout_for_current_size()
        grown = md.max_data_bytes(layout)
        md.relocate(layout, md.bitmap.resized(grown), grown // 512)
        md.write_superblock_image(stale, moves)            # ... and writes it now
    with Metadata.open(disk) as again:
        assert again.layout == layout and again.sb.la_size_sect == grown // 512


def test_a_crash_while_the_meta_data_moves_means_a_full_sync_not_lost_bits(disk):
    md = Metadata.open(disk)
    md.attach()
    md.set_flag(MDF.PRIMARY_IND | MDF.CONSISTENT)          # a Primary crashes
    os.truncate(disk, 260 * MiB)
    layout = md.layout_for_current_size()

    def crash(_offset):
        raise OSError("power lost")
    md.al.write_ring_at = crash                            # dies after the first superblock
    with pytest.raises(OSError):
        md.relocate(layout, md.bitmap.resized(md.max_data_bytes(layout)), md.sb.la_size_sect)
    md.close()
    again = Metadata.open(disk)
    assert again.layout == layout and again.sb.has(MDF.FULL_SYNC)
    assert again.apply_al().rc == 0
    assert again.attach() == ["Assuming that all blocks are out of sync (aka FullSync)"]
    assert again.bitmap.count() == again.bitmap.nbits
    again.close()
