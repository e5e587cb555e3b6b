"""Compatibility with the real drbdmeta (Debian drbd-utils 9.22, /usr/sbin/drbdmeta).

Integration test: runs as root, uses loop devices (always detached) and files in
tmp_path.  Our tool is always called by its absolute venv path; the real one by
/usr/sbin/drbdmeta with a PATH that has no udrbd programs on it.
"""
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from meta.activity_log import BLOCK
from meta.bitmap import Bitmap
from meta.layout import compute_layout
from meta.metadata import Metadata
from meta.superblock import MDF
from tests.integration.loopdev import loop_device

pytestmark = pytest.mark.integration

MiB, GiB = 1 << 20, 1 << 30
REAL = "/usr/sbin/drbdmeta"
OURS = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "drbdmeta")
CLEAN_ENV = {**os.environ, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}


def test_tools_are_the_ones_we_mean():
    assert os.path.isfile(REAL) and os.access(REAL, os.X_OK), "drbd-utils is not installed"
    assert os.path.isfile(OURS) and os.path.realpath(OURS) != os.path.realpath(REAL)
    assert os.geteuid() == 0


def call(tool, args, stdin=subprocess.DEVNULL):
    r = subprocess.run([tool, *args], stdin=stdin, capture_output=True, text=True,
                       env=CLEAN_ENV, timeout=120)
    return r.returncode, r.stdout, r.stderr


def real(path, *cmd, index="internal", force=True):
    """The real drbdmeta; regular files need --force there."""
    return call(REAL, [*(["--force"] if force else []), "0", "v08", path, index, *cmd])


def ours(path, *cmd, index="internal", force=False):
    return call(OURS, [*(["--force"] if force else []), "0", "v08", path, index, *cmd])


def real_err(err):
    """Real stderr without the note it prints for regular files."""
    return "".join(l for l in err.splitlines(True) if "BLKSSZGET" not in l
                   and "BLKZEROOUT" not in l and "using pwrite" not in l)


def body(dump):
    """dump-md text without the three header lines that carry date, host and command line,
    and without the uuid-block flags line (drbd-utils <= 9.32 always prints 0 there)."""
    lines = dump.splitlines(True)
    assert lines[0] == "# DRBD meta data dump\n" and lines[3] == "#\n"
    return "".join(l for l in lines[4:] if not l.startswith("    flags 0x"))


def flags_line(dump):
    return [l for l in dump.splitlines() if l.startswith("    flags 0x")][0]


def make_file(path, size):
    with open(path, "wb") as f:
        f.truncate(size)
    return str(path)


def region(path, start, end):
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(end - start)


# -- create-md ---------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [100 * MiB, 100 * MiB + 12345, GiB, 10 * GiB + 4096 * 3])
def test_create_md_bytes_identical_to_real(tmp_path, size):
    a, b = make_file(tmp_path / "ours.img", size), make_file(tmp_path / "real.img", size)
    assert ours(a, "create-md")[0] == 0
    rc, out, err = real(b, "create-md")
    assert rc == 0, err
    lay = compute_layout(size)
    start = lay.area_start - 3 * 4096           # include some data blocks before the area
    assert region(a, start, size) == region(b, start, size)
    if size <= 100 * MiB + 12345:
        assert Path(a).read_bytes() == Path(b).read_bytes()
    assert out == ("initializing activity log\nWriting meta data...\n"
                   "New drbd meta data block successfully created.\n")


def test_create_md_on_loop_devices_identical(tmp_path):
    a, b = make_file(tmp_path / "ours.img", 100 * MiB), make_file(tmp_path / "real.img", 100 * MiB)
    with loop_device(a) as la, loop_device(b) as lb:
        rc, out_o, err_o = ours(la, "create-md")
        assert rc == 0
        rc, out_r, err_r = real(lb, "create-md", force=False)   # block device: no --force
        assert rc == 0, err_r
        assert out_o == out_r
        assert err_o == real_err(err_r)
    assert Path(a).read_bytes() == Path(b).read_bytes()


