"""drbdadm: plans from drbd.conf, executes through drbdsetup and drbdmeta (8.4 personality).

    drbdadm [-d|--dry-run] [-v] [-c FILE] [-- BACKEND-OPTIONS] COMMAND [--OPTIONS] {all|RES}

``-d`` prints the drbdsetup/drbdmeta calls instead of running them, exactly the way the real
drbdadm does. The calls run in-process (same argv, same exit codes) to keep them fast.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from replicator import rundir, udrbd_version
from replicator.config import (ConfigError, NotForThisHost, current_node, dump_config,
                              dump_config_xml, load_config)
from replicator.config.model import Config, Resource, Volume, address_is_local
from replicator.config.options import DISK as DISK_OPTIONS
from replicator.config.options import HANDLER_NAMES
from replicator.config.options import NET as NET_OPTIONS
from replicator.config.options import OPTIONS as RESOURCE_OPTIONS

DEFAULT_CONFIG = "/etc/drbd.conf"

USAGE = """\
USAGE: drbdadm COMMAND [OPTION...] {all|RESOURCE...}

GENERAL OPTIONS:
  --dry-run (-d), --verbose (-v), --config-file=FILE (-c FILE)

COMMANDS:
 attach  detach  disk-options  connect  disconnect  net-options  up  down  primary
 secondary  adjust
 role  cstate  dstate  status  dump  dump-xml  wait-connect  wait-con-int  invalidate
 invalidate-remote  pause-sync  resume-sync  verify  new-current-uuid  outdate  resize
 check-resize  suspend-io  resume-io  resource-options
 create-md  dump-md  show-gi  get-gi  apply-al  wipe-md
 sh-resources  sh-resource  sh-dev  sh-minor  sh-ll-dev  sh-md-dev  sh-md-idx  sh-ip
 sh-b-pri  sh-status
"""


class Usage(Exception):
    pass


@dataclass
class Step:
    program: str              # 'drbdsetup' | 'drbdmeta' | 'echo'
    argv: list[str]

    def text(self) -> str:
        return " ".join([self.program, *self.argv])


@dataclass
class Invocation:
    command: str
    targets: list[str]
    dry_run: bool = False
    verbose: bool = False
    config_path: str = ""
    backend: list[str] = field(default_factory=list)   # options for drbdsetup/drbdmeta


def _split_bundled(argv: list[str]) -> list[str]:
    """getopt's bundled short flags: ``-dv`` is ``-d -v`` (up to the command or ``--``)."""
    out: list[str] = []
    n = 0
    while n < len(argv):
        a = argv[n]
        if a == "--" or not a.startswith("-"):
            return out + argv[n:]
        if len(a) > 2 and a[1] != "-" and set(a[1:]) <= set("dvVh"):
            out += [f"-{c}" for c in a[1:]]
        else:
            out.append(a)
            if a in ("-c", "--config-file"):         # its argument
                out += argv[n + 1:n + 2]
                n += 1
        n += 1
    return out


DRBDADM_VERSION = "8.9.4"      # the drbd-utils whose drbdadm-84 udrbd's follows
VERSION = f"""\
DRBDADM_BUILDTAG=udrbd\\ {udrbd_version()}
DRBDADM_API_VERSION=1
DRBD_KERNEL_VERSION_CODE=0x08040b
DRBDADM_VERSION_CODE=0x080904
DRBDADM_VERSION={DRBDADM_VERSION}
"""


