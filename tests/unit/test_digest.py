"""csums-alg / verify-alg digests (replicator.resync.digest): hashlib's and the kernel's
crc32c and crc32, which DRBD setups often name."""
from replicator.resync import digest, known_digest


def test_digests_of_the_algorithms_drbd_users_configure():
    data = b"123456789"                                  # the CRCs' check value input
    assert digest("crc32c", data) == (0xE3069283).to_bytes(4, "little")
    assert digest("crc32", data) == (0xCBF43926).to_bytes(4, "little")
    assert digest("crc32c", memoryview(data)) == digest("crc32c", data)
    assert digest("sha1", data).hex() == "f7c3bc1d808e04732adf679965ccc34ca7ae3441"
    assert digest("md5", data).hex() == "25f9e794323b453885f5181f1b624d0b"


def test_unknown_algorithms_are_told_apart():
    assert known_digest("crc32c") and known_digest("sha256") and known_digest("")
    assert not known_digest("nosuch") and not known_digest("shake_128")
