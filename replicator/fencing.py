"""Resource-level fencing: ``disk { fencing resource-only | resource-and-stonith; }`` with a
``handlers { fence-peer "..."; }`` script, as DRBD 8.4 runs them.

A Primary that loses its peer while the peer's disk may be good (pdsk DUnknown or better),
and a Secondary asked to become Primary without a connection, call the fence-peer handler
(``drbdadm fence-peer RES``). Its exit code says what became of the peer:

    3  the peer's disk is Inconsistent (or worse)     pdsk -> Inconsistent
    4  the peer was outdated (or was already)         pdsk -> Outdated
    5  the peer is unreachable, assumed dead          pdsk -> Outdated, if our disk is UpToDate
    6  the peer is Primary: outdate ourselves         disk -> Outdated
    7  the peer was stonithed                         pdsk -> Outdated

anything else means the handler is broken and nothing changes (under resource-and-stonith
I/O then stays frozen until ``drbdadm resume-io``). The freeze itself, and its end once the
peer is Outdated, are state rules (replicator.resource). A graceful disconnect needs no
handler: the Secondary outdates itself, on disk, before the Primary counts on it.
"""
from __future__ import annotations

from typing import Any

import trio

from replicator import handlers
from replicator.link import LinkClosed
from replicator.protocol import Msg
from replicator.states import Conn, Disk, Role

_PEER_OUTDATED = {4: "peer was fenced", 7: "peer was stonithed"}


def policy(res: Any) -> str | None:
    """8.4's highest_fencing_policy: the disk's ``fencing``; None when the disk is not even
    Consistent (then there is nothing of ours worth fencing the peer for)."""
    dev = res.device
    if dev is None or dev.failed or res.state.disk < Disk.Consistent:
        return None
    return dev.fencing


async def try_outdate_peer(res: Any) -> bool:
    """8.4's conn_try_outdate_peer: run the fence-peer handler unless the policy says not to;
    True if the peer's disk is now known to be Outdated or worse (or fencing is off)."""
    if res.state.conn >= Conn.WFReportParams:
        res.log.resource_line("Expected cstate < C_WF_REPORT_PARAMS")
        return False
    peer = res.peer
    sessions = peer.sessions if peer is not None else 0
    fp = policy(res)
    if fp is None:
        res.log.warning("Not fencing peer, I'm not even Consistent myself.")
        if res.state.susp_fen:
            res.change("resource", hard=True, susp_fen=False)
        return False
    if fp == "dont-care":
        return True
    code = (await handlers.call(res, "fence-peer", connection=True)) & 0xff
    changes: dict[str, Disk] = {}
    if code == 3:
        meaning, changes = "peer is inconsistent or worse", {"pdsk": Disk.Inconsistent}
    elif code in _PEER_OUTDATED:
        if code == 7 and fp != "resource-and-stonith":
            res.log.resource_line("fence-peer() = 7 && fencing != Stonith !!!")
        meaning, changes = _PEER_OUTDATED[code], {"pdsk": Disk.Outdated}
    elif code == 5 and res.state.disk == Disk.UpToDate:
        meaning, changes = "peer is unreachable, assumed to be dead", {"pdsk": Disk.Outdated}
    elif code == 5:
        meaning = "peer unreachable, doing nothing since disk != UpToDate"
    elif code == 6:
        res.log.warning("Peer is primary, outdating myself.")
        meaning, changes = "peer is active", {"disk": Disk.Outdated}
    else:
        res.log.resource_line(f"fence-peer helper broken, returned {code}")
        return False        # (under resource-and-stonith I/O stays frozen)
    res.log.resource_line(f"fence-peer helper returned {code} ({meaning})")
    current = res.peer.sessions if res.peer is not None else 0
    if res.state.conn < Conn.WFReportParams and changes:
        if current != sessions:     # connected and lost again while the handler ran
            res.log.resource_line("Ignoring fence-peer exit code")
        else:
            res.try_change("resource", **changes)
    return res.state.pdsk <= Disk.Outdated


