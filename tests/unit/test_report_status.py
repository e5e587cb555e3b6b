"""drbdsetup status (DRBD 9 text): golden texts of drbd-reference.md §4.2 and wrap_printf."""
from replicator import report


def snap(**kw):
    base = dict(name="r0", minor=0, volume=0, role="Secondary", peer="Unknown",
                conn="StandAlone", disk="Inconsistent", pdsk="DUnknown", susp=False, net=False,
                peer_name=None)
    base.update(kw)
    return base


PRIMARY = dict(role="Primary", peer="Secondary", conn="Connected", disk="UpToDate",
               pdsk="UpToDate", net=True, peer_name="peer", node_id=1, peer_node_id=0,
               backing_dev="/dev/vg/lv0", size_kib=1048508, read_kib=2120,
               written_kib=524288, al_writes=12, bm_writes=0, upper_pending=0,
               lower_pending=0, nr_kib=0, ns_kib=524288, oos_kib=0, pending=0, unacked=0,
               ap_in_flight_kib=0, rs_in_flight_kib=0, write_ordering="flush")


def test_plain_connected_primary_is_the_reference_sample():
    assert report.status(snap(**PRIMARY)) == (
        "r0 role:Primary\n"
        "  disk:UpToDate\n"
        "  peer role:Secondary\n"
        "    peer-disk:UpToDate\n"
        "\n")


def test_verbose_statistics_is_the_reference_sample_with_its_wrapping():
    assert report.status(snap(**PRIMARY), verbose=True, statistics=True) == (
        "r0 node-id:1 role:Primary suspended:no force-io-failures:no\n"
        "    write-ordering:flush\n"
        "  volume:0 minor:0 disk:UpToDate backing_dev:/dev/vg/lv0 quorum:yes\n"
        "      size:1048508 read:2120 written:524288 al-writes:12 bm-writes:0\n"
        "      upper-pending:0 lower-pending:0 al-suspended:no blocked:no\n"
        "  peer node-id:0 connection:Connected role:Secondary congested:no ap-in-flight:0\n"
        "      rs-in-flight:0\n"
        "    volume:0 replication:Established peer-disk:UpToDate resync-suspended:no\n"
        "        received:0 sent:524288 out-of-sync:0 pending:0 unacked:0\n"
        "\n")


def test_statistics_without_verbose_shows_drbds_short_set():
    out = report.status(snap(**{**PRIMARY, "oos_kib": 8}), statistics=True)
    assert out == ("r0 role:Primary\n"
                   "  disk:UpToDate\n"
                   "      read:2120 written:524288\n"
                   "  peer role:Secondary\n"
                   "    peer-disk:UpToDate\n"
                   "        received:0 sent:524288 out-of-sync:8\n"
                   "\n")


def test_syncing_verbose_statistics_adds_done_dbdt1_and_eta():
    s = snap(**{**PRIMARY, "conn": "SyncSource", "pdsk": "Inconsistent",
                "rs_total_kib": 1000, "rs_left_kib": 625, "rs_mark_left_kib": 625 + 3072,
                "rs_mark_age_ms": 3000, "oos_kib": 625})
    out = report.status(s, verbose=True, statistics=True)
    assert ("    volume:0 replication:SyncSource peer-disk:Inconsistent done:37.50\n"
            "        resync-suspended:no\n") in out
    # 3072 KiB in 3 s = 1.00 MiB/s; 625 KiB left -> 1 s
    assert ("        received:0 sent:524288 out-of-sync:625 pending:0 unacked:0 dbdt1:1.00\n"
            "        eta:1\n") in out
    assert "done:37.50" in report.status(s)


def test_eta_is_nan_while_nothing_moved():
    s = snap(**{**PRIMARY, "conn": "SyncTarget", "disk": "Inconsistent",
                "rs_total_kib": 1000, "rs_left_kib": 1000, "rs_mark_left_kib": 1000,
                "rs_mark_age_ms": 5000})
    out = report.status(s, verbose=True, statistics=True)
    assert "unacked:0 dbdt1:0.00\n        eta:nan\n" in out


def test_resync_suspended_shown_when_set_without_verbose():
    s = snap(**{**PRIMARY, "conn": "PausedSyncS", "pdsk": "Inconsistent", "user_isp": True,
                "peer_isp": True})
    assert ("    replication:PausedSyncS peer-disk:Inconsistent resync-suspended:user,peer\n"
            in report.status(s))


def test_not_connected_shows_connection_state_not_role():
    out = report.status(snap(net=True, peer_name="node2", conn="WFConnection"))
    assert out == "r0 role:Secondary\n  disk:Inconsistent\n  node2 connection:Connecting\n\n"
    out = report.status(snap(net=True, peer_name="node2", conn="StandAlone"))
    assert "  node2 connection:StandAlone\n" in out


def test_diskless_client_field_depends_on_tty():
    s = snap(disk="Diskless")
    assert "  disk:Diskless client:no\n" in report.status(s)
    assert "  disk:Diskless\n" in report.status(s, is_a_tty=True)


def test_suspended_shown_when_suspended():
    assert report.status(snap(susp=True)).startswith("r0 role:Secondary suspended:user\n")


def test_wrap_follows_the_terminal_width():
    out = report.status(snap(**PRIMARY), verbose=True, statistics=True, columns=40)
    for line in out.splitlines():
        assert len(line) <= 40, line
    assert out.startswith("r0 node-id:1 role:Primary suspended:no\n"
                          "    force-io-failures:no\n"
                          "    write-ordering:flush\n")
    # continuation lines keep their level's indent
    assert "\n      rs-in-flight:0\n" in out or "\n      ap-in-flight:0 rs-in-flight:0\n" in out


def test_wrapper_is_drbd_utils_wrap_printf():
    w = report.Wrapper(20)
    w(0, "abcdefghij")
    w(4, " klmnopqrst")        # 10 + 11 > 20: new line, blank dropped, indent 4
    w(4, " uv")
    w(0, "\n")
    w(0, "\n")
    assert w.text() == "abcdefghij\n    klmnopqrst uv\n\n"


def test_latency_keys_follow_drbds_own_fields():
    lat = {"local": [10, 8, 17, 18], "send": [10, 100, 250, 300], "ack": [0, 0, 0, 0],
           "total": [10, 270, 411, 2855]}
    out = report.status(snap(**{**PRIMARY, "latency": lat}), statistics=True)
    assert ("      read:2120 written:524288 latency-local-us:8/17/18\n"
            "      latency-total-us:270/411/2855\n") in out
    assert "        received:0 sent:524288 latency-send-us:100/250/300\n" in out
    assert "latency-ack" not in out               # no samples: nothing shown
    assert "latency" not in report.status(snap(**{**PRIMARY, "latency": lat}))