def parse_args(argv: list[str]) -> Invocation:
    inv = Invocation("", [])
    inv.config_path = os.environ.get("UDRBD_CONFIG") or DEFAULT_CONFIG
    argv = _split_bundled(argv)
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-V", "--version", "-h", "--help") and not inv.command:
            inv.command = "--version" if a in ("-V", "--version") else "help"
        elif a in ("-d", "--dry-run"):
            inv.dry_run = True
        elif a in ("-v", "--verbose"):
            inv.verbose = True
        elif a in ("-c", "--config-file"):
            if i + 1 >= len(argv):
                raise Usage(f"drbdadm: option '{a}' requires an argument")
            i += 1
            inv.config_path = argv[i]
        elif a.startswith("--config-file="):
            inv.config_path = a.split("=", 1)[1]
        elif a.startswith("-c") and len(a) > 2:
            inv.config_path = a[2:]
        elif a == "--force" and not inv.command:     # drbdadm-84 takes it before the command
            inv.backend.append(a)
        elif a == "--":
            i += 1
            while i < len(argv) and argv[i].startswith("-"):
                inv.backend.append(argv[i])
                i += 1
            continue
        elif a.startswith("-") and not inv.command:
            raise Usage(f"drbdadm: unrecognized option '{a}'")
        elif not inv.command:
            inv.command = a
        elif a.startswith("--"):
            name, eq, value = a[2:].partition("=")
            kind = command_option(inv.command, name)
            if kind is None:
                raise Usage(f"drbdadm: unrecognized option '{a}'\ntry 'drbdadm help'")
            if not eq and kind != "bool" and i + 1 < len(argv):   # getopt's --opt VALUE
                i += 1
                a = f"--{name}={argv[i]}"
            inv.backend.append(a)
        else:
            inv.targets.append(a)
        i += 1
    if not inv.command:
        raise Usage(USAGE.rstrip())
    return inv


def command_option(command: str, name: str) -> str | None:
    """The kind of ``--name`` after ``command`` on drbdadm's command line (``bool`` takes no
    separate value), or None when drbdadm-84 refuses it there: disk options for attach and
    disk-options, net options for connect and net-options, the few flags below; anything
    else only after ``--``, which passes it on unchecked."""
    if command in ("attach", "disk-options") and name in DISK_OPTIONS:
        return DISK_OPTIONS[name].kind
    if command in ("connect", "net-options") and name in NET_OPTIONS:
        return NET_OPTIONS[name].kind
    if command == "resource-options" and name in RESOURCE_OPTIONS:
        return RESOURCE_OPTIONS[name].kind
    flags = {"connect": ("discard-my-data", "tentative"), "detach": ("force",),
             "disconnect": ("force",), "primary": ("force",), "create-md": ("force",),
             "new-current-uuid": ("clear-bitmap",),
             "status": ("statistics",)}                  # DRBD 9's status (README)
    return "bool" if name in flags.get(command, ()) else None


# -- planning ------------------------------------------------------------------------------
def _meta_args(vol: Volume) -> list[str]:
    """drbdmeta's ``MINOR v08 DEVICE INDEX`` for a volume (DEVICE is the metadata device)."""
    if vol.meta_disk == "internal":
        return [str(vol.minor), "v08", vol.disk or "none", "internal"]
    index = "flexible" if vol.meta_index is None else str(vol.meta_index)
    return [str(vol.minor), "v08", vol.meta_disk, index]


def _attach_args(vol: Volume) -> list[str]:
    index = "internal" if vol.meta_disk == "internal" else (
        "flexible" if vol.meta_index is None else str(vol.meta_index))
    meta_dev = vol.disk if vol.meta_disk == "internal" else vol.meta_disk
    return [str(vol.minor), vol.disk or "none", meta_dev or "none", index]


def _explicit_options(res: Resource, cfg: Config, section: str, skip: set[str]) -> list[str]:
    """``--name=value`` for the options written in common and the resource, as drbdadm-84
    passes them: the resource's override common's; an option written twice in common
    counts as first written, and in the resource too, except net options, which it
    passes as written (drbdsetup then takes the last)."""
    common = _first_written(s for s in cfg.common.settings.get(section, ())
                            if s.name not in skip)
    mine = [s for s in res.settings.get(section, ()) if s.name not in skip]
    if section == "net":
        own = [(s.name, _value(s)) for s in mine]
    else:
        own = list(_first_written(mine).items())
    names = {name for name, _ in own}
    inherited = [(name, value) for name, value in common.items() if name not in names]
    return [f"--{name}={value}" for name, value in inherited + own]


def _value(s) -> str:
    return "yes" if s.text is None else s.text


def _first_written(settings) -> dict[str, str]:
    values: dict[str, str] = {}
    for s in settings:
        values.setdefault(s.name, _value(s))
    return values


def _volume_disk_options(vol: Volume) -> list[str]:
    return [f"--{k}={v}" for k, v in _first_written(vol.disk_settings).items()]