def after_connection_loss(res: Any) -> None:
    """8.4's conn_disconnect: a Primary whose peer's disk may still be good fences it
    (in the background; resource-and-stonith froze I/O meanwhile)."""
    s = res.state
    if s.role == Role.Primary and s.pdsk >= Disk.DUnknown and res.nursery is not None:
        res.nursery.start_soon(try_outdate_peer, res)


async def outdate_before_disconnect(res: Any) -> dict:
    """8.4's conn_try_disconnect under fencing: a graceful disconnect leaves no peer to
    fence. A fencing Primary asks its peer to outdate itself and counts on that only once
    the peer confirmed it (else the peer is simply lost: fence-peer runs); a Secondary
    leaving a fencing Primary outdates its own disk first. Returns our state changes."""
    s, peer, dev = res.state, res.peer, res.device
    if peer is None or peer.link is None or s.conn < Conn.Connected:
        return {}
    if (s.role == Role.Primary and policy(res) not in (None, "dont-care")
            and s.pdsk >= Disk.Consistent):
        session = peer.sessions
        confirmed = await _peer_outdates_itself(peer)
        if confirmed and peer.sessions == session and res.state.conn >= Conn.Connected:
            return {"pdsk": Disk.Outdated}
        return {}                   # (the answer of a connection that is gone: not ours)
    if (s.role == Role.Secondary and s.peer == Role.Primary and s.pdsk >= Disk.Consistent
            and s.disk >= Disk.Outdated and dev is not None and not dev.failed
            and peer.peer_params.get("fencing", "dont-care") != "dont-care"):
        await dev.persist_outdated()
        return {"disk": Disk.Outdated}
    return {}


async def _peer_outdates_itself(peer: Any) -> bool:
    ev, answer = trio.Event(), []
    peer.outdate_answer = (ev, answer)
    try:
        peer.send(Msg.STATE_REQ, {"what": "outdate"})
        with trio.move_on_after(peer.opts["timeout"] / 10):
            await ev.wait()
    except LinkClosed:
        pass
    peer.outdate_answer = None
    return bool(answer and answer[0])


async def on_outdate_request(peer: Any, body: dict) -> None:
    """The Primary is about to disconnect and asks us to be Outdated (we promise it, on
    disk, and the state follows when the connection goes), or this is our peer's answer."""
    if body["what"] == "outdated":
        if peer.outdate_answer is not None:
            ev, answer = peer.outdate_answer
            answer.append(bool(body.get("ok")))
            ev.set()
        return
    res, dev = peer.res, peer.res.device
    ok = (res.state.role == Role.Secondary and dev is not None and not dev.failed
          and res.state.disk >= Disk.Outdated)
    if ok:
        await dev.persist_outdated()
        ok = not dev.failed                 # (the metadata write failed: not on disk)
    peer.send(Msg.STATE_REQ, {"what": "outdated", "ok": ok})


_SOURCE_SIDE = (Conn.WFBitMapS, Conn.StartingSyncS, Conn.SyncSource, Conn.PausedSyncS)


def teardown_changes(res: Any, disconnect: dict | None) -> dict:
    """What a lost connection changes here beyond the connection state: the peer said it
    outdated itself as it left (its DISCONNECT), or we promised the Primary to be
    Outdated. A SyncSource does not know how far its target got (it may have finished
    just now, or not begun): its disk is DUnknown then, not Inconsistent, so it is fenced."""
    changes: dict[str, Disk] = {}
    if res.state.conn in _SOURCE_SIDE:
        changes["pdsk"] = Disk.DUnknown
    if disconnect is not None and disconnect.get("outdated"):
        changes["pdsk"] = Disk.Outdated
    dev = res.device
    if dev is not None and dev.outdate_promised and res.state.role == Role.Secondary \
            and res.state.disk >= Disk.Outdated:
        changes["disk"] = Disk.Outdated
    return changes
