"""Daemon handlers that steer data generations and resyncs: invalidate, invalidate-remote,
resize, pause-sync, resume-sync, verify, outdate, new-current-uuid (drbdsetup 8.4 forms)."""
from __future__ import annotations

import secrets
from typing import Any

from meta import lkbd
from replicator import resize, resync, verify
from replicator import uuids as U
from replicator.commands import (ERR_NO_DISK, Reply, check_minor, failure, handler, ok,
                                 state_failure)
from replicator.protocol import Msg
from replicator.states import (LOWER_THAN_OUTDATED, NEED_CONNECTION, NO_LOCAL_DISK,
                               NO_REMOTE_DISK, Conn, Disk, Role, StateError)

ERR_PAUSE_IS_SET = (134, "Resync pause flag is already set")
ERR_PAUSE_IS_CLEAR = (135, "Resync pause flag is already cleared")


def _connected_peer(res: Any) -> Any:
    peer = res.peer
    if peer is not None and res.state.conn == Conn.Connected and peer.link is not None:
        return peer
    return None


def _target(daemon: Any, args: dict, verify: bool = False) -> tuple[str, Any, Reply | None]:
    """The resource, or the reply when it has no usable disk (none attached, or it failed
    and the device goes on through the peer): 138, as late 8.4 answers when it cannot get
    the disk, or for verify, which 8.4 leaves to its state engine, -4."""
    obj, err = check_minor(daemon, args)
    res = daemon.resource
    if err is None and (res.device is None or res.device.failed):
        err = state_failure(obj, *NO_LOCAL_DISK) if verify else failure(obj, ERR_NO_DISK)
    return obj, res, err


@handler("invalidate")
async def _invalidate(daemon: Any, args: dict) -> Reply:
    """This node's data is thrown away: full sync from the peer, or, on a StandAlone
    Secondary only (as late 8.4's drbd_adm_invalidate), just Inconsistent with every bit
    set: the full sync follows at the next connect."""
    obj, res, err = _target(daemon, args)
    if err:
        return err
    peer = _connected_peer(res)
    try:
        res.validate(res.state.with_(disk=Disk.Inconsistent))
    except StateError as e:
        return state_failure(obj, e.code, e.text)
    if peer is not None:
        if res.state.pdsk < Disk.UpToDate:
            return state_failure(obj, -2, "Need access to UpToDate data")
        resync.start_sync(peer, source=False, full=True, tell_peer=True, starting=True)
        return ok()
    if res.state.conn > Conn.Connected:
        return state_failure(obj, -8, "Can not start OV/resync since it is already active")
    if res.state.conn != Conn.StandAlone or res.state.role != Role.Secondary:
        return state_failure(obj, *NEED_CONNECTION)      # 8.4 asks for StartingSyncT
    res.device.mark_all_out_of_sync()
    res.change("device", disk=Disk.Inconsistent)
    return ok()


@handler("invalidate-remote")
async def _invalidate_remote(daemon: Any, args: dict) -> Reply:
    """The peer's data is thrown away: full sync from this node."""
    obj, res, err = _target(daemon, args)
    if err:
        return err
    peer = _connected_peer(res)
    if peer is None:
        return state_failure(obj, *NEED_CONNECTION)
    if res.state.disk < Disk.UpToDate:
        return state_failure(obj, -2, "Need access to UpToDate data")
    if res.state.pdsk < Disk.Inconsistent:                  # a diskless peer (8.4's state
        return state_failure(obj, *NO_REMOTE_DISK)          # rules for StartingSyncS)
    resync.start_sync(peer, source=True, full=True, tell_peer=True, starting=True)
    return ok()


def _pause(daemon: Any, args: dict, paused: bool) -> Reply:
    obj, res, err = _target(daemon, args)
    if err:
        return err
    if res.state.user_isp == paused:
        return failure(obj, ERR_PAUSE_IS_SET if paused else ERR_PAUSE_IS_CLEAR)
    peer = res.peer
    if peer is not None and peer.link is not None and res.state.conn >= Conn.Connected:
        resync.set_paused(peer, peer_side=False, paused=paused)
    else:
        res.change("device", hard=True, user_isp=paused)
    return ok()


