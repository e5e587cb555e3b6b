"""The in-memory dirty bitmap (meta.bitmap)."""
import random
import struct

import pytest

from meta.bitmap import PAGE, Bitmap


class MemDev:
    """A device in memory that records writes."""

    def __init__(self, size: int):
        self.data = bytearray(size)
        self.writes: list[tuple[int, int]] = []
        self.syncs = 0

    def pread(self, length, offset):
        return bytes(self.data[offset:offset + length])

    def pwrite(self, data, offset):
        self.data[offset:offset + len(data)] = data
        self.writes.append((offset, len(data)))

    def fdatasync(self):
        self.syncs += 1


def model_bits(bm: Bitmap) -> set[int]:
    raw = bm.to_bytes()
    return {i for i in range(bm.nbits) if raw[i >> 3] >> (i & 7) & 1}


def test_bit_i_is_bit_i_mod_32_of_little_endian_word_i_div_32():
    bm = Bitmap(4096)
    for i in (0, 1, 7, 8, 31, 32, 33, 63, 64, 1000, 4095):
        bm.clear_all()
        bm.set_bits(i)
        words = struct.unpack(f"<{bm.nbytes // 4}I", bm.to_bytes())
        assert words[i // 32] == 1 << (i % 32)
        assert sum(1 for w in words if w) == 1
        words64 = struct.unpack(f"<{bm.nbytes // 8}Q", bm.to_bytes())
        assert words64[i // 64] == 1 << (i % 64)


@pytest.mark.parametrize("first,count", [
    (0, 1), (3, 4), (5, 3), (7, 2), (6, 11), (0, 8), (8, 8), (31, 2), (30, 40),
    (PAGE * 8 - 3, 7), (PAGE * 8 - 1, 1), (PAGE * 8, 1), (100, PAGE * 8 * 2 + 13),
])
def test_set_and_clear_across_byte_word_page_boundaries(first, count):
    bm = Bitmap(3 * PAGE * 8 + 77)
    assert bm.set_bits(first, count) == count
    assert model_bits(bm) == set(range(first, first + count))
    assert bm.count() == count == bm.recount()
    assert bm.set_bits(first, count) == 0                 # nothing new
    assert bm.set_bits(first, count + 2) == 2             # only the two new ones count
    assert bm.clear_bits(first, count) == count
    assert bm.count() == 2 == bm.recount()
    assert model_bits(bm) == {first + count, first + count + 1}


def test_random_operations_against_a_set_model():
    rng = random.Random(7)
    nbits = 5 * PAGE * 8 + 13
    bm, model = Bitmap(nbits), set()
    for _ in range(600):
        first = rng.randrange(-5, nbits + 5)
        count = rng.choice([1, 2, 7, 8, 9, 31, 64, 65, rng.randrange(1, 3 * PAGE * 8)])
        span = set(range(max(first, 0), min(first + count, nbits)))
        if rng.random() < 0.6:
            assert bm.set_bits(first, count) == len(span - model)
            model |= span
        else:
            assert bm.clear_bits(first, count) == len(span & model)
            model -= span
        assert bm.count() == len(model)
    assert model_bits(bm) == model
    assert bm.recount() == len(model)
    # runs and scans agree with the model
    runs = list(bm.runs())
    assert sum(c for _, c in runs) == len(model)
    assert {b for f, c in runs for b in range(f, f + c)} == model
    for start in rng.sample(range(nbits), 50):
        above = [b for b in model if b >= start]
        assert bm.find_next_set(start) == (min(above) if above else -1)
        zeros = [b for b in range(start, nbits) if b not in model]
        assert bm.find_next_zero(start) == (zeros[0] if zeros else -1)
        assert bm.count_bits(start, 1000) == len([b for b in model if start <= b < start + 1000])


def test_byte_ranges_of_data():
    bm = Bitmap.for_size(10 * 4096 + 512)        # 11 blocks, the last one partial
    assert bm.nbits == 11
    assert bm.set_range(4095, 2) == 2             # touches blocks 0 and 1
    assert bm.set_range(8192, 1) == 1
    assert model_bits(bm) == {0, 1, 2}
    assert bm.clear_range(100, 8192) == 1         # only block 1 is fully covered
    assert model_bits(bm) == {0, 2}
    bm.set_range(10 * 4096, 512)
    assert bm.test(10)
    assert bm.clear_range(10 * 4096, 512) == 1    # the partial last block is fully covered
    assert bm.set_range(0, 0) == 0 and bm.set_range(11 * 4096, 4096) == 0
    assert Bitmap.extents_of_range(4 << 20, 1) == (1, 1)
    assert Bitmap.extents_of_range((4 << 20) - 1, 2) == (0, 1)
    assert Bitmap.extent_bits(3) == (3072, 1024)


def test_bits_beyond_the_end_stay_zero():
    bm = Bitmap(13)
    assert bm.set_all() == 13
    assert bm.to_bytes()[:2] == b"\xff\x1f" and not bm.to_bytes()[2:].strip(b"\0")
    assert bm.set_bits(10, 100) == 0
    assert bm.find_next_zero(0) == -1
    other = bytes([0xFF]) * 16
    bm2 = Bitmap(13)
    assert bm2.merge_or(other) == 13
    assert bm2.to_bytes() == bm.to_bytes()


def test_merge_or_counts_new_bits_and_marks_pages():
    a, b = Bitmap(4 * PAGE * 8), Bitmap(4 * PAGE * 8)
    a.set_bits(10, 100)
    b.set_bits(50, 100)
    b.set_bits(3 * PAGE * 8 + 5, 3)
    a.flush(MemDev(a.nbytes), 0)                 # clean
    assert a.merge_or(b) == 40 + 3               # 110..149 and the three on page 3
    assert a.count() == 143 == a.recount()
    assert a.dirty_pages() == [0, 3]
    assert a.merge_or(b.to_bytes()) == 0


def test_flush_writes_only_dirty_pages_coalesced_and_load_reads_back():
    dev = MemDev(8 * PAGE + 4096)
    base = 4096
    bm = Bitmap(8 * PAGE * 8)
    bm.set_bits(0)
    bm.set_bits(PAGE * 8 + 3)                   # pages 0 and 1: one write
    bm.set_bits(5 * PAGE * 8 + 1)               # page 5
    assert bm.flush(dev, base) == 3
    assert dev.writes == [(base, 2 * PAGE), (base + 5 * PAGE, PAGE)] and dev.syncs == 1
    assert bm.flush(dev, base) == 0 and bm.dirty_pages() == []
    bm.set_bits(7 * PAGE * 8)
    assert bm.flush(dev, base, pages=[1, 2]) == 0      # page 7 not asked for
    assert bm.flush(dev, base, pages=[7]) == 1
    back = Bitmap.load(dev, base, bm.nbits)
    assert back.to_bytes() == bm.to_bytes() and back.count() == 4
    assert back.dirty_pages() == []


def test_flush_failure_keeps_pages_dirty():
    class Failing(MemDev):
        def pwrite(self, data, offset):
            raise OSError(5, "Input/output error")
    bm = Bitmap(PAGE * 8)
    bm.set_bits(1)
    with pytest.raises(OSError):
        bm.flush(Failing(PAGE), 0)
    assert bm.dirty_pages() == [0]


def test_load_clears_surplus_bits_found_on_disk():
    dev = MemDev(PAGE)
    dev.data[:] = b"\xff" * PAGE                 # e.g. apply-al set a whole extent
    bm = Bitmap.load(dev, 0, 1000)
    assert bm.count() == 1000
    assert bm.dirty_pages() == [0]               # next flush cleans the disk


def test_one_tib_bitmap_is_32_mib_and_fast_enough():
    bm = Bitmap.for_size(1 << 40)
    assert bm.nbits == 1 << 28
    assert bm.nbytes == 32 << 20
    assert bm.set_all() == 1 << 28
    assert bm.count() == bm.recount() == 1 << 28
    assert bm.clear_range(4096 * 1000, 4096 * 5) == 5
    assert list(bm.runs(990, 1010)) == [(990, 10), (1005, 5)]
    assert bm.find_next_zero(0) == 1000
    bm.clear_all()
    bm.set_bits((1 << 28) - 1)
    assert bm.find_next_set(0) == (1 << 28) - 1


def test_resized_copy_keeps_bits_and_marks_only_the_range_asked():
    bm = Bitmap.for_size(64 << 20)
    bm.set_range(4096, 8192)
    bm.set_range((64 << 20) - 4096, 4096)
    grown = bm.resized(96 << 20, mark=(64 << 20, 80 << 20))
    assert grown.nbits == (96 << 20) // 4096
    assert grown.count() == 3 + (16 << 20) // 4096
    assert grown.test((80 << 20) // 4096 - 1) and not grown.test((80 << 20) // 4096)
    assert grown.dirty_pages() == list(range(grown.npages))      # written whole
    assert bm.count() == 3                                         # the original untouched
    assert bm.resized(32 << 20).count() == 2                       # a shrink drops the tail
