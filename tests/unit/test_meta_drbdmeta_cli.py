"""Our drbdmeta command line (meta.drbdmeta), run as a program on files in tmp_path."""
import os
import pty
import struct
import subprocess
import sys

import pytest

from meta.layout import compute_layout
from meta.metadata import Metadata
from meta.superblock import MDF

MiB = 1 << 20
# the console script of this venv (never /usr/sbin/drbdmeta, the real one)
DRBDMETA = os.path.join(os.path.dirname(sys.executable), "drbdmeta")


def run(*args, stdin=subprocess.DEVNULL):
    r = subprocess.run([DRBDMETA, *args], stdin=stdin, capture_output=True, text=True,
                       timeout=60)
    return r.returncode, r.stdout, r.stderr


def make_file(path, size=100 * MiB):
    with open(path, "wb") as f:
        f.truncate(size)
    return str(path)


@pytest.fixture
def img(tmp_path):
    return make_file(tmp_path / "disk.img")


def md(path, *cmd, force=False):
    return run(*(["--force"] if force else []), "0", "v08", path, "internal", *cmd)


def test_create_md_on_blank_file_needs_no_questions(img):
    rc, out, err = md(img, "create-md")
    assert rc == 0
    assert out == ("initializing activity log\nWriting meta data...\n"
                   "New drbd meta data block successfully created.\n")
    assert err == "initializing bitmap (4 KB) to all zero\n"
    assert md(img, "get-gi")[1] == ("0000000000000004:0000000000000000:0000000000000000:"
                                    "0000000000000000:0:0:0:0:0:0:0\n")
    assert md(img, "dstate")[1] == "Inconsistent\n"


def test_create_md_over_existing_metadata_without_tty_is_cancelled(img):
    md(img, "create-md")
    before = open(img, "rb").read()
    rc, out, err = md(img, "create-md")
    assert rc == 1 and out == "Operation cancelled.\n"
    assert err == ("You want me to create a v08 style flexible-size internal meta data block.\n"
                   "There appears to be a v08 flexible-size internal meta data block\n"
                   f"already in place on {img} at byte offset 104853504\n\n"
                   "Do you really want to overwrite the existing meta-data?\n"
                   "stdin not a TTY, not waiting for confirmation\n")
    assert open(img, "rb").read() == before
    rc, out, err = md(img, "create-md", force=True)
    assert rc == 0 and "*** confirmation forced via --force option ***" in err


