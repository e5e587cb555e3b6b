"""The daemon's side of drbdsetup: one handler per command, answering ``{rc, out, err}``.

Exit codes and messages are drbdsetup-84's: a refused state change prints
``0: State change failed: (-2) Need access to UpToDate data`` and exits 17 for -2, 5 for -16,
16 for -4 and 11 otherwise; configuration errors print ``r0: Failure: (127) Device minor not
allocated`` and exit 10.
"""
from __future__ import annotations

from typing import Any, Awaitable, Callable

import trio

from replicator import control, fencing, rundir, snapshot
from replicator.states import Conn, Disk, Role

Reply = dict[str, Any]

# drbd_ret_code texts (drbdsetup's error_messages[])
ERR_OPEN_DISK = (104, "Can not open backing device.")
ERR_OPEN_MD_DISK = (105, "Can not open meta device.")
ERR_DISK_TOO_SMALL = (111, "Low.dev. smaller than requested DRBD-dev. size.")
ERR_MD_DISK_TOO_SMALL = (112, "Meta device too small.")
ERR_IO_MD_DISK = (118, "IO error(s) occurred during initial access to meta-data.")
ERR_MD_INVALID = (119, "No valid meta-data signature found.\n\n"
                       "\t==> Use 'drbdadm create-md res' to initialize meta-data area. <==\n")
ERR_LOCAL_ADDR = (102, "Local address(port) already in use.")
ERR_AUTH_ALG = (120, "The 'cram-hmac-alg' you specified is not known in the kernel. "
                     "(Maybe you need to modprobe it, or modprobe hmac?)")
ERR_CSUMS_ALG = (144, "The 'csums-alg' you specified is not known in the kernel. "
                      "(Maybe you need to modprobe it, or modprobe hmac?)")
ERR_VERIFY_ALG = (146, "The 'verify-alg' you specified is not known in the kernel. "
                       "(Maybe you need to modprobe it, or modprobe hmac?)")
ERR_DISK_CONFIGURED = (124, "Device is attached to a disk (use detach first)")
ERR_NET_CONFIGURED = (125, "Device has a net-config (use disconnect first)")
ERR_MINOR_INVALID = (127, "Device minor not allocated")
ERR_NO_DISK = (138, "Device does not have a disk-config")
ERR_MINOR_EXISTS = (161, "Minor or volume exists already (delete it first)")
ERR_INVALID_REQUEST = (162, "Invalid configuration request")
ERR_INVALID_DISK_OPTION = (126, "UnknownMandatoryTag")
ERR_MD_UNCLEAN = (165, "Found unclean meta data. Did you \"drbdadm apply-al\"?")
ERR_DISCARD_IMPOSSIBLE = (123, "--discard-my-data not allowed when primary.")
ERR_NOT_PROTO_C = (139, "Protocol C required")
ERR_NEED_ALLOW_TWO_PRI = (164, "Can not clear allow_two_primaries as long as there a "
                               "primaries on both sides")


def ok(out: str = "") -> Reply:
    return {"rc": 0, "out": out, "err": ""}


def failure(obj: str, err: tuple[int, str], info: str = "") -> Reply:
    code, text = err
    msg = f"{obj}: Failure: ({code}) {text}"
    if info:
        msg += f"\nadditional info from kernel:\n{info}"
    return {"rc": 10, "out": "", "err": msg}


def state_failure(obj: str, code: int, text: str) -> Reply:
    rc = {-2: 17, -16: 5, -4: 16}.get(code, 11)
    return {"rc": rc, "out": "", "err": f"{obj}: State change failed: ({code}) {text}"}


Handler = Callable[[Any, dict], Awaitable[Reply]]
_handlers: dict[str, Handler] = {}


