"""Resource-level fencing decisions (replicator.fencing) and the I/O freeze rules of
replicator.resource, on a Resource with a stand-in disk; the handler's exit code is given."""
from __future__ import annotations

from pathlib import Path

import pytest
import trio

from replicator import fencing, handlers
from replicator.resource import Resource
from replicator.statelog import ResourceLog
from replicator.states import Conn, Disk, Role, State, StateError, describe_change


class Disk_:
    """What the state machine asks of an attached device."""
    def __init__(self, fencing: str):
        self.fencing = fencing
        self.failed = False
        self.outdate_promised = False
        self.negotiating_disk = None
        self.open_count = 0

    def state_changed(self, old: State, new: State) -> None:
        pass


def resource(tmp_path: Path, policy: str, **state) -> Resource:
    log = ResourceLog(str(tmp_path / "r0.log"), "r0", use_syslog=False)
    log.minor = 0
    res = Resource("r0", log)
    res.device = Disk_(policy)
    res.state = State(**{"role": Role.Primary, "conn": Conn.WFConnection,
                         "disk": Disk.UpToDate, "pdsk": Disk.DUnknown, **state})
    return res


def lines(tmp_path: Path) -> list[str]:
    return [line.split(" ", 1)[1] for line in (tmp_path / "r0.log").read_text().splitlines()]


def fence(res: Resource, monkeypatch, exit_code: int) -> bool:
    calls = []
    async def handler(r, name, connection=False):
        calls.append((name, connection))
        return exit_code
    monkeypatch.setattr(handlers, "call", handler)
    result = trio.run(fencing.try_outdate_peer, res)
    assert calls in ([], [("fence-peer", True)])
    return result


@pytest.mark.parametrize("code, pdsk, meaning", [
    (3, Disk.Inconsistent, "peer is inconsistent or worse"),
    (4, Disk.Outdated, "peer was fenced"),
    (5, Disk.Outdated, "peer is unreachable, assumed to be dead"),
    (7, Disk.Outdated, "peer was stonithed"),
])
def test_exit_codes_that_fence_the_peer(tmp_path, monkeypatch, code, pdsk, meaning):
    res = resource(tmp_path, "resource-only")
    assert fence(res, monkeypatch, code)
    assert res.state.pdsk == pdsk
    assert f"drbd r0: fence-peer helper returned {code} ({meaning})" in lines(tmp_path)


def test_unreachable_peer_is_not_assumed_dead_without_up_to_date_data(tmp_path, monkeypatch):
    res = resource(tmp_path, "resource-only", role=Role.Secondary, disk=Disk.Consistent)
    assert not fence(res, monkeypatch, 5)
    assert res.state.pdsk == Disk.DUnknown
    assert ("drbd r0: fence-peer helper returned 5 (peer unreachable, doing nothing since "
            "disk != UpToDate)") in lines(tmp_path)


def test_active_peer_outdates_a_secondary(tmp_path, monkeypatch):
    res = resource(tmp_path, "resource-only", role=Role.Secondary)
    assert not fence(res, monkeypatch, 6)
    assert res.state.disk == Disk.Outdated
    assert "drbd r0: Peer is primary, outdating myself." in lines(tmp_path)


def test_broken_handler_changes_nothing_and_keeps_the_freeze(tmp_path, monkeypatch):
    res = resource(tmp_path, "resource-and-stonith", susp_fen=True)
    assert not fence(res, monkeypatch, 0)
    assert res.state.pdsk == Disk.DUnknown and res.state.susp_fen
    assert lines(tmp_path)[-1] == "drbd r0: fence-peer helper broken, returned 0"


def test_dont_care_runs_no_handler(tmp_path, monkeypatch):
    res = resource(tmp_path, "dont-care")
    assert fence(res, monkeypatch, 1)
    assert res.state.pdsk == Disk.DUnknown


def test_a_disk_not_even_consistent_fences_nobody_and_thaws(tmp_path, monkeypatch):
    res = resource(tmp_path, "resource-and-stonith", disk=Disk.Inconsistent, susp_fen=True)
    assert not fence(res, monkeypatch, 4)
    assert not res.state.susp_fen
    assert "drbd r0: Not fencing peer, I'm not even Consistent myself." in lines(tmp_path)


def test_stonith_freezes_a_primary_losing_its_peer_and_thaws_when_it_is_fenced(tmp_path):
    res = resource(tmp_path, "resource-and-stonith", conn=Conn.Connected, pdsk=Disk.UpToDate,
                   peer=Role.Secondary)
    res.change("resource", hard=True, conn=Conn.NetworkFailure, pdsk=Disk.DUnknown,
               peer=Role.Unknown)
    assert res.state.susp_fen
    res.change("resource", pdsk=Disk.Outdated)
    assert not res.state.susp_fen
    assert lines(tmp_path)[-2:] == ["drbd r0: pdsk( DUnknown -> Outdated )",
                                    "drbd r0: susp( 1 -> 0 )"]


