"""Resync: bitmap exchange, the SyncTarget's request loop, the SyncSource's answers.

Order of events (8.4): the WFBitMapS side sends its bitmap; the WFBitMapT side ORs it into
its own, sends that back and waits in WFSyncUUID; the source ORs it too, starts a new sync
UUID and sends it; the target takes it and becomes SyncTarget. The target then walks its
set bits and requests the data (or, with ``csums-alg``, sends the digest of its own block
so the source answers "in sync" when they match); it writes each reply, clears the bits and
acknowledges, which lets the source clear its bits too. Both sides write their bitmap out
every second, so an interrupted resync continues where it stopped.
"""
from __future__ import annotations

import hashlib
import os
import time
import zlib
from typing import Any

import trio

from replicator import handlers, rs_controller
from replicator import uuids as U
from replicator.link import LinkClosed
from replicator.protocol import Msg, ProtocolError, payload_crc
from replicator.states import Conn, Disk

BITMAP_CHUNK = 512 << 10          # raw bitmap bytes per BITMAP frame
REQUEST_MAX = 1 << 20             # bytes per resync request (a run of set bits)
BM_FLUSH_INTERVAL = 1.0
SOURCE_SIDE_MESSAGES = frozenset({Msg.RS_REQUEST, Msg.RS_WRITE_ACK, Msg.RS_DONE, Msg.BITMAP,
                                  Msg.SYNC_UUID, Msg.STATE_REQ, Msg.OV_REQUEST})
# what may still be on the wire for a resync or verify that a failed disk stopped here
LATE_AFTER_ABORT = frozenset({Msg.RS_REQUEST, Msg.RS_REPLY, Msg.RS_IN_SYNC, Msg.RS_WRITE_ACK,
                              Msg.RS_DONE, Msg.OV_DONE, Msg.OV_RESULT})


def done_line(what: str, elapsed_s: float, paused_s: float, bits: int) -> str:
    """8.4's summary: the rate leaves the paused time out, the total puts it back in."""
    active = max(int(elapsed_s - paused_s), 1)
    paused = int(paused_s)
    return (f"{what} done (total {active + paused} sec; paused {paused} sec; "
            f"{bits // active * 4} K/sec)")


def digest(alg: str, data: bytes | memoryview) -> bytes:
    """``csums-alg``/``verify-alg``: a hashlib algorithm, or the kernel's crc32c/crc32."""
    if alg == "crc32c":
        return payload_crc(data).to_bytes(4, "little")
    if alg == "crc32":
        return zlib.crc32(data).to_bytes(4, "little")
    return hashlib.new(alg, data).digest()


def known_digest(alg: str) -> bool:
    """Whether ``digest`` knows ``alg`` (an empty one: none configured)."""
    try:
        return not alg or bool(digest(alg, b""))
    except (ValueError, TypeError):       # (TypeError: shake_*, which need a length)
        return False


class _DiskGone(Exception):
    """The local disk failed during the resync and was detached (the resync is over)."""


