"""Text renderings of resource snapshots: ``status`` (DRBD 9 text), role/cstate/dstate, show.

Pure functions of the dicts ``replicator.snapshot.take`` produces.
"""
from __future__ import annotations

# DRBD 9 names for 8.4 connection states (drbd-reference.md §3.3): the connection is
# "Connecting" while we wait, "Connected" from the handshake on; the replication state is "Off"
# until the handshake finished, then "Established" or the 8.4 name of the sync state.
_REPL_STATES = ("StartingSyncS", "StartingSyncT", "WFBitMapS", "WFBitMapT", "WFSyncUUID",
                "SyncSource", "SyncTarget", "VerifyS", "VerifyT", "PausedSyncS",
                "PausedSyncT", "Ahead", "Behind")
_SYNC_STATES = ("SyncSource", "SyncTarget", "PausedSyncS", "PausedSyncT", "VerifyS", "VerifyT")


def conn9(conn: str) -> str:
    """DRBD 9 connection state of an 8.4 ``cs``."""
    if conn == "WFConnection":
        return "Connecting"
    if conn == "WFReportParams" or conn == "Connected" or conn in _REPL_STATES:
        return "Connected"
    return conn


def repl9(conn: str) -> str:
    """DRBD 9 replication state of an 8.4 ``cs``."""
    if conn == "Connected":
        return "Established"
    return conn if conn in _REPL_STATES else "Off"


def susp_text(snap: dict) -> str:
    """``suspended:`` of status and events2: why application I/O waits."""
    return ",".join(w for w, k in (("user", "susp"), ("no-data", "susp_nod"),
                                   ("fencing", "susp_fen")) if snap.get(k)) or "no"


def resync_susp_text(snap: dict) -> str:
    parts = [w for w, k in (("user", "user_isp"), ("peer", "peer_isp"),
                            ("dependency", "aftr_isp")) if snap.get(k)]
    return ",".join(parts) or "no"


def sync_details(snap: dict) -> bool:
    """DRBD prints ``done:`` (and dbdt1/eta) only while a resync with a known total runs."""
    return snap.get("conn") in _SYNC_STATES and bool(snap.get("rs_total_kib"))


def done_percent(snap: dict) -> float:
    total = snap.get("rs_total_kib") or 0
    if not total:
        return float(snap.get("done") or 0.0)
    left = min(snap.get("rs_left_kib") or 0, total)
    return 100.0 * (total - left) / total


def sync_rate(snap: dict) -> tuple[float, float | None]:
    """(KiB/s over the reference sync mark, seconds to go or None when nothing moved)."""
    db = (snap.get("rs_mark_left_kib") or 0) - (snap.get("rs_left_kib") or 0)
    dt = (snap.get("rs_mark_age_ms") or 0) or 1
    if db <= 0:
        return 0.0, None
    rate = db * 1000.0 / dt
    return rate, (snap.get("rs_left_kib") or 0) / rate


def _latency_keys(snap: dict, stages: tuple[str, ...]) -> list[str]:
    lat = snap.get("latency") or {}
    out = []
    for stage in stages:
        n, p50, p99, mx = (lat.get(stage) or [0, 0, 0, 0])[:4]
        if n:
            out.append(f" latency-{stage}-us:{p50}/{p99}/{mx}")
    return out


class Wrapper:
    """drbd-utils' ``wrap_printf``: fields go on the current line while they fit the width;
    a field that does not fit starts a new line indented to the given level (its leading
    blanks dropped)."""

    def __init__(self, columns: int = 80):
        self.columns = columns if columns > 0 else 80
        self.col = 0
        self.parts: list[str] = []

    def __call__(self, indent: int, text: str) -> None:
        if self.col + len(text) > self.columns:
            self.parts.append("\n")
            if text.startswith("\n"):
                text = text[1:]
            self.col = 0
        if self.col == 0:
            text = text.lstrip(" ")
            self.parts.append(" " * indent)
            self.col += indent
        self.parts.append(text)
        self.col += len(text)
        if text.endswith("\n"):
            self.col = 0

    def text(self) -> str:
        return "".join(self.parts)