# -- each tool reads the other's metadata ---------------------------------------------------------
def customise(path, rng):
    """Give metadata written by either tool non-trivial contents, through our library."""
    with Metadata.open(path) as md:
        md.set_uuids([rng.getrandbits(64) for _ in range(4)])
        md.sb.flags = MDF.CONSISTENT | MDF.WAS_UP_TO_DATE | MDF.PEER_OUT_DATED | MDF.AL_CLEAN
        md.sb.device_uuid = rng.getrandbits(64)
        md.sb.la_peer_max_bio_size = 128 * 1024
        md.sb.la_size_sect = md.data_sectors - 2048
        md.write_superblock()
        bm = md.load_bitmap()
        for _ in range(25):
            bm.set_range(rng.randrange(md.data_bytes), rng.choice([1, 4096, 70000, 3 * MiB]))
        bm.set_bits(bm.nbits - 300, 300)
        md.flush_bitmap()
        return md.uuids, bm.count()


@pytest.mark.parametrize("creator", ["ours", "real"])
def test_outputs_identical_on_same_metadata(tmp_path, creator):
    img = make_file(tmp_path / "disk.img", 200 * MiB)
    rc = (ours(img, "create-md") if creator == "ours" else real(img, "create-md"))[0]
    assert rc == 0
    uuids, bits = customise(img, random.Random(creator))
    for cmd in ("get-gi", "show-gi", "dstate"):
        o, r = ours(img, cmd), real(img, cmd)
        assert o[0] == r[0] == 0
        assert o[1] == r[1], cmd
    assert ours(img, "get-gi")[1].startswith(f"{uuids[0]:016X}:{uuids[1]:016X}:")
    la = compute_layout(200 * MiB).max_data_sect - 2048
    assert f"last agreed size: 199 MB ({la} sectors)\n" in ours(img, "show-gi")[1]
    o, r = ours(img, "dump-md"), real(img, "dump-md")
    assert o[0] == r[0] == 0
    assert body(o[1]) == body(r[1])
    assert f"# bits-set {bits};\n" in o[1]
    assert flags_line(o[1]) == "    flags 0x000000B1;"      # ours: the real flags
    assert flags_line(r[1]) == "    flags 0x00000000;"      # 9.22's v08 dump bug


def test_real_set_gi_read_by_us(tmp_path):
    img = make_file(tmp_path / "disk.img", 100 * MiB)
    assert real(img, "create-md")[0] == 0
    rc, out, err = real(img, "set-gi", "1234567890ABCDEF:AAAABBBBCCCCDDDD:1111:2222:1:0:1:1:0:1:1")
    assert rc == 0, err
    assert ours(img, "get-gi")[1] == real(img, "get-gi")[1] == (
        "1234567890ABCDEF:AAAABBBBCCCCDDDD:0000000000001111:0000000000002222:1:0:1:1:0:1:1\n")
    assert ours(img, "show-gi")[1] == real(img, "show-gi")[1]
    assert "flags: crashed Primary, Connected, Outdated, peer Outdated\n" in ours(img, "show-gi")[1]
    # and our set-gi writes the same bytes as the real one
    twin = make_file(tmp_path / "twin.img", 100 * MiB)
    assert ours(twin, "create-md")[0] == 0
    rc, out, err = ours(twin, "set-gi", "1234567890ABCDEF:AAAABBBBCCCCDDDD:1111:2222:1:0:1:1:0:1:1",
                        force=True)
    assert rc == 0 and out.startswith("previously 0000000000000004:")
    assert Path(img).read_bytes() == Path(twin).read_bytes()


@pytest.mark.parametrize("pattern", ["sparse", "alternating", "dense", "runs_near_lines"])
def test_dump_bitmap_text_identical(tmp_path, pattern):
    img = make_file(tmp_path / "disk.img", 300 * MiB + 8192)
    assert ours(img, "create-md")[0] == 0
    rng = random.Random(pattern)
    with Metadata.open(img) as md:
        md.sb.la_size_sect = md.data_sectors
        md.write_superblock()
        bm = md.load_bitmap()
        n = bm.nbits
        if pattern == "sparse":
            for _ in range(40):
                bm.set_bits(rng.randrange(n), rng.choice([1, 2, 31, 33, 64, 1000]))
        elif pattern == "alternating":
            for i in range(0, n, 64):
                bm.set_bits(i, 32)
        elif pattern == "dense":
            for i in range(0, n, 3):
                if rng.random() < 0.5:
                    bm.set_bits(i, rng.randrange(1, 5))
        else:   # runs whose length is around the 8-word threshold, at odd alignments
            pos = 0
            while pos < n:
                length = rng.choice([64 * 7, 64 * 8, 64 * 9, 64 * 15, 64 * 16, 64 * 17, 32, 5])
                if rng.random() < 0.5:
                    bm.set_bits(pos, length)
                pos += length + rng.choice([0, 32, 64 * 4, 64 * 12])
        md.flush_bitmap()
    o, r = ours(img, "dump-md"), real(img, "dump-md")
    assert o[0] == r[0] == 0
    assert body(o[1]) == body(r[1])