class Resync:
    """One resync (or the bitmap exchange leading to it), on either side."""

    def __init__(self, peer: Any, source: bool):
        self.peer = peer
        self.res = peer.res
        self.dev = peer.dev
        self.source = source
        self.scopes: list[trio.CancelScope] = []
        self.incoming = bytearray()       # the peer's bitmap as it arrives
        self.started = 0.0
        self.paused_s = 0.0
        self.total_bits = 0
        self.inflight: dict[int, list] = {}   # offset -> [length, superseded]
        self.inflight_bytes = 0
        self.returned_sectors = 0          # came back since the controller's last step
        self.want_kib = 0                  # the controller's current rate (KiB/s)
        self.wakeup = trio.Event()
        self.same_csum = 0
        self.transferred = 0
        self.done_flag = False
        self.marks: list[tuple[float, int]] = []   # (time, bits left) every 3 s, for speed

    # -- start ------------------------------------------------------------------------------
    def begin(self) -> None:
        """After the handshake decided: the source sends its bitmap first."""
        if self.source:
            self._send_bitmap()

    def _send_bitmap(self) -> None:
        """Our bitmap, once every write begun while the peer was away has marked its
        blocks (Device.all_marked): a mark set after the bitmap left would be missed by
        this resync, and the peer called UpToDate without the block."""
        if self.dev.unmarked:
            self.peer.nursery.start_soon(self._send_bitmap_when_marked)
        else:
            self._send_bitmap_now()

    async def _send_bitmap_when_marked(self) -> None:
        await self.dev.all_marked()
        if self.peer.resync is self:
            try:
                self._send_bitmap_now()
            except LinkClosed:
                pass

    def _send_bitmap_now(self) -> None:
        bm = self.dev.bitmap.to_bytes()
        n = len(bm)
        for off in range(0, max(n, 1), BITMAP_CHUNK):
            chunk = bm[off:off + BITMAP_CHUNK]
            last = off + BITMAP_CHUNK >= n
            self.peer.send(Msg.BITMAP, {"off": off, "last": last, "n": n},
                           zlib.compress(chunk, 1))

    def _receive_bitmap(self, b: dict, data: memoryview) -> bool:
        """Collect one chunk; True when the whole bitmap has arrived and was ORed in."""
        off = int(b["off"])
        ours = self.dev.bitmap.nbytes
        if off < 0 or off % BITMAP_CHUNK:
            raise ProtocolError(f"bitmap chunk at bad offset {off}")
        d = zlib.decompressobj()
        chunk = d.decompress(bytes(data), BITMAP_CHUNK)
        if d.unconsumed_tail:
            raise ProtocolError("bitmap chunk too large")
        if not self.incoming:
            self.incoming = bytearray(ours)       # bits beyond our size are ignored
        keep = chunk[:max(0, ours - off)]
        self.incoming[off:off + len(keep)] = keep
        if not b["last"]:
            return False
        self.dev.bitmap.merge_or(bytes(self.incoming))
        self.incoming = bytearray()
        return True

    # -- frames --------------------------------------------------------------------------------
    async def handle(self, frame) -> bool:
        """Handle a resync frame (False: not one of ours)."""
        try:
            return await self._handle(frame)
        except _DiskGone:                     # detached, the resync stopped: frame done
            return True

    async def _handle(self, frame) -> bool:
        t, b = frame.type, frame.body
        res = self.res
        if t == Msg.BITMAP:
            if not self._receive_bitmap(b, frame.data):
                return True
            if self.source:                       # got the target's bitmap: start
                await self._before("before-resync-source")
                self._start_source()
            else:                                 # got the source's: answer with ours
                self._send_bitmap()
                res.change("device", hard=True, conn=Conn.WFSyncUUID)
            return True
        if t == Msg.SYNC_UUID and not self.source:
            await self._before("before-resync-target")
            self.dev.set_uuids(U.receive_sync_uuid(self.dev.md.uuids, int(b["uuid"]),
                                                   self.dev.is_primary()), notify=False)
            self._start_target()
            return True
        if t == Msg.RS_REPLY and not self.source:
            await self._on_reply(b, frame.data)
            return True
        if t == Msg.RS_IN_SYNC and not self.source:
            self.same_csum += -(-int(b["len"]) // 4096)         # in 4 KiB blocks
            self._complete(b["off"], b["len"], None)
            return True
        if t == Msg.RS_REQUEST and self.source:
            await self._answer_request(b)
            return True
        if t == Msg.RS_WRITE_ACK and self.source:
            self.dev.bitmap.clear_range(b["off"], b["len"])
            return True
        if t == Msg.STATE_REQ and b.get("what") in ("pause", "resume"):
            set_paused(self.peer, peer_side=True, paused=b["what"] == "pause")
            return True
        if t == Msg.RS_DONE and self.source:
            self._finish_source(b)          # (the resync changed no data here)
            return True
        return False

    async def _before(self, name: str) -> None:
        """A before-resync-* handler that fails drops the connection (source: 3 is ignored)."""
        rc = await handlers.call(self.res, name)
        if rc > 0 and not (name == "before-resync-source" and rc == 3):
            self.dev.log.device(f"{name} handler returned {rc}, dropping connection.")
            from replicator.peer import SessionEnd
            raise SessionEnd(Conn.Disconnecting, retry=False)

    # -- source --------------------------------------------------------------------------------
    def _start_source(self) -> None:
        uu, value = U.gen_sync_uuid(self.dev.md.uuids)
        self.dev.set_uuids(uu, notify=False)       # the peer learns it from SYNC_UUID
        self.dev.log.device(f"updated sync UUID {U.fmt(uu)}")
        self.peer.send(Msg.SYNC_UUID, {"uuid": value})
        self._begin_common()
        self.res.change("device", hard=True, conn=Conn.SyncSource, pdsk=Disk.Inconsistent)
        self.dev.log.device(f"Began resync as SyncSource (will sync {self.total_bits * 4} KB "
                            f"[{self.total_bits} bits set]).")
        self.peer.nursery.start_soon(self._flusher)

    async def _answer_request(self, b: dict) -> None:
        off, length = int(b["off"]), int(b["len"])
        if length <= 0 or length > REQUEST_MAX or off < 0 or off + length > self.dev.size():
            raise ProtocolError(f"resync request {off}+{length} out of range")
        data = await self._disk_io("resync read", self.dev.syncer.read, length, off)
        self.dev.read_kib += length >> 10            # dr: counts resync reads, as 8.4's
        if len(data) < length:
            data += bytes(length - len(data))
        alg = self.peer.opts["csums-alg"]
        if b.get("digest") is not None and alg and digest(alg, data) == b["digest"]:
            self.peer.send(Msg.RS_IN_SYNC, {"off": off, "len": length})
            self.dev.bitmap.clear_range(off, length)
            return
        self.peer.send(Msg.RS_REPLY, {"off": off, "len": length}, data)
        self.peer.ns_kib += length >> 10

    def _finish_source(self, b: dict) -> None:
        self.done_flag = True
        self.dev.set_uuids(U.resync_finished_source(self.dev.md.uuids))
        self._log_done()
        self.peer.resync = None
        self.res.change("device", hard=True, conn=Conn.Connected, pdsk=Disk.UpToDate)
        self.dev.drop_bits_beyond_size()
        left = self.dev.bitmap.count()
        if left:        # writes the peer refused meanwhile: they go at the next resync
            self.dev.log.device(f"{left} bits still out of sync after the resync")
        self.stop()

    async def _sync_data(self) -> None:
        """Before the generation UUIDs say "resync done": the data on stable storage, off
        the event loop (after a resync much may be dirty; the superblock write that
        follows would otherwise flush it all while pings go unanswered)."""
        try:
            await self.dev.syncer.flushing(os.fdatasync, self.dev.fd)
        except OSError as e:
            self._disk_failed("resync flush", e)

    async def _disk_io(self, where: str, call: Any, *args: Any) -> Any:
        """A backing disk read or write for the resync; a failing disk ends the resync."""
        try:
            return await call(*args)
        except OSError as e:
            self._disk_failed(where, e)

    def _disk_failed(self, where: str, e: OSError) -> None:
        """As 8.4: the disk detaches, the resync stops, the nodes stay connected."""
        self.dev.io_error(where, e, meta=True)
        raise _DiskGone() from None

    # -- target --------------------------------------------------------------------------------
    def _start_target(self) -> None:
        self._begin_common()
        self.res.change("device", hard=True, conn=Conn.SyncTarget, disk=Disk.Inconsistent)
        self.dev.log.device(f"Began resync as SyncTarget (will sync {self.total_bits * 4} KB "
                            f"[{self.total_bits} bits set]).")
        self.peer.nursery.start_soon(self._request_loop)
        self.peer.nursery.start_soon(self._flusher)

    def _begin_common(self) -> None:
        self.started = time.monotonic()
        self.dev.drop_bits_beyond_size()      # (the peer's bitmap may cover more)
        self.total_bits = self.dev.bitmap.count()
        self.marks = [(self.started, self.total_bits)]
        s = self.res.state
        if s.user_isp or s.peer_isp:          # paused before it began: that time counts
            self.paused_changed(True)         # as paused in the summary

    async def _request_loop(self) -> None:
        try:
            await self._requests()
        except _DiskGone:
            pass

    async def _requests(self) -> None:
        """Walk the set bits, requesting runs of up to 1 MiB; pace by the rate controller
        (a budget per 100 ms step) and never more than max-buffers/2 pages in flight."""
        with self._scope():
            bm = self.dev.bitmap
            size = self.dev.size()
            alg = self.peer.opts["csums-alg"]
            window = max(self.peer.opts["max-buffers"] // 2, 16) * 4096
            opts = self.dev.disk_opts
            ctl = rs_controller.controller(opts)
            budget, next_step, pos = 0, 0.0, 0
            while True:
                while self.res.state.user_isp or self.res.state.peer_isp:
                    await trio.sleep(0.1)
                now = time.monotonic()
                if now >= next_step:                 # a new step: leftover budget expires
                    if self.dev.disk_opts is not opts:        # disk-options / adjust changed
                        opts = self.dev.disk_opts             # the rate
                        ctl = rs_controller.controller(opts)
                    budget = ctl.step(self.returned_sectors, self.inflight_bytes // 512) * 512
                    self.returned_sectors = 0
                    self.want_kib = budget // 1024 * 10
                    next_step = now + rs_controller.STEP_S
                if budget <= 0:
                    await trio.sleep_until(next_step)
                    continue
                bit = bm.find_next_set(pos)
                if bit < 0 or bit * 4096 >= size:
                    if self.inflight:            # wait for answers, then rescan from 0
                        await self._wait()
                        pos = 0
                        continue
                    first = bm.find_next_set(0)
                    if first < 0 or first * 4096 >= size:
                        break
                    pos = 0
                    continue
                stop = bm.find_next_zero(bit)
                off = bit * 4096
                run = (stop - bit) * 4096 if stop >= 0 else size - off
                length = min(run, REQUEST_MAX, size - off, max(4096, budget // 4096 * 4096))
                pos = (off + length + 4095) // 4096
                if any(o < off + length and off < o + v[0] for o, v in self.inflight.items()):
                    continue                     # a superseded request still in flight
                while self.inflight_bytes + length > window:
                    await self._wait()
                body: dict = {"off": off, "len": length}
                if alg:
                    body["digest"] = digest(alg, await self._disk_io(
                        "csums read", self.dev.syncer.read, length, off))
                self.inflight[off] = [length, False]
                self.inflight_bytes += length
                self.peer.send(Msg.RS_REQUEST, body)
                budget -= length
            await self._sync_data()
            self._finish_target()

    async def _wait(self) -> None:
        await self.wakeup.wait()
        self.wakeup = trio.Event()

    def app_write(self, offset: int, length: int) -> None:
        """A local application write overlapping an in-flight request makes its reply stale."""
        for o, v in self.inflight.items():
            if o < offset + length and offset < o + v[0]:
                v[1] = True

    async def _on_reply(self, b: dict, data: memoryview) -> None:
        off = int(b["off"])
        entry = self.inflight.get(off)
        if entry is None or entry[0] != len(data):
            raise ProtocolError(f"unexpected resync reply at {off}")
        if not entry[1]:
            await self._disk_io("resync write", self.dev.syncer.write, data, off)
            self.transferred += len(data)
            self.dev.written_kib += len(data) >> 10  # dw: resync writes too (8.4)
            self.peer.nr_kib += len(data) >> 10
        self._complete(off, len(data), None)

    def _complete(self, off: int, length: int, _: Any) -> None:
        entry = self.inflight.pop(off, None)
        if entry is None:
            raise ProtocolError(f"unexpected resync answer at {off}")
        self.inflight_bytes -= entry[0]
        self.returned_sectors += entry[0] // 512
        if not entry[1]:                       # superseded replies keep their bits set
            self.dev.bitmap.clear_range(off, length)
            self.peer.send(Msg.RS_WRITE_ACK, {"off": off, "len": length})
        self._mark_progress()
        self.wakeup.set()

    def _mark_progress(self) -> None:
        now = time.monotonic()
        if now - self.marks[-1][0] >= 3:
            self.marks.append((now, self.dev.bitmap.count()))
            self.marks = self.marks[-7:]

    def _finish_target(self) -> None:
        self.done_flag = True
        self.dev.drop_bits_beyond_size()
        self.dev.set_uuids(U.resync_finished_target(self.dev.md.uuids, self.peer.peer_uuids,
                                                     self.dev.is_primary()))
        self.peer.send(Msg.RS_DONE, {"uuids": self.dev.md.uuids})
        self._log_done()
        self.peer.resync = None
        self.res.change("device", hard=True, conn=Conn.Connected, disk=Disk.UpToDate)
        self.peer.nursery.start_soon(handlers.call, self.res, "after-resync-target")

    # -- shared --------------------------------------------------------------------------------
    def _log_done(self) -> None:
        self.dev.log.device(done_line("Resync", time.monotonic() - self.started,
                                      self.paused_s, self.total_bits))
        if self.same_csum:
            pct = self.same_csum * 100 // max(self.total_bits, 1)
            self.dev.log.device(f"{pct} % had equal checksums, eliminated: "
                                f"{self.same_csum * 4}K; transferred "
                                f"{self.transferred // 1024}K total {self.total_bits * 4}K")

    async def _flusher(self) -> None:
        with self._scope():
            while not self.done_flag:
                await trio.sleep(BM_FLUSH_INTERVAL)
                await self.dev.syncer.flushing(self.dev.flush_bitmap)

    def paused_changed(self, paused: bool) -> None:
        now = time.monotonic()
        if paused:
            self._paused_at = now
        elif getattr(self, "_paused_at", None) is not None:
            self.paused_s += now - self._paused_at
            self._paused_at = None

    def _scope(self) -> trio.CancelScope:
        scope = trio.CancelScope()
        self.scopes.append(scope)
        return scope

    def stop(self) -> None:
        for scope in self.scopes:
            scope.cancel()

    def statistics(self) -> dict:
        left = self.dev.bitmap.count()
        total = max(self.total_bits, 1)
        done = 100.0 * (1 - left / total) if self.total_bits else 0.0
        now = time.monotonic()
        t_mark, bits_mark = self.marks[0] if self.marks else (now, left)
        dt = max(now - t_mark, 1e-3)
        speed = max(bits_mark - left, 0) * 4 / dt
        avg = max(self.total_bits - left, 0) * 4 / max(now - self.started, 1e-3) if self.started else 0
        return {"done": done, "rs_total_kib": self.total_bits * 4, "rs_left_kib": left * 4,
                "rs_speed_kib": int(speed), "rs_avg_kib": int(avg),
                "rs_eta_s": int(left * 4 / speed) if speed > 0 else None,
                "rs_same_csum": self.same_csum}


def maybe_start_after_state(peer: Any) -> None:
    """Connected, my disk Inconsistent, the peer's UpToDate: become SyncTarget (full).

    This is what follows ``primary --force`` on the peer while connected.
    """
    res = peer.res
    if res.state.disk == Disk.Inconsistent and res.state.pdsk == Disk.UpToDate:
        peer.dev.log.device("Writing the whole bitmap, full sync required after "
                            "drbd_sync_handshake.")
        start_sync(peer, source=False, full=True, tell_peer=True)


def start_sync(peer: Any, source: bool, full: bool, tell_peer: bool,
               starting: bool = False) -> None:
    """Begin a bitmap exchange + resync in the given direction (both sides call this).

    ``tell_peer`` makes the side that decided ask the other to take the opposite role;
    ``starting`` passes through StartingSyncS/T first, as invalidate[-remote] does in 8.4.
    """
    res = peer.res
    if full:
        peer.dev.mark_all_out_of_sync()
    if tell_peer:
        peer.send(Msg.STATE_REQ, {"what": "start-sync", "full": full, "starting": starting,
                                  "you": "target" if source else "source"})
    if starting and source:
        res.change("device", hard=True, conn=Conn.StartingSyncS, pdsk=Disk.Inconsistent)
    elif starting:
        res.change("device", hard=True, conn=Conn.StartingSyncT, disk=Disk.Inconsistent)
    peer.resync = Resync(peer, source=source)
    res.change("device", hard=True, conn=Conn.WFBitMapS if source else Conn.WFBitMapT)
    peer.resync.begin()


async def handle_unsolicited(peer: Any, frame) -> None:
    """Requests from the peer that start or steer a resync on this side."""
    res = peer.res
    b = frame.body
    if frame.type == Msg.STATE_REQ:
        what = b.get("what")
        if what == "start-sync" and peer.resync is None:
            if peer._usable_disk() is None:
                raise ProtocolError("asked to resync, but no disk here")
            start_sync(peer, source=b.get("you", "source") == "source",
                       full=bool(b.get("full")), tell_peer=False,
                       starting=b.get("starting", False))
            return
        if what in ("pause", "resume"):
            set_paused(peer, peer_side=True, paused=what == "pause")
            return
        if what == "skip-initial-sync":
            from replicator.sync_commands import skip_initial_sync
            skip_initial_sync(res, int(b["uuid"]), issuer=False)
            return
    raise ProtocolError(f"unexpected {frame.type.name} in state {res.state.conn.name}")


_PAUSED = {Conn.SyncSource: Conn.PausedSyncS, Conn.SyncTarget: Conn.PausedSyncT}
_RUNNING = {v: k for k, v in _PAUSED.items()}


def set_paused(peer: Any, peer_side: bool, paused: bool) -> None:
    """pause-sync/resume-sync (user_isp) here, or the peer's (peer_isp)."""
    res = peer.res
    s = res.state
    flags = {"peer_isp" if peer_side else "user_isp": paused}
    new = s.with_(**flags)
    conn = s.conn
    if new.user_isp or new.peer_isp:
        conn = _PAUSED.get(conn, conn)
    else:
        conn = _RUNNING.get(conn, conn)
    res.change("device", hard=True, conn=conn, **flags)
    if peer.resync is not None:
        peer.resync.paused_changed(paused)
    if not peer_side:
        peer.send(Msg.STATE_REQ, {"what": "pause" if paused else "resume"})
