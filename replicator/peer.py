"""The replication link of a resource: connection manager, handshake and mirrored writes.

``Peer.run`` keeps trying to reach the peer (WFConnection), and for each agreed connection
runs a session: settings and sizes are checked, generation UUIDs decide whether and which
way to resync, then frames are handled in arrival order (which is what keeps overlapping
writes in order on the peer's disk). Writes wait for the ack their protocol needs:
A = handed to the kernel, B = RECV_ACK, C = WRITE_ACK. Every mirrored write stays in the
transfer log until the peer confirmed it; whatever is still there when the connection
breaks is marked out of sync, so nothing is silently lost.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import trio

from fuseblk._lowlevel import wait_polling
from meta.bitmap import Bitmap
from replicator import fencing, handlers, latency, resize, resync, verify
from replicator import uuids as U
from replicator.connector import AuthFailed, Connector, Endpoint, authenticate
from replicator.link import LinkClosed, PeerLink
from replicator.protocol import MAX_DATA, PROTOCOL_VERSION, Msg, ProtocolError
from replicator.states import Conn, Disk, Role

BARRIER_EVERY = 64          # writes between barriers (protocols A and B)
# An fsync with no write in flight polls for the peer's FLUSH_ACK this long before the event
# loop sleeps (as a lone write polls for its ack, see device.ACK_POLL_NS). Measured
# (alternated, protocol C, sync write 4k): plain loop +17 %, direct-io loop the same.
FLUSH_ACK_POLL_NS = 250_000

# conn states in which application writes are mirrored
MIRRORING = frozenset({Conn.Connected, Conn.StartingSyncS, Conn.StartingSyncT, Conn.WFBitMapS,
                       Conn.WFBitMapT, Conn.WFSyncUUID, Conn.SyncSource, Conn.SyncTarget,
                       Conn.PausedSyncS, Conn.PausedSyncT, Conn.VerifyS, Conn.VerifyT})


class SessionEnd(Exception):
    """Why a session ended: the transient conn state to pass through, and whether to retry."""

    def __init__(self, reason: Conn, retry: bool = True, message: str = "",
                 disconnect: dict | None = None):
        super().__init__(message or reason.name)
        self.reason, self.retry, self.message = reason, retry, message
        self.disconnect = disconnect      # the peer's DISCONNECT, if it said goodbye


@dataclass
class Pending:
    """A mirrored write in the transfer log. ``done`` wakes the writer (per protocol);
    ``on_retire`` runs when the entry leaves the log (peer confirmed it, or it was marked
    out of sync): protocols A and B keep their activity log extents hot until then."""
    seq: int
    offset: int
    length: int
    done: trio.Event = field(default_factory=trio.Event)
    submitted: float = field(default_factory=trio.current_time)
    acked: bool = False
    lost: bool = False                # never confirmed: marked out of sync instead
    on_retire: Callable[[], None] | None = None

    def retire(self) -> None:
        self.done.set()
        if self.on_retire is not None:
            self.on_retire()
            self.on_retire = None


class Peer:
    def __init__(self, daemon: Any, local: str, peer: str, options: dict, peer_name: str,
                 discard_my_data: bool = False, settings_update: bool = False):
        self.daemon = daemon
        self.res = daemon.resource
        self.log = daemon.log
        self.local, self.remote = Endpoint.parse(local), Endpoint.parse(peer)
        self.opts = options
        self.protocol = options["protocol"]
        self.peer_name = peer_name
        self.discard_my_data = discard_my_data
        # net-options changed a setting the handshake compares: the peer adopts ours (8.4's
        # P_PROTOCOL_UPDATE) instead of refusing the connection; one-shot
        self.settings_update = settings_update
        self.renegotiating = False    # a disk attached while connected awaits its handshake
        self.ended = trio.Event()             # run() returned: the sockets are closed
        self.connector = Connector(self.local, self.remote, options["connect-int"], self.log)
        self.link: PeerLink | None = None
        self.scope = trio.CancelScope()
        self.session_scope: trio.CancelScope | None = None
        self.stopping = False
        self.seq = 0
        self.tl: dict[int, Pending] = {}      # in seq order (dicts keep insertion order)
        self.received_upto = 0                # peer side: highest seq received / written
        self.written_upto = 0
        self.acked_upto = 0
        self.peer_acked_upto = 0              # primary side: highest seq the peer acked
        self.since_barrier = 0
        self.flushes: dict[int, trio.Event] = {}
        self.flush_sent: dict[int, float] = {}     # when each FLUSH in self.flushes left
        self.flush_ok: dict[int, bool] = {}   # answered sync flushes: did the peer's succeed
        self.flush_id = 0
        self.peer_uuids: list[int] = [0, 0, 0, 0]
        self.peer_params: dict = {}
        # online resize (replicator.resize): the peer's offer and size, and this round's
        self.peer_offer = 0                   # what the peer's disk can hold (bytes)
        self.peer_size = 0                    # the size the peer shows
        self.resize_pending = False           # grew while connected: resync the new area
        self.resize_clean = False             # --assume-clean: the new area needs no sync
        self.sizes_answered: trio.Event | None = None
        self.resync: resync.Resync | None = None
        self.verify = None            # replicator.verify.Verify while verifying
        self.sync_aborted = False     # this session's resync/verify was stopped by abort_sync
        self.dispatching = False
        self.frames_handled = 0       # frames dispatched (the keepalive watches it move)
        self.ping_waiting: trio.Event | None = None
        self.reads: dict[int, tuple[trio.Event, list]] = {}
        self.read_id = 0
        self.sessions = 0      # connections that reached the handshake (fencing counts)
        self.outdate_answer: tuple[trio.Event, list] | None = None   # (fencing.py)
        self.ns_kib = 0        # sent to the peer (application + resync data)
        self.nr_kib = 0        # received from the peer

    # -- manager ----------------------------------------------------------------------------
    @property
    def dev(self):
        return self.res.device

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.ended.set()

    async def _run(self) -> None:
        with self.scope:
            try:
                await self.connector.open_listener()
            except OSError as e:
                self.log.resource_line(f"Failed to listen on {self.local}: {e.strerror}")
                self.res.change("resource", hard=True, conn=Conn.StandAlone)
                return
            try:
                await self._manage()
            finally:
                self.connector.close()
                if self.link is not None:
                    self.link.close()
                    self.link = None
                self._release_pending()

    async def _manage(self) -> None:
        res = self.res
        while True:
            if res.state.conn == Conn.Unconnected:
                res.change("resource", hard=True, conn=Conn.WFConnection)
            try:
                link = await self.connector.establish()
            except (OSError, ExceptionGroup) as e:   # e.g. out of file descriptors
                if isinstance(e, ExceptionGroup) and e.split(OSError)[1] is not None:
                    raise
                self.log.resource_line(f"connect failed: {e}; retrying")
                await trio.sleep(self.opts["connect-int"])
                continue
            self.log.resource_line("Handshake successful: Agreed network protocol version "
                                   f"{PROTOCOL_VERSION}")
            res.change("resource", hard=True, conn=Conn.WFReportParams)
            try:
                if self.opts["cram-hmac-alg"]:
                    n = await authenticate(link, self.opts["cram-hmac-alg"],
                                           self.opts["shared-secret"])
                    self.log.resource_line(f"Peer authenticated using {n} bytes HMAC")
                await self._session(link)
                end = SessionEnd(Conn.NetworkFailure)
            except AuthFailed as e:
                self.log.resource_line(str(e))
                end = SessionEnd(Conn.Disconnecting, retry=False)
            except SessionEnd as e:
                end = e
            except LinkClosed:
                end = SessionEnd(Conn.NetworkFailure)
            except ProtocolError as e:
                self.log.resource_line(f"protocol error: {e}")
                end = SessionEnd(Conn.ProtocolError)
            except trio.TooSlowError:
                end = SessionEnd(Conn.Timeout)
            except Exception as e:           # a bug: log it, drop this connection, go on
                self.log.resource_line(f"internal error in the session: {e!r}")
                import traceback
                traceback.print_exc()
                end = SessionEnd(Conn.NetworkFailure)
            finally:
                link.close()
                self.link = None
            self._connection_lost(end)
            if not end.retry or self.stopping:
                return

    def _connection_lost(self, end: SessionEnd) -> None:
        """Everything not confirmed by the peer is out of sync; move through conn states."""
        res = self.res
        self._release_pending()
        resize.forget(self)
        was_primary_with_peer = res.state.role == Role.Primary and res.state.pdsk >= Disk.Inconsistent
        if end.message and end.reason != Conn.Disconnecting:
            self.log.resource_line(end.message)
        reason = end.reason if end.retry else Conn.Disconnecting
        res.change("resource", hard=True, conn=reason, peer=Role.Unknown, aftr_isp=False,
                   peer_isp=False, user_isp=False,
                   **fencing.teardown_changes(res, end.disconnect))
        if was_primary_with_peer and self.dev is not None:
            self.dev.new_current_uuid_if_needed()
        fencing.after_connection_loss(res)
        if end.retry:
            res.change("resource", hard=True, conn=Conn.Unconnected)
        else:
            res.change("resource", hard=True, conn=Conn.StandAlone)

    def _release_pending(self) -> None:
        """Unconfirmed writes become out-of-sync blocks; waiting writers and readers go on."""
        if self.resync is not None:
            self.resync.stop()
            self.resync = None
        if self.verify is not None:
            self.verify.stop()
            self.verify = None
        lost = list(self.tl.values())
        self.tl.clear()
        for p in lost:
            if self.dev is not None:
                self.dev.bitmap.set_range(p.offset, p.length)
            p.lost = True
            p.retire()
        for ev in self.flushes.values():
            ev.set()
        self.flushes.clear()
        self.flush_sent.clear()
        for ev, box in self.reads.values():
            box.append(None)
            ev.set()
        self.reads.clear()
        if self.outdate_answer is not None:  # a disconnecting Primary waits for it: no
            self.outdate_answer[0].set()      # answer will come

    async def stop(self, outdated: bool = False) -> None:
        """Graceful disconnect: tell the peer, then drop the connection. ``outdated``
        (fencing): we outdated our disk as we leave a fencing Primary."""
        self.stopping = True
        if self.link is not None and not self.link.closed:
            sent = trio.Event()
            try:
                self.link.send(Msg.DISCONNECT, {"outdated": True} if outdated else {},
                               done=sent)
                with trio.move_on_after(2):
                    await sent.wait()      # after everything queued before it (STATE...)
            except LinkClosed:
                pass
        self.scope.cancel()

    # -- session ----------------------------------------------------------------------------
    async def _session(self, link: PeerLink) -> None:
        self.link = link
        self.sessions += 1
        self.received_upto = self.written_upto = self.acked_upto = 0
        self.peer_acked_upto = self.seq       # the last session settled every earlier write
        self.dispatching = self.sync_aborted = self.data_received = False
        self.flushes_queued = 0
        try:
            await self._session_tasks(link)
        except BaseExceptionGroup as group:
            raise _reason(group) from None

    async def _session_tasks(self, link: PeerLink) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(self._sender, link)
            self.flush_requests, requests = trio.open_memory_channel(float("inf"))
            nursery.start_soon(self._flush_worker, requests)
            self._send_params(link)
            frames = link.frames()
            first = await self._next(frames)
            if first.type != Msg.PARAMS:
                raise ProtocolError(f"expected PARAMS, got {first.type.name}")
            try:
                await self._handshake(first.body)
            except SessionEnd:
                await self._goodbye()         # our PARAMS must reach the peer before we go
                raise
            self.renegotiating = False
            nursery.start_soon(self._pinger, link)
            nursery.start_soon(self._keepalive)
            nursery.start_soon(self._ko_watch, link)
            async for frame in frames:
                if frame is None:
                    self._send_acks()             # everything received so far is handled
                    dev = self._usable_disk()
                    if dev is not None and self.data_received:   # writes came in: an
                        dev.syncer.anticipate(nursery)          # fsync-heavy Primary flushes next
                    self.data_received = False
                else:
                    self.dispatching = True        # (a handler script may take its time)
                    await self._dispatch(frame)
                    self.dispatching = False
                    self.frames_handled += 1
            raise LinkClosed("peer closed the connection")

    async def _goodbye(self) -> None:
        sent = trio.Event()
        try:
            self.send(Msg.DISCONNECT, {"reason": "handshake"}, done=sent)
        except LinkClosed:
            return
        with trio.move_on_after(2):
            await sent.wait()

    async def _sender(self, link: PeerLink) -> None:
        try:
            await link.sender()
        except LinkClosed:
            link.close()

    async def _next(self, frames) -> Any:
        with trio.fail_after(self.opts["ping-timeout"] / 10 * 4 + 5):
            while True:
                frame = await frames.__anext__()
                if frame is not None:
                    return frame

    def send(self, msg: Msg, body: Any = None, data: Any = None, done: trio.Event | None = None,
             batch: bool = False) -> None:
        if self.link is None or self.link.closed:
            raise LinkClosed("not connected")
        self.link.send(msg, body, data, done, batch)

    def _send_params(self, link: PeerLink) -> None:
        dev = self.dev
        disk = dev if dev is not None and not dev.failed else None
        o = self.opts
        link.send(Msg.PARAMS, {
            "protocol": self.protocol,
            "after-sb": [o["after-sb-0pri"], o["after-sb-1pri"], o["after-sb-2pri"]],
            "two-primaries": o["allow-two-primaries"],
            "discard-my-data": self.discard_my_data,
            "size": disk.backing_size() if disk else 0,
            "current": disk.size() if disk else 0,   # a diskless peer takes this size over
            "user": disk.user_size if disk else 0,
            "uuids": dev.md.uuids if dev else [0, 0, 0, 0],
            "bits": disk.bitmap.count() if disk else 0,
            "flags": self._uuid_flags(),
            "role": int(self.res.state.role),
            "disk": int(self.res.state.disk),
            "verify-alg": o["verify-alg"],
            "csums-alg": o["csums-alg"],
            "update": self.settings_update,
            "fencing": dev.fencing if dev is not None else "dont-care",
        })

    def _uuid_flags(self) -> int:
        dev = self.dev
        flags = 0
        if self.discard_my_data:
            flags |= 1
        if dev is not None and dev.crashed_primary():
            flags |= 2
        if self.res.state.disk <= Disk.Inconsistent:
            flags |= 4
        return flags

    def _adopt_settings(self, p: dict) -> None:
        """The peer's net-options changed what the handshake compares: take it over."""
        from replicator.sync_handshake import convert_after_sb
        new = {"protocol": p["protocol"], "allow-two-primaries": bool(p["two-primaries"]),
               "verify-alg": p.get("verify-alg") or "", "csums-alg": p.get("csums-alg") or "",
               **dict(zip(("after-sb-0pri", "after-sb-1pri", "after-sb-2pri"),
                          map(convert_after_sb, p["after-sb"])))}    # its local: our remote
        changed = {k: v for k, v in new.items() if self.opts[k] != v}
        if not changed:
            return
        self.protocol = new["protocol"]
        self.opts.update(changed)
        if self.res.net is not None:
            self.res.net.update(changed)
        given = getattr(self.res, "net_given", {})
        given.update({k: ("yes" if v is True else "no" if v is False else v)
                      for k, v in changed.items()})
        self.log.resource_line("peer changed the connection's settings: " + ", ".join(
            f"{k} {v}" for k, v in changed.items()))

    def send_sync_params(self) -> None:
        """8.4's P_SYNC_PARAM: our resync rate settings changed; the peer adopts them, so a
        resync follows them whichever side paces it (the SyncTarget's requests do here)."""
        from replicator.settings import SYNC_PARAMS
        if self.dev is not None:
            try:
                self.send(Msg.SYNC_PARAM, {k: self.dev.disk_opts[k] for k in SYNC_PARAMS})
            except LinkClosed:
                pass

    def _adopt_sync_params(self, b: dict) -> None:
        from replicator.settings import SYNC_PARAMS, OptionError, disk_options
        dev = self.dev
        if dev is None:
            return
        given = {**dev.attach_args["given"], **{k: str(b[k]) for k in SYNC_PARAMS if k in b}}
        try:
            dev.disk_opts = disk_options(given)
        except OptionError as e:
            raise ProtocolError(f"malformed SYNC_PARAM frame: {e}") from None
        dev.attach_args["given"] = given

    def _check_settings(self, p: dict) -> None:
        from replicator.sync_handshake import convert_after_sb
        o = self.opts
        if p.get("update") and not self.settings_update:
            self._adopt_settings(p)
        def bad(what: str) -> SessionEnd:
            self.log.resource_line(f"incompatible {what}")
            return SessionEnd(Conn.Disconnecting, retry=False)
        if not self.settings_update:          # (else ours are new: the peer takes them over)
            if p.get("protocol") != self.protocol:
                raise bad("protocol settings")
            names = ["after-sb-0pri", "after-sb-1pri", "after-sb-2pri"]
            for i, name in enumerate(names):          # the peer's discard-local is our
                if convert_after_sb(p["after-sb"][i]) != o[name]:      # discard-remote
                    raise bad(f"{name} settings")
            if p.get("two-primaries") != o["allow-two-primaries"]:
                raise bad("allow-two-primaries settings")
        if p.get("discard-my-data") and self.discard_my_data:
            raise bad("discard-my-data settings")

    async def _handshake(self, p: dict) -> None:
        from replicator.sync_handshake import LOG_KINDS, PeerInfo, sync_handshake
        self._check_settings(p)
        self.peer_params = p
        dev = self.dev
        res = self.res
        self.peer_uuids = list(p["uuids"])
        if self._usable_disk() is None or dev.failed or Disk(p["disk"]) < Disk.Inconsistent:
            await self._connect_diskless(p)
            return
        self.peer_offer = int(p["size"])
        user = min((u for u in (dev.user_size, int(p.get("user") or 0)) if u), default=0)
        if dev.backing_size() > dev.metadata_covers():    # the disk grew: as 8.4, move the
            try:                                          # metadata before agreeing on sizes
                await resize.determine(dev, self.peer_offer, user, clean=False,
                                       connecting=True)
            except resize.ResizeError:
                pass                          # (the disk detached, or is too small now)
        refused = dev.agree_size(self.peer_offer, user)
        self.peer_size = dev.size()
        if refused:
            self.log.device(refused)
            raise SessionEnd(Conn.Disconnecting, retry=False)
        mine = PeerInfo(tuple(dev.md.uuids), dev.bitmap.count(), self._uuid_flags(),
                        res.state.role, res.state.disk)
        theirs = PeerInfo(tuple(p["uuids"]), int(p["bits"]), int(p["flags"]),
                          Role(p["role"]), Disk(p["disk"]))
        o = self.opts
        decision = sync_handshake(
            mine, theirs, resolve_conflicts=self.link_accepted(),
            after_sb_0pri=o["after-sb-0pri"], after_sb_1pri=o["after-sb-1pri"],
            after_sb_2pri=o["after-sb-2pri"], always_asbp=o["always-asbp"],
            discard_my_data=self.discard_my_data, rr_conflict=o["rr-conflict"],
            i_am_primary=res.state.role == Role.Primary,
            peer_is_primary=Role(p["role"]) == Role.Primary,
            can_demote=not res.device_open())
        self.discard_my_data = False          # one-shot, as drbdadm connect --discard-my-data
        self.settings_update = False
        action = self._reconcile(decision.action, mine, theirs)
        if decision.uuids is not None:
            dev.set_uuids(list(decision.uuids), notify=False)
        if decision.peer_uuids is not None:
            self.peer_uuids = list(decision.peer_uuids)
        for kind, text in decision.events:    # in 8.4's order: the initial-split-brain
            if kind == "handler":             # handler before the after-sb decision, ...
                await handlers.call(res, text)
            elif kind == "demote":            # an after-sb policy gave up our Primary role
                res.change("device", hard=True, role=Role.Secondary)
                self.log.device("Successfully gave up primary role.")
            elif kind in LOG_KINDS:
                for line in text.split("\n"):
                    if not (action != decision.action and line.startswith("No resync, but")):
                        self.log.device(line)
        peer_disk = Disk(p["disk"])
        if action == "disconnect":
            raise SessionEnd(Conn.Disconnecting, retry=False)
        self._refuse_two_primaries(Role(p["role"]))     # (after a demote we are Secondary)
        dev.handshake_done()
        if decision.full_sync:
            dev.mark_all_out_of_sync()
        if action == "connected":
            res.change("device", hard=True, peer=Role(p["role"]), conn=Conn.Connected,
                       pdsk=peer_disk)
            return
        self.resync = resync.Resync(self, source=action == "sync_source")
        if action == "sync_source":
            res.change("device", hard=True, peer=Role(p["role"]), conn=Conn.WFBitMapS,
                       pdsk=peer_disk)
        else:
            res.change("device", hard=True, peer=Role(p["role"]), conn=Conn.WFBitMapT,
                       pdsk=peer_disk)
        self.resync.begin()

    async def _connect_diskless(self, p: dict) -> None:
        """One side has no disk (detached, never attached, or on-io-error took it): as 8.4,
        nothing to compare or resync, the nodes just connect, and a node without a disk
        takes over its peer's size. A diskless Primary goes on through the peer, so it may
        only connect to the data it was showing."""
        res = self.res
        peer_role, peer_disk = Role(p["role"]), Disk(p["disk"])
        theirs = int(p["uuids"][0])
        view = res.diskless_view()
        if res.state.role == Role.Primary and view is not None:
            if (view.exposed_uuid | 1) != (theirs | 1):
                self.log.device(f"Can only connect to data with current UUID="
                                f"{view.exposed_uuid:016X}")
                raise SessionEnd(Conn.Disconnecting, retry=False)
        self._refuse_two_primaries(peer_role)
        if self.dev is None and peer_disk >= Disk.Inconsistent:
            await res.diskless.adopt_size(int(p.get("current") or p["size"]))
        res.change("device", hard=True, peer=peer_role, conn=Conn.Connected, pdsk=peer_disk)

    def _refuse_two_primaries(self, peer_role: Role) -> None:
        """Both Primary without allow-two-primaries: 8.4 drops the connection."""
        if (self.res.state.role == Role.Primary and peer_role == Role.Primary
                and not self.opts["allow-two-primaries"]):
            self.log.device("State change failed: Multiple primaries not allowed by config")
            raise SessionEnd(Conn.Disconnecting, retry=False)

    def renegotiate(self) -> None:
        """A disk was attached while connected: reconnect, so the handshake can compare
        generations and resync (8.4 renegotiates on the live connection)."""
        self.renegotiating = self.link is not None and not self.link.closed
        if self.renegotiating:                # (until then its data may be stale)
            self.log.device("disk attached while connected: renegotiating")
            self.link.close()

    def _reconcile(self, action: str, mine: Any, theirs: Any) -> str:
        """Same data generation, both UpToDate, yet blocks are marked (online verify found
        them, or a write was in flight at a disconnect): resync them, as DRBD 9's
        reconcile rule does; the Primary (else the accepting side) is the source."""
        if action != "connected" or not (mine.bits or theirs.bits):
            return action
        if mine.disk != Disk.UpToDate or theirs.disk != Disk.UpToDate:
            return action
        if mine.role == Role.Primary or theirs.role == Role.Primary:
            source = mine.role == Role.Primary
        else:
            source = self.link_accepted()
        self.log.device(f"Reconciling {mine.bits + theirs.bits} out-of-sync bits: becoming "
                        f"{'SyncSource' if source else 'SyncTarget'}")
        return "sync_source" if source else "sync_target"

    def link_accepted(self) -> bool:
        return bool(self.link is not None and getattr(self.link, "accepted", False))

    # -- keepalive --------------------------------------------------------------------------
    async def _pinger(self, link: PeerLink) -> None:
        interval = self.opts["ping-int"]
        timeout = self.opts["ping-timeout"] / 10
        while True:
            await trio.sleep(interval)
            self.ping_waiting = trio.Event()
            self.send(Msg.PING)
            heard = link.bytes_received
            while True:
                with trio.move_on_after(timeout) as cs:
                    await self.ping_waiting.wait()
                if not cs.cancelled_caught:
                    break
                # a PingAck may queue behind a burst of data: only silence means death
                if link.bytes_received == heard and not self.dispatching:
                    self.log.resource_line("PingAck did not arrive in time.")
                    link.close()
                    raise SessionEnd(Conn.NetworkFailure)
                heard = link.bytes_received

    async def _keepalive(self) -> None:
        """While one frame's handler waits (a write queued behind a running flush, a handler
        script), the frames behind it stay unread, the peer's PING among them: show the peer
        that we live, as 8.4's asender goes on answering pings while the receiver waits."""
        period = self.opts["ping-timeout"] / 20         # half a ping timeout, in seconds
        last = -1
        while True:
            await trio.sleep(period)
            if self.dispatching and self.frames_handled == last:
                self.send(Msg.PING)
            last = self.frames_handled

    async def _ko_watch(self, link: PeerLink) -> None:
        """8.4's ko-count: a peer that has not completed a write within ko-count x timeout
        is expelled, even if it still answers pings (a hung disk). Completed: sent for
        protocol A, RecvAck for B, WriteAck for C."""
        ko, timeout = self.opts["ko-count"], self.opts["timeout"] / 10
        if not ko:
            return
        while True:
            await trio.sleep(timeout)
            oldest = next((p.submitted for p in self.tl.values() if not (
                p.done.is_set() if self.protocol == "A" else p.acked)), None)
            flush = next(iter(self.flush_sent.values()), None)   # (8.4: a flush is a request)
            started = min((t for t in (oldest, flush) if t is not None), default=None)
            waited = trio.current_time() - started if started is not None else 0
            if waited > ko * timeout:
                self.log.resource_line(
                    f"Remote failed to finish a request within {int(waited * 1000)}ms > "
                    f"ko-count ({ko}) * timeout ({self.opts['timeout']} * 0.1s)")
                link.close()
                raise SessionEnd(Conn.Timeout)

    # -- frames -----------------------------------------------------------------------------
    async def _dispatch(self, frame) -> None:
        try:
            await self._handle(frame)
        except (KeyError, TypeError, ValueError) as e:     # a field missing or mistyped
            raise ProtocolError(f"malformed {frame.type.name} frame: {e!r}") from None

    async def _handle(self, frame) -> None:
        t, b = frame.type, frame.body
        if t == Msg.DATA:
            await self._on_data(b, frame.data)
        elif t == Msg.WRITE_ACK:
            self._acked_upto(int(b["upto"]), retire=True)
        elif t == Msg.RECV_ACK:
            self._acked_upto(int(b["upto"]), retire=False)
        elif t == Msg.NEG_ACK:
            p = self.tl.pop(int(b["seq"]), None)
            if p is not None:
                if self.dev is not None:
                    self.dev.bitmap.set_range(p.offset, p.length)
                p.lost = True
                p.retire()
        elif t == Msg.FLUSH:         # covers every write received before it: note how far
            # answered at once when nothing is queued and no sync is needed (a barrier, or
            # the writes are durable already: an anticipated fdatasync covered them)
            dev = self._usable_disk()
            fid, upto, sync = int(b["id"]), int(b["upto"]), bool(b.get("sync"))
            generation = dev.syncer.generation if dev else 0
            if not self.flushes_queued and (not sync or (
                    dev is not None and dev.syncer.already_durable(generation))):
                self.send(Msg.FLUSH_ACK, {"id": fid, "upto": upto, "ok": True})
            else:
                self.flushes_queued += 1
                self.flush_requests.send_nowait((fid, upto, sync, dev, generation))
        elif t == Msg.FLUSH_ACK:
            self._on_flush_ack(b)
        elif t == Msg.PING:
            self.send(Msg.PING_ACK)
        elif t == Msg.PING_ACK:
            if self.ping_waiting is not None:
                self.ping_waiting.set()
        elif t == Msg.STATE:
            self._on_peer_state(b)
        elif t == Msg.UUIDS:
            self.peer_uuids = [int(u) for u in b["uuids"]]
            self._follow_exposed_data()
        elif t == Msg.DISCARD:
            await self._on_discard(b)
        elif t == Msg.READ_REQUEST:
            await self._on_read_request(b)
        elif t == Msg.READ_REPLY:
            ev, box = self.reads.pop(int(b["id"]), (None, None))
            if ev is not None:
                box.append(None if b.get("err") else bytes(frame.data or b""))
                ev.set()
        elif t == Msg.DISCONNECT:
            raise SessionEnd(Conn.TearDown, disconnect=b)
        elif t == Msg.OV_REQUEST:
            await verify.answer(self, b)
        elif t == Msg.SYNC_PARAM:
            self._adopt_sync_params(b)
        elif t == Msg.SIZES:
            await resize.on_sizes(self, b)
        elif t == Msg.STATE_REQ and b.get("what") in ("outdate", "outdated"):
            await fencing.on_outdate_request(self, b)
        elif t == Msg.STATE_REQ and b.get("what") == "verify":
            self._on_verify_request()
        elif self.verify is not None and self.verify.handle(frame):
            pass
        elif t == Msg.OV_REPLY and (self.verify is None or not self.verify.source):
            pass                     # answers for a verify this node gave up (see below)
        elif self.sync_aborted and self.resync is None and t in resync.LATE_AFTER_ABORT:
            pass                     # still on the wire when a failed disk stopped the sync
        elif self.resync is not None and await self.resync.handle(frame):
            pass
        elif t in resync.SOURCE_SIDE_MESSAGES:
            await resync.handle_unsolicited(self, frame)
        else:
            raise ProtocolError(f"unexpected {t.name} in state {self.res.state.conn.name}")

    def _usable_disk(self) -> Any:
        """The local device if it can take the peer's I/O (attached, not failing)."""
        dev = self.dev
        if dev is None or self.res.state.disk < Disk.Inconsistent:
            return None
        return dev

    def _checked_range(self, off: Any, length: int, what: str, limit: int = MAX_DATA) -> int:
        """A peer-supplied offset, checked against the agreed size: a frame pointing outside
        the device is a protocol error, never a write somewhere else."""
        size = self.dev.size() if self.dev is not None else 0
        if not isinstance(off, int) or off < 0 or not 0 < length <= limit or off + length > size:
            raise ProtocolError(f"{what} at {off}+{length} is outside the device ({size} bytes)")
        return off

    async def _on_data(self, b: dict, data: memoryview) -> None:
        seq = int(b["seq"])
        self.received_upto = seq
        self.data_received = True
        if self.protocol == "B" and not self.link.reader.frame_ready():
            self._send_acks()       # B: receipt is acknowledged before the write, as in
        dev = self._usable_disk()   # DRBD (writes received together share one ack)
        if dev is None:
            self.send(Msg.NEG_ACK, {"seq": seq})
            return
        length = len(data)
        off = self._checked_range(b["off"], length, "write")
        extents = None
        if self.res.state.pdsk < Disk.Inconsistent:     # the Primary has no disk
            extents = await self._begin_only_copy(dev, off, length, seq)
            if extents is None:
                return
        try:
            await dev.syncer.write(data, off)
        except OSError as e:
            self.send(Msg.NEG_ACK, {"seq": seq})
            dev.io_error("write", e)
            return
        finally:
            if extents is not None:
                dev.bitmap.set_range(off, length)
                dev.al_end(*extents)
        dev.written_kib += length >> 10
        self.nr_kib += length >> 10
        if self.resync is not None:
            self.resync.app_write(off, length)
        self.written_upto = seq

    async def _begin_only_copy(self, dev: Any, off: int, length: int,
                               seq: int) -> tuple[int, int] | None:
        """A diskless Primary's write: its own disk, once back, lacks it, so the block is
        marked, and the write goes through the activity log as a local one does (8.4):
        after a crash here the mark is restored from the log. Returns the extents to end
        once written; None (answered, the disk detached) if the log could not be written."""
        first, last = Bitmap.extents_of_range(off, length)
        await dev.superblock_synced()       # the new generation and Primary flag first
        try:
            await dev.al_begin(first, last)
        except OSError as e:
            dev.bitmap.set_range(off, length)
            self.send(Msg.NEG_ACK, {"seq": seq})
            dev.io_error("activity log", e, meta=True)
            return None
        return first, last

    async def _on_discard(self, b: dict) -> None:
        seq, length = int(b["seq"]), int(b["len"])
        self.received_upto = seq
        dev = self._usable_disk()
        if dev is None:
            self.send(Msg.NEG_ACK, {"seq": seq})
            return
        off = self._checked_range(b["off"], length, "discard", limit=dev.size())
        if self.resync is not None:
            self.resync.app_write(off, length)
        try:
            await dev.syncer.discard(off, length)
        except OSError as e:
            self.send(Msg.NEG_ACK, {"seq": seq})
            dev.io_error("discard", e)
            return
        self.written_upto = seq

    async def _on_read_request(self, b: dict) -> None:
        rid, length = int(b["id"]), int(b["len"])
        off = self._checked_range(b["off"], length, "read request")
        dev = self._usable_disk()
        if dev is None or self.res.state.disk < Disk.UpToDate:
            self.send(Msg.READ_REPLY, {"id": rid, "err": "no up-to-date data here"})
            return
        try:
            data = await dev.syncer.read(length, off)
        except OSError as e:
            self.send(Msg.READ_REPLY, {"id": rid, "err": e.strerror})
            dev.io_error("read", e)
            return
        self.send(Msg.READ_REPLY, {"id": rid}, data + bytes(length - len(data)))

    def _on_verify_request(self) -> None:
        """The peer started verify. If this node started one at the same moment, the side
        that accepted the connection keeps its verify, the other one gives its up."""
        conn = self.res.state.conn
        if conn == Conn.VerifyS and self.verify is not None and not self.link_accepted():
            self.verify.stop()
            self.verify = None
            conn = Conn.Connected
        if conn != Conn.Connected or self._usable_disk() is None:
            why = f"in state {conn.name}" if conn != Conn.Connected else "without a disk"
            self.log.device(f"verify request of the peer ignored {why}")
            return
        verify.begin_target(self)

    async def _flush_worker(self, requests: Any) -> None:
        """Answer FLUSH barriers in order, off the frame loop: an fdatasync of a busy disk
        can take seconds, and the frame loop must go on answering pings meanwhile. (The
        frame loop answers one itself only while nothing waits here.)"""
        async for fid, upto, sync, dev, generation in requests:
            ok = not sync
            if sync and dev is not None and dev is self._usable_disk():
                ok = await dev.syncer.sync(generation)   # (on failure: io_error detached)
            self.flushes_queued -= 1
            self.send(Msg.FLUSH_ACK, {"id": fid, "upto": upto, "ok": ok})

    def _on_flush_ack(self, b: dict) -> None:
        if not b.get("ok", True) and self.dev is not None:
            # the peer lost writes it had acknowledged: everything recently written here
            # (the activity log's hot extents) must go to it again
            hot = self.dev.al.hot_extents()
            for extent in hot:
                self.dev.bitmap.set_bits(*self.dev.bitmap.extent_bits(extent))
            self.log.device(f"peer failed to flush; {len(hot)} active extents marked out of sync")
        self._retire_upto(int(b["upto"]))
        fid = int(b["id"])
        ev = self.flushes.pop(fid, None)
        self.flush_sent.pop(fid, None)
        if fid in self.flush_ok:
            self.flush_ok[fid] = bool(b.get("ok", True))
        if ev is not None:
            ev.set()

    def _send_acks(self) -> None:
        """One cumulative ack for every write handled since the last one: the peer applies
        writes in arrival order, so "everything up to N" is exact (and far cheaper)."""
        if self.protocol == "C" and self.written_upto != self.acked_upto:
            self.send(Msg.WRITE_ACK, {"upto": self.written_upto})
            self.acked_upto = self.written_upto
        elif self.protocol == "B" and self.received_upto != self.acked_upto:
            self.send(Msg.RECV_ACK, {"upto": self.received_upto})
            self.acked_upto = self.received_upto

    def _acked_upto(self, upto: int, retire: bool) -> None:
        """The peer confirmed every write up to ``upto`` (the transfer log is in seq order)."""
        self.peer_acked_upto = max(self.peer_acked_upto, upto)
        tl = self.tl
        if retire:
            while tl:
                seq = next(iter(tl))
                if seq > upto:
                    break
                p = tl.pop(seq)
                latency.acked(seq)
                p.acked = True
                p.retire()
            return
        for p in tl.values():
            if p.seq > upto:
                break
            if not p.acked:
                latency.acked(p.seq)
                p.acked = True
                p.done.set()

    def _on_peer_state(self, b: dict) -> None:
        res = self.res
        role, disk = Role(b["role"]), Disk(b["disk"])
        if "uuids" in b:
            self.peer_uuids = [int(u) for u in b["uuids"]]
            self._follow_exposed_data()
        lost_peer_disk = (res.state.pdsk in (Disk.Inconsistent, Disk.Consistent, Disk.UpToDate)
                          and disk < Disk.Inconsistent)
        diskless_promoted = (disk < Disk.Inconsistent and role == Role.Primary
                             and res.state.peer != Role.Primary)
        res.change("device", hard=True, peer=role, pdsk=disk)
        if disk < Disk.Inconsistent:
            self.abort_sync()
        if lost_peer_disk and Role.Primary in (res.state.role, role) and self.dev is not None:
            self.dev.new_current_uuid_if_needed()   # 8.4: lost contact to peer's data
        elif diskless_promoted and self._usable_disk() is not None:
            self.dev.new_current_uuid_if_needed()   # 8.4: its writes now reach this disk only
        if self.resync is None and res.state.conn == Conn.Connected:
            resync.maybe_start_after_state(self)

    def _follow_exposed_data(self) -> None:
        """A diskless Primary shows the peer's data: its generation is the peer's."""
        view = self.res.diskless_view()
        if view is not None and self.res.state.role == Role.Primary:
            view.exposed_uuid = self.peer_uuids[0]

    def abort_sync(self) -> None:
        """A disk failed (here or there): no resync or verify can go on; stay Connected."""
        busy = self.resync is not None or self.verify is not None
        self.sync_aborted |= busy
        for job in (self.resync, self.verify):
            if job is not None:
                job.stop()
        self.resync = self.verify = None
        if busy and self.res.state.conn > Conn.Connected:
            self.res.change("device", hard=True, conn=Conn.Connected)

    def state_changed(self, old, new) -> None:
        """Tell the peer when my role or disk changed (called for every state change)."""
        if self.link is None or new.conn < Conn.Connected and new.conn != Conn.WFReportParams:
            return
        if old.role != new.role or old.disk != new.disk:
            try:
                self.send(Msg.STATE, {"role": int(new.role), "disk": int(new.disk),
                                      "uuids": self.dev.md.uuids if self.dev else [0, 0, 0, 0]})
            except LinkClosed:
                pass

    def send_uuids(self) -> None:
        if self.link is not None and self.dev is not None:
            try:
                self.send(Msg.UUIDS, {"uuids": self.dev.md.uuids})
            except LinkClosed:
                pass

    # -- the write path (called by the device) ---------------------------------------------
    def mirroring(self) -> bool:
        return (self.link is not None and not self.link.closed
                and self.res.state.conn in MIRRORING and self.res.state.pdsk >= Disk.Inconsistent)

    def submit_write(self, offset: int, data: bytes | memoryview) -> Pending:
        """Queue a mirrored write; returns what to wait on (per protocol)."""
        self.seq += 1
        p = Pending(self.seq, offset, len(data))
        self.tl[p.seq] = p
        latency.submitted(self, p)
        done = p.done if self.protocol == "A" else latency.SENT
        # alone in flight: send now; among others: one sendmsg for all queued by then
        batch = not self.alone_in_flight(p)
        self.send(Msg.DATA, {"seq": p.seq, "off": offset}, data, done, batch)
        self.ns_kib += len(data) >> 10
        if self.protocol != "C":
            self.since_barrier += 1
            if self.since_barrier >= BARRIER_EVERY:
                self._barrier(sync=False)
        return p

    def alone_in_flight(self, p: Pending) -> bool:
        """No write before ``p`` still waits for its ack: latency is all that counts then.
        (B keeps acked writes in the transfer log until the next barrier, so the log's
        length does not say it.)"""
        return len(self.tl) == 1 or self.peer_acked_upto >= p.seq - 1

    def submit_discard(self, offset: int, length: int) -> Pending:
        self.seq += 1
        p = Pending(self.seq, offset, length)
        self.tl[p.seq] = p
        self.send(Msg.DISCARD, {"seq": p.seq, "off": offset, "len": length})
        if self.protocol != "C":
            self._barrier(sync=False)
        return p

    def _barrier(self, sync: bool) -> trio.Event:
        self.flush_id += 1
        ev = trio.Event()
        self.flushes[self.flush_id] = ev
        self.since_barrier = 0
        self.flush_sent[self.flush_id] = trio.current_time()
        self.send(Msg.FLUSH, {"id": self.flush_id, "upto": self.seq, "sync": sync})
        return ev

    def _retire_upto(self, upto: int) -> None:
        for seq in [s for s in self.tl if s <= upto]:
            self.tl.pop(seq).retire()

    async def flush(self) -> bool:
        """Round trip that returns once the peer has everything before it on stable
        storage: True if it has, False if it could not say so (no connection, the link
        dropped, its flush failed)."""
        return await self.flush_done(self.start_flush())

    def start_flush(self) -> int | None:
        """Send a FLUSH now; its id for :meth:`flush_done` (None: not connected)."""
        if not self.mirroring():
            return None
        try:
            self._barrier(sync=True)
        except LinkClosed:
            return None
        self.flush_ok[self.flush_id] = False      # until the peer says otherwise
        return self.flush_id

    async def flush_done(self, fid: int | None) -> bool:
        """Wait for the answer to :meth:`start_flush`'s FLUSH: did the peer's flush succeed."""
        if fid is None:
            return False
        ev = self.flushes.get(fid)                # (None: answered already)
        if ev is not None:
            alone = self.peer_acked_upto >= self.seq    # no write in flight: poll
            await wait_polling(ev, FLUSH_ACK_POLL_NS if alone else 0)
        return self.flush_ok.pop(fid, False)

    def barrier_now(self) -> None:
        """Protocols A/B: ask for the barrier ack now (it releases activity log extents)."""
        if self.protocol != "C" and self.tl and self.link is not None and not self.link.closed:
            self._barrier(sync=False)

    async def remote_read(self, offset: int, length: int) -> bytes | None:
        """Read a block the local disk does not have yet (SyncTarget Primary); None if the
        peer could not deliver it."""
        self.read_id += 1
        ev, box = trio.Event(), []
        self.reads[self.read_id] = (ev, box)
        try:
            self.send(Msg.READ_REQUEST, {"id": self.read_id, "off": offset, "len": length})
        except LinkClosed:
            self.reads.pop(self.read_id, None)
            return None
        await ev.wait()
        data = box[0] if box else None
        return data if data is not None and len(data) == length else None

    def statistics(self) -> dict:
        stats = {"ns_kib": self.ns_kib, "nr_kib": self.nr_kib, "pending": len(self.tl),
                 "peer_uuids": U.fmt(self.peer_uuids)}
        if self.resync is not None:
            stats.update(self.resync.statistics())
        return stats


_PRIORITY = (SessionEnd, ProtocolError, AuthFailed, trio.TooSlowError, LinkClosed)


def _reason(group: BaseExceptionGroup) -> BaseException:
    """The exception that explains why a session's nursery ended (cancellation wins)."""
    flat: list[BaseException] = []
    def walk(g: BaseExceptionGroup) -> None:
        for e in g.exceptions:
            walk(e) if isinstance(e, BaseExceptionGroup) else flat.append(e)
    walk(group)
    if any(isinstance(e, trio.Cancelled) for e in flat):
        return group.split(trio.Cancelled)[0]     # being stopped: nothing else matters
    for kind in _PRIORITY:
        for e in flat:
            if isinstance(e, kind):
                return e
    return group
