"""The DRBD 8.4 activity log: 4096-byte transactions in an on-disk ring.

Layout of one transaction (big-endian)::

    0 magic  4 tr_number  8 crc32c  12 type  14 n_updates  16 context_size
    18 context_start_slot_nr  20 reserved[4]  36 update_slot_nr[64] (u16)
    164 update_extent_nr[64] (u32)  420 context[919] (u32)

The crc is the raw Castagnoli CRC (reflected 0x82F63B78, init 0, no final
xor) over the 4096 bytes with the crc field zeroed.

``replay`` is drbdmeta's ``replay_al_84``; ``ActivityLog`` is the writer the
daemon uses (the kernel's ``__al_write_transaction`` with an LRU of
``al-extents`` slots).
"""
from __future__ import annotations

import errno
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Protocol

import crcmod

AL_MAGIC = 0x69CB65A2
AL_TR_UPDATE = 0
AL_TR_INITIALIZED = 0xFFFF
AL_UPDATES_PER_TRANSACTION = 64
AL_CONTEXT_PER_TRANSACTION = 919
AL_EXTENTS_MAX = 65534
LC_FREE = 0xFFFFFFFF
BLOCK = 4096

_HDR = struct.Struct(">IIIHHHH16x")
_SLOTS = struct.Struct(">64H")
_EXTS = struct.Struct(">64I")
_CTX = struct.Struct(">919I")
_OFF_SLOTS, _OFF_EXTS, _OFF_CTX = 36, 164, 420
assert _OFF_CTX + _CTX.size == BLOCK

crc32c: Callable[[bytes], int] = crcmod.mkCrcFun(0x11EDC6F41, initCrc=0, xorOut=0, rev=True)


class ALBlockError(ValueError):
    """A transaction block failed validation (bad magic or crc)."""


class ActivityLogError(RuntimeError):
    """The activity log cannot take this request."""


class ActivityLogBusy(ActivityLogError):
    """Every slot is pinned by in-flight I/O; retry after ``end_io``."""


@dataclass
class ALTransaction:
    """One decoded (or to-be-encoded) transaction."""

    tr_number: int = 0
    tr_type: int = AL_TR_UPDATE
    context_size: int = 0
    context_start: int = 0
    update_slots: list[int] = field(default_factory=list)     # raw, up to 64
    update_extents: list[int] = field(default_factory=list)   # raw, up to 64
    n_updates: int = 0
    context: list[int] = field(default_factory=list)          # up to 919
    crc: int = 0

    @property
    def updates(self) -> list[tuple[int, int]]:
        """(slot, extent) pairs that replay applies, in order."""
        return [(s, e) for i, (s, e) in enumerate(zip(self.update_slots, self.update_extents))
                if not (i >= self.n_updates and s == 0xFFFF)]

    def encode(self) -> bytes:
        """The 4096-byte block, crc included."""
        slots = list(self.update_slots) + [0xFFFF] * (64 - len(self.update_slots))
        exts = list(self.update_extents) + [LC_FREE] * (64 - len(self.update_extents))
        ctx = list(self.context) + [LC_FREE] * (AL_CONTEXT_PER_TRANSACTION - len(self.context))
        buf = bytearray(BLOCK)
        _HDR.pack_into(buf, 0, AL_MAGIC, self.tr_number & 0xFFFFFFFF, 0, self.tr_type,
                       self.n_updates, self.context_size, self.context_start)
        if self.tr_type != AL_TR_INITIALIZED:
            _SLOTS.pack_into(buf, _OFF_SLOTS, *slots)
            _EXTS.pack_into(buf, _OFF_EXTS, *exts)
            _CTX.pack_into(buf, _OFF_CTX, *ctx)
        struct.pack_into(">I", buf, 8, crc32c(bytes(buf)))
        return bytes(buf)

    @classmethod
    def decode(cls, block: bytes) -> "ALTransaction":
        """Decode and validate one block; raise ALBlockError if magic or crc is wrong."""
        if len(block) != BLOCK:
            raise ALBlockError(f"block is {len(block)} bytes, not {BLOCK}")
        magic, tr, crc, typ, n_upd, csize, cstart = _HDR.unpack_from(block)
        if magic != AL_MAGIC:
            raise ALBlockError(f"bad magic 0x{magic:08x} (expected 0x{AL_MAGIC:08x})")
        computed = crc32c(block[:8] + b"\0\0\0\0" + block[12:])
        if computed != crc:
            raise ALBlockError(f"bad crc32c: stored 0x{crc:08x}, computed 0x{computed:08x}")
        return cls(tr, typ, csize, cstart, list(_SLOTS.unpack_from(block, _OFF_SLOTS)),
                   list(_EXTS.unpack_from(block, _OFF_EXTS)), n_upd,
                   list(_CTX.unpack_from(block, _OFF_CTX)), crc)