class Planner:
    def __init__(self, cfg: Config, node: str, backend: list[str]):
        self.cfg, self.node, self.backend = cfg, node, backend

    def host(self, res: Resource):
        return res.host_for(self.node)

    def volumes(self, res: Resource) -> tuple[Volume, ...]:
        return self.host(res).volumes

    def new_resource(self, res: Resource) -> list[Step]:
        return [Step("drbdsetup", ["new-resource", res.name,
                                   *_explicit_options(res, self.cfg, "options", set())])]

    def new_minor(self, res: Resource) -> list[Step]:
        return [Step("drbdsetup", ["new-minor", res.name, str(v.minor), str(v.vnr),
                                   f"--device={v.device}"]) for v in self.volumes(res)]

    def attach(self, res: Resource, extra: list[str] = ()) -> list[Step]:
        steps = []
        for v in self.volumes(res):
            if v.diskless:
                continue
            steps.append(Step("drbdmeta", [*_meta_args(v), "apply-al"]))
            steps.append(Step("drbdsetup", ["attach", *_attach_args(v),
                                            *_explicit_options(res, self.cfg, "disk", set()),
                                            *_volume_disk_options(v), *extra]))
        return steps

    def check_local_address(self, res: Resource) -> None:
        """drbdadm refuses to bring up a connection on an address this host doesn't have."""
        me = self.host(res)
        if (me.address is None or self.cfg.global_options.get("disable-ip-verification")
                or address_is_local(me.address)):
            return
        raise ConfigError(f"{res.file}:{me.line}: in resource {res.name}, on {me.label}:\n"
                          f"\tIP {me.address.host} not found on this host.")

    def connect(self, res: Resource, extra: list[str] = ()) -> list[Step]:
        self.check_local_address(res)
        me = self.host(res)
        peers = res.peers_of(self.node)
        if me.address is None or not peers or peers[0].address is None:
            return []
        peer = peers[0]
        from replicator.sync_handshake import discard_node_policy
        opts = _explicit_options(res, self.cfg, "net", set())    # (drbdsetup: C if none)
        sb0 = "--after-sb-0pri="            # discard-node-NAME: local on NAME, else remote
        opts = [sb0 + discard_node_policy(o[len(sb0):], self.node) if o.startswith(sb0) else o
                for o in opts]
        return [Step("drbdsetup", ["connect", res.name, me.address.sockaddr,
                                   peer.address.sockaddr, *opts, *extra,
                                   f"--_name={peer.names[0] if peer.names else 'peer'}"])]

    def minor_steps(self, res: Resource, cmd: str, extra: list[str] = ()) -> list[Step]:
        return [Step("drbdsetup", [cmd, str(v.minor), *extra]) for v in self.volumes(res)]

    def meta_steps(self, res: Resource, cmd: str, force: bool = False) -> list[Step]:
        pre = ["--force"] if force else []
        return [Step("drbdmeta", [*pre, *_meta_args(v), cmd]) for v in self.volumes(res)
                if not v.diskless]


# -- execution -----------------------------------------------------------------------------
def _program(name: str) -> Callable[[list[str]], int]:
    if name == "drbdsetup":
        from replicator.cli import drbdsetup
        return drbdsetup.main
    if name == "drbdmeta":
        from meta import drbdmeta
        return drbdmeta.main
    raise ValueError(name)


class Failed(Exception):
    def __init__(self, rc: int):
        self.rc = rc


def run_steps(steps: list[Step], dry_run: bool, report_failures: bool = True) -> int:
    for step in steps:
        if dry_run:
            print(step.text())
            continue
        sys.stdout.flush()
        rc = _program(step.program)(list(step.argv))
        sys.stdout.flush()
        if rc:
            if report_failures and rc >= 10:
                print(f"Command '{step.text()}' terminated with exit code {rc}", file=sys.stderr)
            raise Failed(rc)
    return 0


def is_running(name: str) -> bool:
    return name in rundir.running_resources()


# -- commands ------------------------------------------------------------------------------
def _force(inv: Invocation) -> bool:
    return any(o in ("--force", "--overwrite-data-of-peer") for o in inv.backend)


def do_up(p: Planner, res: Resource, inv: Invocation) -> int:
    def section(label: str, steps: list[Step]) -> None:
        if not inv.dry_run:
            print(f"{label}: {res.name}", flush=True)
        run_steps(steps, inv.dry_run)
    section("create res", p.new_resource(res) + p.new_minor(res))
    section("prepare disk", p.attach(res))
    section("adjust disk", [])
    section("adjust net", p.connect(res))
    return 0