def _device_statistics(w: Wrapper, snap: dict, verbose: bool, statistics: bool) -> None:
    indent = 6
    if statistics:
        if verbose:
            w(indent, f" size:{snap.get('size_kib', 0)}")
        w(indent, f" read:{snap.get('read_kib', 0)}")
        w(indent, f" written:{snap.get('written_kib', 0)}")
        if verbose:
            w(indent, f" al-writes:{snap.get('al_writes', 0)}")
            w(indent, f" bm-writes:{snap.get('bm_writes', 0)}")
            w(indent, f" upper-pending:{snap.get('upper_pending', 0)}")
            w(indent, f" lower-pending:{snap.get('lower_pending', 0)}")
            w(indent, " al-suspended:no")
    if verbose:
        w(indent, " blocked:no")
    if statistics:
        for key in _latency_keys(snap, ("local", "total")):
            w(indent, key)


def _oos_kib(snap: dict) -> int:
    """Out of sync per the local bitmap: none without a local disk (8.4 counts only while
    it has one; a failed disk's bitmap stays in memory until detach)."""
    return 0 if snap.get("disk") in ("Diskless", "Failed") else snap.get("oos_kib", 0)


def _peer_device_statistics(w: Wrapper, snap: dict, verbose: bool) -> None:
    indent = 8
    w(indent, f" received:{snap.get('nr_kib', 0)}")
    w(indent, f" sent:{snap.get('ns_kib', 0)}")
    oos = _oos_kib(snap)
    if verbose or oos:
        w(indent, f" out-of-sync:{oos}")
    if verbose:
        w(indent, f" pending:{snap.get('pending', 0)}")
        w(indent, f" unacked:{snap.get('unacked', 0)}")
        if sync_details(snap):
            rate, eta = sync_rate(snap)
            w(indent, f" dbdt1:{rate / 1024:.2f}")
            w(indent, f" eta:{eta:.0f}" if eta is not None else " eta:nan")
    for key in _latency_keys(snap, ("send", "ack")):
        w(indent, key)


def status(snap: dict, verbose: bool = False, statistics: bool = False, columns: int = 80,
           is_a_tty: bool = False) -> str:
    """``drbdsetup status`` of one resource (drbd-utils' status_cmd), ending with the empty
    line DRBD prints after each resource."""
    w = Wrapper(columns)
    # resource
    w(0, snap["name"])
    if verbose:
        w(4, f" node-id:{snap.get('node_id', 0)}")
    w(4, f" role:{snap['role']}")
    if verbose or susp_text(snap) != "no":
        w(4, f" suspended:{susp_text(snap)}")
    if verbose:
        w(4, " force-io-failures:no")
    if statistics and verbose:
        w(4, "\n")
        w(4, f" write-ordering:{snap.get('write_ordering', 'flush')}")
    w(0, "\n")
    volume = snap.get("volume", 0) or 0
    single = volume == 0                 # udrbd: one volume per resource
    has_device = snap.get("minor") is not None
    # device
    if has_device:
        indent = 2
        if verbose or not single:
            w(indent, f"volume:{volume}")
            indent = 6
            if verbose:
                w(indent, f" minor:{snap['minor']}")
        w(indent, f" disk:{snap['disk']}")
        if snap["disk"] == "Diskless" and (verbose or not is_a_tty):
            w(indent, " client:no")
        if verbose:
            w(indent, f" backing_dev:{snap.get('backing_dev') or 'none'}")
            w(indent, " quorum:yes")
        if statistics:
            w(6, "\n")
        _device_statistics(w, snap, verbose, statistics)
        w(6, "\n")
    # connection and peer device
    if snap.get("net"):
        conn = snap["conn"]
        cstate = conn9(conn)
        w(2, snap.get("peer_name") or "peer")
        if verbose:
            w(6, f" node-id:{snap.get('peer_node_id', 1)}")
        if verbose or cstate != "Connected":
            w(6, f" connection:{cstate}")
        if verbose or cstate == "Connected":
            w(6, f" role:{snap['peer']}")
        if verbose:
            w(6, " congested:no")
            w(6, f" ap-in-flight:{snap.get('ap_in_flight_kib', 0)}")
            w(6, f" rs-in-flight:{snap.get('rs_in_flight_kib', 0)}")
        w(0, "\n")
        if has_device and (verbose or statistics or cstate == "Connected"):
            indent = 4
            if verbose or not single:
                w(indent, f"volume:{volume}")
                indent = 8
            repl = repl9(conn)
            if verbose or repl not in ("Off", "Established"):
                w(indent, f" replication:{repl}")
                indent = 8
            if verbose or statistics or repl != "Off" or snap["pdsk"] != "DUnknown":
                w(indent, f" peer-disk:{snap['pdsk']}")
                if snap["pdsk"] == "Diskless" and (verbose or not is_a_tty):
                    w(indent, " peer-client:no")
                indent = 8
                if sync_details(snap) or (snap["conn"] in _SYNC_STATES
                                          and snap.get("done") is not None):
                    w(indent, f" done:{done_percent(snap):.2f}")
                if verbose or resync_susp_text(snap) != "no":
                    w(indent, f" resync-suspended:{resync_susp_text(snap)}")
                if statistics:
                    w(indent, "\n")
                    _peer_device_statistics(w, snap, verbose)
            w(0, "\n")
    w(0, "\n")
    return w.text()