# -- the activity log ------------------------------------------------------------------------------
def crash_with_al(path, rng, extents=61, corrupt_block=None):
    """Attach, become Primary, write through the AL (wrapping the ring), then 'crash'."""
    md = Metadata.open(path)
    md.attach(al_extents=extents)
    md.set_flag(MDF.PRIMARY_IND | MDF.CONSISTENT | MDF.WAS_UP_TO_DATE)
    md.write_superblock()
    max_ext = md.data_bytes >> 22
    for _ in range(300):
        off = rng.randrange(md.data_bytes - MiB)
        first, last = Bitmap.extents_of_range(off, rng.choice([4096, 65536, MiB]))
        md.al.begin_io(first, last)
        md.al.end_io(first, last)
        if rng.random() < 0.1:
            md.bitmap.set_range(off, 4096)
    md.flush_bitmap()
    hot = md.al.hot_extents()
    assert md.al.transactions > 8 and all(e <= max_ext for e in hot)
    if corrupt_block is not None:
        with open(path, "r+b") as f:
            f.seek(md.layout.al_offset + corrupt_block * BLOCK + 1000)
            f.write(b"\x5A\xA5")
    md.close()
    return hot


@pytest.mark.parametrize("extents,corrupt", [(61, None), (257, None), (61, 3)])
def test_al_written_by_us_is_applied_identically_by_real(tmp_path, extents, corrupt):
    a = make_file(tmp_path / "a.img", 512 * MiB)
    assert ours(a, "create-md")[0] == 0
    hot = crash_with_al(a, random.Random(extents), extents, corrupt)
    b = str(tmp_path / "b.img")
    shutil.copyfile(a, b)
    with Metadata.open(a) as md:
        before = md.load_bitmap().to_bytes()
        replayed = md.replay_al().extents
    if corrupt is None:
        assert replayed == hot
    else:
        # the damaged transaction is skipped: its updates are lost, older state shows through
        assert replayed and replayed != hot
    o = ours(a, "apply-al")
    r = real(b, "apply-al")
    assert o[0] == r[0] == 0
    # same messages; ours adds one line naming each damaged block
    assert "".join(l for l in o[2].splitlines(True)
                   if not l.startswith("activity log block ")) == real_err(r[2])
    assert "as out-of-sync based on AL." in o[2]
    if corrupt is not None:
        assert "1 corrupt AL transactions found" in o[2] and "activity log block 3" in o[2]
    assert Path(a).read_bytes() == Path(b).read_bytes()     # bit-identical results
    with Metadata.open(a) as md:
        after = Bitmap(len(before) * 8)
        after.merge_or(md.load_bitmap().to_bytes())
        old = Bitmap(len(before) * 8)
        old.merge_or(before)
        added = {e for e in range(md.data_bytes >> 22)
                 if after.count_bits(e * 1024, 1024) == 1024 and old.count_bits(e * 1024, 1024) < 1024}
        assert added <= set(replayed)
        for e in replayed:                  # whole extents, clipped at the device end
            assert after.count_bits(e * 1024, 1024) == min(1024, md.bitmap.nbits - e * 1024)
        assert md.sb.is_clean
    # both tools now see a clean, empty activity log
    assert ours(a, "apply-al")[2] == "" and real_err(real(a, "apply-al")[2]) == ""


