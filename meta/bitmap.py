"""The dirty bitmap: one bit per 4 KiB block of data.

On disk DRBD stores the bitmap as little-endian 32-bit (or 64-bit) words, bit
``i`` being bit ``i % 32`` of word ``i // 32``.  In a little-endian word, byte
``k`` holds bits ``8k..8k+7``, so bit ``i`` is bit ``i % 8`` of byte ``i // 8``
of the area: the byte layout is independent of the word size, and this class
works on bytes.  Memory is one bytearray (a 1 TiB device needs 2^28 bits =
32 MiB), and every operation works on whole byte slices or big integers built
with ``int.from_bytes``; nothing loops per block in Python.

The bitmap tracks which 4 KiB pages of itself changed since the last flush, so
``flush`` writes only those.  Bits beyond the device end are always 0.
All public methods are thread safe.
"""
from __future__ import annotations

import mmap
import threading
from typing import Iterator, Protocol

from meta.layout import AL_EXTENT_SIZE, BITS_PER_AL_EXTENT, BM_BLOCK_SIZE

PAGE = 4096
_SCAN_CHUNK = 1 << 16


class _Device(Protocol):
    def pread(self, length: int, offset: int) -> bytes: ...
    def pwrite(self, data: bytes, offset: int) -> None: ...
    def fdatasync(self) -> None: ...


def _popcount(data: bytes | bytearray | memoryview) -> int:
    return int.from_bytes(data, "little").bit_count()


_CHUNK = 1 << 20
_LAZY_MIN = 1 << 20


def _zeroed(size: int) -> bytearray | mmap.mmap:
    """A zero-filled buffer. Large ones are anonymous mappings: pages nobody writes stay
    unallocated, so a mostly clean bitmap of a huge device costs little memory."""
    if size >= _LAZY_MIN:
        return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return bytearray(size)


def _popcount_chunked(buf: bytearray | mmap.mmap) -> int:
    view = memoryview(buf)
    return sum(_popcount(view[i:i + _CHUNK]) for i in range(0, len(view), _CHUNK))