def do_down(p: Planner, res: Resource, inv: Invocation) -> int:
    return run_steps([Step("drbdsetup", ["down", res.name])], inv.dry_run)


def do_adjust(p: Planner, res: Resource, inv: Invocation) -> int:
    """Bring the resource to what drbd.conf says: everything when it is down; when it runs,
    only the differences (8.4 diffs ``drbdsetup show`` against the file)."""
    if not is_running(res.name):
        return run_steps(p.new_resource(res) + p.new_minor(res) + p.attach(res)
                         + p.connect(res), inv.dry_run)
    from replicator import control
    from replicator.cli import drbdsetup
    try:
        running = drbdsetup.call(res.name, "running-config")
    except control.ControlError as e:
        print(f"{res.name}: {e}", file=sys.stderr)
        raise Failed(20) from None
    return run_steps(adjust_steps(p, res, running), inv.dry_run)


def _given(words: list[str]) -> dict:
    from replicator.cli.drbdsetup import parse_options
    return {k: v for k, v in parse_options(words)[1].items() if not k.startswith("_")}


def _same_options(typed: Callable[[dict], dict], running: dict, wanted: dict) -> bool:
    from replicator.settings import OptionError
    try:
        return typed(running) == typed(wanted)
    except OptionError:
        return False


def adjust_steps(p: Planner, res: Resource, running: dict) -> list[Step]:
    """The drbdsetup calls that take a running resource from ``running`` (the daemon's
    running-config) to the configuration. A changed disk or meta-disk is detached and
    attached again, changed disk options are set live, changed net options go through
    net-options (which reconnects only for options the handshake agrees on), and other
    addresses reconnect."""
    from replicator.settings import disk_options, net_options, resource_options
    steps: list[Step] = []
    vol = p.volumes(res)[0]
    wanted_options = p.new_resource(res)[0].argv[2:]
    if not _same_options(resource_options, running.get("options") or {},
                         _given(wanted_options)):
        steps.append(Step("drbdsetup", ["resource-options", res.name, "--set-defaults",
                                        *wanted_options]))
    if running.get("minor") is None:
        steps += p.new_minor(res)
    disk = running.get("disk")
    attach = [s for s in p.attach(res) if s.argv[0] == "attach"]
    detach = Step("drbdsetup", ["detach", str(vol.minor)])
    if not attach:
        steps += [detach] if disk else []
    elif disk is None:
        steps += p.attach(res)
    elif [disk["disk"], disk["meta_disk"], str(disk["meta_index"])] != attach[0].argv[2:5]:
        steps += [detach, *p.attach(res)]
    else:
        wanted = [w for w in attach[0].argv[5:] if not w.startswith("--size=")]
        running_opts = {k: v for k, v in disk["given"].items() if k != "size"}
        if not _same_options(disk_options, running_opts, _given(wanted)):
            steps.append(Step("drbdsetup", ["disk-options", str(vol.minor), "--set-defaults",
                                            *wanted]))
        size = [w for w in attach[0].argv[5:] if w.startswith("--size=")]
        if not _same_options(disk_options, {"size": disk["given"].get("size", 0)},
                             _given(size)):              # (8.4: a resize, not an option)
            steps.append(Step("drbdsetup", ["resize", str(vol.minor), *size]))
    net, connect = running.get("net"), p.connect(res)
    disconnect = Step("drbdsetup", ["disconnect", res.name])
    if not connect:
        steps += [disconnect] if net else []
    elif net is None:
        steps += connect
    elif [net["local"], net["peer"]] != connect[0].argv[2:4]:
        steps += [disconnect, *connect]
    elif not _same_options(net_options, net["given"], _given(connect[0].argv[4:])):
        steps.append(Step("drbdsetup", ["net-options", *connect[0].argv[2:4], "--set-defaults",
                                        *[w for w in connect[0].argv[4:]
                                          if not w.startswith("--_")]]))
    return steps


def do_net_options(p: Planner, res: Resource, inv: Invocation) -> int:
    """8.4: only the options given on the command line, for the configured connection."""
    connect = p.connect(res)
    if not connect:
        return 0
    return run_steps([Step("drbdsetup", ["net-options", *connect[0].argv[2:4],
                                         *inv.backend])], inv.dry_run)


