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
