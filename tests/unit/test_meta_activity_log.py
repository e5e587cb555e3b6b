"""Activity log transactions, replay and the writer (meta.activity_log)."""
import errno
import random
import struct

import pytest

from meta.activity_log import (AL_MAGIC, AL_TR_INITIALIZED, BLOCK, LC_FREE, ActivityLog,
                               ActivityLogBusy, ActivityLogError, ALBlockError, ALTransaction,
                               block_of, crc32c, initialize, initialized_block, replay)
from meta.al07 import DRBD_MAGIC, replay_07


class MemDev:
    def __init__(self, size):
        self.data = bytearray(size)
        self.writes = []
        self.syncs = 0

    def pread(self, length, offset):
        return bytes(self.data[offset:offset + length])

    def pwrite(self, data, offset):
        self.data[offset:offset + len(data)] = data
        self.writes.append((offset, len(data)))

    def fdatasync(self):
        self.syncs += 1


def test_crc32c_is_raw_castagnoli_without_final_xor():
    # init 0 and no final xor: not the standard CRC-32C (0xE3069283 for "123456789")
    assert crc32c(b"123456789") == 0x58E3FA20
    block = initialized_block()
    assert block[:16] == bytes.fromhex("69cb65a2 00000000 709cc651 ffff0000")   # drbdmeta golden
    assert not block[16:].strip(b"\0")
    assert crc32c(block[:8] + bytes(4) + block[12:]) == 0x709CC651


def test_encode_decode_round_trip():
    tr = ALTransaction(tr_number=0xFFFFFFFE, context_size=257, context_start=0,
                       update_slots=[256, 3], update_extents=[10, 77], n_updates=2,
                       context=list(range(257)))
    block = tr.encode()
    assert len(block) == BLOCK
    magic, number, crc, typ, n, csize, cstart = struct.unpack_from(">IIIHHHH", block)
    assert (magic, number, typ, n, csize, cstart) == (AL_MAGIC, 0xFFFFFFFE, 0, 2, 257, 0)
    assert struct.unpack_from(">HH", block, 36) == (256, 3)
    assert struct.unpack_from(">H", block, 36 + 2 * 2)[0] == 0xFFFF          # unused slot
    assert struct.unpack_from(">II", block, 164) == (10, 77)
    assert struct.unpack_from(">I", block, 164 + 4 * 2)[0] == LC_FREE
    assert struct.unpack_from(">I", block, 420 + 4 * 257)[0] == LC_FREE      # context padding
    back = ALTransaction.decode(block)
    assert back.updates == [(256, 10), (3, 77)]
    assert back.context[:257] == list(range(257)) and back.crc == crc


def test_decode_rejects_bad_magic_and_crc():
    block = bytearray(ALTransaction(tr_number=5, context_size=7, context=[1] * 7,
                                    update_slots=[0], update_extents=[1], n_updates=1).encode())
    block[2000] ^= 0x10
    with pytest.raises(ALBlockError, match="bad crc32c"):
        ALTransaction.decode(bytes(block))
    with pytest.raises(ALBlockError, match="bad magic"):
        ALTransaction.decode(bytes(BLOCK))


def test_block_of_stripe_formula():
    assert [block_of(b, 1, 8) for b in range(10)] == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1]
    # ((b % mx) % stripes) * stripe_size + (b % mx) / stripes
    assert [block_of(b, 2, 4) for b in range(8)] == [0, 4, 1, 5, 2, 6, 3, 7]
    assert block_of(2 ** 32 - 1, 1, 8) == (2 ** 32 - 1) % 8


