"""Online resize's size rule (replicator.resize.new_dev_size, 8.4's drbd_new_dev_size)."""
from replicator.resize import new_dev_size

M = 1 << 20


def test_the_device_is_the_smaller_of_both_offers():
    assert new_dev_size(96 * M, 80 * M, 64 * M, 0) == (80 * M, "")
    assert new_dev_size(96 * M, 128 * M, 64 * M, 0) == (96 * M, "")


def test_without_the_peers_offer_it_stays_at_the_last_agreed_size():
    assert new_dev_size(96 * M, 0, 64 * M, 0) == (64 * M, "")
    assert new_dev_size(48 * M, 0, 64 * M, 0) == (48 * M, "")   # our disk shrank
    assert new_dev_size(96 * M, 0, 0, 0) == (96 * M, "")        # never agreed: ours


def test_a_user_size_caps_it_and_too_big_a_one_is_reported():
    assert new_dev_size(96 * M, 96 * M, 64 * M, 72 * M) == (72 * M, "")
    size, complaint = new_dev_size(96 * M, 80 * M, 64 * M, 100 * M)
    assert size == 80 * M
    assert complaint == f"Requested disk size is too big ({100 * 1024} > {80 * 1024})"