class Bitmap:
    """In-memory bitmap of ``nbits`` bits, stored in whole 4 KiB pages."""

    def __init__(self, nbits: int, data_bytes: int | None = None):
        """``data_bytes`` is the exact data size (default ``nbits * 4096``); it lets
        ``clear_range`` treat a partial last block as fully covered at the end."""
        if nbits < 0:
            raise ValueError("nbits must be >= 0")
        self.nbits = nbits
        self.data_bytes = nbits * BM_BLOCK_SIZE if data_bytes is None else data_bytes
        used = (nbits + 7) // 8
        self._buf = _zeroed(-(-used // PAGE) * PAGE)
        self._count = 0
        self._dirty: set[int] = set()
        self._lock = threading.RLock()

    @classmethod
    def for_size(cls, data_bytes: int) -> "Bitmap":
        """A bitmap covering ``data_bytes`` of data."""
        return cls(-(-data_bytes // BM_BLOCK_SIZE), data_bytes)

    # -- sizes ---------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes of memory (and of on-disk bitmap) this bitmap occupies."""
        return len(self._buf)

    @property
    def npages(self) -> int:
        return len(self._buf) // PAGE

    def count(self) -> int:
        """Number of set bits (kept up to date by every operation)."""
        return self._count

    def recount(self) -> int:
        """Count the set bits from scratch (and resynchronise the cached count)."""
        with self._lock:
            self._count = _popcount_chunked(self._buf)
            return self._count

    # -- core ----------------------------------------------------------------
    def _apply(self, first: int, end: int, value: bool) -> int:
        """Set or clear bits [first, end); return how many changed."""
        first, end = max(first, 0), min(end, self.nbits)
        if first >= end:
            return 0
        buf = self._buf
        fb, fo = divmod(first, 8)
        lb, lo = divmod(end, 8)
        changed = 0
        if fb == lb:
            mask = ((1 << lo) - 1) & ~((1 << fo) - 1)
            changed = self._apply_byte(fb, mask, value)
        else:
            if fo:
                changed += self._apply_byte(fb, 0xFF & ~((1 << fo) - 1), value)
                fb += 1
            if lb > fb:
                ones = _popcount(buf[fb:lb])
                changed += ((lb - fb) * 8 - ones) if value else ones
                buf[fb:lb] = (b"\xff" if value else b"\x00") * (lb - fb)
            if lo:
                changed += self._apply_byte(lb, (1 << lo) - 1, value)
        if changed:
            self._count += changed if value else -changed
            self._dirty.update(range((first >> 3) // PAGE, ((end - 1) >> 3) // PAGE + 1))
        return changed

    def _apply_byte(self, i: int, mask: int, value: bool) -> int:
        old = self._buf[i]
        new = (old | mask) if value else (old & ~mask)
        self._buf[i] = new
        return (old ^ new).bit_count()

    # -- bit operations -----------------------------------------------------------
    def set_bits(self, first: int, count: int = 1) -> int:
        """Set ``count`` bits from ``first``; return the number newly set."""
        with self._lock:
            return self._apply(first, first + count, True)

    def clear_bits(self, first: int, count: int = 1) -> int:
        """Clear ``count`` bits from ``first``; return the number newly cleared."""
        with self._lock:
            return self._apply(first, first + count, False)

    def test(self, bit: int) -> bool:
        if not 0 <= bit < self.nbits:
            return False
        return bool(self._buf[bit >> 3] & (1 << (bit & 7)))

    def count_bits(self, first: int, count: int) -> int:
        """Number of set bits in [first, first+count)."""
        first, end = max(first, 0), min(first + count, self.nbits)
        if first >= end:
            return 0
        with self._lock:
            fb, lb = first >> 3, (end + 7) >> 3
            word = int.from_bytes(self._buf[fb:lb], "little") >> (first & 7)
            return (word & ((1 << (end - first)) - 1)).bit_count()

    # -- byte ranges of data (what the write path uses) ------------------------------
    def set_range(self, byte_offset: int, length: int) -> int:
        """Mark every block touched by the data range out of sync; return newly set bits."""
        if length <= 0:
            return 0
        first = byte_offset // BM_BLOCK_SIZE
        end = (byte_offset + length - 1) // BM_BLOCK_SIZE + 1
        return self.set_bits(first, end - first)

    def clear_range(self, byte_offset: int, length: int) -> int:
        """Mark blocks fully covered by the data range in sync; return newly cleared bits.

        A partial last block of the device counts as covered when the range
        reaches the end of the data.
        """
        if length <= 0:
            return 0
        first = -(-byte_offset // BM_BLOCK_SIZE)
        stop = byte_offset + length
        end = self.nbits if stop >= self.data_bytes else stop // BM_BLOCK_SIZE
        return self.clear_bits(first, end - first)

    def set_all(self) -> int:
        """Set every bit (full sync); return newly set bits."""
        return self.set_bits(0, self.nbits)

    def clear_all(self) -> int:
        return self.clear_bits(0, self.nbits)

    @staticmethod
    def extent_bits(extent: int) -> tuple[int, int]:
        """(first bit, count) of a 4 MiB activity log extent."""
        return extent * BITS_PER_AL_EXTENT, BITS_PER_AL_EXTENT

    @staticmethod
    def extents_of_range(byte_offset: int, length: int) -> tuple[int, int]:
        """First and last AL extent touched by a data range (length >= 1)."""
        return byte_offset // AL_EXTENT_SIZE, (byte_offset + max(length, 1) - 1) // AL_EXTENT_SIZE

    # -- scanning (resync) -------------------------------------------------------------
    def _find(self, start: int, want_set: bool) -> int:
        if start < 0:
            start = 0
        if start >= self.nbits:
            return -1
        with self._lock:
            buf = self._buf
            used = (self.nbits + 7) >> 3
            b = start >> 3
            byte = buf[b] if want_set else buf[b] ^ 0xFF
            byte &= (0xFF << (start & 7)) & 0xFF
            skip = b"\x00" if want_set else b"\xff"
            while not byte:
                b += 1
                if b >= used:
                    return -1
                end = min(used, b + _SCAN_CHUNK)
                chunk = bytes(buf[b:end])
                rest = chunk.lstrip(skip)
                if not rest:
                    b = end - 1
                    continue
                b += len(chunk) - len(rest)
                byte = rest[0] if want_set else rest[0] ^ 0xFF
            pos = (b << 3) + ((byte & -byte).bit_length() - 1)
            return pos if pos < self.nbits else -1

    def find_next_set(self, start: int = 0) -> int:
        """Index of the first set bit >= start, or -1."""
        return self._find(start, True)

    def find_next_zero(self, start: int = 0) -> int:
        """Index of the first clear bit >= start, or -1 (none before the end)."""
        return self._find(start, False)

    def runs(self, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int]]:
        """Yield (first_bit, count) for each run of set bits in [start, end)."""
        end = self.nbits if end is None else min(end, self.nbits)
        pos = start
        while pos < end:
            first = self.find_next_set(pos)
            if first < 0 or first >= end:
                return
            stop = self.find_next_zero(first)
            stop = end if stop < 0 else min(stop, end)
            yield first, stop - first
            pos = stop

    # -- merging (bitmap exchange) -------------------------------------------------------
    def merge_or(self, other: "Bitmap | bytes | bytearray | memoryview") -> int:
        """OR another bitmap (or its raw little-endian bytes) into this one.

        Returns the number of newly set bits.  Input beyond our last bit is ignored.
        """
        data = memoryview(other._buf if isinstance(other, Bitmap) else other).cast("B")
        used = (self.nbits + 7) >> 3
        n = min(len(data), used)
        added = 0
        with self._lock:
            buf = self._buf
            for page_start in range(0, n, PAGE):
                stop = min(page_start + PAGE, n)
                theirs = int.from_bytes(data[page_start:stop], "little")
                if not theirs:
                    continue
                if stop == used and self.nbits & 7:
                    theirs &= (1 << ((stop - page_start - 1) * 8 + (self.nbits & 7))) - 1
                mine = int.from_bytes(buf[page_start:stop], "little")
                new = theirs & ~mine
                if new:
                    added += new.bit_count()
                    buf[page_start:stop] = (mine | theirs).to_bytes(stop - page_start, "little")
                    self._dirty.add(page_start // PAGE)
            self._count += added
        return added

    # -- raw access -----------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """A copy of the whole bitmap as stored on disk."""
        with self._lock:
            return bytes(self._buf)

    def dirty_pages(self) -> list[int]:
        with self._lock:
            return sorted(self._dirty)

    def mark_all_dirty(self) -> None:
        with self._lock:
            self._dirty = set(range(self.npages))

    def _clear_surplus(self) -> None:
        """Zero the bits past ``nbits`` in the buffer (e.g. after loading)."""
        buf, n = self._buf, self.nbits
        b = n >> 3
        if n & 7:
            if buf[b] & ~((1 << (n & 7)) - 1) & 0xFF:
                buf[b] &= (1 << (n & 7)) - 1
                self._dirty.add(b // PAGE)
            b += 1
        if b < len(buf) and memoryview(buf)[b:].tobytes().count(0) != len(buf) - b:
            buf[b:] = bytes(len(buf) - b)
            self._dirty.update(range(b // PAGE, self.npages))

    def resized(self, data_bytes: int, mark: tuple[int, int] | None = None) -> "Bitmap":
        """A copy covering ``data_bytes`` of data (every page dirty, to be written whole);
        the blocks of the byte range ``mark`` (start, end) are set: new storage is out of
        sync until a resync has made both copies equal."""
        new = Bitmap.for_size(data_bytes)
        with self._lock:
            new.merge_or(self._buf)
        if mark is not None:
            new.set_range(mark[0], min(mark[1], data_bytes) - mark[0])
        new.mark_all_dirty()
        return new

    # -- disk I/O -----------------------------------------------------------------------
    @classmethod
    def load(cls, dev: _Device, offset: int, nbits: int,
             data_bytes: int | None = None) -> "Bitmap":
        """Read a bitmap of ``nbits`` bits stored at byte ``offset`` of ``dev``.

        Bits beyond ``nbits`` found set on disk are cleared in memory (and the
        page is marked dirty, so the next flush cleans the disk too).
        """
        bm = cls(nbits, data_bytes)
        for start in range(0, bm.nbytes, _CHUNK):     # only non-zero chunks are stored
            chunk = dev.pread(min(_CHUNK, bm.nbytes - start), offset + start)
            if chunk.count(0) != len(chunk):
                bm._buf[start:start + len(chunk)] = chunk
        bm._clear_surplus()
        bm.recount()
        return bm

    def flush(self, dev: _Device, offset: int, pages: "list[int] | None" = None,
              everything: bool = False, sync: bool = True) -> int:
        """Write dirty pages (or all pages, or the dirty ones among ``pages``) to disk.

        Consecutive pages are written with one pwrite; ``sync`` ends with
        fdatasync.  Returns the number of pages written.  On a write error the
        pages stay dirty.
        """
        with self._lock:
            if everything:
                todo = list(range(self.npages))
            elif pages is None:
                todo = sorted(self._dirty)
            else:
                todo = sorted(p for p in set(pages) if p in self._dirty)
            runs: list[tuple[int, bytes]] = []
            i = 0
            while i < len(todo):
                j = i
                while j + 1 < len(todo) and todo[j + 1] == todo[j] + 1:
                    j += 1
                runs.append((todo[i], bytes(self._buf[todo[i] * PAGE:(todo[j] + 1) * PAGE])))
                i = j + 1
            self._dirty.difference_update(todo)
        try:
            for page, data in runs:
                dev.pwrite(data, offset + page * PAGE)
            if sync and runs:
                dev.fdatasync()
        except BaseException:
            with self._lock:
                self._dirty.update(todo)
            raise
        return len(todo)
