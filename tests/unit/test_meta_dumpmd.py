"""dump-md text and its parser (meta.dumpmd)."""
import random

import pytest

from meta.dumpmd import DumpParseError, format_bitmap, format_dump, parse_dump
from meta.layout import compute_layout
from meta.superblock import MDF, Superblock

REFERENCE_BM = """{
   # at 0kB
    48 times 0x0000000000000000;
    16 times 0xFFFFFFFFFFFFFFFF;
   # at 16384kB
    96 times 0x0000000000000000;
   # at 40960kB
    16 times 0xFFFFFFFFFFFFFFFF;
    848 times 0x0000000000000000;
}
"""


def bitmap_with(nbytes, *ranges):
    bits = bytearray(nbytes)
    for first, count in ranges:
        for i in range(first, first + count):
            bits[i >> 3] |= 1 << (i & 7)
    return bytes(bits)


def test_reference_dump_bitmap():
    # drbd-reference §6.8: bits 3072-4095 and 10240-11263 of an 8192-byte bitmap
    text, bits = format_bitmap(bitmap_with(8192, (3072, 1024), (10240, 1024)))
    assert text == REFERENCE_BM
    assert bits == 2048


def test_small_patterns():
    assert format_bitmap(b"") == ("{\n}\n", 0)
    words = bytes.fromhex("0100000000000080") + bytes(4088)   # word 0 = 0x8000000000000001
    text, bits = format_bitmap(words)
    assert text.startswith("{\n   # at 0kB\n    0x8000000000000001; 0x0000000000000000; "
                           "0x0000000000000000; 0x0000000000000000;\n    508 times 0x0000")
    assert bits == 2
    # alternating 32-bit halves never form a run
    text, bits = format_bitmap(bytes.fromhex("ffffffff00000000") * 512)
    assert "times" not in text and text.count("0x00000000FFFFFFFF;") == 512
    assert bits == 512 * 32


def test_full_dump_layout_and_real_flags():
    lay = compute_layout(200 << 20)
    sb = Superblock.fresh(lay)
    sb.uuids = [0xAAAA000011112222, 0xBBBB000011112222, 0xCCCC000011112222, 0xDDDD000011112222]
    sb.flags = MDF.CONSISTENT | MDF.AL_CLEAN
    sb.la_size_sect, sb.device_uuid, sb.la_peer_max_bio_size = 409512, 0x0123456789ABCDEF, 1 << 20
    text, bits = format_dump(sb, lay.md_offset, lay.al_offset, lay.bm_offset,
                             bitmap_with(8192, (3072, 1024), (10240, 1024)), "# header\n\n")
    assert text.startswith('# header\n\nversion "v08";\n\n# md_size_sect 88\n'
                           "# md_offset 209711104\n# al_offset 209678336\n"
                           "# bm_offset 209670144\n\nuuid {\n    0xAAAA000011112222; "
                           "0xBBBB000011112222; 0xCCCC000011112222; 0xDDDD000011112222;\n"
                           "    flags 0x00000081;\n}\n# al-extents 257;\nla-size-sect 409512;\n"
                           "bm-byte-per-bit 4096;\ndevice-uuid 0x0123456789ABCDEF;\n"
                           "la-peer-max-bio-size 1048576;\nal-stripes 1;\nal-stripe-size-4k 8;\n"
                           "# bm-bytes 8192;\nbm {")
    assert text.endswith("}\n# bits-set 2048;\n") and bits == 2048
    d = parse_dump(text)
    assert d.uuids == sb.uuids and d.flags == 0x81 and d.la_size_sect == 409512
    assert d.device_uuid == 0x0123456789ABCDEF and d.la_peer_max_bio_size == 1 << 20
    assert d.bitmap == bitmap_with(8192, (3072, 1024), (10240, 1024))


def test_round_trip_random_bitmaps():
    rng = random.Random(3)
    for _ in range(20):
        n = rng.choice([4096, 8192, 65536])
        data = bytearray(n)
        for _ in range(rng.randrange(0, 30)):
            a = rng.randrange(n)
            b = min(n, a + rng.choice([1, 4, 8, 64, 300, 5000]))
            data[a:b] = bytes([rng.choice([0xFF, rng.randrange(256)])]) * (b - a)
        text, bits = format_bitmap(bytes(data))
        assert bits == int.from_bytes(data, "little").bit_count()
        sb = Superblock.fresh(compute_layout(1 << 30))
        full, _ = format_dump(sb, 0, 0, 0, bytes(data))
        assert parse_dump(full).bitmap == bytes(data)


DRBDMETA_922_FRESH = """# DRBD meta data dump
# 2026-11-25 21:47:42 +0000 [1795643262]
# vm> drbdmeta --force 0 v08 /tmp/mdt/a.img internal dump-md
#

version "v08";

# md_size_sect 80
# md_offset 104853504
# al_offset 104820736
# bm_offset 104816640

uuid {
    0x0000000000000004; 0x0000000000000000; 0x0000000000000000; 0x0000000000000000;
    flags 0x00000000;
}
# al-extents 257;
la-size-sect 0;
bm-byte-per-bit 4096;
device-uuid 0x0000000000000000;
la-peer-max-bio-size 0;
al-stripes 1;
al-stripe-size-4k 8;
# bm-bytes 0;
bm {
}
# bits-set 0;
"""


def test_parses_what_drbdmeta_9_22_writes():
    d = parse_dump(DRBDMETA_922_FRESH)
    assert d.uuids == [4, 0, 0, 0] and d.flags == 0 and d.bitmap == b""
    assert (d.al_stripes, d.al_stripe_size_4k, d.bm_bytes_per_bit) == (1, 8, 4096)


@pytest.mark.parametrize("change,message", [
    (("bm {\n", "bm {\n 0xFFFFFFFFFFFFFFFF; 0x1; "),
     "line 26: invalid hex number (only 8 or 16 hex digits accepted): 0x1 ...\n"
     "Parse error in line 26: repeat count, 16-digit hex number, or closing brace (}) expected"),
    (('version "v08";', 'version "v09";'), "dump is 'v09' you requested 'v08'."),
    (("flags 0x00000000;", "flags 0x0000000000000000;"),
     "Parse error in line 15: an 8-digit hex number expected, not some number"),
    (("la-size-sect 0;", "la-size-sect 0"),
     "Parse error in line 19: semicolon (;) expected, not 'bm-byte-per-bit'"),
    (("# bits-set 0;\n", "garbage\n"),
     "line 27: unknown token: garbage ...\nParse error in line 27: end of file expected"),
    (("bm {\n}", "bm {\n"),
     "Parse error in line 28: repeat count, 16-digit hex number, or closing brace (}) expected"
     ", but end of file encountered"),
    (("bm-byte-per-bit 4096;", "bm-byte-per-bit 1000;"),
     "Invalid value for bm-byte-per-bit: value must be a power-of-two multiple of 4096"),
    (('version "v08";\n', "version \"v08\";\nThis_is_an_unclean_meta_data_dump._Don't_trust\n"),
     "line 7: unknown token: This_is_an_unclean_meta_data_dump ...\n"
     "Parse error in line 7: keyword 'uuid' expected"),
])
def test_parse_errors(change, message):
    # expected texts are what drbdmeta 9.22 verify-dump prints for the same input
    text = DRBDMETA_922_FRESH.replace(*change)
    with pytest.raises(DumpParseError) as e:
        parse_dump(text)
    assert str(e.value).startswith(message)
