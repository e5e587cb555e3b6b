"""/proc/drbd (8.4) text: drbd-reference.md §4.1 samples, reproduced from counters."""
from replicator import report

BUILD = "srcversion: udrbd-test"


def snap(**kw):
    base = dict(name="r0", minor=0, role="Primary", peer="Secondary", conn="SyncSource",
                disk="UpToDate", pdsk="Inconsistent", net=True, protocol="C", susp=False,
                aftr_isp=False, peer_isp=False, user_isp=False, ns_kib=180441216, nr_kib=0,
                written_kib=0, read_kib=180441216, al_writes=16, bm_writes=0, lower_pending=0,
                pending=0, unacked=0, upper_pending=0, epochs=1, write_ordering="flush",
                oos_kib=794704668)
    base.update(kw)
    return base


def test_device_and_counters_lines_are_the_linbit_drbd_61_sample():
    text = report.proc_device(snap())
    assert text.startswith(
        " 0: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C r-----\n"
        "    ns:180441216 nr:0 dw:0 dr:180441216 al:16 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f "
        "oos:794704668\n")


def test_large_resync_shows_megabytes_and_the_sample_bar():
    # 952288 MiB to sync, 776076 MiB left: the LINBIT/drbd#61 progress bar
    total_bits, left_bits = 952288 * 256, 776076 * 256
    text = report.proc_device(snap(rs_total_kib=total_bits * 4, rs_left_kib=left_bits * 4,
                                   rs_mark_left_kib=left_bits * 4, rs_mark_age_ms=3000,
                                   rs_elapsed_ms=3000))
    assert "\t[==>.................] sync'ed: 18.6% (776076/952288)M\n\tfinish: " in text


def test_progress_pair_is_the_innogames_igvm_87_sample():
    total, left = 183500800, 183156032               # bits: 716800 MiB, 715452 MiB left
    text = report.proc_device(snap(rs_total_kib=total * 4, rs_left_kib=left * 4,
                                   rs_mark_left_kib=(left + 258576) * 4, rs_mark_age_ms=3000,
                                   rs_elapsed_ms=4000))
    assert text.endswith("\t[>....................] sync'ed:  0.2% (715452/716800)M\n"
                         "\tfinish: 0:35:24 speed: 344,768 (344,768) K/sec\n")


def test_small_resync_in_kilobytes_with_want_and_stalled_on_the_target():
    text = report.proc_device(snap(conn="SyncTarget", role="Secondary", peer="Primary",
                                   disk="Inconsistent", pdsk="UpToDate", flags=None,
                                   rs_total_kib=952288, rs_left_kib=776076,
                                   rs_mark_left_kib=776076, rs_mark_age_ms=200_000,
                                   rs_elapsed_ms=20_000, rs_want_kib=250))
    lines = text.splitlines()
    # small totals: DRBD's permille works on bits >> 10, hence 18.9 here (18.6 above)
    assert lines[2] == "\t[==>.................] sync'ed: 18.9% (776076/952288)K"
    # no progress over the 200 s old mark: rt = 200 * 194019 bits / 100 = 388038 s
    assert lines[3] == "\tfinish: 107:47:18 speed: 0 (8,808) want: 250 K/sec (stalled)"


def test_flags_protocol_and_unconfigured():
    s = snap(conn="WFConnection", peer="Unknown", pdsk="DUnknown", user_isp=True,
             aftr_isp=True, protocol="A", rs_total_kib=0)
    assert report.proc_device(s).startswith(
        " 0: cs:WFConnection ro:Primary/Unknown ds:UpToDate/DUnknown A ra-u--\n")
    no_net = snap(conn="StandAlone", net=False, protocol=None, pdsk="DUnknown", peer="Unknown")
    assert "cs:StandAlone ro:Primary/Unknown ds:UpToDate/DUnknown   r-----\n" in \
        report.proc_device(no_net)
    assert report.proc_device(snap(minor=3, conn="StandAlone", disk="Diskless",
                                   role="Secondary")) == " 3: cs:Unconfigured\n"


def test_connected_device_has_no_progress_lines():
    assert len(report.proc_device(snap(conn="Connected", pdsk="UpToDate")).splitlines()) == 2


def test_file_header_and_holes_between_minors():
    assert report.proc_text(BUILD, {}) == "version: 8.4.11 (api:1/proto:86-101)\n" + BUILD + "\n"
    text = report.proc_text(BUILD, {2: " 2: b\n", 0: " 0: a\n", 3: " 3: c\n"})
    assert text.splitlines()[2:] == [" 0: a", "", " 2: b", " 3: c"]
    assert report.proc_text(BUILD, {1: " 1: x\n"}).splitlines()[2:] == ["", " 1: x"]


def test_thousands_grouping():
    assert [report.thousands(v) for v in (0, 999, 1000, 40480, 1000000, 12345678)] == \
        ["0", "999", "1,000", "40,480", "1,000,000", "12,345,678"]


def test_a_node_without_a_disk_counts_nothing_out_of_sync():
    """8.4 counts out-of-sync blocks only while it has a local disk (a failed one's bitmap
    lingers in udrbd's memory until detach)."""
    for disk in ("Diskless", "Failed"):
        text = report.proc_device(snap(conn="Connected", disk=disk, pdsk="UpToDate",
                                       oos_kib=1024))
        assert text.splitlines()[1].endswith(" oos:0"), disk
    assert report.proc_device(snap(conn="Connected", oos_kib=1024)).splitlines()[1] \
        .endswith(" oos:1024")