def handler(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        _handlers[name] = fn
        return fn
    return register


async def dispatch(daemon: Any, cmd: str, args: dict) -> Reply:
    fn = _handlers.get(cmd)
    if fn is None:
        return {"rc": 20, "out": "", "err": f"{daemon.name}: unknown command '{cmd}'"}
    return await fn(daemon, args)


def check_minor(daemon: Any, args: dict) -> tuple[str, Reply | None]:
    """Check the minor the command names is this resource's; give the object label."""
    res = daemon.resource
    minor = args.get("minor")
    obj = str(minor) if minor is not None else daemon.name
    if minor is not None and res.minor != minor:
        return obj, failure(obj, ERR_MINOR_INVALID)
    return obj, None


# -- lifecycle -----------------------------------------------------------------------------
@handler("info")
async def _info(daemon: Any, args: dict) -> Reply:
    res = daemon.resource
    return {**ok(), "name": res.name, "minor": res.minor, "pid": __import__("os").getpid()}


@handler("new-minor")
async def _new_minor(daemon: Any, args: dict) -> Reply:
    res = daemon.resource
    minor, device = int(args["minor"]), str(args["device"])
    if res.minor is not None:
        return failure(str(minor), ERR_MINOR_EXISTS,
                       "" if res.minor == minor else "udrbd supports one volume per resource")
    res.minor, res.volume_nr, res.device_path = minor, int(args.get("volume", 0)), device
    try:
        await daemon.diskless.start()
    except OSError as e:
        res.minor = res.device_path = None
        return failure(str(minor), ERR_INVALID_REQUEST,
                       f"cannot serve the device file {device}: {e.strerror or e}")
    daemon.log.minor = minor
    with open(rundir.device_record_path(daemon.name), "w") as f:
        f.write(f"{minor} {device}\n")
    return ok()


@handler("attach")
async def _attach(daemon: Any, args: dict) -> Reply:
    from replicator.device import AttachError, attach_device, detach_device  # (lazy: heavy)
    obj, err = check_minor(daemon, args)
    if err:
        return err
    res = daemon.resource
    if res.device is not None and res.device.failed:
        if res.state.role == Role.Primary:
            return await _replace_failed_disk(daemon, obj, args)
        await detach_device(daemon, force=True)  # (a failed Primary demoted since: 8.4
    if res.device is not None:                   # has no disk to detach then)
        return failure(obj, ERR_DISK_CONFIGURED)
    if res.state.role == Role.Primary:
        # a diskless Primary shows its peer's data: the new disk is synced from it in full
        # (a renegotiation would let the Primary serve a stale disk meanwhile)
        return await _replace_failed_disk(daemon, obj, args)
    if res.peer is not None and res.state.conn >= Conn.Connected:
        res.peer.renegotiating = True     # no promotion onto the new disk in between
    try:
        await attach_device(daemon, args["disk"], args["meta_disk"], args.get("meta_index"),
                            args.get("options") or {})
    except AttachError as e:
        if res.peer is not None:
            res.peer.renegotiating = False
        return failure(obj, (e.code, e.text), e.info)
    if res.peer is not None:
        res.peer.renegotiate()
    return ok()


async def _replace_failed_disk(daemon: Any, obj: str, args: dict) -> Reply:
    from replicator.device import AttachError, replace_failed_disk
    res = daemon.resource
    if res.peer is None or res.state.conn != Conn.Connected or res.state.pdsk != Disk.UpToDate:
        return failure(obj, ERR_INVALID_REQUEST, "the disk of a Primary is replaced while "
                       "connected to an UpToDate peer (the new disk is synced from it)")
    if res.state.suspended:         # (held requests would go on to the peer alone)
        return failure(obj, ERR_INVALID_REQUEST, "I/O is suspended: 'drbdadm resume-io' "
                       "first")
    try:
        await replace_failed_disk(daemon, args["disk"], args["meta_disk"],
                                  args.get("meta_index"), args.get("options") or {})
    except AttachError as e:
        return failure(obj, (e.code, e.text), e.info)
    return ok()


def options_after(args: dict, current: dict) -> dict:
    """The options an ``*-options`` command leaves as given: those on its command line over
    the current ones, or with ``--set-defaults`` only those (the rest back to defaults)."""
    given = {k: v for k, v in (args.get("options") or {}).items() if not k.startswith("_")}
    reset = bool(given.pop("set-defaults", False))
    return given if reset else {**current, **given}


@handler("disk-options")
async def _disk_options(daemon: Any, args: dict) -> Reply:
    """``drbdsetup disk-options MINOR [--set-defaults] [--opt=value ...]``: change the disk
    options of an attached disk; without --set-defaults the others keep their values."""
    from replicator.settings import OptionError, disk_options
    obj, err = check_minor(daemon, args)
    if err:
        return err
    dev = daemon.resource.device
    if dev is None:
        return failure(obj, ERR_NO_DISK)
    merged = options_after(args, dev.attach_args["given"])
    try:
        opts = disk_options(merged)
    except OptionError as e:
        return failure(obj, ERR_INVALID_REQUEST, str(e))
    if opts["al-extents"] != dev.disk_opts["al-extents"]:
        daemon.log.device(f"al-extents {opts['al-extents']} takes effect at the next attach")
    dev.disk_opts, dev.fencing = opts, opts["fencing"]     # the resync controller and the
    dev.attach_args["given"] = merged                      # I/O error policy read them live
    if daemon.resource.peer is not None and daemon.resource.state.conn >= Conn.Connected:
        daemon.resource.peer.send_sync_params()            # the SyncTarget paces a resync
    return ok()


@handler("resource-options")
async def _resource_options(daemon: Any, args: dict) -> Reply:
    """``drbdsetup resource-options RES [--set-defaults] [--opt=value ...]`` (and the options
    of new-resource): without --set-defaults the others keep their values."""
    from replicator.settings import OptionError, resource_options
    res = daemon.resource
    merged = options_after(args, res.resource_given)
    try:
        res.resource_options = resource_options(merged)
    except OptionError as e:
        return failure(daemon.name, ERR_INVALID_REQUEST, str(e))
    res.resource_given = merged
    return ok()


@handler("running-config")
async def _running_config(daemon: Any, args: dict) -> Reply:
    """What ``drbdadm adjust`` compares with drbd.conf: the attached disk and the network
    configuration, with the options as they were given."""
    res = daemon.resource
    dev = res.device
    disk = None if dev is None else {k: dev.attach_args[k] for k in
                                     ("disk", "meta_disk", "meta_index", "given")}
    if disk is not None:                       # the size as resize last set it
        given = {k: v for k, v in disk["given"].items() if k != "size"}
        disk["given"] = {**given, **({"size": f"{dev.user_size // 512}s"}
                                     if dev.user_size else {})}
    net = None if res.net is None else {"local": res.net["_local"], "peer": res.net["_peer"],
                                        "given": dict(getattr(res, "net_given", {}))}
    return {**ok(), "minor": res.minor, "disk": disk, "net": net,
            "options": dict(res.resource_given)}


@handler("detach")
async def _detach(daemon: Any, args: dict) -> Reply:
    from replicator.device import detach_device
    obj, err = check_minor(daemon, args)
    if err:
        return err
    res = daemon.resource
    if res.device is None:
        return ok()
    code, text = await detach_device(daemon)
    if code:
        return state_failure(obj, code, text)
    return ok()


@handler("get-gi")
async def _get_gi(daemon: Any, args: dict) -> Reply:
    """8.4's ``drbdsetup get-gi``/``show-gi``: the generation identifiers the attached disk
    has now (no disk: 138, and drbdadm asks drbdmeta instead)."""
    from meta import gi
    obj, err = check_minor(daemon, args)
    if err:
        return err
    dev = daemon.resource.device
    if dev is None:
        return failure(obj, ERR_NO_DISK)
    md = dev.md
    if args.get("show"):
        return ok(gi.format_show_gi(md.uuids, md.flags, md.sb.la_size_sect,
                                    md.sb.la_peer_max_bio_size))
    return ok(gi.format_gi(md.uuids, md.flags))


@handler("primary")
async def _primary(daemon: Any, args: dict) -> Reply:
    obj, err = check_minor(daemon, args)
    if err:
        return err
    res = daemon.resource
    if res.state.role == Role.Primary:
        return ok()
    if res.peer is not None and res.peer.renegotiating:
        # a disk attached while connected may hold stale data until the handshake says
        # (8.4 shows it Negotiating meanwhile)
        return state_failure(obj, -2, "Need access to UpToDate data")
    if res.device is None:        # diskless: on the peer's data, as 8.4
        code, text = await res.diskless.promote()
    else:
        code, text = await res.device.promote(force=bool(args.get("force")))
    return state_failure(obj, code, text) if code else ok()


@handler("secondary")
async def _secondary(daemon: Any, args: dict) -> Reply:
    obj, err = check_minor(daemon, args)
    if err:
        return err
    res = daemon.resource
    if res.state.role == Role.Secondary:
        return ok()
    code, text = await res.engine().demote()
    return state_failure(obj, code, text) if code else ok()


@handler("connect")
async def _connect(daemon: Any, args: dict) -> Reply:
    from replicator.connector import Endpoint
    from replicator.peer import Peer
    from replicator.settings import OptionError, net_options
    res = daemon.resource
    if res.state.conn != Conn.StandAlone or res.peer is not None:
        return failure(daemon.name, ERR_NET_CONFIGURED)
    given = dict(args.get("options") or {})
    try:
        opts = net_options(given)
        Endpoint.parse(str(args["local"])), Endpoint.parse(str(args["peer"]))
    except (OptionError, ValueError) as e:
        return failure(daemon.name, ERR_INVALID_REQUEST, str(e))
    if unknown := _unknown_alg(opts):
        return failure(daemon.name, unknown)
    if opts["allow-two-primaries"] and opts["protocol"] != "C":
        return failure(daemon.name, ERR_NOT_PROTO_C)
    if given.get("discard-my-data") and res.state.role == Role.Primary:
        return failure(daemon.name, ERR_DISCARD_IMPOSSIBLE)
    res.net_given = {k: v for k, v in given.items() if not k.startswith("_")}
    res.net = {**opts, "_local": args["local"], "_peer": args["peer"],
               "_peer_name": args.get("peer_name") or "peer"}
    try:
        peer = Peer(daemon, args["local"], args["peer"], opts, res.net["_peer_name"],
                    discard_my_data=bool(given.get("discard-my-data")),
                    settings_update=bool(args.get("settings_update")))
    except ValueError as e:
        res.net = None
        return failure(daemon.name, ERR_LOCAL_ADDR, str(e))
    res.peer = peer
    res.change("resource", hard=True, conn=Conn.Unconnected)
    daemon.nursery.start_soon(_run_peer, daemon, peer)
    return ok()


# exchanged and compared in the handshake: a change needs a new one (a reconnect)
HANDSHAKE_NET_OPTIONS = ("protocol", "after-sb-0pri", "after-sb-1pri", "after-sb-2pri",
                         "allow-two-primaries", "verify-alg", "csums-alg")


@handler("net-options")
async def _net_options(daemon: Any, args: dict) -> Reply:
    """``drbdsetup net-options``: change the connection's options; without --set-defaults
    the others keep their values. Most apply at once (timeouts, ko-count, the secret for
    the next handshake); one the peers agree on in the handshake reconnects, and the peer
    takes the new value over (8.4 sends it as P_PROTOCOL_UPDATE)."""
    from replicator.settings import OptionError, net_options
    res, peer = daemon.resource, daemon.resource.peer
    if res.net is None or peer is None:
        return failure(daemon.name, ERR_INVALID_REQUEST, "net conf missing, try connect")
    merged = options_after(args, res.net_given)
    try:
        opts = net_options(merged)
    except OptionError as e:
        return failure(daemon.name, ERR_INVALID_REQUEST, str(e))
    if unknown := _unknown_alg(opts):
        return failure(daemon.name, unknown)
    if opts["allow-two-primaries"] and opts["protocol"] != "C":
        return failure(daemon.name, ERR_NOT_PROTO_C)
    both_primary = res.state.role == Role.Primary and res.state.peer == Role.Primary
    if both_primary and not opts["allow-two-primaries"]:
        return failure(daemon.name, ERR_NEED_ALLOW_TWO_PRI)
    changed = [k for k in HANDSHAKE_NET_OPTIONS if opts[k] != peer.opts[k]]
    if changed and both_primary:
        return failure(daemon.name, ERR_INVALID_REQUEST, (
            f"udrbd reconnects to change {', '.join(changed)}: not while both nodes are "
            "Primary (their writes meanwhile would diverge)"))
    if changed:     # reconnect at once (a Primary starts a new data generation as for any
        # lost peer: should the reconnect fail and the peer be promoted, the split brain
        # stays detectable; when it succeeds, the blocks written meanwhile resync)
        again = {"local": res.net["_local"], "peer": res.net["_peer"], "options": merged,
                 "peer_name": res.net["_peer_name"], "settings_update": True}
        await disconnect(daemon)
        return await _connect(daemon, again)
    peer.opts.update(opts)
    res.net.update(opts)
    res.net_given = merged
    return ok()


def _unknown_alg(opts: dict) -> tuple[int, str] | None:
    """The error for a cram-hmac-alg, csums-alg or verify-alg this node cannot compute."""
    import hashlib

    from replicator.resync import known_digest
    try:
        if opts["cram-hmac-alg"]:
            hashlib.new(opts["cram-hmac-alg"])
    except ValueError:
        return ERR_AUTH_ALG
    if not known_digest(opts["csums-alg"]):
        return ERR_CSUMS_ALG
    if not known_digest(opts["verify-alg"]):
        return ERR_VERIFY_ALG
    return None


async def _run_peer(daemon: Any, peer: Any) -> None:
    res = daemon.resource
    try:
        await peer.run()
    except Exception as e:             # a bug in the network code must not end the daemon
        daemon.log.resource_line(f"internal error in the connection: {e!r}; going StandAlone")
        import traceback
        traceback.print_exc()
    finally:
        if res.peer is peer:
            res.peer = None
            res.net = None
            if res.state.conn != Conn.StandAlone:
                res.change("resource", hard=True, conn=Conn.StandAlone)


@handler("disconnect")
async def _disconnect(daemon: Any, args: dict) -> Reply:
    res = daemon.resource
    if res.state.conn == Conn.StandAlone and res.peer is None:
        return ok()
    await disconnect(daemon)
    return ok()


async def disconnect(daemon: Any) -> None:
    """Graceful: the peer hears it (and logs TearDown); we end StandAlone."""
    res = daemon.resource
    changes = await fencing.outdate_before_disconnect(res)
    peer = res.peer
    res.peer = None
    had_peer_data = res.state.pdsk >= Disk.Inconsistent
    if res.state.conn != Conn.StandAlone:    # first: from here writes are not mirrored
        res.change("resource", hard=True, conn=Conn.Disconnecting, peer=Role.Unknown,
                   **changes)                # (and resource-and-stonith freezes them)
    if peer is not None:
        await peer.stop(outdated="disk" in changes)
        with trio.move_on_after(5):          # its listener closed: a connect may follow
            await peer.ended.wait()
    if res.state.conn != Conn.StandAlone:
        res.change("resource", hard=True, conn=Conn.StandAlone)
        if had_peer_data and res.state.role == Role.Primary and res.device is not None:
            res.device.new_current_uuid_if_needed()
        fencing.after_connection_loss(res)
    res.net = None


@handler("down")
async def _down(daemon: Any, args: dict) -> Reply:
    res = daemon.resource
    if res.state.role == Role.Primary:
        code, text = await res.engine().demote()
        if code:
            return state_failure(daemon.name, code, text)
    await shutdown(daemon)
    daemon.stopping.set()
    return ok()


async def shutdown(daemon: Any) -> None:
    """Disconnect and detach: what ``down`` does once the role is Secondary."""
    from replicator.device import detach_device
    res = daemon.resource
    if res.state.conn != Conn.StandAlone:
        await disconnect(daemon)
    if res.device is not None:
        await detach_device(daemon, force=True, serve_diskless=False)
    await daemon.diskless.stop()


# -- reporting -----------------------------------------------------------------------------
def _show_value(v: Any) -> str:
    if v is True:
        return "yes"
    text = str(v)
    return text if text.replace(".", "").replace("-", "").isalnum() else f'"{text}"'


@handler("show")
async def _show(daemon: Any, args: dict) -> Reply:
    """The running configuration, in drbdsetup-84 show's shape."""
    res = daemon.resource
    out = [f"resource {res.name} {{", "    options {", "    }"]
    if res.net is not None:
        out.append("    net {")
        for k, v in getattr(res, "net_given", {}).items():
            q = f'"{v}"' if k in ("cram-hmac-alg", "shared-secret") else _show_value(v)
            out.append(f"        {k:<16}\t{q};")
        out.append("    }")
        peer, local = res.net["_peer"].split(":", 1), res.net["_local"].split(":", 1)
        out += ["    _remote_host {", f"        address\t\t\t{peer[0]} {peer[1]};", "    }"]
        out += ["    _this_host {", f"        address\t\t\t{local[0]} {local[1]};"]
    else:
        out.append("    _this_host {")
    if res.minor is not None:
        out.append(f"        volume {res.volume_nr} {{")
        out.append(f"            device\t\t\tminor {res.minor};")
        dev = res.device
        if dev is not None:
            a = dev.attach_args
            out.append(f'            disk\t\t\t"{a["disk"]}";')
            idx = a["meta_index"]
            meta = "internal" if idx in (None, "internal") else (
                f'"{a["meta_disk"]}"' if idx == "flexible" else f'"{a["meta_disk"]}" [ {idx} ]')
            out.append(f"            meta-disk\t\t{meta};")
            if a["given"]:
                out.append("            disk {")
                for k, v in a["given"].items():
                    out.append(f"                {k:<16}\t{_show_value(v)};")
                out.append("            }")
        out.append("        }")
    out += ["    }", "}", ""]
    return ok("\n".join(out))



@handler("snapshot")
async def _snapshot(daemon: Any, args: dict) -> Reply:
    return {**ok(), "snapshot": snapshot.take(daemon.resource)}


async def stream_events(daemon: Any, stream: trio.SocketStream, args: dict) -> None:
    """Send the current snapshot, then one message per state change, until the client leaves."""
    send, receive = trio.open_memory_channel(256)
    res = daemon.resource

    def listener(kind: str, data: dict) -> None:
        try:
            send.send_nowait({"kind": kind, "snapshot": snapshot.take(res)})
        except trio.WouldBlock:
            pass

    res.listeners.append(listener)
    try:
        await stream.send_all(control.encode({"kind": "exists", "snapshot": snapshot.take(res)}))
        async with receive:
            async for event in receive:
                await stream.send_all(control.encode(event))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        res.listeners.remove(listener)
