"""Generation UUID changes (replicator.uuids)."""
from replicator import uuids as U


def test_new_current_moves_current_to_bitmap_and_sets_role_bit():
    u = U.new_current([4, 0, 0, 0], primary=True, rand=0xAAAA000000000000)
    assert u == [0xAAAA000000000001, 4, 0, 0]
    u = U.new_current([0x10, 0, 0x20, 0x30], primary=False, rand=0xBBBB000000000001)
    assert u == [0xBBBB000000000000, 0x10, 0x20, 0x30]


def test_clearing_bitmap_rotates_history():
    assert U.set_bitmap([0xC, 0xB, 0x1, 0x2], 0) == [0xC, 0, 0xB, 0x1]
    assert U.set_bitmap([0xC, 0, 0x1, 0x2], 0) == [0xC, 0, 0x1, 0x2]


def test_setting_bitmap_clears_bit0():
    assert U.set_bitmap([0xC, 0, 0, 0], 0xF1) == [0xC, 0xF0, 0, 0]


def test_fmt():
    assert U.fmt([4, 0, 0, 0]) == "0000000000000004:0000000000000000:0000000000000000:0000000000000000"