def test_apply_al_on_real_metadata_with_our_al(tmp_path):
    """The other direction: metadata made by the real tool, AL by us, applied by us."""
    a = make_file(tmp_path / "a.img", 256 * MiB)
    assert real(a, "create-md")[0] == 0
    hot = crash_with_al(a, random.Random(5))
    b = str(tmp_path / "b.img")
    shutil.copyfile(a, b)
    assert real(a, "apply-al")[0] == 0 and ours(b, "apply-al")[0] == 0
    assert Path(a).read_bytes() == Path(b).read_bytes()
    with Metadata.open(b) as md:
        bm = md.load_bitmap()
        assert all(bm.count_bits(e * 1024, 1024) == min(1024, bm.nbits - e * 1024) for e in hot)


def test_unclean_dump_identical(tmp_path):
    img = make_file(tmp_path / "disk.img", 100 * MiB)
    assert ours(img, "create-md")[0] == 0
    crash_with_al(img, random.Random(1))
    o, r = ours(img, "dump-md"), real(img, "dump-md", force=False)
    assert o[0] == 1 and o[2] == 'Found meta data is "unclean", please apply-al first\n'
    assert r[0] == 20                                   # real without --force: not a block device
    o, r = ours(img, "dump-md", force=True), real(img, "dump-md")
    assert o[0] == r[0] == 0 and body(o[1]) == body(r[1])
    assert "This_is_an_unclean_meta_data_dump._Don't_trust_the_bitmap." in o[1]


# -- dump / restore across tools ---------------------------------------------------------------------
def test_restore_across_tools(tmp_path):
    src = make_file(tmp_path / "src.img", 200 * MiB)
    assert ours(src, "create-md")[0] == 0
    customise(src, random.Random(9))
    dump = tmp_path / "ours.dump"
    dump.write_text(ours(src, "dump-md")[1])
    # the real tool parses and restores our dump, keeping the flags (we print the real ones)
    # (9.22 verify-dump also prints a bogus "la-size-sect ... truncated (0)" line first)
    assert real(src, "verify-dump", str(dump))[1].endswith("input file parsed ok\n")
    dst = make_file(tmp_path / "dst.img", 200 * MiB)
    rc, out, err = real(dst, "restore-md", str(dump))
    assert rc == 0, err
    assert ours(dst, "get-gi")[1] == ours(src, "get-gi")[1]
    assert body(ours(dst, "dump-md")[1]) == body(ours(src, "dump-md")[1])
    # a dump written by the real tool, restored by each tool: same superblock and bitmap
    rdump = tmp_path / "real.dump"
    rdump.write_text(real(src, "dump-md")[1])
    x, y = make_file(tmp_path / "x.img", 200 * MiB), make_file(tmp_path / "y.img", 200 * MiB)
    assert ours(x, "restore-md", str(rdump))[0] == 0
    assert real(y, "restore-md", str(rdump))[0] == 0
    lay = compute_layout(200 * MiB)
    assert region(x, lay.md_offset, lay.md_offset + 4096) == region(y, lay.md_offset,
                                                                    lay.md_offset + 4096)
    assert region(x, lay.bm_offset, lay.al_offset) == region(y, lay.bm_offset, lay.al_offset)
    # 9.22 printed flags 0, so AL_CLEAN is lost as well: the restored metadata is "unclean"
    rc, out, err = ours(x, "dump-md", force=True)
    assert flags_line(out) == "    flags 0x00000000;" and "This_is_an_unclean" in out


# -- command line behaviour on block devices (the real tool needs no --force there) -----------------
def both_on_loops(tmp_path, prepare, *cmd, size=100 * MiB):
    a, b = make_file(tmp_path / "a.img", size), make_file(tmp_path / "b.img", size)
    prepare(a)
    prepare(b)
    with loop_device(a) as la, loop_device(b) as lb:
        o = ours(la, *cmd)
        r = real(lb, *cmd, force=False)
    return o, r, la, lb


def created(path):
    assert ours(path, "create-md")[0] == 0


def test_existing_metadata_without_tty_same_as_real(tmp_path):
    o, r, la, lb = both_on_loops(tmp_path, created, "create-md")
    assert o[0] == r[0] == 1
    assert o[1] == r[1] == "Operation cancelled.\n"
    assert o[2].replace(la, "DEV") == r[2].replace(lb, "DEV")


def mkfs(size_mb):
    def prepare(path):
        subprocess.run(["mkfs.ext4", "-q", "-F", path, f"{size_mb}M"], check=True,
                       capture_output=True)
    return prepare