def initialized_block() -> bytes:
    """What create-md/apply-al write to every AL block (crc 0x709cc651)."""
    return ALTransaction(tr_type=AL_TR_INITIALIZED).encode()


def block_of(tr_index: int, stripes: int, stripe_size_4k: int) -> int:
    """On-disk 4K block of the ``tr_index``-th transaction (striped ring)."""
    mx = stripes * stripe_size_4k
    t = tr_index % mx
    return (t % stripes) * stripe_size_4k + t // stripes


@dataclass
class ReplayResult:
    """Outcome of ``replay``; ``status`` follows drbdmeta's replay_al_84."""

    status: int                      # >0 valid update transactions, 0 clean, -errno
    hot: dict[int, int]              # slot -> extent, LC_FREE removed
    warnings: list[str]
    corrupt_blocks: list[int]
    newest_tr: int | None = None

    @property
    def extents(self) -> list[int]:
        return sorted(set(self.hot.values()))


def _s32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


def replay(al: bytes, stripes: int, stripe_size_4k: int) -> ReplayResult:
    """Reconstruct the hot extents from the whole AL area (``stripes*size`` blocks).

    Corrupt blocks (bad magic/crc) are never applied; each gets a warning
    naming its block.  Oldest..newest is decided by signed 32-bit tr_number
    difference; context then updates are applied in that order.
    """
    mx = stripes * stripe_size_4k
    if len(al) < mx * BLOCK:
        raise ValueError(f"activity log area is {len(al)} bytes, needs {mx * BLOCK}")
    trs: list[ALTransaction | None] = [None] * mx
    warnings: list[str] = []
    corrupt: list[int] = []
    valid = updates = 0
    oldest = newest = (0, 0)        # (index in ring order, tr_number)
    for b in range(mx):
        o = block_of(b, stripes, stripe_size_4k)
        try:
            tr = ALTransaction.decode(al[o * BLOCK:(o + 1) * BLOCK])
        except ALBlockError as e:
            corrupt.append(o)
            warnings.append(f"activity log block {o} is corrupt ({e}); not applied")
            continue
        valid += 1
        trs[b] = tr
        if tr.tr_type == AL_TR_INITIALIZED:
            continue
        updates += 1
        if updates == 1:
            oldest = newest = (b, tr.tr_number)
            continue
        if _s32(tr.tr_number - oldest[1]) < 0:
            oldest = (b, tr.tr_number)
        if _s32(tr.tr_number - newest[1]) > 0:
            newest = (b, tr.tr_number)
    if not valid:
        warnings.append("No usable activity log found. Do you need to create-md?")
        return ReplayResult(-errno.ENODATA, {}, warnings, corrupt)
    if valid != mx:
        warnings.append(f"{mx - valid} corrupt AL transactions found")
    if not updates:
        if valid == mx or (trs[0] is None and valid == mx - 1):
            return ReplayResult(0, {}, warnings, corrupt)
        warnings.append("No valid AL update transaction found.")
        return ReplayResult(-errno.EINVAL, {}, warnings, corrupt)
    hot: dict[int, int] = {}
    last = newest[0] + (mx if newest[0] < oldest[0] else 0)
    for b in range(oldest[0], last + 1):
        tr = trs[b % mx]
        if tr is None or tr.tr_type == AL_TR_INITIALIZED:
            continue
        for i, ext in enumerate(tr.context):
            slot = tr.context_start + i
            if ext == LC_FREE and slot >= tr.context_size:
                continue
            if slot >= AL_EXTENTS_MAX:
                warnings.append(f"slot number out of range: tr:{b % mx} slot:{slot}")
                continue
            hot[slot] = ext
        for slot, ext in tr.updates:
            if slot >= AL_EXTENTS_MAX:
                warnings.append(f"update slot number out of range: tr:{b % mx} slot:{slot}")
                continue
            hot[slot] = ext
    hot = {s: e for s, e in hot.items() if e != LC_FREE}
    return ReplayResult(updates, hot, warnings, corrupt, newest[1])