def do_resource_options(p: Planner, res: Resource, inv: Invocation) -> int:
    """8.4: only the options given on the command line."""
    return run_steps([Step("drbdsetup", ["resource-options", res.name, *inv.backend])],
                     inv.dry_run)


def do_disk_options(p: Planner, res: Resource, inv: Invocation) -> int:
    """8.4: only the options given on the command line (``disk-options --resync-rate=..``)."""
    return run_steps(p.minor_steps(res, "disk-options", inv.backend), inv.dry_run)


def do_attach(p: Planner, res: Resource, inv: Invocation) -> int:
    return run_steps(p.attach(res, inv.backend), inv.dry_run)


def do_connect(p: Planner, res: Resource, inv: Invocation) -> int:
    return run_steps(p.connect(res, inv.backend), inv.dry_run)


def do_disconnect(p: Planner, res: Resource, inv: Invocation) -> int:
    return run_steps([Step("drbdsetup", ["disconnect", res.name, *inv.backend])], inv.dry_run)


def do_resize(p: Planner, res: Resource, inv: Invocation) -> int:
    """resize, then remember the disk's size; check-resize does the same, as in
    drbdadm-84, but silently (drbdsetup's stderr suppressed) goes on when the resize is
    refused."""
    resize = p.minor_steps(res, "resize", inv.backend)
    if inv.command == "check-resize":
        try:
            with contextlib.redirect_stderr(io.StringIO()):    # 8.4: SUPRESS_STDERR
                run_steps(resize, inv.dry_run, report_failures=False)
        except Failed:
            pass
        return run_steps(p.minor_steps(res, "check-resize"), inv.dry_run)
    return run_steps(resize + p.minor_steps(res, "check-resize"), inv.dry_run)


def do_primary(p: Planner, res: Resource, inv: Invocation) -> int:
    return run_steps(p.minor_steps(res, "primary", inv.backend), inv.dry_run)


def do_sh_b_pri(p: Planner, res: Resource, inv: Invocation) -> int:
    """8.4's sh-b-pri, which its init script runs once the peers were waited for: primary
    where ``startup { become-primary-on }`` names this host (or both); five tries a
    second apart, as 8.4's, while the peer may still be demoting or resyncing."""
    names = set(res.startup.get("become-primary-on") or ())
    if not names & {"both", *p.host(res).names}:
        return 0
    for attempt in range(5):
        try:
            return run_steps(p.minor_steps(res, "primary"), inv.dry_run)
        except Failed:
            if attempt == 4:
                raise
            time.sleep(1)
    return 0


def minor_cmd(cmd: str) -> Callable[[Planner, Resource, Invocation], int]:
    def run(p: Planner, res: Resource, inv: Invocation) -> int:
        return run_steps(p.minor_steps(res, cmd, inv.backend), inv.dry_run)
    return run


def state_query(cmd: str) -> Callable[[Planner, Resource, Invocation], int]:
    def run(p: Planner, res: Resource, inv: Invocation) -> int:
        if not inv.dry_run and res.name in rundir.dead_resources():
            print(rundir.gone_message(res.name), file=sys.stderr)
            return 10
        if not inv.dry_run and not is_running(res.name):
            for _ in p.volumes(res):
                print("Unconfigured")
            return 0
        return run_steps(p.minor_steps(res, cmd), inv.dry_run)
    return run


def is_attached(name: str) -> bool:
    from replicator import control
    from replicator.cli import drbdsetup
    try:
        return is_running(name) and drbdsetup.call(name, "snapshot")["snapshot"]["disk"] \
            not in ("Diskless", "Failed")
    except control.ControlError:
        return False


def online_or_meta(cmd: str, online: Callable[[str], bool] = is_running
                   ) -> Callable[[Planner, Resource, Invocation], int]:
    """drbdsetup on a running resource (for get-gi/show-gi: one with its disk attached),
    else drbdmeta works on the metadata (8.4's fallback)."""
    def run(p: Planner, res: Resource, inv: Invocation) -> int:
        if inv.dry_run:
            run_steps(p.minor_steps(res, cmd), True)
            return run_steps(p.meta_steps(res, cmd), True)
        if online(res.name):
            return run_steps(p.minor_steps(res, cmd), False)
        return run_steps(p.meta_steps(res, cmd), False)
    return run


