"""status / role / cstate / dstate texts (replicator.report)."""
from replicator import report


def snap(**kw):
    base = dict(name="r0", minor=0, volume=0, role="Secondary", peer="Unknown",
                conn="StandAlone", disk="Inconsistent", pdsk="DUnknown", susp=False, net=False,
                peer_name=None)
    base.update(kw)
    return base


def test_status_standalone():
    assert report.status(snap()) == "r0 role:Secondary\n  disk:Inconsistent\n\n"


def test_status_connected_primary():
    s = snap(role="Primary", peer="Secondary", conn="Connected", disk="UpToDate",
             pdsk="UpToDate", net=True, peer_name="node2")
    assert report.status(s) == ("r0 role:Primary\n  disk:UpToDate\n  node2 role:Secondary\n"
                                "    peer-disk:UpToDate\n\n")


def test_status_waiting_for_peer_uses_drbd9_connection_name():
    s = snap(conn="WFConnection", net=True, peer_name="node2")
    assert "  node2 connection:Connecting\n" in report.status(s)


def test_status_syncing_shows_done():
    s = snap(role="Primary", peer="Secondary", conn="SyncSource", disk="UpToDate",
             pdsk="Inconsistent", net=True, peer_name="node2", done=37.5)
    assert "    replication:SyncSource peer-disk:Inconsistent done:37.50\n" in report.status(s)


def test_role_cstate_dstate():
    s = snap(role="Primary", peer="Secondary", conn="Connected", disk="UpToDate", pdsk="UpToDate")
    assert report.role(s) == "Primary/Secondary"
    assert report.cstate(s) == "Connected"
    assert report.dstate(s) == "UpToDate/UpToDate"
    assert report.role(None) == "Unconfigured"
    assert report.dstate(snap(disk="Diskless")) == "Unconfigured"


def sh_vars(text: str) -> dict[str, str]:
    assert text.endswith("\n\n_sh_status_process\n\n\n"), text
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_sh_status_of_a_syncing_minor_in_8_4s_words():
    s = snap(name="r 0", volume=1, role="Primary", peer="Secondary", conn="PausedSyncS",
             disk="UpToDate", pdsk="Inconsistent", user_isp=True,
             rs_total_kib=4 * 1000 * 1024, rs_left_kib=4 * 250 * 1024)
    text = report.sh_status(7, s)
    assert text.startswith("_minor=7\n_res_name=r\\ 0\n_volume=1\n_known=Configured\n\n"
                           "_cstate=PausedSyncS\n_role=Primary\n")
    v = sh_vars(text)
    assert (v["_flags_user_isp"], v["_flags_peer_isp"], v["_flags_susp"]) == ("1", "", "")
    # 8.4's per-mille in 1024-bit units: 1000 - 250 * 1000 // (1 + 1000) = 751
    assert v["_resynced_percent"] == "75.1"
    assert sh_vars(report.sh_status(7, snap(conn="Connected", pdsk="UpToDate")))[
        "_resynced_percent"] == ""


def test_sh_status_of_a_minor_without_configuration():
    v = sh_vars(report.sh_status(3, snap(disk="Diskless")))      # new-minor, nothing more
    assert (v["_known"], v["_cstate"], v["_role"], v["_res_name"]) == (
        "Unconfigured", "Unconfigured", "", "r0")
    v = sh_vars(report.sh_status(3, snap(disk="Diskless", role="Primary")))
    assert (v["_known"], v["_cstate"], v["_role"]) == ("Configured", "StandAlone", "Primary")
    text = report.sh_status(3, None)                               # no such minor
    assert "_res_name" not in text and sh_vars(text)["_volume"] == "-1"
    assert "_known=NA # not available or not yet created\n" in text