def ring(transactions, mx=8, stripes=1):
    """An AL area with the given transactions at their stripe positions, rest INITIALIZED."""
    area = bytearray(initialized_block() * mx)
    for tr in transactions:
        b = block_of(tr.tr_number, stripes, mx // stripes)
        area[b * BLOCK:(b + 1) * BLOCK] = tr.encode()
    return bytes(area)


def upd(number, updates, size=257, start=0, context=None):
    return ALTransaction(number, 0, size, start, [s for s, _ in updates],
                         [e for _, e in updates], len(updates),
                         context if context is not None else [LC_FREE] * min(919, size - start))


def test_replay_of_a_fresh_log_has_nothing_to_do():
    res = replay(initialized_block() * 8, 1, 8)
    assert res.status == 0 and res.extents == [] and res.warnings == []


def test_replay_reference_example():
    # drbd-reference §6.6: updates {slot0->3, slot1->10}, other blocks INITIALIZED
    res = replay(ring([upd(0, [(0, 3), (1, 10)])]), 1, 8)
    assert res.status == 1 and res.extents == [3, 10]


def test_replay_order_and_tr_number_wrap_around():
    # the ring holds numbers 2^32-3 .. 2^32+4 (wrapped); oldest is 2^32-3 at block 5
    base = 2 ** 32 - 3
    trs = [upd((base + k) & 0xFFFFFFFF, [(0, 100 + k)]) for k in range(8)]
    res = replay(ring(trs), 1, 8)
    assert res.status == 8
    assert res.hot == {0: 107}                       # the newest write to slot 0 wins
    assert res.newest_tr == (base + 7) & 0xFFFFFFFF
    # a later transaction's context overrides older updates
    trs[7] = upd((base + 7) & 0xFFFFFFFF, [], context=[55] + [LC_FREE] * 256)
    assert replay(ring(trs), 1, 8).hot == {0: 55}


def test_replay_context_window_larger_than_one_transaction():
    # 1237 slots: two transactions are needed to carry the whole context
    size = 1237
    first = upd(40, [], size, 0, [1000 + i for i in range(919)])
    second = upd(41, [(5, 7)], size, 919, [5000 + i for i in range(size - 919)])
    res = replay(ring([first, second]), 1, 8)
    assert len(res.hot) == size
    assert res.hot[5] == 7 and res.hot[918] == 1918 and res.hot[919] == 5000
    assert res.hot[1236] == 5000 + 317


def test_corrupt_slot_is_reported_and_not_applied():
    area = bytearray(ring([upd(0, [(0, 3)]), upd(1, [(1, 10)])]))
    area[1 * BLOCK + 200] ^= 0xFF                     # damage the newest transaction
    res = replay(bytes(area), 1, 8)
    assert res.extents == [3]                        # extent 10 is NOT used
    assert res.corrupt_blocks == [1]
    assert any("activity log block 1 is corrupt" in w and "bad crc32c" in w
               for w in res.warnings)
    assert "1 corrupt AL transactions found" in res.warnings


def test_replay_without_any_valid_block():
    res = replay(bytes(8 * BLOCK), 1, 8)
    assert res.status == -errno.ENODATA
    assert "No usable activity log found. Do you need to create-md?" in res.warnings
    area = bytearray(initialized_block() * 8)
    area[3 * BLOCK + 9] ^= 1
    area[5 * BLOCK + 9] ^= 1
    res = replay(bytes(area), 1, 8)
    assert res.status == -errno.EINVAL and "No valid AL update transaction found." in res.warnings
    area = bytearray(initialized_block() * 8)
    area[9] ^= 1                                     # only the first block torn: still clean
    assert replay(bytes(area), 1, 8).status == 0


def test_replay_of_8_3_activity_log():
    def sector(tr, updates):
        pairs = updates + [(LC_FREE, LC_FREE)] * (62 - len(updates))
        x = 0
        for _, e in pairs:
            x ^= e
        flat = [v for p in pairs for v in p]
        return struct.pack(">II124III", DRBD_MAGIC, tr, *flat, x, 0)
    area = sector(7, [(0, 4)]) + sector(8, [(1, 9)]) + bytes(512 * 62)
    res = replay_07(area, 257)
    assert res.status == 2 and res.extents == [4, 9]
    assert replay_07(bytes(32768), 257).status == 0


# -- the writer ------------------------------------------------------------------------------
def new_log(nr=7, stripes=1, size_4k=8, **kw):
    dev = MemDev(stripes * size_4k * BLOCK)
    initialize(dev, 0, stripes, size_4k)
    dev.writes.clear()
    dev.syncs = 0
    return dev, ActivityLog(dev, 0, stripes, size_4k, nr, **kw)


def test_writer_commits_only_for_cold_extents_and_syncs():
    dev, al = new_log()
    assert al.needs_transaction(3, 4)
    assert al.begin_io(3, 4) == 1
    assert dev.writes == [(0, BLOCK)] and dev.syncs == 1
    assert al.is_hot(3) and al.is_hot(4) and not al.is_hot(5)
    assert not al.needs_transaction(3, 4)
    assert al.begin_io(4, 4) == 0 and len(dev.writes) == 1
    al.end_io(3, 4)
    al.end_io(4, 4)
    tr = ALTransaction.decode(dev.pread(BLOCK, 0))
    assert tr.tr_number == 0 and tr.context_size == 7
    assert tr.updates == [(6, 3), (5, 4)]            # free slots from the top, like lc_reset
    assert tr.context == [LC_FREE] * 919             # context is the state before the update
    assert al.begin_io(9, 9) == 1
    assert dev.writes[-1] == (BLOCK, BLOCK)          # transaction 1 -> block 1
    with pytest.raises(ActivityLogError):
        al.end_io(100, 100)


def test_writer_evicts_least_recently_used_unpinned_extent():
    evicted = []
    dev, al = new_log(nr=3, before_evict=evicted.append)
    for e in (1, 2, 3):
        al.begin_io(e, e)
        al.end_io(e, e)
    al.begin_io(1, 1)                                # 1 is now most recent and pinned
    al.begin_io(4, 4)                                # evicts 2 (least recent)
    assert al.hot_extents() == [1, 3, 4] and evicted == [[2]]
    al.begin_io(3, 3)
    with pytest.raises(ActivityLogBusy):
        al.begin_io(5, 5)                            # 1, 3, 4 all pinned
    al.end_io(3, 3)
    al.begin_io(5, 5)
    assert al.hot_extents() == [1, 4, 5]
    with pytest.raises(ActivityLogError, match="spans 4 extents"):
        al.begin_io(10, 13)


def test_more_than_64_new_extents_need_several_transactions():
    dev, al = new_log(nr=200)
    assert al.begin_io(0, 149) == 3                  # 64 + 64 + 22 updates
    res = replay(dev.pread(8 * BLOCK, 0), 1, 8)
    assert res.extents == list(range(150))


@pytest.mark.parametrize("nr,stripes,size_4k", [(7, 1, 8), (257, 1, 8), (1237, 2, 8), (61, 4, 2)])
def test_replay_of_written_log_equals_hot_set(nr, stripes, size_4k):
    rng = random.Random(nr)
    dev, al = new_log(nr, stripes, size_4k, start_tr=2 ** 32 - 20)   # crosses the wrap
    span = nr * 3
    for step in range(400):
        a = rng.randrange(span)
        b = min(a + rng.choice([0, 0, 1, 2]), span - 1)
        al.begin_io(a, b)
        al.end_io(a, b)
        if step % 37 == 0:
            res = replay(dev.pread(stripes * size_4k * BLOCK, 0), stripes, size_4k)
            assert res.extents == al.hot_extents()
    assert al.transactions > stripes * size_4k       # the ring wrapped several times
    res = replay(dev.pread(stripes * size_4k * BLOCK, 0), stripes, size_4k)
    assert res.extents == al.hot_extents()
    assert res.warnings == []


def test_resume_continues_transaction_numbers():
    dev, al = new_log(nr=7)
    for e in range(10):
        al.begin_io(e, e)
        al.end_io(e, e)
    again = ActivityLog.resume(dev, 0, 1, 8, 7)
    assert again.tr_number == al.tr_number
    fresh = MemDev(8 * BLOCK)
    initialize(fresh, 0, 1, 8)
    assert ActivityLog.resume(fresh, 0, 1, 8, 7).tr_number == 0