def do_status(p: Planner, res: Resource, inv: Invocation) -> int:
    verbose = ["--verbose"] if inv.verbose and "--verbose" not in inv.backend else []
    return run_steps([Step("drbdsetup", ["status", res.name, *verbose, *inv.backend])],
                     inv.dry_run)


def _wait_args(p: Planner, res: Resource) -> list[str]:
    """The startup section's timeouts as written (drbdsetup's defaults are 8.4's)."""
    return [o for o in _explicit_options(res, p.cfg, "startup", set())
            if o.split("=")[0] in ("--wfc-timeout", "--degr-wfc-timeout",
                                   "--outdated-wfc-timeout", "--wait-after-sb")]


def do_wait_connect(p: Planner, res: Resource, inv: Invocation) -> int:
    return run_steps(p.minor_steps(res, "wait-connect", _wait_args(p, res)), inv.dry_run)


WAIT_TEXT = """\
***************************************************************
 DRBD's startup script waits for the peer node(s) to appear.
 - If this node was already a degraded cluster before the
   reboot, the timeout is {degr} seconds. [degr-wfc-timeout]
 - If the peer was available before the reboot, the timeout
   is {wfc} seconds. [wfc-timeout]
   (These values are for resource '{res}'; 0 sec -> wait forever)"""


def wait_con_int(p: Planner, resources: list[Resource], inv: Invocation) -> int:
    """The init script's wait: DRBD's text, then wait for every resource's connection."""
    import threading
    import time
    if inv.dry_run:
        for res in resources:
            run_steps(p.minor_steps(res, "wait-connect", _wait_args(p, res)), True)
        return 0
    waiting = [r for r in resources if is_running(r.name)]
    if not waiting:
        return 0
    first = waiting[0]
    print(WAIT_TEXT.format(degr=first.startup["degr-wfc-timeout"],
                           wfc=first.startup["wfc-timeout"], res=first.name))
    tty = sys.stdout.isatty()
    if not tty:
        print(f" To abort waiting for DRBD connections, kill this process: kill {os.getpid()}",
              flush=True)
    results: dict[str, int] = {}

    def wait(res: Resource) -> None:
        try:
            run_steps(p.minor_steps(res, "wait-connect", _wait_args(p, res)), False)
            results[res.name] = 0
        except Failed as e:
            results[res.name] = e.rc

    threads = [threading.Thread(target=wait, args=(r,), daemon=True) for r in waiting]
    for t in threads:
        t.start()
    start = time.monotonic()
    while any(t.is_alive() for t in threads):
        if tty:
            print(f"\r To abort waiting enter 'yes' [{int(time.monotonic() - start):4d}]:",
                  end="", flush=True)
        for t in threads:
            t.join(timeout=1.0)
    if tty:
        print()
    return max(results.values(), default=0)


def offline_meta(cmd: str) -> Callable[[Planner, Resource, Invocation], int]:
    """Metadata commands: drbdmeta refuses to modify a disk that a daemon has attached
    (``Device 'N' is configured!``, exit 20, which drbdadm reports and returns)."""
    def run(p: Planner, res: Resource, inv: Invocation) -> int:
        return run_steps(p.meta_steps(res, cmd, force=_force(inv)), inv.dry_run)
    return run


def show_per_volume(what: Callable[[Volume], str]) -> Callable[[Planner, Resource, Invocation], int]:
    """8.4's sh-* queries for scripts: one line per volume of this host."""
    def run(p: Planner, res: Resource, inv: Invocation) -> int:
        for vol in p.volumes(res):
            print(what(vol))
        return 0
    return run


def do_sh_ip(p: Planner, res: Resource, inv: Invocation) -> int:
    me = p.host(res)
    for _ in p.volumes(res) if me.address is not None else ():
        print(me.address.host)                      # (drbdadm-84: once per volume)
    return 0


def do_sh_resource(p: Planner, res: Resource, inv: Invocation) -> int:
    print(res.name)
    return 0


