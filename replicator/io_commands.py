"""Daemon handlers for suspend-io and resume-io (drbdsetup 8.4): the admin's own freeze of
application I/O, and the way out of a freeze (fencing's too, when the fence-peer handler
failed and the admin has made sure the peer cannot go on with the data; a freeze for lack
of data lasts while that lasts, but resume-io without a disk fails the I/O it holds)."""
from __future__ import annotations

from typing import Any

from replicator.commands import Reply, check_minor, handler, ok, state_failure
from replicator.states import Disk


@handler("suspend-io")
async def _suspend_io(daemon: Any, args: dict) -> Reply:
    obj, err = check_minor(daemon, args)
    if err:
        return err
    code, text = daemon.resource.try_change("device", susp=True)
    return state_failure(obj, code, text) if code else ok()


@handler("resume-io")
async def _resume_io(daemon: Any, args: dict) -> Reply:
    obj, err = check_minor(daemon, args)
    if err:
        return err
    res = daemon.resource
    code, text = res.try_change("device", susp=False, susp_fen=False, susp_nod=False)
    if code:
        return state_failure(obj, code, text)
    if res.state.disk < Disk.Inconsistent and res.state.pdsk < Disk.UpToDate:
        res.fail_frozen_io()        # no data to retry on: frozen I/O fails (8.4; a diskless
    return ok()                     # Primary's goes on through its UpToDate peer)
