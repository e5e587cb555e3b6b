"""The "Resync done" / "Online verify done" summary line (replicator.resync.done_line)."""
from replicator.resync import done_line


def test_rate_leaves_the_paused_time_out_and_total_puts_it_back():
    # 1 GiB = 262144 bits; 10.9 s elapsed of which 4.2 s paused: 6 s active (DRBD truncates)
    assert done_line("Resync", 10.9, 4.2, 262144) == \
        "Resync done (total 10 sec; paused 4 sec; 174760 K/sec)"


def test_bits_per_second_are_truncated_before_turning_into_kib():
    # 8.4's Bit2KB(db/dt): 1000 bits / 3 s = 333 bits/s -> 1332 K/sec (not 1333)
    assert done_line("Resync", 3.2, 0.0, 1000).endswith("; 1332 K/sec)")


def test_a_resync_shorter_than_a_second_counts_as_one():
    assert done_line("Online verify", 0.3, 0.0, 256) == \
        "Online verify done (total 1 sec; paused 0 sec; 1024 K/sec)"