class _Device(Protocol):
    def pread(self, length: int, offset: int) -> bytes: ...
    def pwrite(self, data: bytes, offset: int) -> None: ...
    def fdatasync(self) -> None: ...


def initialize(dev: _Device, al_offset: int, stripes: int, stripe_size_4k: int,
               sync: bool = True) -> None:
    """Write an INITIALIZED transaction into every block of the ring."""
    dev.pwrite(initialized_block() * (stripes * stripe_size_4k), al_offset)
    if sync:
        dev.fdatasync()


class ActivityLog:
    """The writer side: ``nr_extents`` hot slots, least recently used evicted first.

    Before data is written into a 4 MiB extent, ``begin_io(first, last)`` makes
    sure every extent of the range is in the log, committing a transaction (and
    fdatasync) when one was missing.  ``end_io`` releases the range; only
    extents without in-flight I/O may be evicted.  ``before_evict(extents)`` is
    called before a transaction that evicts extents, so their bitmap pages can
    be written out first (the kernel's ``drbd_bm_write_hinted``).
    """

    def __init__(self, dev: _Device, al_offset: int, stripes: int = 1,
                 stripe_size_4k: int = 8, nr_extents: int = 257, start_tr: int = 0,
                 before_evict: Callable[[list[int]], None] | None = None):
        if not 1 <= nr_extents <= AL_EXTENTS_MAX:
            raise ActivityLogError(f"al-extents {nr_extents} out of range 1..{AL_EXTENTS_MAX}")
        self.dev = dev
        self.al_offset = al_offset
        self.stripes, self.stripe_size_4k = stripes, stripe_size_4k
        self.nr_extents = nr_extents
        self.tr_number = start_tr & 0xFFFFFFFF
        self.tr_cycle = 0
        self.before_evict = before_evict
        self.transactions = 0                      # written by this object
        self._slots = [LC_FREE] * nr_extents       # slot -> committed extent
        self._index: dict[int, int] = {}           # extent -> slot
        self._refs = [0] * nr_extents
        self._lru: OrderedDict[int, None] = OrderedDict()   # used slots, oldest first
        self._free = list(range(nr_extents))       # pop() -> highest slot first, like lc_reset
        self._lock = threading.Lock()

    @classmethod
    def resume(cls, dev: _Device, al_offset: int, stripes: int, stripe_size_4k: int,
               nr_extents: int, **kw: object) -> "ActivityLog":
        """A writer whose transaction numbers continue after the newest one on disk."""
        al = dev.pread(stripes * stripe_size_4k * BLOCK, al_offset)
        res = replay(al, stripes, stripe_size_4k)
        start = 0 if res.newest_tr is None else res.newest_tr + 1
        return cls(dev, al_offset, stripes, stripe_size_4k, nr_extents, start, **kw)  # type: ignore[arg-type]

    # -- queries ---------------------------------------------------------------------
    def is_hot(self, extent: int) -> bool:
        return extent in self._index

    def needs_transaction(self, first: int, last: int) -> bool:
        """True if some extent of [first..last] is not in the log yet."""
        index = self._index
        return any(e not in index for e in range(first, last + 1))

    def hot_extents(self) -> list[int]:
        with self._lock:
            return sorted(self._index)

    # -- the write path ----------------------------------------------------------------
    def begin_io(self, first: int, last: int) -> int:
        """Pin extents [first..last]; return the number of transactions written (0 if hot)."""
        n = last - first + 1
        if n < 1:
            raise ValueError("empty extent range")
        if n > self.nr_extents:
            raise ActivityLogError(f"I/O spans {n} extents, the activity log has only "
                                   f"{self.nr_extents} slots")
        with self._lock:
            written = 0
            missing = [e for e in range(first, last + 1) if e not in self._index]
            if missing:
                changes = self._choose_slots(missing, first, last)
                for i in range(0, len(changes), AL_UPDATES_PER_TRANSACTION):
                    self._commit(changes[i:i + AL_UPDATES_PER_TRANSACTION])
                    written += 1
            for e in range(first, last + 1):
                slot = self._index[e]
                self._refs[slot] += 1
                self._lru.move_to_end(slot)
            return written

    def end_io(self, first: int, last: int) -> None:
        """Release extents pinned by ``begin_io``."""
        with self._lock:
            for e in range(first, last + 1):
                slot = self._index.get(e)
                if slot is None or self._refs[slot] == 0:
                    raise ActivityLogError(f"end_io for extent {e} without begin_io")
                self._refs[slot] -= 1

    def _choose_slots(self, missing: list[int], first: int, last: int) -> list[tuple[int, int, int]]:
        changes: list[tuple[int, int, int]] = []     # (slot, old extent, new extent)
        taken: set[int] = set()
        victims = iter([s for s in self._lru if self._refs[s] == 0
                        and not first <= self._slots[s] <= last])
        for e in missing:
            if self._free:
                slot = self._free.pop()
            else:
                slot = next((s for s in victims if s not in taken), None)
                if slot is None:
                    raise ActivityLogBusy(f"all {self.nr_extents} activity log slots are in use "
                                          "by in-flight I/O")
            taken.add(slot)
            changes.append((slot, self._slots[slot], e))
        return changes

    @property
    def lock(self) -> threading.Lock:
        """Held by every transaction; hold it around ``write_ring_at``."""
        return self._lock

    def write_ring_at(self, al_offset: int) -> None:
        """Move the log to ``al_offset`` (the metadata moved): fill the whole new ring with
        transactions that carry the current hot set and no updates, as 8.4's
        ``drbd_al_initialize``; replay there finds exactly what is hot now. The caller
        holds ``lock`` (no transaction runs meanwhile) and syncs the device after."""
        self.al_offset = al_offset
        for _ in range(self.stripes * self.stripe_size_4k):
            self._write_transaction([])

    def _write_transaction(self, changes: list[tuple[int, int, int]]) -> None:
        """Write the next transaction block (without syncing): ``changes`` plus the next
        slice of the context."""
        end = min(self.tr_cycle + AL_CONTEXT_PER_TRANSACTION, self.nr_extents)
        tr = ALTransaction(self.tr_number, AL_TR_UPDATE, self.nr_extents, self.tr_cycle,
                           [s for s, _, _ in changes], [e for _, _, e in changes], len(changes),
                           self._slots[self.tr_cycle:end])
        block = block_of(self.tr_number, self.stripes, self.stripe_size_4k)
        self.dev.pwrite(tr.encode(), self.al_offset + block * BLOCK)
        self.tr_number = (self.tr_number + 1) & 0xFFFFFFFF
        self.transactions += 1
        self.tr_cycle += AL_CONTEXT_PER_TRANSACTION
        if self.tr_cycle >= self.nr_extents:
            self.tr_cycle = 0

    def _commit(self, changes: list[tuple[int, int, int]]) -> None:
        evicted = [old for _, old, _ in changes if old != LC_FREE]
        if evicted and self.before_evict is not None:
            self.before_evict(evicted)
        self._write_transaction(changes)
        self.dev.fdatasync()
        for slot, old, new in changes:
            if old != LC_FREE:
                del self._index[old]
            self._slots[slot] = new
            self._index[new] = slot
            self._lru[slot] = None
