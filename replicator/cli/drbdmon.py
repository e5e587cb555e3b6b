"""drbdmon: a live full-screen monitor of the run directory's resources (after drbd-utils 9.22).

    drbdmon [--ascii] [--problems] [--freqlmt INTERVAL] [--no-header] [--no-hotkeys]
    drbdmon --version | --help

Every resource of ``$UDRBD_RUN_DIR`` with its role, disk, connection, peer role and peer disk,
a progress bar with percent, speed and ETA while syncing, write latency percentiles, and
degraded objects marked (ASCII ``/`` bad, ``+`` good; colours where the terminal has them).
Updates come from the daemons' event streams (the control socket's ``events``), the same
source as ``drbdsetup events2``.

Keys: q quit, r repaint, p problems view on/off, m message log on/off, c clear messages,
< previous page, > next page, ! first page.
"""
from __future__ import annotations

import argparse
import collections
import curses
import locale
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from replicator import report, udrbd_version

NAME = "DrbdMon"


def version() -> str:
    return udrbd_version()


def node_name() -> str:
    return os.environ.get("__DRBD_NODE__") or os.uname().nodename


# -- model ------------------------------------------------------------------------------------
_FIELDS = ("role", "peer", "conn", "disk", "pdsk")


@dataclass
class Model:
    snaps: dict[str, dict] = field(default_factory=dict)
    messages: collections.deque = field(default_factory=lambda: collections.deque(maxlen=1000))

    def log(self, text: str, now: float | None = None) -> None:
        self.messages.append(f"{time.strftime('%H:%M:%S', time.localtime(now))} {text}")

    def update(self, res: str, snap: dict, now: float | None = None) -> None:
        old = self.snaps.get(res)
        self.snaps[res] = snap
        if old is None:
            self.log(f"{res}: {summary(snap)}", now)
            return
        parts = [f"{f}( {old[f]} -> {snap[f]} )" for f in _FIELDS if old.get(f) != snap.get(f)]
        if parts:
            self.log(f"{res}: {' '.join(parts)}", now)

    def gone(self, res: str, now: float | None = None) -> None:
        if self.snaps.pop(res, None) is not None:
            self.log(f"{res}: resource gone (down)", now)


def summary(snap: dict) -> str:
    return (f"cs:{snap['conn']} ro:{snap['role']}/{snap['peer']} "
            f"ds:{snap['disk']}/{snap['pdsk']}")


def degraded(snap: dict) -> bool:
    """A problem: not Connected (or syncing), or a disk of either side not UpToDate."""
    return (snap["conn"] != "Connected" or snap["disk"] != "UpToDate"
            or snap["pdsk"] != "UpToDate" or report.susp_text(snap) != "no")


def _alert(snap: dict) -> bool:
    return (snap["conn"] in ("StandAlone", "Disconnecting", "Timeout", "BrokenPipe",
                             "NetworkFailure", "ProtocolError", "TearDown")
            or snap["disk"] in ("Diskless", "Failed", "Outdated") or report.susp_text(snap) != "no")


# -- rendering (pure: lines of (text, style)) -------------------------------------------------
@dataclass
class Glyphs:
    primary: str
    good: str
    bad: str
    conn_good: str
    conn_bad: str
    bar_done: str
    bar_todo: str


ASCII = Glyphs("*", "+", "/", "+", "/", "X", "-")
UNICODE = Glyphs("\u26ab", "\u25ce", "\u2717", "\u21c4", "\u21af", "\u2588", "\u2592")