def tty_run(args, answer):
    """Run with a pseudo terminal as stdin, answering the confirmation question."""
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([DRBDMETA, *args], stdin=slave, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        os.write(master, answer.encode())
        out, err = p.communicate(timeout=60)
    finally:
        os.close(master)
        os.close(slave)
    return p.returncode, out, err


def test_confirmation_on_a_tty(img):
    md(img, "create-md")
    args = ["0", "v08", img, "internal", "create-md"]
    rc, out, err = tty_run(args, "no\n")
    assert rc == 1 and "[need to type 'yes' to confirm] \n" in err and out == "Operation cancelled.\n"
    rc, out, err = tty_run(args, "yes\n")
    assert rc == 0 and out.endswith("New drbd meta data block successfully created.\n")


def write_ext_superblock(path, blocks, log_block_size=2):
    sb = bytearray(1024)
    struct.pack_into("<I", sb, 0x04, blocks)
    struct.pack_into("<I", sb, 0x18, log_block_size)
    struct.pack_into("<H", sb, 0x38, 0xEF53)
    sb[0x5C] = 4                                     # has_journal -> "ext3"
    with open(path, "r+b") as f:
        f.seek(1024)
        f.write(sb)


def test_filesystem_filling_the_device_is_refused(img):
    write_ext_superblock(img, 100 * MiB // 4096)
    rc, out, err = md(img, "create-md", force=True)
    assert rc == 40
    assert out == ("md_offset 104853504\nal_offset 104820736\nbm_offset 104816640\n\n"
                   "Found ext3 filesystem\n      102400 kB data area apparently used\n"
                   "      102360 kB left usable by current configuration\n\n"
                   "Device size would be truncated, which\nwould corrupt data and result in\n"
                   "'access beyond end of device' errors.\nYou need to either\n"
                   "   * use external meta data (recommended)\n"
                   "   * shrink that filesystem first\n"
                   "   * zero out the device (destroy the filesystem)\nOperation refused.\n\n")
    rc, _, _ = md(img, "get-gi")
    assert rc == 1                                  # nothing was written


def test_smaller_filesystem_asks(img):
    write_ext_superblock(img, 50 * MiB // 4096)
    rc, out, err = md(img, "create-md")
    assert rc == 1 and "       51200 kB data area apparently used\n" in out
    assert out.endswith("unused space, you still need to confirm, as this is only a guess.\n"
                        "Operation canceled.\n")
    assert "Do you want to proceed?" in err


def test_errors_are_one_line_naming_the_path(tmp_path):
    missing = str(tmp_path / "nope.img")
    rc, out, err = md(missing, "dump-md")
    assert rc == 20 and err == f"'{missing}': No such file or directory\n"
    blank = make_file(tmp_path / "blank.img")
    rc, out, err = md(blank, "get-gi")
    assert rc == 1 and out == ""
    assert err == f"'{blank}': Meta data magic not found. Did you \"drbdadm create-md\"? (found 0x00000000)\n"
    rc, out, err = md(blank, "dump-md")
    assert rc == 1 and err.endswith("No valid meta data found\n")
    assert run("0", "v08", blank, "bogus-index", "dump-md")[0:3:2] == \
        (20, "'bogus-index' is not a valid index number.\n")
    assert run("0", "v08", blank, "internal", "frobnicate")[0:3:2] == \
        (20, "Unknown command 'frobnicate'.\n")
    assert run("0", "v99", blank, "internal", "dump-md")[0:3:2] == (20, "Unknown format 'v99'.\n")
    rc, out, _ = run("0", "v08")
    assert rc == 20 and "USAGE: drbdmeta [--force] DEVICE FORMAT" in out


def test_dump_restore_round_trip_keeps_flags(img, tmp_path):
    md(img, "create-md")
    assert md(img, "set-gi", "AAAA:BBBB:CCCC:DDDD:1:1:0:0:0:1:0", force=True)[0] == 0
    with Metadata.open(img) as m:
        m.sb.la_size_sect = 200000
        m.write_superblock()
        bm = m.load_bitmap()
        bm.set_range(3 * MiB, 5 * MiB)
        m.flush_bitmap()
    rc, dump, _ = md(img, "dump-md")
    assert rc == 0 and "    flags 0x000000B1;\n" in dump and "# bits-set 1280;\n" in dump
    path = tmp_path / "dump.txt"
    path.write_text(dump)
    assert md(img, "verify-dump", str(path))[:2] == (0, "input file parsed ok\n")
    other = make_file(tmp_path / "other.img")
    rc, out, err = md(other, "restore-md", str(path))
    assert rc == 0 and out == "Successfully restored meta data\n"
    lay = compute_layout(100 * MiB)
    with open(img, "rb") as a, open(other, "rb") as b:
        a.seek(lay.area_start)
        b.seek(lay.area_start)
        assert a.read() == b.read()                 # identical metadata areas
    rc, out, err = md(other, "restore-md", str(path))
    assert rc == 1 and "Valid meta-data in place, overwrite?" in err


def test_unclean_dump_needs_force(img):
    md(img, "create-md")
    with Metadata.open(img) as m:
        m.attach()
    rc, out, err = md(img, "dump-md")
    assert rc == 1 and out == "" and err == 'Found meta data is "unclean", please apply-al first\n'
    rc, out, err = md(img, "dump-md", force=True)
    assert rc == 0 and "This_is_an_unclean_meta_data_dump._Don't_trust_the_bitmap.\n" in out


def test_outdate_invalidate_wipe(img):
    md(img, "create-md")
    rc, out, err = md(img, "outdate")
    assert (rc, err) == (5, "Device is inconsistent.\n")
    md(img, "set-gi", "::::1:1", force=True)
    assert md(img, "dstate")[1] == "Consistent\n"
    assert md(img, "outdate")[0] == 0 and md(img, "dstate")[1] == "Outdated\n"
    assert md(img, "invalidate")[0] == 0
    with Metadata.open(img) as m:
        assert m.flags == MDF.AL_CLEAN | MDF.FULL_SYNC
    rc, out, err = md(img, "wipe-md")
    assert rc == 1 and out == "Operation cancelled.\n"
    rc, out, err = md(img, "wipe-md", force=True)
    assert rc == 0 and out == "Wiping meta data...\nDRBD meta data block successfully wiped out.\n"
    assert md(img, "wipe-md")[2] == "There appears to be no drbd meta data to wipe out?\n"


def test_set_gi_errors(img):
    md(img, "create-md")
    assert md(img, "set-gi")[0:3:2] == (10, "Required Argument missing\n")
    assert md(img, "set-gi", "XYZ", force=True)[0:3:2] == (10, "'XYZ' is not a number.\n")
    assert md(img, "set-gi", "::::2", force=True)[0:3:2] == (10, "'2' is not 0 or 1.\n")
    rc, out, _ = md(img, "set-gi", "1234")
    assert rc == 0 and out.endswith("Operation canceled.\n")        # no tty: not written
    assert md(img, "get-gi")[1].startswith("0000000000000004:")


def test_busy_device_is_read_only_for_drbdmeta(img):
    md(img, "create-md")
    with Metadata.open(img) as m:                    # like the running daemon
        m.attach()
        rc, out, err = md(img, "apply-al")
        assert rc == 20 and err.startswith("Device '0' is configured!")
        rc, out, err = md(img, "get-gi")
        assert rc == 0 and err == "# Output might be stale, since minor 0 is attached\n"


def test_external_meta_device_forms(tmp_path):
    data = make_file(tmp_path / "data.img", 64 * MiB)
    meta = make_file(tmp_path / "meta.img", 128 * MiB)
    rc, out, err = run("1", "v08", meta, "flex-external", "create-md")
    assert rc == 0, err
    assert run("1", "v08", meta, "flexible", "get-gi")[1].startswith("0000000000000004")
    # the extended form names the backing disk too
    assert run("1", "v08", data, meta, "0", "create-md", "--force")[0] == 0
    assert run("1", "v08", meta, "0", "get-gi")[0] == 0
    rc, _, err = run("1", "v08", str(tmp_path / "nodata"), meta, "0", "get-gi")
    assert rc == 20 and "nodata': No such file or directory" in err


def test_damaged_superblock_is_refused_and_readable_only_with_force(img):
    md(img, "create-md")
    with open(img, "r+b") as f:                 # a stray byte in the zero padding
        f.seek(compute_layout(100 * MiB).md_offset + 0x400)
        f.write(b"\x42")
    rc, out, err = md(img, "get-gi")
    assert rc == 1 and out == ""
    assert err == (f"'{img}': superblock padding is not zero (first non-zero byte at offset "
                   "0x400) (use --force to read it anyway)\n")
    rc, out, err = md(img, "get-gi", force=True)
    assert rc == 0 and out.startswith("0000000000000004:") and "warning: superblock padding" in err
    before = open(img, "rb").read()
    rc, out, err = md(img, "invalidate", force=True)
    assert rc == 1 and "superblock padding is not zero" in err
    assert open(img, "rb").read() == before     # nothing written


def test_a_disk_grown_under_its_meta_data_is_found_at_its_last_known_size(img, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("UDRBD_STATE_DIR", str(tmp_path / "state"))
    assert md(img, "create-md")[0] == 0                    # records the size (lkbd)
    os.truncate(img, 140 * MiB)
    rc, _, stderr = md(img, "apply-al")                    # the first step of `up`
    assert rc == 0
    assert (f"'{img}' grew from {100 * MiB} to {140 * MiB} bytes since its meta data was "
            "last seen: moved it from there to the new end") in stderr
    with Metadata.open(img) as found:
        assert found.layout == compute_layout(140 * MiB)
        assert found.sb.la_size_sect == 0 and found.sb.is_clean
    os.truncate(img, 180 * MiB)                            # now check-resize does it
    assert md(img, "check-resize")[0] == 0
    with Metadata.open(img) as again:
        assert again.layout == compute_layout(180 * MiB)


def test_without_a_last_known_size_a_grown_disk_has_no_meta_data(img, tmp_path, monkeypatch):
    monkeypatch.setenv("UDRBD_STATE_DIR", str(tmp_path / "state"))
    md(img, "create-md")
    (tmp_path / "state" / "drbd-minor-0.lkbd").unlink()
    os.truncate(img, 140 * MiB)
    rc, _, stderr = md(img, "check-resize")
    assert rc == 1 and "no suitable meta data found :(" in stderr
    assert md(img, "apply-al")[0] == 1


def test_a_stale_record_never_brings_back_meta_data_that_moved_on(img, tmp_path, monkeypatch):
    monkeypatch.setenv("UDRBD_STATE_DIR", str(tmp_path / "state"))
    record = tmp_path / "state" / "drbd-minor-0.lkbd"
    md(img, "create-md")
    stale = record.read_text()                             # says 100 MiB
    os.truncate(img, 140 * MiB)
    assert md(img, "apply-al")[0] == 0                     # moved to 140 MiB's end
    with Metadata.open(img) as moved:
        moved.set_uuids([0x2222, 0, 0, 0])
        moved.write_superblock()
    record.write_text(stale)                               # a record that failed to update
    os.truncate(img, 180 * MiB)
    rc, _, stderr = md(img, "apply-al")
    assert rc == 1 and "moved it" not in stderr            # the old copy was wiped
    os.truncate(img, 140 * MiB)                            # where it really is: intact
    assert md(img, "get-gi")[1].startswith("0000000000002222:")


def test_wipe_md_leaves_nothing_to_find_at_a_last_known_size(img, tmp_path, monkeypatch):
    monkeypatch.setenv("UDRBD_STATE_DIR", str(tmp_path / "state"))
    md(img, "create-md")
    assert md(img, "wipe-md", force=True)[0] == 0
    assert not (tmp_path / "state" / "drbd-minor-0.lkbd").exists()
    os.truncate(img, 140 * MiB)
    assert md(img, "apply-al")[0] == 1


def test_a_crashed_primarys_moved_meta_data_keeps_its_bits_uuids_and_al(img, tmp_path,
                                                                        monkeypatch):
    from meta.bitmap import Bitmap
    monkeypatch.setenv("UDRBD_STATE_DIR", str(tmp_path / "state"))
    md(img, "create-md")
    m = Metadata.open(img)
    m.attach()
    m.set_uuids([0x4444, 0x3333, 0, 0])
    m.set_flag(MDF.PRIMARY_IND | MDF.CONSISTENT)
    m.write_superblock()
    first, last = Bitmap.extents_of_range(40 * MiB, 4096)
    m.al.begin_io(first, last)                             # a write in flight: AL extent 10
    m.bitmap.set_range(8 * MiB, 8192)
    m.flush_bitmap()
    m.close()                                              # the crash
    os.truncate(img, 140 * MiB)                            # ... after the disk grew
    rc, _, stderr = md(img, "apply-al")
    assert rc == 0 and "moved it from there to the new end" in stderr
    with Metadata.open(img) as moved:
        assert moved.layout == compute_layout(140 * MiB)
        assert moved.uuids[:2] == [0x4444, 0x3333] and moved.sb.has(MDF.PRIMARY_IND)
        bm = moved.load_bitmap()
        assert bm.count() == 2 + 1024                      # its bits and the AL's extent
        assert bm.test(8 * MiB // 4096) and bm.test(40 * MiB // 4096)
