"""``drbdsetup events2`` lines (DRBD 9 format) from resource snapshots. Pure functions.

A snapshot is split into DRBD 9's objects — resource, connection, device, peer-device, path —
each with an identity (``name:r0 volume:0 minor:0``) and groups of fields. The first picture
of a resource prints every object as ``exists`` (or ``create`` for a resource that appeared
later); after that a new picture prints ``change`` lines carrying only the groups whose text
changed, ``create``/``destroy`` for objects that came or went, as drbdsetup does.

Group rules follow drbd-utils: the device's backing_dev/disk/client/quorum go together, the
peer disk goes with peer-client, statistics only with ``--statistics``; the resync progress
(``done:``) of a peer device is printed whenever it moved.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from replicator.report import (conn9, done_percent, repl9, resync_susp_text, susp_text,
                               sync_details, sync_rate)

KINDS_CREATE_ORDER = ("resource", "connection", "device", "peer-device", "path")
KINDS_DESTROY_ORDER = ("path", "peer-device", "connection", "device", "resource")


@dataclass
class Obj:
    kind: str
    ident: str                       # the identifying keys printed on every line
    destroy_ident: str               # what a destroy line names
    groups: list[tuple[str, str]] = field(default_factory=list)   # (group, " key:value ...")

    def group_map(self) -> dict[str, str]:
        return dict(self.groups)


def address(addr: str | None) -> str:
    """``127.0.0.1:7788`` -> ``ipv4:127.0.0.1:7788`` (DRBD's path address form)."""
    if not addr:
        return "none"
    if addr.split(":", 1)[0] in ("ipv4", "ipv6", "ssocks", "sdp"):
        return addr
    host, _, port = addr.rpartition(":")
    if ":" in host or host.startswith("["):
        return f"ipv6:[{host.strip('[]')}]:{port}"
    return f"ipv4:{host}:{port}"


def promotion(snap: dict) -> tuple[bool, int]:
    """drbd-utils' compute_promotion_info for one volume and one peer."""
    if snap.get("minor") is None:
        return False, 0
    disk, pdsk = snap["disk"], snap["pdsk"]
    connected = conn9(snap["conn"]) == "Connected"
    replicas = int(disk == "UpToDate") + int(connected and pdsk == "UpToDate")
    if replicas == 0:
        return False, 0
    have_primary = snap["role"] == "Primary" or (connected and snap["peer"] == "Primary")
    all_have_disk = disk in ("UpToDate", "Consistent", "Inconsistent")
    score = int(all_have_disk) * 10000 + min(int(disk == "UpToDate"), 99) * 100 + min(replicas, 99)
    return not have_primary, score


def objects(snap: dict, statistics: bool = False) -> dict[tuple, Obj]:
    """The DRBD 9 objects of one snapshot, keyed for matching and in DRBD's print order."""
    name = snap["name"]
    out: dict[tuple, Obj] = {}
    may, score = promotion(snap)
    res = Obj("resource", f"name:{name}", f"name:{name}")
    res.groups.append(("role", f" role:{snap['role']}"))
    res.groups.append(("info", f" suspended:{susp_text(snap)} force-io-failures:no"))
    if statistics:
        res.groups.append(("stats", f" write-ordering:{snap.get('write_ordering', 'flush')}"))
    res.groups.append(("promotion", f" may_promote:{'yes' if may else 'no'} "
                                    f"promotion_score:{score}"))
    out[("resource",)] = res
    volume = snap.get("volume", 0) or 0
    has_device = snap.get("minor") is not None
    conn_ident = None
    if snap.get("net"):
        peer_name = snap.get("peer_name") or "peer"
        conn_ident = f"name:{name} peer-node-id:{snap.get('peer_node_id', 1)} conn-name:{peer_name}"
        con = Obj("connection", conn_ident, conn_ident)
        cstate = conn9(snap["conn"])
        con.groups.append(("cstate", f" connection:{cstate}"))
        con.groups.append(("role", f" role:{snap['peer'] if cstate == 'Connected' else 'Unknown'}"))
        if statistics:
            con.groups.append(("stats", f" congested:no ap-in-flight:{snap.get('ap_in_flight_kib', 0)}"
                                        f" rs-in-flight:{snap.get('rs_in_flight_kib', 0)}"))
        out[("connection", peer_name)] = con
    if has_device:
        dev = Obj("device", f"name:{name} volume:{volume} minor:{snap['minor']}",
                  f"name:{name} volume:{volume}")
        dev.groups.append(("info", f" backing_dev:{snap.get('backing_dev') or 'none'} "
                                   f"disk:{snap['disk']} client:no quorum:yes"))
        if statistics:
            dev.groups.append(("stats",
                               f" size:{snap.get('size_kib', 0)} read:{snap.get('read_kib', 0)}"
                               f" written:{snap.get('written_kib', 0)}"
                               f" al-writes:{snap.get('al_writes', 0)}"
                               f" bm-writes:{snap.get('bm_writes', 0)}"
                               f" upper-pending:{snap.get('upper_pending', 0)}"
                               f" lower-pending:{snap.get('lower_pending', 0)}"
                               " al-suspended:no blocked:no"))
        out[("device", volume)] = dev
    if conn_ident is not None and has_device:
        ident = f"{conn_ident} volume:{volume}"
        pd = Obj("peer-device", ident, ident)
        pd.groups.append(("repl", f" replication:{repl9(snap['conn'])}"))
        pd.groups.append(("disk", f" peer-disk:{snap['pdsk']} peer-client:no"))
        pd.groups.append(("rsusp", f" resync-suspended:{resync_susp_text(snap)}"))
        if sync_details(snap):
            pd.groups.append(("progress", f" done:{done_percent(snap):.2f}"))
        if statistics:
            text = (f" received:{snap.get('nr_kib', 0)} sent:{snap.get('ns_kib', 0)}"
                    f" out-of-sync:{snap.get('oos_kib', 0)} pending:{snap.get('pending', 0)}"
                    f" unacked:{snap.get('unacked', 0)}")
            if sync_details(snap):
                rate, eta = sync_rate(snap)
                text += f" dbdt1:{rate / 1024:.2f} eta:" + (f"{eta:.0f}" if eta is not None
                                                           else "nan")
            pd.groups.append(("stats", text))
        out[("peer-device", snap.get("peer_name") or "peer", volume)] = pd
    if conn_ident is not None:
        ident = (f"{conn_ident} local:{address(snap.get('local_addr'))} "
                 f"peer:{address(snap.get('peer_addr'))}")
        path = Obj("path", ident, ident)
        established = snap["conn"] not in ("StandAlone", "Disconnecting", "Unconnected",
                                           "Timeout", "BrokenPipe", "NetworkFailure",
                                           "ProtocolError", "TearDown", "WFConnection")
        path.groups.append(("established", f" established:{'yes' if established else 'no'}"))
        out[("path", ident)] = path
    return out


def _ordered(objs: dict[tuple, Obj], order: tuple[str, ...]) -> list[tuple[tuple, Obj]]:
    return sorted(objs.items(), key=lambda kv: order.index(kv[1].kind))


def changes(old: dict[tuple, Obj] | None, new: dict[tuple, Obj] | None,
            action_new: str = "create", full: bool = False) -> list[str]:
    """Lines (without timestamp or newline) turning ``old`` into ``new``.

    ``old`` None: everything in ``new`` is printed as ``action_new`` (``exists`` in the initial
    dump). ``new`` None: the resource is gone, everything in ``old`` is destroyed.
    """
    old = old or {}
    new = new or {}
    lines = []
    for key, obj in _ordered(new, KINDS_CREATE_ORDER):
        before = old.get(key)
        if before is None:
            lines.append(f"{action_new} {obj.kind} {obj.ident}"
                         + "".join(text for _, text in obj.groups))
            continue
        was = before.group_map()
        changed = [text for g, text in obj.groups if was.get(g) != text]
        if not changed:
            continue
        shown = [text for _, text in obj.groups] if full else changed
        lines.append(f"change {obj.kind} {obj.ident}" + "".join(shown))
    for key, obj in _ordered(old, KINDS_DESTROY_ORDER):
        if key not in new:
            lines.append(f"destroy {obj.kind} {obj.destroy_ident}")
    return lines


def timestamp(now: float | None = None) -> str:
    """``--timestamps`` prefix: local time with microseconds and UTC offset, then a blank."""
    import datetime
    t = datetime.datetime.now().astimezone() if now is None else \
        datetime.datetime.fromtimestamp(now).astimezone()
    off = int(t.utcoffset().total_seconds()) if t.utcoffset() else 0
    sign = "+" if off >= 0 else "-"
    return (f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond:06d}"
            f"{sign}{abs(off) // 3600:02d}:{abs(off) // 60 % 60:02d} ")