def _hms(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def progress_bar(percent: float, width: int, g: Glyphs) -> str:
    n = max(0, min(width, int(percent * width / 100)))
    return g.bar_done * n + g.bar_todo * (width - n)


def resource_lines(res: str, snap: dict, g: Glyphs, width: int) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    bad = degraded(snap)
    style = "alert" if _alert(snap) else ("warn" if bad else "ok")
    icon = g.primary if snap["role"] == "Primary" else " "
    head = f"RES:{res}".ljust(48) + f"{icon} {snap['role']}"
    if bad:
        head += "  [degraded]"
    lines.append((head, style))
    if snap.get("minor") is not None:
        ok = snap["disk"] == "UpToDate"
        lines.append((f"  {g.good if ok else g.bad} VOL:{snap.get('volume', 0)} "
                      f"minor:{snap['minor']} disk:{snap['disk']}",
                      "ok" if ok else ("alert" if snap["disk"] in ("Diskless", "Failed")
                                       else "warn")))
    if snap.get("net"):
        cstate = report.conn9(snap["conn"])
        ok = cstate == "Connected"
        lines.append((f"  {g.conn_good if ok else g.conn_bad} CON:{snap.get('peer_name') or 'peer'} "
                      f"{cstate} role:{snap['peer'] if ok else 'Unknown'}",
                      "ok" if ok else ("warn" if cstate == "Connecting" else "alert")))
        if snap.get("minor") is not None and ok:
            pok = snap["pdsk"] == "UpToDate"
            lines.append((f"    {g.good if pok else g.bad} VOL:{snap.get('volume', 0)} "
                          f"replication:{report.repl9(snap['conn'])} peer-disk:{snap['pdsk']}",
                          "ok" if pok else "warn"))
            if report.sync_details(snap):
                pct = report.done_percent(snap)
                rate, eta = report.sync_rate(snap)
                tail = f" {pct:6.2f}% {report.thousands(int(rate))} K/s ETA {_hms(eta)}"
                bar_w = max(10, min(40, width - 8 - len(tail)))
                lines.append((f"      [{progress_bar(pct, bar_w, g)}]{tail}", "warn"))
    lat = snap.get("latency") or {}
    stages = [(s, lat.get(s)) for s in ("local", "send", "ack", "total")]
    shown = [f"{s} {v[1]}/{v[2]}" for s, v in stages if v and v[0]]
    if shown:
        lines.append(("  LAT p50/p99 us: " + "  ".join(shown), "normal"))
    return lines


def body_lines(model: Model, view: str, g: Glyphs, width: int) -> list[tuple[str, str]]:
    if view == "messages":
        if not model.messages:
            return [("No messages.", "normal")]
        out = []
        for m in model.messages:              # long messages continue indented
            first, rest = m[:width - 1], m[width - 1:]
            out.append((first, "normal"))
            while rest:
                out.append(("         " + rest[:width - 10], "normal"))
                rest = rest[width - 10:]
        return out
    out: list[tuple[str, str]] = []
    names = sorted(model.snaps)
    if view == "problems":
        names = [n for n in names if degraded(model.snaps[n])]
        if not names:
            return [("No problems detected.", "ok")]
    if not names:
        return [("No resources.", "normal")]
    for n in names:
        out.extend(resource_lines(n, model.snaps[n], g, width))
    return out


def screen(model: Model, view: str, page: int, width: int, height: int, g: Glyphs,
           header: bool = True, hotkeys: bool = True) -> tuple[list[tuple[str, str]], int]:
    """The whole screen as (text, style) lines, and the page actually shown (clamped)."""
    top: list[tuple[str, str]] = []
    if header:
        title = {"status": "Status", "problems": "Problems", "messages": "Messages"}[view]
        left = f"DRBD {NAME} v{version()} (udrbd) - {title}"
        right = f"Node {node_name()}"
        top.append((left + right.rjust(max(1, width - len(left) - 1)), "header"))
        top.append(("-" * (width - 1), "normal"))
    bottom: list[tuple[str, str]] = []
    total = len(model.snaps)
    nbad = sum(1 for s in model.snaps.values() if degraded(s))
    body_h = max(1, height - len(top) - 1 - int(hotkeys))
    body = body_lines(model, view, g, width)
    pages = max(1, (len(body) + body_h - 1) // body_h)
    if view == "messages" and page < 0:          # the log opens at its newest page
        page = pages - 1
    page = max(0, min(page, pages - 1))
    shown = body[page * body_h:(page + 1) * body_h]
    shown += [("", "normal")] * (body_h - len(shown))
    foot = f"Resources: {total}" + (f" ({nbad} degraded)" if nbad else "")
    pg = f"Page: {page + 1}/{pages}"
    bottom.append((foot + pg.rjust(max(1, width - len(foot) - 1)), "alert" if nbad else "footer"))
    if hotkeys:
        bottom.append(("q:Quit r:Repaint p:Problems m:Messages c:Clear <:PgUp >:PgDn",
                       "footer"))
    return [(t[:width - 1], s) for t, s in top + shown + bottom], page


# -- the terminal ----------------------------------------------------------------------------
class Monitor:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.model = Model()
        self.view = "problems" if args.problems else "status"
        self.page = 0
        self.glyphs = ASCII if args.ascii else UNICODE
        self.dirty = True
        self.full_repaint = False
        self.last_draw = 0.0
        self.styles: dict[str, int] = {}

    def _init_styles(self) -> None:
        normal = curses.A_NORMAL
        self.styles = {"normal": normal, "ok": normal, "warn": curses.A_BOLD,
                       "alert": curses.A_BOLD | curses.A_REVERSE,
                       "header": curses.A_REVERSE, "footer": curses.A_BOLD}
        try:
            if curses.has_colors():
                curses.start_color()
                curses.use_default_colors()
                for i, color in enumerate((curses.COLOR_GREEN, curses.COLOR_YELLOW,
                                           curses.COLOR_RED), start=1):
                    curses.init_pair(i, color, -1)
                self.styles["ok"] = curses.color_pair(1)
                self.styles["warn"] = curses.color_pair(2) | curses.A_BOLD
                self.styles["alert"] = curses.color_pair(3) | curses.A_BOLD
        except curses.error:
            pass

    def draw(self, scr: Any) -> None:
        h, w = scr.getmaxyx()
        lines, self.page = screen(self.model, self.view, self.page, w, h, self.glyphs,
                                  header=not self.args.no_header,
                                  hotkeys=not self.args.no_hotkeys)
        if self.full_repaint:
            scr.clear()
            self.full_repaint = False
        else:
            scr.erase()
        for y, (text, style) in enumerate(lines[:h]):
            try:
                scr.addnstr(y, 0, text, max(0, w - 1), self.styles.get(style, 0))
            except curses.error:
                pass
        scr.refresh()
        self.dirty = False
        self.last_draw = time.monotonic()

    def key(self, ch: int) -> bool:
        """Handle one key; False to quit."""
        if ch in (ord("q"), ord("Q")):
            return False
        if ch in (ord("r"), ord("R")):
            self.full_repaint = True
        elif ch == ord("p"):
            self.view = "status" if self.view == "problems" else "problems"
            self.page = 0
        elif ch == ord("m"):
            self.view = "status" if self.view == "messages" else "messages"
            self.page = -1 if self.view == "messages" else 0
        elif ch == ord("c"):
            self.model.messages.clear()
        elif ch in (ord("<"), curses.KEY_PPAGE):
            self.page = max(0, self.page - 1)
        elif ch in (ord(">"), curses.KEY_NPAGE):
            self.page += 1
        elif ch == ord("!"):
            self.page = 0
        elif ch != curses.KEY_RESIZE:
            return True
        self.dirty = True
        return True

    def run(self, scr: Any) -> None:
        from replicator.subscribe import Subscriber
        try:
            curses.curs_set(0)
        except curses.error:
            pass
        self._init_styles()
        scr.timeout(200)
        sub = Subscriber("all")
        try:
            sub.rescan_interval = 0
            for res, snap in sub.new_resources():
                self.model.update(res, snap)
            sub.rescan_interval = 1.0
            while True:
                for res, snap in sub.new_resources():
                    self.model.update(res, snap)
                    self.dirty = True
                while (item := sub.get(timeout=0)) is not None:
                    res, msg = item
                    if msg is None:
                        sub.ended(res)
                        self.model.gone(res)
                    elif isinstance(msg, dict) and "snapshot" in msg:
                        self.model.update(res, msg["snapshot"])
                    self.dirty = True
                if self.dirty and time.monotonic() - self.last_draw >= self.args.freqlmt:
                    self.draw(scr)
                ch = scr.getch()
                if ch != -1 and not self.key(ch):
                    return
        finally:
            sub.close()


def _interval(text: str) -> float:
    t = text.strip().lower()
    try:
        if t.endswith("ms"):
            return float(t[:-2]) / 1000
        if t.endswith("s"):
            return float(t[:-1])
        return float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid interval '{text}'") from None


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="drbdmon", description="Live monitor of the resources of the udrbd run directory "
        "($UDRBD_RUN_DIR, default /run/drbd). Keys: q quit, r repaint, p problems, "
        "m messages, c clear messages, < > page, ! first page.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("--ascii", action="store_true", help="ASCII characters only")
    p.add_argument("--problems", action="store_true", help="start in the problems view")
    p.add_argument("--freqlmt", type=_interval, default=0.1, metavar="INTERVAL",
                   help="minimum delay between display updates (s or ms; default 100ms)")
    p.add_argument("--no-header", action="store_true", help="no header line")
    p.add_argument("--no-hotkeys", action="store_true", help="no hotkeys line")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.version:
        print(f"{NAME} v{version()} (udrbd)")
        return 0
    locale.setlocale(locale.LC_ALL, "")
    if not args.ascii and "utf" not in (locale.getpreferredencoding(False) or "").lower():
        args.ascii = True
    if not sys.stdout.isatty():
        print("drbdmon: needs a terminal", file=sys.stderr)
        return 1
    try:
        curses.wrapper(Monitor(args).run)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
