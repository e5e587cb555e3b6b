"""The diskless device (replicator.diskless): which opens it lets through, when it may be
promoted, and what it shows; on a Resource without a daemon (no FUSE mount)."""
from __future__ import annotations

import errno
from pathlib import Path

import pytest
import trio
import trio.testing

from replicator.diskless import DisklessEngine, open_error
from replicator.resource import Resource
from replicator.statelog import ResourceLog
from replicator.states import Conn, Disk, Role, State


class Peer_:
    def __init__(self, current: int):
        self.peer_uuids = [current, 0, 0, 0]

    def state_changed(self, old: State, new: State) -> None:
        pass


def diskless(tmp_path: Path, **state) -> tuple[Resource, DisklessEngine]:
    log = ResourceLog(str(tmp_path / "r0.log"), "r0", use_syslog=False)
    log.minor = 0
    res = Resource("r0", log)
    res.diskless = DisklessEngine(res)
    res.peer = Peer_(0xABCD0)
    res.state = State(**{"conn": Conn.Connected, "disk": Disk.Diskless,
                         "pdsk": Disk.UpToDate, **state})
    return res, res.diskless


@pytest.mark.parametrize("role,disk,pdsk,susp_nod,writable,err", [
    (Role.Secondary, Disk.UpToDate, Disk.UpToDate, False, True, errno.EROFS),
    (Role.Secondary, Disk.UpToDate, Disk.UpToDate, False, False, errno.EMEDIUMTYPE),
    (Role.Primary, Disk.Diskless, Disk.UpToDate, False, True, 0),
    (Role.Primary, Disk.UpToDate, Disk.DUnknown, False, True, 0),
    (Role.Primary, Disk.Diskless, Disk.DUnknown, False, True, errno.ENODATA),
    (Role.Primary, Disk.Inconsistent, Disk.Outdated, False, False, errno.ENODATA),
    (Role.Primary, Disk.Diskless, Disk.DUnknown, True, True, 0),     # I/O waits instead
])
def test_open_error_follows_84s_drbd_open(role, disk, pdsk, susp_nod, writable, err):
    s = State(role=role, disk=disk, pdsk=pdsk, susp_nod=susp_nod)
    assert open_error(s, writable) == err


def test_a_diskless_secondary_connected_to_uptodate_data_is_promoted_onto_it(tmp_path: Path):
    res, engine = diskless(tmp_path)
    assert trio.run(engine.promote) == (0, "")
    assert res.state.role == Role.Primary
    assert engine.exposed_uuid == 0xABCD0           # it shows the peer's generation
    assert res.diskless_view() is engine
    assert engine.may_open(True) == errno.ENOMEDIUM   # (no size told yet)
    engine.peer_size = 1 << 20
    assert engine.may_open(True) == 0


@pytest.mark.parametrize("state", [
    {"pdsk": Disk.Outdated},
    {"pdsk": Disk.Inconsistent},
    {"conn": Conn.WFConnection, "pdsk": Disk.DUnknown},
])
def test_a_diskless_node_without_uptodate_data_at_the_peer_stays_secondary(
        tmp_path: Path, state: dict):
    res, engine = diskless(tmp_path, **state)
    assert trio.run(engine.promote) == (-2, "Need access to UpToDate data")
    assert res.state.role == Role.Secondary


def test_an_open_diskless_primary_is_not_demoted(tmp_path: Path):
    res, engine = diskless(tmp_path, role=Role.Primary)
    engine.peer_size = 1 << 20
    engine.opened(True)
    assert res.device_open()
    clock = trio.testing.MockClock(autojump_threshold=0)    # (the 2 s wait for a loop
    code, _ = trio.run(engine.demote, clock=clock)           # device to let go: instant)
    assert code == -12 and res.state.role == Role.Primary
    engine.released(True)
    assert trio.run(engine.demote) == (0, "")