SH_QUERIES: dict[str, Callable[[Planner, Resource, Invocation], int]] = {
    "sh-resource": do_sh_resource,
    "sh-dev": show_per_volume(lambda v: v.device),
    "sh-minor": show_per_volume(lambda v: str(v.minor)),
    "sh-ll-dev": show_per_volume(lambda v: v.disk or "none"),
    "sh-md-dev": show_per_volume(lambda v: (v.disk or "none") if v.meta_disk == "internal"
                                 else v.meta_disk),
    "sh-md-idx": show_per_volume(lambda v: v.meta_index_text),
    "sh-ip": do_sh_ip,
    "sh-b-pri": do_sh_b_pri,
}


RESOURCE_COMMANDS: dict[str, Callable[[Planner, Resource, Invocation], int]] = {
    **SH_QUERIES,
    "up": do_up,
    "down": do_down,
    "adjust": do_adjust,
    "attach": do_attach,
    "disk-options": do_disk_options,
    "net-options": do_net_options,
    "resource-options": do_resource_options,
    "detach": minor_cmd("detach"),
    "connect": do_connect,
    "disconnect": do_disconnect,
    "primary": do_primary,
    "secondary": minor_cmd("secondary"),
    "role": state_query("role"),
    "cstate": state_query("cstate"),
    "dstate": online_or_meta("dstate"),
    "status": do_status,
    "wait-connect": do_wait_connect,
    "invalidate": online_or_meta("invalidate"),
    "invalidate-remote": minor_cmd("invalidate-remote"),
    "resize": do_resize,
    "check-resize": do_resize,
    "pause-sync": minor_cmd("pause-sync"),
    "resume-sync": minor_cmd("resume-sync"),
    "verify": minor_cmd("verify"),
    "new-current-uuid": minor_cmd("new-current-uuid"),
    "suspend-io": minor_cmd("suspend-io"),
    "resume-io": minor_cmd("resume-io"),
    "create-md": offline_meta("create-md"),
    "dump-md": offline_meta("dump-md"),
    "show-gi": online_or_meta("show-gi", is_attached),
    "get-gi": online_or_meta("get-gi", is_attached),
    "apply-al": offline_meta("apply-al"),
    "wipe-md": offline_meta("wipe-md"),
    "outdate": online_or_meta("outdate"),
}


def sh_status(cfg: Config, node: str, inv: Invocation) -> int:
    """8.4's ``drbdadm sh-status``: shell variables for every resource of this host (names
    given are ignored, as drbdadm-84 ignores them), each volume's from ``drbdsetup
    sh-status``; the OCF resource agent and drbd-overview eval this."""
    if inv.targets:
        print("This command will ignore resource names!", file=sys.stderr)
    if not inv.dry_run:
        print(f"_drbd_version={DRBDADM_VERSION}\n_drbd_api=1")
        print(f"_config_file={_shell_escaped(os.path.abspath(inv.config_path))}\n\n")
    for res in cfg.resources_for(node):
        print(f"_conf_res_name={_shell_escaped(res.name)}")
        print(f"_conf_file_line={_shell_escaped(res.file)}:{res.line}\n")
        print("_stacked_on=\n_stacked_on_device=\n_stacked_on_minor=")
        for vol in res.host_for(node).volumes:
            print(f"_conf_volume={vol.vnr}")
            try:
                run_steps([Step("drbdsetup", ["sh-status", str(vol.minor)])], inv.dry_run)
            except Failed as e:
                return e.rc
    return 0


def _shell_escaped(word: str) -> str:
    """A word as drbdadm's dry run prints it: shell metacharacters and blanks escaped."""
    return "".join(ch if ch.isalnum() or ch in "-_./=:,+@%" else "\\" + ch for ch in word)


def run_handler(cfg: Config, node: str, name: str, target: str, dry_run: bool = False) -> int:
    """``drbdadm <handler> <res|minor-N>``: what the daemon calls; runs the configured command
    with DRBD's environment and returns its exit code (0 when none is configured). With
    ``-d`` it only prints what it would run, as drbdadm-84 does."""
    import subprocess
    res, vol = None, None
    for r in cfg.resources_for(node):
        for v in r.host_for(node).volumes:
            if target in (r.name, f"minor-{v.minor}"):
                res, vol = r, v
    if res is None:
        raise NotForThisHost(target)
    command = res.handlers.get(name) or ""
    if not command:
        return 0
    if dry_run:
        print(f"/bin/sh -c {_shell_escaped(command)}")
        return 0
    me, peers = res.host_for(node), res.peers_of(node)
    env = {**os.environ, "DRBD_RESOURCE": res.name, "DRBD_MINOR": str(vol.minor),
           "DRBD_VOLUME": str(vol.vnr), "DRBD_CONF": cfg.path,
           "DRBD_PEERS": " ".join(n for h in peers for n in h.names)}
    if me.address is not None:
        env.update(DRBD_MY_AF=me.address.af, DRBD_MY_ADDRESS=me.address.host)
    if peers and peers[0].address is not None:
        env.update(DRBD_PEER_AF=peers[0].address.af, DRBD_PEER_ADDRESS=peers[0].address.host)
    return subprocess.run(["/bin/sh", "-c", command], env=env).returncode


