"""DRBD 8.4 state rules and log wording (replicator.states)."""
import pytest

from replicator.states import Conn, Disk, Role, State, StateError, check_valid, describe_change


def refused(state: State, **kw) -> tuple[int, str]:
    with pytest.raises(StateError) as e:
        check_valid(state, **kw)
    return e.value.code, e.value.text


def test_primary_needs_up_to_date_data_when_alone():
    s = State(role=Role.Primary, conn=Conn.StandAlone, disk=Disk.Inconsistent)
    assert refused(s) == (-2, "Need access to UpToDate data")


def test_primary_with_up_to_date_disk_alone_is_fine():
    check_valid(State(role=Role.Primary, conn=Conn.StandAlone, disk=Disk.UpToDate))


def test_demote_while_open_refused():
    s = State(role=Role.Secondary, disk=Disk.UpToDate)
    assert refused(s, device_open=True) == (-12, "Device is held open by someone")


def test_two_primaries_refused_unless_allowed():
    s = State(role=Role.Primary, peer=Role.Primary, conn=Conn.Connected, disk=Disk.UpToDate,
              pdsk=Disk.UpToDate)
    assert refused(s)[0] == -1
    check_valid(s, allow_two_primaries=True)


def test_fencing_refuses_primary_while_peer_unknown():
    s = State(role=Role.Primary, conn=Conn.WFConnection, disk=Disk.UpToDate, pdsk=Disk.DUnknown)
    assert refused(s, fencing="resource-only")[0] == -7
    check_valid(s)


def test_resync_needs_disks():
    assert refused(State(conn=Conn.SyncTarget, disk=Disk.Diskless, pdsk=Disk.UpToDate))[0] == -4
    assert refused(State(conn=Conn.SyncSource, disk=Disk.UpToDate, pdsk=Disk.Diskless))[0] == -5


def test_outdated_while_connected_refused():
    s = State(conn=Conn.Connected, disk=Disk.Outdated, pdsk=Disk.UpToDate)
    assert refused(s)[0] == -6


def test_describe_change_uses_drbd_words_and_order():
    old = State(role=Role.Secondary, disk=Disk.Inconsistent)
    new = old.with_(role=Role.Primary, disk=Disk.UpToDate)
    assert describe_change(old, new) == "role( Secondary -> Primary ) disk( Inconsistent -> UpToDate )"
    a = State(conn=Conn.WFReportParams)
    b = a.with_(peer=Role.Secondary, conn=Conn.Connected, pdsk=Disk.Inconsistent)
    assert describe_change(a, b) == ("peer( Unknown -> Secondary ) conn( WFReportParams -> "
                                     "Connected ) pdsk( DUnknown -> Inconsistent )")


def test_describe_change_flags():
    a = State()
    assert describe_change(a, a.with_(user_isp=True)) == "user_isp( 0 -> 1 )"


def test_state_order_matches_drbd_numbering():
    assert Conn.WFConnection == 8 and Conn.Connected == 10 and Conn.Behind == 23
    assert Disk.Inconsistent == 4 and Disk.UpToDate == 8
