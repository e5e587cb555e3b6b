"""Text renderings of resource snapshots: ``status`` (DRBD 9 text), role/cstate/dstate, show.

Pure functions of the dicts ``replicator.snapshot.take`` produces.
"""
from __future__ import annotations

# DRBD 9 connection-state names for the 8.4 states (drbd-reference.md §3.3)
_CONN9 = {"WFConnection": "Connecting", "WFReportParams": "Connecting"}
_REPL_STATES = {"StartingSyncS", "StartingSyncT", "WFBitMapS", "WFBitMapT", "WFSyncUUID",
                "SyncSource", "SyncTarget", "VerifyS", "VerifyT", "PausedSyncS",
                "PausedSyncT", "Ahead", "Behind"}
_CONNECTED = {"Connected"} | _REPL_STATES


def status(snap: dict, verbose: bool = False, statistics: bool = False) -> str:
    """``drbdadm status`` for one resource, ending with the empty line DRBD prints."""
    lines = []
    head = f"{snap['name']}"
    if verbose:
        head += f" node-id:0"
    head += f" role:{snap['role']}"
    if verbose or snap.get("susp"):
        head += f" suspended:{'user' if snap.get('susp') else 'no'}"
    lines.append(head)
    if snap.get("minor") is not None:
        dev = "  "
        if snap.get("volume", 0) != 0 or verbose:
            dev += f"volume:{snap.get('volume', 0)} "
        if verbose:
            dev += f"minor:{snap['minor']} "
        dev += f"disk:{snap['disk']}"
        if snap["disk"] == "Diskless":
            dev += " client:no"
        if verbose and snap.get("backing_dev"):
            dev += f" backing_dev:{snap['backing_dev']}"
        lines.append(dev)
        if statistics:
            lines.append(f"      size:{snap.get('size_kib', 0)} read:{snap.get('read_kib', 0)} "
                         f"written:{snap.get('written_kib', 0)} "
                         f"al-writes:{snap.get('al_writes', 0)} bm-writes:{snap.get('bm_writes', 0)} "
                         f"upper-pending:0 lower-pending:0 al-suspended:no blocked:no")
    if snap.get("net"):
        conn = snap["conn"]
        peer = f"  {snap.get('peer_name') or 'peer'}"
        if conn in _CONNECTED:
            peer += f" role:{snap['peer']}"
        else:
            peer += f" connection:{_CONN9.get(conn, conn)}"
        lines.append(peer)
        pd = "    "
        if snap.get("volume", 0) != 0 or verbose:
            pd += f"volume:{snap.get('volume', 0)} "
        if conn in _REPL_STATES:
            pd += f"replication:{conn} "
        pd += f"peer-disk:{snap['pdsk']}"
        if snap.get("done") is not None and conn in _REPL_STATES:
            pd += f" done:{snap['done']:.2f}"
        lines.append(pd)
    return "\n".join(lines) + "\n\n"


def unconfigured(snap: dict | None) -> bool:
    """8.4 prints ``Unconfigured`` for a minor that is StandAlone and Diskless (or not there)."""
    return snap is None or (snap["conn"] == "StandAlone" and snap["disk"] == "Diskless")


def role(snap: dict | None) -> str:
    return "Unconfigured" if unconfigured(snap) else f"{snap['role']}/{snap['peer']}"


def cstate(snap: dict | None) -> str:
    return "Unconfigured" if unconfigured(snap) else snap["conn"]


def dstate(snap: dict | None) -> str:
    return "Unconfigured" if unconfigured(snap) else f"{snap['disk']}/{snap['pdsk']}"