def select(cfg: Config, node: str, targets: list[str], command: str = "") -> list[Resource]:
    if not targets and command == "status":       # as drbd-utils: status means all
        targets = ["all"]
    if not targets:
        raise Usage("USAGE: drbdadm COMMAND [OPTION...] {all|RESOURCE...}")
    if targets == ["all"]:
        found = list(cfg.resources_for(node))
        if not found and command != "status":
            raise Usage(f"WARN: no normal resources defined for this host ({node})!?\n"
                        "Misspelled name of the local machine with the 'on' keyword ?")
        return found
    out = []
    for t in targets:
        if t.startswith("minor-"):
            res = next((r for r in cfg.resources_for(node)
                        for v in r.host_for(node).volumes if f"minor-{v.minor}" == t), None)
            if res is None:
                raise Usage(f"'{t}' not defined in your config (for this host).")
            out.append(res)
            continue
        name, slash, vnr = t.partition("/")
        res = cfg.resource(name)
        host = res.host_for(node)        # raises NotForThisHost
        if slash and not any(str(v.vnr) == vnr for v in host.volumes):
            raise Usage(f"'{t}' not defined in your config (for this host).")
        out.append(res)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        inv = parse_args(argv)
    except Usage as e:
        print(str(e), file=sys.stderr)
        return 1
    if inv.command in ("help", "--version"):     # (the OCF agent evals --version's lines)
        print(USAGE if inv.command == "help" else VERSION, end="")
        return 0
    # children (the daemon, and the handlers it calls back through drbdadm) see this config
    os.environ["UDRBD_CONFIG"] = os.path.abspath(inv.config_path)
    try:
        cfg = load_config(inv.config_path)
        for w in cfg.warnings:
            print(w, file=sys.stderr)
        node = current_node()
        if inv.command in ("dump", "dump-xml"):
            dump = dump_config if inv.command == "dump" else dump_config_xml
            print(dump(cfg, None if not inv.targets or inv.targets == ["all"]
                       else inv.targets, node), end="")
            return 0
        if inv.command in HANDLER_NAMES:
            if len(inv.targets) != 1:
                raise Usage(f"USAGE: drbdadm {inv.command} {{RESOURCE|minor-N}}")
            return run_handler(cfg, node, inv.command, inv.targets[0], inv.dry_run)
        if inv.command == "wait-con-int":
            return wait_con_int(Planner(cfg, node, inv.backend),
                                list(cfg.resources_for(node)), inv)
        if inv.command in ("sh-resources", "sh-nop"):
            if inv.command == "sh-resources":
                print(" ".join(r.name for r in cfg.resources_for(node)))
            return 0
        if inv.command == "sh-status":
            return sh_status(cfg, node, inv)
        if inv.command == "state":
            print("'drbdadm state' is deprecated, use 'drbdadm role' instead.", file=sys.stderr)
            inv.command = "role"
        fn = RESOURCE_COMMANDS.get(inv.command)
        if fn is None:
            print(f"drbdadm: Unknown command '{inv.command}'", file=sys.stderr)
            return 1
        resources = select(cfg, node, inv.targets, inv.command)
    except Usage as e:
        print(str(e), file=sys.stderr)
        return 1
    except ConfigError as e:
        print(str(e), file=sys.stderr)
        return e.exit_code
    planner = Planner(cfg, node, inv.backend)
    rc = 0
    for res in resources:
        try:
            rc = fn(planner, res, inv) or rc
        except Failed as e:
            rc = e.rc
        except ConfigError as e:          # incl. NotForThisHost
            print(str(e), file=sys.stderr)
            return e.exit_code
    return rc


if __name__ == "__main__":
    sys.exit(main())
