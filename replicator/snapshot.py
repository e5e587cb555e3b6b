"""A plain-data picture of a resource, for status, events2, drbdmon and /proc/drbd.

Only msgpack-friendly types (str, int, float, bool, None, dicts, lists), so it crosses the
control socket unchanged and the renderers (replicator.report, replicator.events) stay pure
functions.

Resync progress follows DRBD's "sync marks": every 3 seconds in which the resync made
progress, (time, KiB left) is remembered (the last 7 kept); the rate over the oldest kept mark
(~18 s) is what /proc/drbd calls the current speed, and a mark older than 180 s means stalled.
The marks are kept here, per resync, because every reader (the /proc writer ticks each second
while syncing) goes through ``take``.
"""
from __future__ import annotations

import time
import weakref
from typing import Any

from replicator import latency

SYNC_MARK_STEP = 3.0
SYNC_MARKS = 7
_SYNCING = {"SyncSource", "SyncTarget", "PausedSyncS", "PausedSyncT", "VerifyS", "VerifyT"}

_marks: "weakref.WeakKeyDictionary[Any, list[tuple[float, int]]]" = weakref.WeakKeyDictionary()


def _node_ids(local: str | None, peer: str | None) -> tuple[int, int]:
    """8.4 has no node ids: number the two nodes by address so both sides agree."""
    if local is None or peer is None or local <= peer:
        return 0, 1
    return 1, 0


def _sync_progress(res: Any, snap: dict) -> None:
    peer, dev = res.peer, res.device
    rs = getattr(peer, "resync", None) if peer is not None else None
    if rs is None or dev is None or snap["conn"] not in _SYNCING:
        return
    total_kib = int(getattr(rs, "total_bits", 0)) * 4
    if not total_kib:
        return
    left_kib = dev.bitmap.count() * 4
    now = time.monotonic()
    started = float(getattr(rs, "started", 0.0) or now)
    try:
        marks = _marks.setdefault(rs, [(started, total_kib)])
    except TypeError:
        marks = [(started, total_kib)]
    last_t, last_left = marks[-1]
    if now - last_t >= SYNC_MARK_STEP and left_kib != last_left:
        marks.append((now, left_kib))
        del marks[:-SYNC_MARKS]
    mark_t, mark_left = marks[0]
    want = getattr(rs, "want_kib", 0)           # the rate controller's current target
    snap.update({
        "rs_total_kib": total_kib,
        "rs_left_kib": left_kib,
        "rs_mark_left_kib": mark_left,
        "rs_mark_age_ms": int((now - mark_t) * 1000),
        "rs_elapsed_ms": int((now - started - float(getattr(rs, "paused_s", 0.0))) * 1000),
        "rs_want_kib": int(want or 0),
        "done": 100.0 * (total_kib - min(left_kib, total_kib)) / total_kib,
    })


def take(res: Any) -> dict:
    s = res.state
    net = res.net
    local_addr = (net or {}).get("_local")
    peer_addr = (net or {}).get("_peer")
    node_id, peer_node_id = _node_ids(local_addr, peer_addr)
    snap: dict[str, Any] = {
        "name": res.name,
        "minor": res.minor,
        "volume": res.volume_nr,
        "device": res.device_path,
        "role": s.role.name,
        "peer": s.peer.name,
        "conn": s.conn.name,
        "disk": s.disk.name,
        "pdsk": s.pdsk.name,
        "susp": s.susp,
        "susp_fen": s.susp_fen,
        "susp_nod": s.susp_nod,
        "aftr_isp": s.aftr_isp,
        "peer_isp": s.peer_isp,
        "user_isp": s.user_isp,
        "net": net is not None,
        "peer_name": (net or {}).get("_peer_name"),
        "protocol": (net or {}).get("protocol", "C") if net is not None else None,
        "local_addr": local_addr,
        "peer_addr": peer_addr,
        "node_id": node_id,
        "peer_node_id": peer_node_id,
        "write_ordering": "flush",        # writes reach the disk in order; flush = fdatasync
        "upper_pending": latency.writes.upper_pending,
        "lower_pending": 0,
        "ap_in_flight_kib": 0,
        "rs_in_flight_kib": 0,
        "pending": 0,
        # requests from the peer not yet answered: data and resync requests are answered in
        # the same step that handles them, so none is ever outstanding between steps
        "unacked": 0,
        "epochs": 1,
        "latency": latency.snapshot(),
    }
    dev = res.device
    if dev is not None:
        snap.update(dev.statistics())
        snap["lower_pending"] = int(getattr(dev, "al_busy", 0))
    elif res.diskless is not None:
        snap.update(res.diskless.statistics())
    peer = res.peer
    if peer is not None:
        snap.update(peer.statistics())
        tl = getattr(peer, "tl", {})
        snap["ap_in_flight_kib"] = sum(p.length for p in tl.values()) >> 10
        rs = getattr(peer, "resync", None)
        if rs is not None:
            snap["rs_in_flight_kib"] = int(getattr(rs, "inflight_bytes", 0)) >> 10
            snap["pending"] = snap.get("pending", 0) + len(getattr(rs, "inflight", ()))
        snap["epochs"] = 1 + len(getattr(peer, "flushes", ()))
    _sync_progress(res, snap)
    return snap
