"""A plain-data picture of a resource, for status, events2, drbdmon and /proc/drbd.

Only msgpack-friendly types (str, int, float, bool, None, dicts), so it crosses the control
socket unchanged and the renderers (replicator.report) stay pure functions.
"""
from __future__ import annotations

from typing import Any


def take(res: Any) -> dict:
    s = res.state
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
        "aftr_isp": s.aftr_isp,
        "peer_isp": s.peer_isp,
        "user_isp": s.user_isp,
        "net": res.net is not None,
        "peer_name": (res.net or {}).get("_peer_name"),
        "protocol": (res.net or {}).get("protocol", "C") if res.net is not None else None,
    }
    dev = res.device
    if dev is not None:
        snap.update(dev.statistics())
    if res.peer is not None:
        snap.update(res.peer.statistics())
    return snap
