"""Daemon handlers for suspend-io and resume-io (drbdsetup 8.4): the admin's own freeze of
application I/O, and the way out of any freeze (fencing's too, when the fence-peer handler
failed and the admin has made sure the peer cannot go on with the data)."""
from __future__ import annotations

from typing import Any

from replicator.commands import Reply, check_minor, handler, ok, state_failure


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
    code, text = daemon.resource.try_change("device", susp=False, susp_fen=False)
    return state_failure(obj, code, text) if code else ok()
