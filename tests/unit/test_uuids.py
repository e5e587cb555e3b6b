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


# --- resync start / end ---------------------------------------------------------------------
SAMPLE_SOURCE = [0x7622BD9FADB3F245, 0xF41008BDA13DED73, 0x0001000000000000, 0x0001000000000000]
SAMPLE_TARGET = [0xF41008BDA13DED72, 0, 0x0001000000000000, 0x0001000000000000]


def test_uuid_set_rotates_old_value_into_history():
    assert U.uuid_set([0xC, 0xB, 0x1, 0x2], 1, 0xE) == [0xC, 0xE, 0xB, 0x1]
    assert U.uuid_set([0xC, 0, 0x1, 0x2], 1, 0xE) == [0xC, 0xE, 0x1, 0x2]
    assert U.uuid_set([0xC, 0, 0x1, 0x2], 0, 0xE, primary=True) == [0xF, 0, 0xC, 0x1]


def test_gen_sync_uuid_reproduces_the_real_log_sample():
    new, sent = U.gen_sync_uuid(SAMPLE_SOURCE)
    assert U.fmt(new) == "7622BD9FADB3F245:F41108BDA13DED73:F41008BDA13DED73:0001000000000000"
    assert sent == 0xF41108BDA13DED73


def test_gen_sync_uuid_is_random_when_bitmap_uuid_is_empty_or_just_created():
    for b in (0, U.UUID_JUST_CREATED):
        new, sent = U.gen_sync_uuid([0xC0, b, 0x10, 0x20], rand=0xAB00)
        assert sent == 0xAB00
        assert new == ([0xC0, 0xAB00, 0x10, 0x20] if b == 0 else [0xC0, 0xAB00, 4, 0x10])


def test_gen_sync_uuid_wraps_at_64_bits():
    _, sent = U.gen_sync_uuid([0xC0, 0xFFFF000000000010, 0, 0])
    assert sent == 0x10


def test_receive_sync_uuid_sets_current_and_clears_bitmap_without_rotation():
    t = U.receive_sync_uuid(SAMPLE_TARGET, 0xF41108BDA13DED73, primary=False)
    assert t == [0xF41108BDA13DED72, 0, 0x0001000000000000, 0x0001000000000000]
    assert U.receive_sync_uuid(SAMPLE_TARGET, 0xF0, primary=True)[0] == 0xF1


def test_resync_finished_leaves_both_sides_with_the_same_generations():
    source, sent = U.gen_sync_uuid(SAMPLE_SOURCE)
    target = U.receive_sync_uuid(SAMPLE_TARGET, sent, primary=False)
    target = U.resync_finished_target(target, SAMPLE_SOURCE, primary=False)
    source = U.resync_finished_source(source)
    assert U.fmt(source) == "7622BD9FADB3F245:0000000000000000:F41108BDA13DED73:F41008BDA13DED73"
    assert U.fmt(target) == "7622BD9FADB3F244:0000000000000000:F41108BDA13DED72:F41008BDA13DED73"
    assert [u & ~1 for u in source] == [u & ~1 for u in target]


def test_resync_finished_after_initial_full_sync():
    source = [0xAA01, 4, 0, 0]                    # primary --force on a just-created disk
    source2, sent = U.gen_sync_uuid(source, rand=0xBB00)
    assert source2 == [0xAA01, 0xBB00, 4, 0]
    target = U.resync_finished_target(U.receive_sync_uuid([4, 0, 0, 0], sent, False), source, False)
    assert target == [0xAA00, 0, 0xBB00, 4]
    assert U.resync_finished_source(source2) == [0xAA01, 0, 0xBB00, 4]