@pytest.mark.parametrize("fs_mb,rc", [(100, 40), (50, 1)])
def test_filesystem_in_the_way_same_as_real(tmp_path, fs_mb, rc):
    o, r, _, _ = both_on_loops(tmp_path, mkfs(fs_mb), "create-md")
    assert o[0] == r[0] == rc
    assert o[1] == r[1]
    assert o[2] == r[2]


def test_some_data_and_swap_same_as_real(tmp_path):
    def data(path):
        with open(path, "r+b") as f:
            f.write(b"hello")
    o, r, _, _ = both_on_loops(tmp_path, data, "create-md")
    assert o[0] == r[0] == 1 and o[1] == r[1] and o[2] == r[2]

    def swap(path):
        os.chmod(path, 0o600)
        subprocess.run(["mkswap", path], check=True, capture_output=True)
    o, r, _, _ = both_on_loops(tmp_path, swap, "create-md")
    assert o[0] == r[0] == 40 and o[1] == r[1]


@pytest.mark.parametrize("cmd", [("outdate",), ("invalidate",), ("dstate",), ("apply-al",),
                                 ("get-gi",), ("show-gi",), ("dump-md",)])
def test_commands_on_blank_device_fail_like_real(tmp_path, cmd):
    o, r, _, _ = both_on_loops(tmp_path, lambda p: None, *cmd)
    assert o[0] == r[0] == 1
    assert o[1] == r[1] == ""
    if "No valid meta data found\n" in r[2]:
        assert o[2].endswith("No valid meta data found\n")


@pytest.mark.parametrize("cmd", [("outdate",), ("invalidate",), ("wipe-md",)])
def test_modifying_commands_write_what_real_writes(tmp_path, cmd):
    def prepared(path):
        created(path)
        assert ours(path, "set-gi", "::::1:1:0:0:0:0:0", force=True)[0] == 0
    a, b = make_file(tmp_path / "a.img", 100 * MiB), make_file(tmp_path / "b.img", 100 * MiB)
    prepared(a)
    prepared(b)
    o = ours(a, *cmd, force=True)
    r = real(b, *cmd)
    assert o[0] == r[0] == 0 and o[1] == r[1]
    assert Path(a).read_bytes() == Path(b).read_bytes()


def test_dump_of_bitmap_larger_than_drbdmeta_buffer(tmp_path):
    """> 1 TiB: drbdmeta reads the bitmap in 32 MiB windows; runs crossing a window edge
    are printed in its peculiar way, and so must ours be."""
    img = make_file(tmp_path / "huge.img", 2 << 40)          # sparse
    assert ours(img, "create-md")[0] == 0
    edge = (32 << 20) * 8                                    # first bit of the second window
    with Metadata.open(img) as md:
        md.sb.la_size_sect = md.data_sectors
        md.write_superblock()
        bm = md.load_bitmap()
        for start, length in [(edge - 32 * 20, 32 * 32), (edge + 32 * 100, 32 * 9),
                              (2 * edge - 32 * 8, 32 * 16), (3 * edge - 5, 100)]:
            bm.set_bits(start, length)
        md.flush_bitmap()
    o, r = ours(img, "dump-md"), real(img, "dump-md")
    assert o[0] == r[0] == 0
    assert body(o[1]) == body(r[1])
    assert "    8 times 0xFFFFFFFFFFFFFFFF;\n   # at 1073741824kB\n    0xFFFFFFFFFFFFFFFF;" in o[1]


def test_mounted_device_is_not_touched(tmp_path):
    img = make_file(tmp_path / "fs.img", 100 * MiB)
    mkfs(100)(img)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with loop_device(img) as dev:
        subprocess.run(["mount", dev, str(mnt)], check=True, capture_output=True)
        try:
            o = ours(dev, "create-md")
            r = real(dev, "create-md", force=False)
        finally:
            subprocess.run(["umount", str(mnt)], check=True, capture_output=True)
    assert o[0] == r[0] == 20
    assert o[1] == r[1] == "Operation canceled.\n"
    assert "Exclusive open failed. Do it anyways?" in o[2]
    assert "Device or resource busy" in o[2]