def test_resource_only_never_freezes_and_reconnecting_thaws(tmp_path):
    res = resource(tmp_path, "resource-only", conn=Conn.Connected, pdsk=Disk.UpToDate)
    res.change("resource", hard=True, conn=Conn.NetworkFailure, pdsk=Disk.DUnknown)
    assert not res.state.suspended
    res = resource(tmp_path, "resource-and-stonith", susp_fen=True)
    res.change("resource", hard=True, conn=Conn.Connected, pdsk=Disk.UpToDate)
    assert not res.state.susp_fen


def test_a_change_out_of_a_state_breaking_the_same_rule_is_allowed(tmp_path):
    """8.4: resume-io on a Primary whose peer could not be fenced (itself refused -7)."""
    res = resource(tmp_path, "resource-and-stonith", susp_fen=True)
    res.change("device", susp_fen=False)
    assert not res.state.suspended
    with pytest.raises(StateError) as e:       # a new rule broken: still refused
        res.change("device", disk=Disk.Outdated)
    assert e.value.code == -2


def test_suspension_is_one_flag_in_the_log():
    a = State(role=Role.Primary, disk=Disk.UpToDate)
    assert describe_change(a, a.with_(susp=True)) == "susp( 0 -> 1 )"
    assert describe_change(a.with_(susp=True), a.with_(susp=True, susp_fen=True)) == ""
    assert describe_change(a.with_(susp_fen=True), a) == "susp( 1 -> 0 )"


def test_teardown_changes_of_a_graceful_disconnect(tmp_path):
    res = resource(tmp_path, "resource-only", role=Role.Secondary, conn=Conn.Connected,
                   pdsk=Disk.UpToDate, peer=Role.Primary)
    assert fencing.teardown_changes(res, {"outdated": True}) == {"pdsk": Disk.Outdated}
    assert fencing.teardown_changes(res, {}) == {}
    res.device.outdate_promised = True       # we told the Primary we are Outdated
    assert fencing.teardown_changes(res, None) == {"disk": Disk.Outdated}


def test_a_sync_source_does_not_know_how_far_its_target_got(tmp_path):
    res = resource(tmp_path, "resource-only", conn=Conn.SyncSource, pdsk=Disk.Inconsistent,
                   peer=Role.Secondary)
    assert fencing.teardown_changes(res, None) == {"pdsk": Disk.DUnknown}


def test_reconnecting_thaws_only_once_the_peer_knows_what_it_lacks(tmp_path):
    res = resource(tmp_path, "resource-and-stonith", susp_fen=True)
    res.change("resource", hard=True, conn=Conn.WFBitMapS, pdsk=Disk.Consistent)
    assert res.state.susp_fen
    res.change("resource", hard=True, conn=Conn.SyncSource, pdsk=Disk.Inconsistent)
    assert not res.state.susp_fen


def test_a_known_inconsistent_or_outdated_peer_stays_so_without_a_connection(tmp_path):
    res = resource(tmp_path, "resource-only", conn=Conn.Connected, pdsk=Disk.Inconsistent,
                   peer=Role.Secondary)
    res.change("resource", hard=True, conn=Conn.NetworkFailure, peer=Role.Unknown)
    assert res.state.pdsk == Disk.Inconsistent
    res = resource(tmp_path, "resource-only", conn=Conn.Connected, pdsk=Disk.Diskless)
    res.change("resource", hard=True, conn=Conn.NetworkFailure)
    assert res.state.pdsk == Disk.DUnknown


def test_no_data_accessible_freezes_a_primary_without_up_to_date_data(tmp_path):
    res = resource(tmp_path, "dont-care", conn=Conn.Connected, pdsk=Disk.UpToDate,
                   disk=Disk.Diskless, peer=Role.Secondary)
    res.change("resource", hard=True, conn=Conn.NetworkFailure, pdsk=Disk.DUnknown)
    assert not res.state.suspended                      # io-error: 8.4's default
    res = resource(tmp_path, "dont-care", conn=Conn.Connected, pdsk=Disk.UpToDate,
                   disk=Disk.Diskless, peer=Role.Secondary)
    res.resource_options = {**res.resource_options, "on-no-data-accessible": "suspend-io"}
    res.change("resource", hard=True, conn=Conn.NetworkFailure, pdsk=Disk.DUnknown)
    assert res.state.susp_nod
    res.change("resource", hard=True, susp_nod=False)   # resume-io lifts it (8.4)
    assert not res.state.susp_nod
    res.change("resource", hard=True, conn=Conn.WFConnection)
    assert not res.state.susp_nod                       # until data is lost anew
    res.change("resource", hard=True, conn=Conn.Connected, pdsk=Disk.UpToDate)
    res.change("resource", hard=True, conn=Conn.NetworkFailure, pdsk=Disk.DUnknown)
    assert res.state.susp_nod
    res.change("resource", hard=True, conn=Conn.Connected, pdsk=Disk.UpToDate)
    assert not res.state.susp_nod


def test_suspended_reasons_in_status_words():
    from replicator.report import susp_text
    assert susp_text({}) == "no"
    assert susp_text({"susp": True, "susp_nod": True, "susp_fen": True}) == \
        "user,no-data,fencing"
