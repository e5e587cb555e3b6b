"""The v08 superblock (meta.superblock): bytes, validation, damage detection."""
import pytest

from meta.layout import FLEX_EXTERNAL, compute_layout
from meta.superblock import (MD_MAGIC_07, MD_MAGIC_09, MD_MAGIC_84_UNCLEAN, MDF, Superblock,
                             SuperblockError, check_la_size, validate)

MiB = 1 << 20
LAYOUT = compute_layout(100 * MiB)

# drbd-reference §6.8: fresh v08 create-md on a 100 MiB device (superblock @104853504)
FRESH = bytes.fromhex(
    "0000000000000000" "0000000000000004" "0000000000000000" "0000000000000000"
    "0000000000000000" "0000000000000000" "0000000000000000" "00000080" "8374026b"
    "00000050" "ffffffc0" "00000101" "ffffffb8" "00001000" "00000000" "00000001" "00000008")
# §6.3: a real create-md + set-gi result (flags 0x95)
SET_GI = bytes.fromhex(
    "0000000000000000" "1234567890abcdef" "aaaabbbbccccdddd" "0000000000001111"
    "0000000000002222" "0000000000000000" "0000000000000000" "00000095" "8374026b"
    "00000050" "ffffffc0" "00000101" "ffffffb8" "00001000" "00000000" "00000001" "00000008")


def test_fresh_superblock_is_byte_identical_to_drbdmeta():
    packed = Superblock.fresh(LAYOUT).pack()
    assert len(packed) == 4096
    assert packed[:len(FRESH)] == FRESH and not packed[len(FRESH):].strip(b"\0")


def test_unpack_reference_hexdump():
    sb = Superblock.unpack(SET_GI + bytes(4096 - len(SET_GI)))
    assert sb.uuids == [0x1234567890ABCDEF, 0xAAAABBBBCCCCDDDD, 0x1111, 0x2222]
    assert sb.flags == MDF.CONSISTENT | MDF.CONNECTED_IND | MDF.WAS_UP_TO_DATE | MDF.AL_CLEAN
    assert (sb.md_size_sect, sb.al_offset, sb.bm_offset) == (80, -64, -72)
    assert sb.al_nr_extents == 257 and sb.bm_bytes_per_bit == 4096
    validate(sb, LAYOUT)
    assert sb.pack()[:len(SET_GI)] == SET_GI


def test_legacy_zero_stripes_mean_one_by_eight():
    raw = bytearray(Superblock.fresh(LAYOUT).pack())
    raw[0x58:0x60] = bytes(8)
    sb = Superblock.unpack(bytes(raw))
    assert (sb.al_stripes, sb.al_stripe_size_4k) == (1, 8)


@pytest.mark.parametrize("magic,message", [
    (0, 'Meta data magic not found. Did you "drbdadm create-md"?'),
    (MD_MAGIC_07, "Found old (0.7) meta data magic"),
    (MD_MAGIC_09, "v09"),
])
def test_wrong_magic(magic, message):
    sb = Superblock.fresh(LAYOUT)
    sb.magic = magic
    with pytest.raises(SuperblockError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(sb, LAYOUT)


def test_unclean_magic_is_valid_but_not_clean():
    sb = Superblock.fresh(LAYOUT)
    sb.magic = MD_MAGIC_84_UNCLEAN
    validate(sb, LAYOUT)
    assert not sb.is_clean
    sb.magic, sb.flags = 0x8374026B, 0
    assert not sb.is_clean


def test_bm_bytes_per_bit_and_offsets():
    sb = Superblock.fresh(LAYOUT)
    sb.bm_bytes_per_bit = 8192
    with pytest.raises(SuperblockError, match=r"unexpected bm_bytes_per_bit: 8192 \(expected 4096\)"):
        validate(sb, LAYOUT)
    sb = Superblock.fresh(LAYOUT)
    sb.bm_offset = -80
    with pytest.raises(SuperblockError, match="meta data offsets don't make sense"):
        validate(sb, LAYOUT)
    # the same superblock on a 1 GiB device does not fit its layout
    with pytest.raises(SuperblockError, match="offsets"):
        validate(Superblock.fresh(LAYOUT), compute_layout(1 << 30))


def test_external_md_size_checked_against_device():
    lay = compute_layout(128 * MiB, FLEX_EXTERNAL)
    sb = Superblock.fresh(lay)
    validate(sb, lay)
    sb.md_size_sect = lay.md_size_sect + 1
    with pytest.raises(SuperblockError, match="md_size_sect"):
        validate(sb, lay)


def test_la_size_beyond_device():
    sb = Superblock.fresh(LAYOUT)
    sb.la_size_sect = LAYOUT.max_data_sect
    check_la_size(sb, LAYOUT.max_data_sect)
    sb.la_size_sect += 1
    with pytest.raises(SuperblockError, match="exceeds the usable size"):
        check_la_size(sb, LAYOUT.max_data_sect)


# Fields whose every value (in range) is legal, so some flips there cannot be noticed:
# la_size_sect, the UUIDs and device_uuid (0x00-0x2f), the known flag bits,
# al_nr_extents within 7..65534 and la_peer_max_bio_size (multiples of 512 up to 1 MiB).
FREE_FIELDS = [(0x00, 0x30), (0x38, 0x3C), (0x48, 0x4C), (0x54, 0x58)]


def test_every_flipped_bit_is_detected_where_detectable():
    good = Superblock.fresh(LAYOUT)
    good.flags = MDF.CONSISTENT | MDF.WAS_UP_TO_DATE | MDF.AL_CLEAN
    good.la_peer_max_bio_size = 1 << 20
    base = good.pack()
    missed, tried = [], 0
    for off in list(range(0x64)) + list(range(0x64, 4096, 97)) + [0xFFF]:
        for bit in range(8):
            raw = bytearray(base)
            raw[off] ^= 1 << bit
            tried += 1
            try:
                validate(Superblock.unpack(bytes(raw)), LAYOUT)
            except SuperblockError:
                continue
            missed.append(off)
    assert all(any(a <= off < b for a, b in FREE_FIELDS) for off in missed), missed
    # flags: only the 9 known bits may flip unnoticed
    assert len([o for o in missed if 0x38 <= o < 0x3C]) == 9
    # magic, sizes, offsets, bm_bytes_per_bit, AL geometry, reserved bytes, padding: all caught
    assert len(missed) < tried * 0.45