# -- /proc/drbd (8.4) -------------------------------------------------------------------------
PROC_VERSION = "version: 8.4.11 (api:1/proto:86-101)"


def proc_header(build: str) -> str:
    return f"{PROC_VERSION}\n{build}\n"


def thousands(v: int) -> str:
    """DRBD's seq_printf_with_thousands_grouping."""
    v = int(v)
    if v >= 1000000:
        return f"{v // 1000000},{v % 1000000 // 1000:03d},{v % 1000:03d}"
    if v >= 1000:
        return f"{v // 1000},{v % 1000:03d}"
    return str(v)


def _syncer_progress(snap: dict) -> str:
    """The two progress lines of drbd_syncer_progress (8.4), from KiB counts."""
    total_bits = (snap.get("rs_total_kib") or 0) // 4
    left_bits = min((snap.get("rs_left_kib") or 0) // 4, total_bits)
    shift = 16 if total_bits > 0xFFFFFFFF else 10
    res = 1000 - (left_bits >> shift) * 1000 // (1 + (total_bits >> shift))
    x = res // 50
    y = 20 - x
    out = "\t[" + "=" * max(x - 1, 0) + ">" + "." * y + "] "
    out += "verified:" if snap["conn"] in ("VerifyS", "VerifyT") else "sync'ed:"
    out += f"{res // 10:3d}.{res % 10}% "
    if total_bits > (4 << (30 - 12)):
        out += f"({(left_bits >> 10) * 4}/{(total_bits >> 10) * 4})M"
    else:
        out += f"({left_bits * 4}/{total_bits * 4})K"
    out += "\n\t"
    # ~18 s average over the reference sync mark
    dt = (snap.get("rs_mark_age_ms") or 0) // 1000
    stalled = dt > 180
    dt = dt or 1
    db = max((snap.get("rs_mark_left_kib") or 0) // 4 - left_bits, 0)
    rt = (dt * (left_bits // (db // 100 + 1))) // 100
    out += f"finish: {rt // 3600}:{rt % 3600 // 60:02d}:{rt % 60:02d}"
    out += f" speed: {thousands(db // dt * 4)} ("
    dt = (snap.get("rs_elapsed_ms") or 0) // 1000 or 1
    out += thousands((total_bits - left_bits) // dt * 4) + ")"
    if snap["conn"] in ("SyncTarget", "VerifyS"):
        out += f" want: {thousands(snap.get('rs_want_kib') or 0)}"
    out += " K/sec" + (" (stalled)" if stalled else "") + "\n"
    return out


def proc_device(snap: dict) -> str:
    """One minor's lines of /proc/drbd (8.4 drbd_seq_show), without the header."""
    minor = snap["minor"]
    if snap["conn"] == "StandAlone" and snap["disk"] == "Diskless" and snap["role"] == "Secondary":
        out = f"{minor:2d}: cs:Unconfigured\n"
    else:
        proto = snap.get("protocol") if snap.get("net") else None
        flags = (("s" if susp_text(snap) != "no" else "r") + ("a" if snap.get("aftr_isp") else "-")
                 + ("p" if snap.get("peer_isp") else "-") + ("u" if snap.get("user_isp") else "-")
                 + "--")
        out = (f"{minor:2d}: cs:{snap['conn']} ro:{snap['role']}/{snap['peer']} "
               f"ds:{snap['disk']}/{snap['pdsk']} {proto or ' '} {flags}\n"
               f"    ns:{snap.get('ns_kib', 0)} nr:{snap.get('nr_kib', 0)} "
               f"dw:{snap.get('written_kib', 0)} dr:{snap.get('read_kib', 0)} "
               f"al:{snap.get('al_writes', 0)} bm:{snap.get('bm_writes', 0)} "
               f"lo:{snap.get('lower_pending', 0)} pe:{snap.get('pending', 0)} "
               f"ua:{snap.get('unacked', 0)} ap:{snap.get('upper_pending', 0)} "
               f"ep:{snap.get('epochs', 1)} wo:{(snap.get('write_ordering') or 'flush')[0]} "
               f"oos:{_oos_kib(snap)}\n")
    if snap["conn"] in ("SyncSource", "SyncTarget", "VerifyS", "VerifyT") and snap.get("rs_total_kib"):
        out += _syncer_progress(snap)
    return out


def proc_text(build: str, parts: dict[int, str]) -> str:
    """The whole file: header, then each minor's part in order, a blank line before a minor
    when the ones below it are missing (as drbd_seq_show walks minors from 0)."""
    out = [proc_header(build)]
    expected = 0
    for minor in sorted(parts):
        if minor != expected:
            out.append("\n")
        out.append(parts[minor])
        expected = minor + 1
    return "".join(out)


def unconfigured(snap: dict | None) -> bool:
    """8.4 prints ``Unconfigured`` for a minor that is StandAlone and Diskless (or not there)."""
    return snap is None or (snap["conn"] == "StandAlone" and snap["disk"] == "Diskless")


def sh_status(minor: int, snap: dict | None) -> str:
    """``drbdsetup sh-status MINOR``: 8.4's shell variables for scripts (the OCF resource
    agent and drbd-overview eval them, then call ``_sh_status_process``)."""
    out = [f"_minor={minor}"]
    if snap is None:
        out += ["_volume=-1", "_known=NA # not available or not yet created", ""]
    else:
        out += [f"_res_name={_sh_word(snap['name'])}", f"_volume={snap['volume']}"]
    if snap is None or (unconfigured(snap) and snap["role"] != "Primary"):
        if snap is not None:
            out += ["_known=Unconfigured", ""]
        out += ["_cstate=Unconfigured", "_role=", "_peer=", "_disk=", "_pdsk=",
                "_flags_susp=", "_flags_aftr_isp=", "_flags_peer_isp=", "_flags_user_isp=",
                "_resynced_percent="]
    else:
        def flag(name: str) -> str:
            return "1" if snap.get(name) else ""
        out += ["_known=Configured", "", f"_cstate={snap['conn']}", f"_role={snap['role']}",
                f"_peer={snap['peer']}", f"_disk={snap['disk']}", f"_pdsk={snap['pdsk']}", "",
                f"_flags_susp={flag('susp')}", f"_flags_aftr_isp={flag('aftr_isp')}",
                f"_flags_peer_isp={flag('peer_isp')}", f"_flags_user_isp={flag('user_isp')}",
                "", f"_resynced_percent={_resynced_per_mille(snap)}"]
    return "\n".join(out) + "\n\n_sh_status_process\n\n\n"


def _resynced_per_mille(snap: dict) -> str:
    """8.4's sync progress in tenths of a percent, only while a resync runs."""
    if not sync_details(snap):
        return ""
    total = snap["rs_total_kib"] // 4
    shift = 16 if total >= 1 << 32 else 10
    left = (snap.get("rs_left_kib", 0) // 4) >> shift
    per_mille = 1000 - left * 1000 // (1 + (total >> shift))
    return f"{per_mille // 10}.{per_mille % 10}"


def _sh_word(word: str) -> str:
    """drbdsetup's shell_escape: a backslash before all but ``%+-./:=@_`` and alphanumerics."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "%+-./:=@_") else "\\" + c
                   for c in word)


def role(snap: dict | None) -> str:
    return "Unconfigured" if unconfigured(snap) else f"{snap['role']}/{snap['peer']}"


def cstate(snap: dict | None) -> str:
    return "Unconfigured" if unconfigured(snap) else snap["conn"]


def dstate(snap: dict | None) -> str:
    return "Unconfigured" if unconfigured(snap) else f"{snap['disk']}/{snap['pdsk']}"
