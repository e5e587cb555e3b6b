"""drbdsetup: low-level control of running resources (8.4 command forms).

    drbdsetup new-resource RES
    drbdsetup new-minor RES MINOR VNR --device=PATH     (udrbd: where the FUSE device goes)
    drbdsetup attach MINOR LOWER_DEV META_DEV META_IDX [--disk-option=VALUE ...]
    drbdsetup detach MINOR
    drbdsetup disk-options MINOR [--set-defaults] [--disk-option=VALUE ...]
    drbdsetup connect RES LOCAL_ADDR PEER_ADDR [--net-option=VALUE ...]
    drbdsetup disconnect RES | LOCAL_ADDR PEER_ADDR
    drbdsetup net-options RES | LOCAL_ADDR PEER_ADDR [--set-defaults] [--net-option=VALUE ...]
    drbdsetup primary MINOR [--force|--overwrite-data-of-peer]
    drbdsetup resize MINOR [--size=N] [--assume-peer-has-space] [--assume-clean]
    drbdsetup check-resize MINOR                         (records the disk's size: meta.lkbd)
    drbdsetup secondary MINOR
    drbdsetup down RES
    drbdsetup status [RES|all] [--verbose] [--statistics]
    drbdsetup events2 [RES|all] [--now] [--statistics] [--timestamps] [--full]
    drbdsetup role|cstate|dstate MINOR
    drbdsetup sh-status MINOR                            (shell variables for scripts)
    drbdsetup show [RES|all]

drbdsetup knows no configuration file: drbdadm turns drbd.conf into these calls.
"""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from typing import Any

from replicator import control, report, rundir
from replicator.config.options import OPTIONS as RESOURCE_OPTIONS
from replicator.settings import OptionError, resource_options

USAGE = "USAGE: drbdsetup command {arguments} [options]"


class UsageError(Exception):
    pass