@handler("resize")
async def _resize(daemon: Any, args: dict) -> Reply:
    obj, err = check_minor(daemon, args)
    if err:
        return err
    refused = await resize.command(daemon, args.get("options") or {})
    return failure(obj, refused) if refused else ok()


@handler("check-resize")
async def _check_resize(daemon: Any, args: dict) -> Reply:
    """8.4's ``drbdsetup check-resize``: remember the backing disk's size now (meta.lkbd),
    where a later ``apply-al`` looks for internal metadata a grown disk left behind."""
    obj, res, err = _target(daemon, args)
    if err:
        return err
    dev = res.device
    if dev.md.layout.is_internal:
        lkbd.record(res.minor, dev.backing_path, dev.md.layout.md_dev_bytes)
    return ok()


@handler("pause-sync")
async def _pause_sync(daemon: Any, args: dict) -> Reply:
    return _pause(daemon, args, True)


@handler("resume-sync")
async def _resume_sync(daemon: Any, args: dict) -> Reply:
    return _pause(daemon, args, False)


@handler("verify")
async def _verify(daemon: Any, args: dict) -> Reply:
    obj, res, err = _target(daemon, args, verify=True)
    if err:
        return err
    if res.peer is None or res.peer.link is None:
        return state_failure(obj, *NEED_CONNECTION)
    if res.state.conn == Conn.Connected and res.state.pdsk < Disk.Inconsistent:
        return state_failure(obj, *NO_REMOTE_DISK)          # (8.4's rules for VerifyS)
    code, text = verify.start(res.peer)
    return state_failure(obj, code, text) if code else ok()


@handler("outdate")
async def _outdate(daemon: Any, args: dict) -> Reply:
    obj, res, err = _target(daemon, args)
    if err:
        return err
    if res.state.disk < Disk.Outdated:
        return state_failure(obj, *LOWER_THAN_OUTDATED)
    if res.state.disk == Disk.Outdated:
        return ok()
    try:
        res.change("device", disk=Disk.Outdated)
    except StateError as e:
        return state_failure(obj, e.code, e.text)
    return ok()


@handler("new-current-uuid")
async def _new_current_uuid(daemon: Any, args: dict) -> Reply:
    obj, res, err = _target(daemon, args)
    if err:
        return err
    dev = res.device
    clear = bool(args.get("clear_bitmap"))
    peer = _connected_peer(res)
    both_fresh = (peer is not None and dev.md.uuids[0] == U.UUID_JUST_CREATED
                  and (peer.peer_uuids[0] & ~1) == U.UUID_JUST_CREATED)
    if clear and both_fresh:
        value = U.with_role_bit(secrets.randbits(64), False)
        dev.log.device("Preparing to skip initial sync")
        dev.log.device(f"new current UUID {U.fmt([value, *dev.md.uuids[:1], *dev.md.uuids[2:]])}")
        # the request must reach the peer before our new state does (or it would resync)
        peer.send(Msg.STATE_REQ, {"what": "skip-initial-sync", "uuid": value})
        skip_initial_sync(res, value, issuer=True)
        return ok()
    uu = U.new_current(U.rotate_bitmap_into_history(dev.md.uuids), dev.is_primary())
    dev.set_uuids(uu)
    dev.log.device(f"new current UUID {U.fmt(uu)}")
    if clear:
        dev.bitmap.clear_all()
        dev.flush_bitmap()
    return ok()


def skip_initial_sync(res: Any, value: int, issuer: bool) -> None:
    """Both nodes just created and told to trust each other: UpToDate without a sync."""
    dev = res.device
    if not issuer:
        dev.log.device("Accepted new current UUID, preparing to skip initial sync")
    dev.set_uuids([value, 0, 0, 0], notify=False)
    dev.bitmap.clear_all()
    dev.flush_bitmap()
    if issuer:
        dev.log.device(f"cleared bitmap UUID {U.fmt(dev.md.uuids)}")
    res.change("device", hard=True, disk=Disk.UpToDate, pdsk=Disk.UpToDate)
