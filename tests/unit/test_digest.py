"""csums-alg / verify-alg digests (replicator.resync.digest): hashlib's and the kernel's
crc32c and crc32, which DRBD setups often name."""
import hashlib
import zlib

import crc32c

from replicator.resync import digest, known_digest


def test_digests_of_the_algorithms_drbd_users_configure():
    data = b"\x5a" * 4096
    assert digest("sha1", data) == hashlib.sha1(data).digest()
    assert digest("md5", data) == hashlib.md5(data).digest()
    assert digest("crc32c", data) == crc32c.crc32c(data).to_bytes(4, "little")
    assert digest("crc32", data) == zlib.crc32(data).to_bytes(4, "little")
    assert digest("crc32c", memoryview(data)) == digest("crc32c", data)


def test_unknown_algorithms_are_told_apart():
    assert known_digest("crc32c") and known_digest("sha256") and known_digest("")
    assert not known_digest("nosuch")