def parse_options(words: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Split ``--name=value``, ``--name value`` is not accepted (ambiguous); bare ``--flag`` = True."""
    positional: list[str] = []
    options: dict[str, Any] = {}
    for w in words:
        if w.startswith("--") and len(w) > 2:
            name, eq, value = w[2:].partition("=")
            options[name] = value if eq else True
        else:
            positional.append(w)
    return positional, options


def flag(opts: dict, name: str) -> bool:
    """A ``--name`` or ``--name=yes|no`` option, as drbdsetup's boolean flags."""
    value = opts.get(name, False)
    if value in (True, False, "yes", "no"):
        return value in (True, "yes")
    raise UsageError(f"drbdsetup: --{name}={value}: expected yes or no")


def seconds(opts: dict, name: str) -> int:
    value = str(opts.get(name, 0) or 0)
    if not value.isdigit():
        raise UsageError(f"drbdsetup: --{name}={value}: not a number of seconds")
    return int(value)


def _daemon_client(res: str) -> control.Client:
    return control.Client(rundir.socket_path(res))


def call(res: str, cmd: str, **args: Any) -> dict:
    with _daemon_client(res) as c:
        return c.call(cmd, **args)


def find_minor(minor: int) -> str | None:
    """The resource whose daemon owns ``minor`` (from the record new-minor wrote, so a
    daemon that does not answer is still found, and reported as not responding)."""
    return next((res for res in rundir.running_resources()
                 if (rundir.device_record(res) or (None,))[0] == minor), None)


def _emit(reply: dict) -> int:
    if reply.get("out"):
        sys.stdout.write(reply["out"])
    if reply.get("err"):
        print(reply["err"], file=sys.stderr)
    return int(reply.get("rc", 0))


def _need(args: list[str], n: int, form: str) -> None:
    if len(args) < n:
        raise UsageError(f"USAGE: drbdsetup {form}")


def _minor_arg(word: str) -> int:
    w = word[6:] if word.startswith("minor-") else word
    if not w.isdigit():
        raise UsageError(f"'{word}' is not a minor number")
    return int(w)


def _resource_or_fail(res: str) -> int:
    if res not in rundir.running_resources():
        print(rundir.gone_message(res) if res in rundir.dead_resources()
              else f"{res}: No such resource", file=sys.stderr)
        return 10
    return 0


def _clean_up_after(res: str) -> None:
    """What a daemon killed with -9 left behind: its FUSE mount (the server is gone, so
    every access fails with ENOTCONN, though a stat may still answer from the kernel's
    attribute cache for a while), its /proc part, socket, pid and device records."""
    from fuseblk.mount import unmount
    from replicator import procfile
    with open(rundir.lock_path(res), "a") as lock:
        try:                              # a new daemon holds it: its mount is alive
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return
        record = rundir.device_record(res)
        if record is not None:
            minor, device = record
            unmount(device)               # (only if a FUSE mount is there)
            procfile.publish(None, None, old_minor=minor)
        for path in (rundir.socket_path(res), rundir.device_record_path(res),
                     rundir.pid_path(res)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def _minor_target(word: str) -> tuple[int, str | None]:
    minor = _minor_arg(word)
    return minor, find_minor(minor)


def _minor_not_allocated(minor: int) -> int:
    dead = rundir.dead_minor(minor)
    print(rundir.gone_message(dead) if dead else
          f"{minor}: Failure: (127) Device minor not allocated", file=sys.stderr)
    return 10


# -- commands ------------------------------------------------------------------------------
def cmd_new_resource(args: list[str], opts: dict) -> int:
    _need(args, 1, "new-resource RESOURCE [options]")
    res = args[0]
    given = {k: v for k, v in opts.items() if not k.startswith("_")}
    try:
        resource_options(given)
    except OptionError as e:            # refused before a daemon starts, as the kernel would
        print(f"{res}: Failure: (162) Invalid configuration request\n"
              f"additional info from kernel:\n{e}", file=sys.stderr)
        return 10
    if res in rundir.running_resources():
        try:
            call(res, "info")
            return 0  # exists already: as the kernel, not an error
        except control.ControlError:
            os.unlink(rundir.socket_path(res))  # stale socket of a dead daemon
    if problem := rundir.socket_path_problem(res):
        print(problem, file=sys.stderr)
        return 10
    if res in rundir.dead_resources():
        _clean_up_after(res)
    rundir.ensure_run_dir()
    log = open(rundir.log_path(res)[:-4] + ".err", "ab")     # tracebacks, never DRBD lines
    proc = subprocess.Popen([sys.executable, "-m", "replicator.daemon", res],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True, close_fds=True)
    log.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() not in (None, rundir.ALREADY_RUNNING):   # (another `up` started it first)
            print(f"{res}: resource daemon exited with code {proc.returncode}; "
                  f"see {rundir.log_path(res)[:-4]}.err", file=sys.stderr)
            return 20
        try:
            winner = call(res, "info").get("pid")
        except control.ControlError:
            time.sleep(0.02)
            continue
        if winner != proc.pid:            # ours lost the race for the lock: it exits
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            return 0
        return _emit(call(res, "resource-options", options=given)) if given else 0
    print(f"{res}: resource daemon did not come up; see {rundir.log_path(res)}", file=sys.stderr)
    return 20


def cmd_resource_options(args: list[str], opts: dict) -> int:
    _need(args, 1, "resource-options RESOURCE [--set-defaults] [options]")
    if rc := _resource_or_fail(args[0]):
        return rc
    opts = {k: flag(opts, k) if k == "set-defaults" else v for k, v in opts.items()}
    return _emit(call(args[0], "resource-options", options=opts))


def cmd_new_minor(args: list[str], opts: dict) -> int:
    _need(args, 3, "new-minor RESOURCE MINOR VOLUME --device=PATH")
    res, minor, vnr = args[0], _minor_arg(args[1]), int(args[2])
    if rc := _resource_or_fail(res):
        return rc
    device = opts.get("device") or f"/dev/drbd{minor}"
    return _emit(call(res, "new-minor", minor=minor, volume=vnr, device=device))


def cmd_attach(args: list[str], opts: dict) -> int:
    _need(args, 4, "attach MINOR LOWER_DEV META_DATA_DEV META_DATA_INDEX [options]")
    minor, res = _minor_target(args[0])
    if res is None:
        return _minor_not_allocated(minor)
    idx = args[3]
    return _emit(call(res, "attach", minor=minor, disk=args[1], meta_disk=args[2],
                      meta_index=idx, options=opts))


def cmd_disk_options(args: list[str], opts: dict) -> int:
    _need(args, 1, "disk-options MINOR [--set-defaults] [options]")
    if "size" in opts:                        # a disk's size changes by resize only
        raise UsageError("drbdsetup disk-options: unrecognized option '--size'")
    minor, res = _minor_target(args[0])
    if res is None:
        return _minor_not_allocated(minor)
    return _emit(call(res, "disk-options", minor=minor, options=opts))


def cmd_resize(args: list[str], opts: dict) -> int:
    _need(args, 1, "resize MINOR [--size=N] [--assume-peer-has-space] [--assume-clean]")
    minor, res = _minor_target(args[0])
    if res is None:
        return _minor_not_allocated(minor)
    for name in ("assume-peer-has-space", "assume-clean"):
        if name in opts:
            opts[name] = flag(opts, name)
    return _emit(call(res, "resize", minor=minor, options=opts))


def cmd_minor_simple(cmd: str) -> Any:
    def run(args: list[str], opts: dict) -> int:
        _need(args, 1, f"{cmd} MINOR")
        minor, res = _minor_target(args[0])
        if res is None:
            return _minor_not_allocated(minor)
        force = flag(opts, "force") or flag(opts, "overwrite-data-of-peer")
        return _emit(call(res, cmd, minor=minor, force=force,
                          clear_bitmap=flag(opts, "clear-bitmap")))
    return run


def cmd_gi(show: bool) -> Any:
    def run(args: list[str], opts: dict) -> int:
        _need(args, 1, f"{'show' if show else 'get'}-gi MINOR")
        minor, res = _minor_target(args[0])
        if res is None:
            return _minor_not_allocated(minor)
        return _emit(call(res, "get-gi", minor=minor, show=show))
    return run


def cmd_connect(args: list[str], opts: dict) -> int:
    _need(args, 3, "connect RESOURCE LOCAL_ADDR PEER_ADDR [options]")
    res = args[0]
    if rc := _resource_or_fail(res):
        return rc
    peer_name = opts.pop("_name", None)
    return _emit(call(res, "connect", local=args[1], peer=args[2], options=opts,
                      peer_name=peer_name))


def _connection(args: list[str]) -> str | None:
    """``RESOURCE`` or ``LOCAL_ADDR PEER_ADDR``: the resource (None: reported, rc 10)."""
    res = args[0]
    if len(args) > 1:
        res = next((r for r in rundir.running_resources()
                    if _snap(r).get("local_addr") == args[0]), None)
        if res is None:
            print(f"{args[0]} {args[1]}: No such connection", file=sys.stderr)
            return None
    return None if _resource_or_fail(res) else res


def cmd_disconnect(args: list[str], opts: dict) -> int:
    _need(args, 1, "disconnect RESOURCE | LOCAL_ADDR PEER_ADDR")
    res = _connection(args)
    return 10 if res is None else _emit(call(res, "disconnect", **opts))


def cmd_net_options(args: list[str], opts: dict) -> int:
    _need(args, 1, "net-options RESOURCE | LOCAL_ADDR PEER_ADDR [--set-defaults] [options]")
    res = _connection(args)
    return 10 if res is None else _emit(call(res, "net-options", options=opts))


def cmd_down(args: list[str], opts: dict) -> int:
    _need(args, 1, "down RESOURCE")
    res = args[0]
    if res in rundir.dead_resources():
        print(f"{res}: the resource daemon (pid {rundir.daemon_pid(res)}) was gone; "
              "cleaned up after it", file=sys.stderr)
        _clean_up_after(res)
        return 0
    if res not in rundir.running_resources():
        return 0  # nothing to take down: as drbdsetup-84
    try:
        pid = call(res, "info").get("pid")
        rc = _emit(call(res, "down"))
    except control.ControlError:
        return 0
    if rc == 0 and pid:
        _wait_gone(pid, rundir.socket_path(res))
    return rc


def _wait_gone(pid: int, sock: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not rundir.has_exited(pid):
        time.sleep(0.02)


def _snap(res: str) -> dict:
    return call(res, "snapshot")["snapshot"]


def _selected(args: list[str]) -> list[str] | None:
    names = rundir.running_resources()
    if not args or args[0] == "all":
        return names
    if args[0] in rundir.dead_resources():
        return []
    return [args[0]] if args[0] in names else None


def _short_flags(args: list[str], opts: dict, letters: dict[str, str]) -> list[str]:
    """Fold ``-v``/``-s``/``-vs`` style words into ``opts``; return the other words."""
    rest = []
    for a in args:
        if len(a) > 1 and a[0] == "-" and a[1] != "-" and all(ch in letters for ch in a[1:]):
            for ch in a[1:]:
                opts[letters[ch]] = True
        elif a.startswith("-") and a != "-":
            raise UsageError(f"drbdsetup: unrecognized option '{a}'")
        else:
            rest.append(a)
    return rest


def _columns() -> int:
    """The width drbd-utils wraps status at: the terminal's, 80 when not a terminal."""
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns or 80
    except (OSError, ValueError):
        return 80


def cmd_status(args: list[str], opts: dict) -> int:
    args = _short_flags(args, opts, {"v": "verbose", "s": "statistics"})
    selected = _selected(args)
    if selected is None:
        print(f"{args[0]}: No such resource", file=sys.stderr)
        return 10
    dead = [r for r in rundir.dead_resources() if not args or args[0] in ("all", r)]
    for res in dead:
        print(rundir.gone_message(res), file=sys.stderr)
    if not selected and (not args or args[0] == "all"):
        if not dead:
            print("# No currently configured DRBD found.")
        return 10 if dead else 0
    columns = _columns()
    is_a_tty = sys.stdout.isatty()
    for res in selected:
        try:
            snap = _snap(res)
        except control.ControlError:
            continue                      # went away while we looked
        sys.stdout.write(report.status(snap, verbose=bool(opts.get("verbose")),
                                       statistics=bool(opts.get("statistics")),
                                       columns=columns, is_a_tty=is_a_tty))
    sys.stdout.flush()
    return 10 if dead else 0


def cmd_events2(args: list[str], opts: dict) -> int:
    """events2 [--now] [--statistics] [--timestamps] [--full] [RES|all]: the initial state as
    ``exists`` lines and ``exists -``; then (without --now) ``create``/``change``/``destroy``
    lines as things happen, until interrupted."""
    from replicator import events
    from replicator.subscribe import Subscriber
    args = _short_flags(args, opts, {"s": "statistics", "t": "timestamps", "f": "full",
                                     "n": "now"})
    target = args[0] if args else "all"
    if target != "all" and target not in rundir.running_resources():
        print(f"{target}: No such resource", file=sys.stderr)
        return 10
    stats, stamps = bool(opts.get("statistics")), bool(opts.get("timestamps"))
    full = bool(opts.get("full"))
    out = sys.stdout

    def emit(lines: list[str]) -> None:
        for line in lines:
            out.write((events.timestamp() if stamps else "") + line + "\n")
        out.flush()

    sub = Subscriber(target)
    state: dict[str, dict] = {}
    try:
        for res in sub.wanted():
            snap = sub.open(res)
            if snap is None:
                continue
            state[res] = events.objects(snap, stats)
            emit(events.changes(None, state[res], "exists"))
        emit(["exists -"])
        if opts.get("now"):
            return 0
        for res in list(sub.clients):
            sub.start(res)
        while True:
            for res, snap in sub.new_resources():
                state[res] = events.objects(snap, stats)
                emit(events.changes(None, state[res], "create"))
            item = sub.get(timeout=0.5)
            if item is None:
                continue
            res, msg = item
            if msg is None:
                sub.ended(res)
                emit(events.changes(state.pop(res, None), None))
                continue
            if not isinstance(msg, dict) or "snapshot" not in msg or res not in state:
                continue
            new = events.objects(msg["snapshot"], stats)
            emit(events.changes(state[res], new, "create", full=full))
            state[res] = new
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    finally:
        sub.close()


def cmd_state_query(render: Any) -> Any:
    def run(args: list[str], opts: dict) -> int:
        _need(args, 1, "role|cstate|dstate MINOR")
        minor, res = _minor_target(args[0])
        if res is None:
            return _minor_not_allocated(minor)
        print(render(_snap(res)))
        return 0
    return run


def cmd_sh_status(args: list[str], opts: dict) -> int:
    _need(args, 1, "sh-status MINOR")
    minor, res = _minor_target(args[0])
    print(report.sh_status(minor, None if res is None else _snap(res)), end="")
    return 0


CONNECTED_OR_SYNCING = {"Connected", "StartingSyncS", "StartingSyncT", "WFBitMapS", "WFBitMapT",
                       "WFSyncUUID", "SyncSource", "SyncTarget", "PausedSyncS", "PausedSyncT",
                       "VerifyS", "VerifyT", "Ahead", "Behind"}


def wait_connect_timeout(snap: dict, opts: dict) -> int:
    """Seconds to wait (0 = forever): degr-wfc-timeout after a degraded primary's reboot."""
    wfc, degr = seconds(opts, "wfc-timeout"), seconds(opts, "degr-wfc-timeout")
    if snap.get("was_degraded") and degr:
        return min(degr, wfc) if wfc else degr
    return wfc


def cmd_wait_connect(args: list[str], opts: dict) -> int:
    _need(args, 1, "wait-connect MINOR [--wfc-timeout=S] [--degr-wfc-timeout=S]")
    minor, res = _minor_target(args[0])
    if res is None:
        return _minor_not_allocated(minor)
    timeout = wait_connect_timeout(_snap(res), opts)
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        try:
            snap = _snap(res)
        except control.ControlError:
            return 20
        if snap["conn"] in CONNECTED_OR_SYNCING:
            return 0
        if snap["conn"] == "StandAlone":
            return 5
        if deadline is not None and time.monotonic() >= deadline:
            return 5
        time.sleep(0.1)


def cmd_show(args: list[str], opts: dict) -> int:
    if args and args[0] != "all" and (rc := _resource_or_fail(args[0])):
        return rc
    for res in _selected(args) or []:
        print(call(res, "show").get("out", ""), end="")
    return 0


COMMANDS = {
    "new-resource": cmd_new_resource,
    "new-minor": cmd_new_minor,
    "resource-options": cmd_resource_options,
    "attach": cmd_attach,
    "detach": cmd_minor_simple("detach"),
    "disk-options": cmd_disk_options,
    "primary": cmd_minor_simple("primary"),
    "secondary": cmd_minor_simple("secondary"),
    "connect": cmd_connect,
    "invalidate": cmd_minor_simple("invalidate"),
    "invalidate-remote": cmd_minor_simple("invalidate-remote"),
    "resize": cmd_resize,
    "check-resize": cmd_minor_simple("check-resize"),
    "pause-sync": cmd_minor_simple("pause-sync"),
    "resume-sync": cmd_minor_simple("resume-sync"),
    "verify": cmd_minor_simple("verify"),
    "outdate": cmd_minor_simple("outdate"),
    "new-current-uuid": cmd_minor_simple("new-current-uuid"),
    "suspend-io": cmd_minor_simple("suspend-io"),
    "resume-io": cmd_minor_simple("resume-io"),
    "disconnect": cmd_disconnect,
    "net-options": cmd_net_options,
    "down": cmd_down,
    "status": cmd_status,
    "events2": cmd_events2,
    "role": cmd_state_query(report.role),
    "cstate": cmd_state_query(report.cstate),
    "dstate": cmd_state_query(report.dstate),
    "sh-status": cmd_sh_status,
    "show": cmd_show,
    "get-gi": cmd_gi(show=False),
    "show-gi": cmd_gi(show=True),
    "wait-connect": cmd_wait_connect,
}


# the options each command takes (8.4's); commands not listed check theirs against the
# disk/net option tables (replicator.settings) in the daemon
OPTIONS: dict[str, set[str]] = {
    "new-resource": set(RESOURCE_OPTIONS), "new-minor": {"device"},
    "resource-options": {"set-defaults", *RESOURCE_OPTIONS}, "detach": {"force"},
    "primary": {"force", "overwrite-data-of-peer"}, "secondary": set(),
    "invalidate": set(), "invalidate-remote": set(), "pause-sync": set(),
    "resize": {"size", "assume-peer-has-space", "assume-clean", "al-stripes",
               "al-stripe-size-kB"}, "check-resize": set(),
    "resume-sync": set(), "verify": set(), "outdate": set(),
    "new-current-uuid": {"clear-bitmap"}, "suspend-io": set(), "resume-io": set(),
    "disconnect": {"force"}, "down": set(),
    "status": {"verbose", "statistics"}, "events2": {"now", "statistics", "timestamps", "full"},
    "role": set(), "cstate": set(), "dstate": set(), "sh-status": set(), "show": set(),
    "get-gi": set(),
    "show-gi": set(),
    "wait-connect": {"wfc-timeout", "degr-wfc-timeout", "outdated-wfc-timeout",
                     "wait-after-sb"},
}


def check_options(cmd: str, opts: dict) -> None:
    allowed = OPTIONS.get(cmd)
    for name in opts if allowed is not None else ():
        if name not in allowed:
            raise UsageError(f"drbdsetup {cmd}: unrecognized option '--{name}'")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE + "\ncommands: " + " ".join(COMMANDS), file=sys.stderr if not argv else sys.stdout)
        return 1 if not argv else 0
    cmd, rest = argv[0], argv[1:]
    fn = COMMANDS.get(cmd)
    if fn is None:
        print(f"drbdsetup: unknown command '{cmd}'", file=sys.stderr)
        return 20
    args, opts = parse_options(rest)
    try:
        check_options(cmd, opts)
        return fn(args, opts)
    except UsageError as e:
        print(str(e), file=sys.stderr)
        return 20
    except control.ControlError as e:
        print(f"drbdsetup {cmd}: {e}", file=sys.stderr)
        return 20


if __name__ == "__main__":
    sys.exit(main())
