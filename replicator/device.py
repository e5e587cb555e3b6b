"""One replicated volume on this node: the engine behind the FUSE device file.

fuseblk calls read/write/flush/discard/may_open here. A write takes the activity log
(committing a transaction before the first write into a cold 4 MiB extent), writes the backing
disk, and marks its 4 KiB blocks in the bitmap while no peer holds an UpToDate copy.

This module also owns what attaching and detaching a disk mean for the resource: metadata
flags and generation UUIDs follow the state as the 8.4 kernel keeps them.
"""
from __future__ import annotations

import errno
import os
from typing import Any, Awaitable, Callable

import pyfuse3
import trio

from fuseblk._lowlevel import wait_polling
from meta import lkbd
from meta.activity_log import ActivityLogBusy
from meta.bitmap import Bitmap
from meta.metadata import Metadata, MetadataError, MetaSpec, UncleanMetadata, ppsize
from meta.superblock import MDF
from replicator import fencing, latency
from replicator import uuids as U
from replicator.diskless import (demote_once_closed, flush_peer, frozen_while_no_data,
                                 open_error, read_from_peer, thawed, write_to_peer)
from replicator.states import (NO_UP_TO_DATE_DISK, PRIMARY_NOP, Conn, Disk, Role, State,
                               StateError)
from replicator.syncer import Syncer

KIB = 1024


class AttachError(Exception):
    def __init__(self, code: int, text: str, info: str = ""):
        super().__init__(text)
        self.code, self.text, self.info = code, text, info


# A mirrored write alone in flight polls for its ack this long before the event loop
# sleeps: waking a sleeping process costs ~30-50 us per hop on the test VM, and the core
# would idle meanwhile. Measured (alternated, protocol C, rand write 4k): plain loop
# +18-25 %, direct-io loop +13 %; sync writes within noise.
ACK_POLL_NS = 250_000


class Device:
    def __init__(self, resource: Any, md: Metadata, backing_path: str, options: dict):
        self.resource = resource
        self.log = resource.log
        self.md = md
        self.backing_path = backing_path
        self.fd = md.backing.fd
        self.bitmap: Bitmap = md.bitmap
        self.al = md.al
        # disk { size } or resize --size: the device is no larger (0: no limit)
        self.user_size = options["size"] * 512
        # 8.4 drbd_determine_dev_size without a peer: the last agreed size, if any
        self._size = min(md.sb.la_size_sect * 512, md.data_bytes) or md.data_bytes
        if 0 < self.user_size < self._size:
            self._size = self.user_size
            md.sb.la_size_sect = self.user_size // 512
        self.drop_bits_beyond_size()
        self.disk_opts = options
        self.fencing = options["fencing"]
        self.outdate_promised = False     # Outdated on disk for a disconnecting Primary
        # a Primary that never saw its peer again before going down ("degraded" reboot)
        self.was_degraded = md.sb.has(MDF.PRIMARY_IND) and not md.sb.has(MDF.CONNECTED_IND)
        # still marked Primary at attach: it went away without demoting (8.4 attach). Kept
        # in the superblock until a handshake used it, so a second crash does not lose it.
        if md.sb.has(MDF.PRIMARY_IND):
            md.set_flag(MDF.CRASHED_PRIMARY, True)
        self.failed = False                   # on-io-error detached the disk: I/O via the peer
        self._let_go: trio.Event | None = None  # set once its backing disk is closed
        # attached while connected: what the disk is until a handshake compared it (8.4's
        # new_state_tmp); the state says Negotiating meanwhile, never UpToDate unchecked
        self.negotiating_disk: Disk | None = None
        self.release: Callable[[], Awaitable] | None = None    # detach_device, once attached
        self.exposed_uuid = md.uuids[0]       # the data generation the device shows (8.4's
                                              # ed_uuid): the peer's, once the disk failed
        self._sb_writer: trio.CancelScope | None = None
        self._sb_wanted, self._sb_progress = trio.Event(), trio.Event()
        self._sb_version = self._sb_written = 0
        self.unmarked = 0                     # writes to this disk alone, not marked yet
        self._all_marked = trio.Event()
        self._primary_on_disk = md.sb.has(MDF.PRIMARY_IND)    # as the last superblock written
        self.open_count = 0
        self.resize_lock = trio.Lock()        # one online resize at a time
        # fdatasync of the backing file: group commit, started early for fsync-heavy writers
        self.syncer = Syncer(self.fd, lambda e: self.io_error("flush", e))
        self.writers = 0
        self.al_busy = 0                      # AL transactions running in threads
        self._al_released = trio.Event()      # set whenever extents are released
        self.fuse_scope: trio.CancelScope | None = None
        self.fuse_done = trio.Event()
        # counters (KiB unless said otherwise), as /proc/drbd and status --statistics show
        self.read_kib = 0
        self.written_kib = 0
        self.al_writes = 0
        self.bm_writes = 0

    # -- fuseblk engine ---------------------------------------------------------------------
    def size(self) -> int:
        return self._size

    async def read(self, offset: int, length: int) -> bytes:
        return await frozen_while_no_data(self.resource, lambda: self._read(offset, length))

    async def _read(self, offset: int, length: int) -> bytes:
        s = self.resource.state
        if self.failed or (s.disk < Disk.UpToDate and self.bitmap.count_bits(
                offset // 4096, (offset + length - 1) // 4096 - offset // 4096 + 1)):
            data = await read_from_peer(self.resource, offset, length)
        else:
            try:
                data = await self.syncer.read(length, offset)
            except OSError as e:
                self.io_error("read", e)
                data = await read_from_peer(self.resource, offset, length)
            if len(data) < length:        # a sparse file's tail reads short: zeros
                data += bytes(length - len(data))
        self.read_kib += length >> 10
        return data

    async def write(self, offset: int, data: bytes | memoryview) -> int:
        return await frozen_while_no_data(self.resource, lambda: self._write(offset, data))

    async def _write(self, offset: int, data: bytes | memoryview) -> int:
        if self.failed:
            return await self._write_to_peer_only(offset, data)
        t0 = latency.clock()
        length = len(data)
        first, last = Bitmap.extents_of_range(offset, length)
        try:
            await self.al_begin(first, last)
        except OSError as e:
            self.io_error("activity log", e, meta=True)
            return await self._write_to_peer_only(offset, data)
        latency.begin()
        pending, release_al = None, True
        try:
            peer = self.resource.peer
            if peer is not None and peer.mirroring():
                pending = peer.submit_write(offset, data)   # queued before the local write:
                if peer.resync is not None:                 # same order on both disks
                    peer.resync.app_write(offset, length)
                if peer.protocol != "C":    # A, B: the extent stays in the activity log
                    release_al = False      # until the peer surely has the write
                    pending.on_retire = lambda: self.al_end(first, last)
            else:
                self.unmarked += 1          # the peer will lack it: see all_marked
            try:
                local_ok = await self._write_local(offset, data)
            finally:
                if pending is None:
                    self.bitmap.set_range(offset, length)
                    self._marked()
            if not local_ok:                # a copy is missing here
                self.bitmap.set_range(offset, length)
            elif pending is not None:       # an fsync-heavy writer: the local sync runs
                self.syncer.anticipate(self.resource.nursery)   # while the peer acks
            if pending is not None and not (peer.protocol == "A" and pending.done.is_set()):
                alone = peer.alone_in_flight(pending)   # latency-bound: one at a time
                await wait_polling(pending.done, ACK_POLL_NS if alone else 0)
            if not local_ok and (pending is None or pending.lost):
                raise pyfuse3.FUSEError(errno.EIO)      # neither disk has it
            if (pending is None or pending.lost) and self.resource.state.susp_fen:
                await thawed(self.resource)     # the peer lacks it: not done before it is fenced
        finally:
            if release_al:
                self.al_end(first, last)
            latency.end(t0, pending)
        self.written_kib += length >> 10
        return length

    def _marked(self) -> None:
        """One write less that went to this disk alone and has not marked its blocks."""
        self.unmarked -= 1
        if not self.unmarked:
            self._all_marked.set()
            self._all_marked = trio.Event()

    async def all_marked(self) -> None:
        """Wait until every write that went to this disk alone has marked its blocks out of
        sync: the bitmap sent to a returning peer must hold them (8.4 drains application
        I/O for it). Once the state is a mirroring one, new writes go to the peer and are
        not counted, so this ends."""
        while self.unmarked:
            await self._all_marked.wait()

    async def _write_local(self, offset: int, data: bytes | memoryview) -> bool:
        """pwrite all of it; False (after on-io-error did its part) if the disk failed."""
        t1 = latency.clock()
        try:
            await self.syncer.write(data, offset)
        except OSError as e:
            self.io_error("write", e)
            return False
        latency.local(t1)
        return True

    async def _write_to_peer_only(self, offset: int, data: bytes | memoryview) -> int:
        """No usable local disk (detached after an I/O error): the peer's copy is the data."""
        await write_to_peer(self.resource, offset, data)
        self.written_kib += len(data) >> 10
        return len(data)

    def io_error(self, where: str, e: OSError, meta: bool = False) -> None:
        """A read, write or flush of the backing disk failed: apply on-io-error as 8.4 does.
        pass_on: the disk becomes Inconsistent (the failed blocks are marked); detach and
        call-local-io-error: the disk goes Failed -> Diskless and I/O continues via an
        UpToDate peer, if there is one."""
        res = self.resource
        policy = self.disk_opts["on-io-error"]
        if self.failed:
            return
        if policy == "pass_on" and not meta:
            self.log.device(f"Local IO failed in {where}. ({e.strerror or e})")
            if res.state.disk > Disk.Inconsistent:
                res.change("device", hard=True, disk=Disk.Inconsistent)
            return
        self.failed = True
        res.change("device", hard=True, disk=Disk.Failed)
        what = " meta data" if meta else ""
        self.log.device(f"Local IO{what} failed in {where}. Detaching... ({e.strerror or e})")
        if policy == "call-local-io-error" and res.nursery is not None:
            from replicator import handlers
            res.nursery.start_soon(handlers.call, res, "local-io-error")
        res.change("device", hard=True, disk=Disk.Diskless)
        if res.peer is not None:
            res.peer.abort_sync()
        if res.nursery is not None:          # as 8.4, let go of the backing disk; a Primary
            if not self.is_primary():         # keeps the Device: its I/O goes on through
                if self.release is not None:  # the peer, until detach or a new disk
                    res.nursery.start_soon(self.release)
            else:
                res.nursery.start_soon(self.let_go_of_failed_disk)

    async def al_begin(self, first: int, last: int) -> None:
        al = self.al
        if not self.al_busy and not al.needs_transaction(first, last):
            al.begin_io(first, last)          # hot: no disk I/O, no waiting
            return
        while True:
            self.al_busy += 1
            try:
                written = await self.syncer.flushing(al.begin_io, first, last)
                break
            except ActivityLogBusy:           # every slot pinned by I/O in flight: wait
                peer = self.resource.peer     # for one (A/B: the barrier ack frees them)
                if peer is not None:
                    peer.barrier_now()
                await self._al_released.wait()
            finally:
                self.al_busy -= 1
        self.al_writes += written

    def al_end(self, first: int, last: int) -> None:
        self.al.end_io(first, last)
        self._al_released.set()
        self._al_released = trio.Event()

    async def flush(self) -> None:
        """fsync: the local disk and the peer's, in parallel; EIO if neither has it all on
        stable storage. New generation UUIDs reach the disk first."""
        await frozen_while_no_data(self.resource, self._flush)

    async def _flush(self) -> None:
        await self.superblock_synced()
        peer = self.resource.peer
        mirrored = peer is not None and peer.mirroring()
        if self.failed:
            await flush_peer(self.resource)
            return
        if not mirrored:      # nobody else waits on this loop: a small sync runs inline
            if not await self.syncer.sync(inline_ok=True):
                raise pyfuse3.FUSEError(errno.EIO)
            if self.resource.state.susp_fen:
                await thawed(self.resource)     # (A/B writes the peer may lack, lost meanwhile)
            return
        fid = peer.start_flush()        # the FLUSH travels while the local sync runs
        local_ok = await self.syncer.sync()
        peer_ok = await peer.flush_done(fid)
        if not (peer_ok or local_ok):
            raise pyfuse3.FUSEError(errno.EIO)
        if not peer_ok:
            await thawed(self.resource)     # the peer went away: not before it is fenced

    async def discard(self, offset: int, length: int) -> None:
        await thawed(self.resource)
        if self.failed:
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        first, last = Bitmap.extents_of_range(offset, length)
        await self.al_begin(first, last)
        try:
            peer = self.resource.peer
            pending = None
            if peer is not None and peer.mirroring():
                pending = peer.submit_discard(offset, length)
                if peer.resync is not None:
                    peer.resync.app_write(offset, length)
            else:
                self.unmarked += 1          # (as a write's: see all_marked)
            try:
                await self.syncer.discard(offset, length)
            finally:
                if pending is None:
                    self.bitmap.set_range(offset, length)
                    self._marked()
            if pending is not None:
                await pending.done.wait()
            if (pending is None or pending.lost) and self.resource.state.susp_fen:
                await thawed(self.resource)     # the peer lacks it: not done before it is fenced
        finally:
            self.al_end(first, last)

    def may_open(self, writable: bool) -> int:
        return open_error(self.resource.state, writable)

    def opened(self, writable: bool) -> None:
        self.open_count += 1
        self.writers += int(writable)

    def released(self, writable: bool) -> None:
        self.open_count = max(0, self.open_count - 1)
        self.writers = max(0, self.writers - int(writable))

    # -- roles ------------------------------------------------------------------------------
    async def promote(self, force: bool) -> tuple[int, str]:
        """8.4's drbd_set_role: up to four tries, each answering the last refusal -- force a
        disk UpToDate (``--force``), or fence the peer (fencing: a peer not known to be
        Outdated must be fenced first; a Consistent disk is UpToDate once it is)."""
        res = self.resource
        changes: dict[str, Any] = {"role": Role.Primary}
        forced = False
        err = (0, "")
        for _ in range(4):
            s = res.state
            try:
                res.validate(s.with_(**changes))
                err = (0, "")
                break
            except StateError as e:
                err = (e.code, e.text)
            if err == NO_UP_TO_DATE_DISK and force and Disk.Inconsistent <= s.disk < Disk.UpToDate:
                changes["disk"], forced = Disk.UpToDate, True
            elif err == NO_UP_TO_DATE_DISK and s.disk == Disk.Consistent and "pdsk" not in changes:
                if await fencing.try_outdate_peer(res):
                    changes["disk"] = Disk.UpToDate
            elif err == PRIMARY_NOP and "pdsk" not in changes:
                if not await fencing.try_outdate_peer(res) and force:
                    self.log.device("Forced into split brain situation!")
                    changes["pdsk"] = Disk.Outdated
            else:
                break
        if err[0]:
            return err
        s = res.state
        if forced:
            self.log.device("Forced to consider local data as UpToDate!")
        uu = self.md.uuids
        if ((s.conn < Conn.Connected or s.pdsk <= Disk.Failed) and uu[1] == 0) or forced:
            uu = U.new_current(uu, primary=True)
            self.set_uuids(uu)
            self.log.device(f"new current UUID {U.fmt(uu)}")
        res.change("device", **changes)
        return 0, ""

    async def demote(self) -> tuple[int, str]:
        return await demote_once_closed(self.resource, self)

    # -- state -> metadata ----------------------------------------------------------------
    def state_changed(self, old: State, new: State) -> None:
        """Keep md flags and the role bit of the current UUID as the 8.4 kernel does."""
        if new.disk < Disk.Inconsistent:
            return
        sb = self.md.sb
        before_flags, before_uuids = sb.flags, list(sb.uuids)
        primary = new.role == Role.Primary or (new.peer == Role.Primary
                                               and new.pdsk < Disk.Inconsistent)
        self.md.set_flag(MDF.PRIMARY_IND, primary)
        self.md.set_flag(MDF.CONNECTED_IND, new.conn > Conn.WFReportParams)
        self.md.set_flag(MDF.CONSISTENT, new.disk > Disk.Inconsistent)
        if new.disk <= Disk.Outdated:
            self.outdate_promised = False
        self.md.set_flag(MDF.WAS_UP_TO_DATE, new.disk > Disk.Outdated and not self.outdate_promised)
        self.md.set_flag(MDF.PEER_OUT_DATED, Disk.Inconsistent <= new.pdsk <= Disk.Outdated)
        self.md.set_flag(MDF.AL_CLEAN, False)
        if old.role != new.role:
            uu = self.md.uuids
            uu[0] = U.with_role_bit(uu[0], new.role == Role.Primary)
            self.md.set_uuids(uu)
        if sb.flags != before_flags or list(sb.uuids) != before_uuids:
            self.save_superblock()

    async def persist_outdated(self) -> None:
        """Outdated on disk now, before the peer counts on it (fencing's graceful
        disconnect); the state follows when the connection goes."""
        self.outdate_promised = True
        self.md.set_flag(MDF.WAS_UP_TO_DATE, False)
        self.save_superblock()
        await self.superblock_synced()

    # -- for the replication side ----------------------------------------------------------
    def backing_size(self) -> int:
        """What this node could offer (its usable data size with the metadata where the
        disk's size puts it now), for the handshake and the resize exchange."""
        try:
            return self.md.max_data_bytes(self.md.layout_for_current_size())
        except MetadataError:
            return self.md.data_bytes

    def metadata_covers(self) -> int:
        """The data size the metadata (its bitmap) describes: no device may be larger
        before a resize moved it (replicator.resize)."""
        return self.bitmap.data_bytes

    def agree_size(self, peer_size: int, user: int = 0) -> str:
        """The device is the smaller of the two nodes' usable sizes, no larger than the
        user's size (the smaller of both nodes' ``--size``, adopted here). Returns why not,
        if the peer would shrink a device holding data (8.4 receive_sizes), else ""."""
        from replicator.resize import new_dev_size
        agreed, _ = new_dev_size(self.metadata_covers(), peer_size, self._size, user)
        if agreed < self._size and self.resource.state.disk >= Disk.Outdated:
            return (f"The peer's disk size is too small! ({peer_size // 512} < "
                    f"{self._size // 512} sectors)")
        if user != self.user_size:
            self.log.device(f"Peer sets u_size to {user // 512} sectors")
            self.user_size = user
        if agreed > self._size:               # grown since the last agreement (a size
            self.bitmap.set_range(self._size, agreed - self._size)   # cap lifted, a disk
        if agreed != self._size:              # grown apart): new storage, resynced as 8.4
            self.log.device(f"size = {ppsize(agreed // KIB)} ({agreed // KIB} KB)")
            self.set_size(agreed)
        if self.md.sb.la_size_sect != agreed // 512:
            self.md.sb.la_size_sect = agreed // 512
            self.save_superblock()
        return ""

    def mark_all_out_of_sync(self) -> None:
        """Every block of the device out of sync (a full sync)."""
        self.bitmap.set_range(0, self._size)

    def drop_bits_beyond_size(self) -> None:
        """Bits past the device's size (the disk offers more than the device shows: a
        smaller peer, --size) mean nothing: no resync may count or move them."""
        first = -(-self._size // 4096)
        self.bitmap.clear_bits(first, self.bitmap.nbits - first)

    def set_size(self, size: int) -> None:
        """The size changed (resize, a new agreement): the device file and its loop
        devices show it."""
        from replicator import resize
        self._size = size
        self.drop_bits_beyond_size()
        res = self.resource
        res.notify("size", {"size": size})      # /proc, events2 and drbdmon show it
        if res.nursery is not None and res.device_path and self.fuse_scope is not None:
            res.nursery.start_soon(resize.expose, self, res.device_path)

    # -- the superblock, written off the event loop ---------------------------------------
    def save_superblock(self) -> None:
        """Have the superblock as it is now written soon (DRBD's md_mark_dirty). A
        worker thread writes it: its fdatasync may flush much dirty data of the backing
        file, and the event loop must go on answering the peer meanwhile. Without the
        writer task (not started yet) it is written right here."""
        if self.failed:
            return
        if self._sb_writer is None:
            try:
                self.md.write_superblock()
            except OSError as e:
                self.io_error("superblock write", e, meta=True)
            return
        self._sb_version += 1
        self._sb_wanted.set()

    async def superblock_writer(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Write the newest superblock whenever it changed, one write at a time."""
        with trio.CancelScope() as scope:
            self._sb_writer = scope
            task_status.started()
            while True:
                await self._sb_wanted.wait()
                self._sb_wanted = trio.Event()
                version = self._sb_version
                try:
                    async with self.resize_lock:      # not while the metadata moves
                        moves, image = self.md.moves, self.md.superblock_image()
                        primary = self.md.sb.has(MDF.PRIMARY_IND)
                        if self._primary_on_disk and not primary:
                            # as 8.4 on a demote: the bitmap first. Once the flag is off
                            # the disk, a crash no longer replays the activity log into it
                            await self.syncer.flushing(self.flush_bitmap)
                        await self.syncer.flushing(self.md.write_superblock_image, image,
                                                   moves)
                        self._primary_on_disk = primary
                except OSError as e:
                    self.io_error("superblock write", e, meta=True)
                except MetadataError as e:        # refused to write an invalid one
                    self.log.device(str(e))
                self._sb_written = version
                self._sb_progress.set()
                self._sb_progress = trio.Event()

    async def let_go_of_failed_disk(self) -> None:
        """Close the failed backing disk of a Primary, whose I/O goes through the peer now
        (8.4 puts the disk once the failed requests are done): a new disk can be prepared
        at its path (create-md) and attached. Idempotent."""
        await _close_disk(self, clean=False)

    def superblock_version(self) -> int:
        return self._sb_version

    async def superblock_synced(self, even_if_failed: bool = False) -> None:
        """Wait until every superblock change so far is on disk (or the disk failed)."""
        target = self._sb_version
        while (self._sb_writer is not None and self._sb_written < target
               and (even_if_failed or not self.failed)):
            await self._sb_progress.wait()

    def stop_superblock_writer(self) -> None:
        if self._sb_writer is not None:
            self._sb_writer.cancel()
            self._sb_writer = None

    def crashed_primary(self) -> bool:
        return self.md.sb.has(MDF.CRASHED_PRIMARY)

    def handshake_done(self) -> None:
        """The peer knows now whether this node crashed as Primary: forget it."""
        if self.crashed_primary():
            self.md.set_flag(MDF.CRASHED_PRIMARY, False)
            self.save_superblock()

    def set_uuids(self, uuids: list[int], notify: bool = True) -> None:
        """Store new generation UUIDs durably and (unless told not to) tell the peer."""
        self.md.set_uuids(list(uuids))
        if not self.failed:                   # the device shows this disk's generation
            self.exposed_uuid = uuids[0]      # (8.4's ed_uuid follows every current UUID)
        self.save_superblock()
        peer = self.resource.peer
        if notify and peer is not None:
            peer.send_uuids()

    def is_primary(self) -> bool:
        return self.resource.state.role == Role.Primary

    def new_current_uuid_if_needed(self) -> None:
        """A Primary that lost its peer starts a new data generation (once: B == 0)."""
        uu = self.md.uuids
        if uu[1] == 0 and self.resource.state.disk >= Disk.UpToDate:
            uu = U.new_current(uu, primary=self.resource.state.role == Role.Primary)
            self.set_uuids(uu)
            self.log.device(f"new current UUID {U.fmt(uu)}")

    def flush_bitmap(self) -> None:
        """Write the changed bitmap pages (runs in a worker thread)."""
        if self.failed:
            return
        try:
            if self.md.backing is not None and self.md.backing is not self.md.mddev:
                os.fdatasync(self.fd)   # external meta: data first, then the cleared bits
            self.bm_writes += self.md.flush_bitmap()
        except OSError as e:
            try:
                trio.from_thread.run_sync(self.io_error, "bitmap write", e, True)
            except RuntimeError:              # called from the event loop itself
                self.io_error("bitmap write", e, True)

    def statistics(self) -> dict:
        return {
            "backing_dev": self.backing_path,
            "size_kib": self._size // KIB,
            "read_kib": self.read_kib,
            "written_kib": self.written_kib,
            "al_writes": self.al_writes,
            "bm_writes": self.bm_writes,
            "oos_kib": self.bitmap.count() * 4,
            "open_count": self.open_count,
            "was_degraded": self.was_degraded,
            "uuids": U.fmt(self.md.uuids),
        }


def _initial_disk_state(md: Metadata, fencing: str) -> tuple[Disk, Disk]:
    """8.4 ``drbd_adm_attach``: disk (and pdsk) from the metadata flags."""
    sb = md.sb
    if sb.has(MDF.CONSISTENT):
        disk = Disk.Consistent if sb.has(MDF.WAS_UP_TO_DATE) else Disk.Outdated
    else:
        disk = Disk.Inconsistent
    pdsk = Disk.Outdated if sb.has(MDF.PEER_OUT_DATED) else Disk.DUnknown
    if disk == Disk.Consistent and (pdsk == Disk.Outdated or fencing == "dont-care"):
        disk = Disk.UpToDate
    return disk, pdsk


def _open_disk(res: Any, disk: str, meta_disk: str, meta_index: Any,
               options: dict) -> Device:
    """Open and attach the metadata of ``disk`` (disk state Attaching; Diskless again and
    AttachError on failure): a Device not yet in use."""
    from replicator.commands import (ERR_DISK_TOO_SMALL, ERR_INVALID_DISK_OPTION,
                                     ERR_MD_INVALID, ERR_MD_UNCLEAN, ERR_OPEN_DISK)
    if res.device_path and _unstatted_path(disk) == _unstatted_path(res.device_path):
        raise AttachError(*ERR_OPEN_DISK, f"{disk} is this resource's own device file")
    if meta_index in (None, "internal"):
        spec = MetaSpec()
    elif meta_index == "flexible":
        spec = MetaSpec(meta_disk)
    else:
        spec = MetaSpec(meta_disk, int(meta_index))
    from replicator.settings import OptionError, disk_options
    try:
        disk_opts = disk_options(options)
    except OptionError as e:
        raise AttachError(*ERR_INVALID_DISK_OPTION, str(e)) from None
    res.change("device", hard=True, disk=Disk.Attaching)
    try:
        md = Metadata.open(disk, spec)
    except MetadataError as e:
        res.change("device", hard=True, disk=Disk.Diskless)
        if not os.path.exists(disk):
            raise AttachError(*ERR_OPEN_DISK, str(e)) from None
        raise AttachError(*ERR_MD_INVALID, str(e)) from None
    try:
        notes = md.attach(al_extents=disk_opts["al-extents"])
    except UncleanMetadata as e:
        md.close()
        res.change("device", hard=True, disk=Disk.Diskless)
        raise AttachError(*ERR_MD_UNCLEAN, str(e)) from None
    except MetadataError as e:
        md.close()
        res.change("device", hard=True, disk=Disk.Diskless)
        raise AttachError(*ERR_MD_INVALID, str(e)) from None
    for note in notes:
        res.log.device(note)
    if spec.is_internal:                     # where its meta data is (a crash before a
        lkbd.record(res.minor, disk, md.layout.md_dev_bytes)    # resize moves it: lkbd)
    if md.sb.has(MDF.CONSISTENT) and 0 < disk_opts["size"] < md.sb.la_size_sect:
        res.log.device("refusing to truncate a consistent device")    # (8.4's attach)
        md.detach()
        res.change("device", hard=True, disk=Disk.Diskless)
        raise AttachError(*ERR_DISK_TOO_SMALL)
    dev = Device(res, md, disk, disk_opts)
    dev.attach_args = {"disk": disk, "meta_disk": meta_disk, "meta_index": meta_index,
                       "given": {k: v for k, v in options.items() if not k.startswith("_")}}
    res.log.device(f"attached to UUIDs {U.fmt(md.uuids)}")
    return dev


async def attach_device(daemon: Any, disk: str, meta_disk: str, meta_index: Any,
                        options: dict) -> None:
    """``drbdsetup attach``: open the metadata, attach, mount the FUSE device file."""
    res = daemon.resource
    dev = _open_disk(res, disk, meta_disk, meta_index, options)
    disk_state, pdsk = _initial_disk_state(dev.md, dev.fencing)
    res.device = dev
    dev.release = lambda: detach_device(daemon, force=True)
    await daemon.nursery.start(dev.superblock_writer)
    if res.state.conn >= Conn.Connected:     # the peer's disk state is known; the disk is
        dev.negotiating_disk = disk_state     # Negotiating until the handshake compared it
        res.change("device", hard=True, disk=Disk.Negotiating)     # (commands.attach)
    else:
        res.change("device", hard=True, disk=disk_state, pdsk=pdsk)
    await daemon.diskless.stop()
    await daemon.nursery.start(_serve_fuse, daemon, dev)


async def replace_failed_disk(daemon: Any, disk: str, meta_disk: str, meta_index: Any,
                              options: dict) -> None:
    """``drbdsetup attach`` on a Primary without a disk of its own (its disk failed or was
    detached, or it never had one: its I/O goes through the peer): the new disk takes over
    the device file while it stays open and in use, and is filled by a full sync from the
    UpToDate peer (DRBD's "replacing a failed disk"; 8.4 attaches to a diskless Primary
    only a disk holding the data it shows, udrbd syncs any disk in full). The device keeps
    its size: a smaller disk is refused."""
    from replicator import resync
    from replicator.commands import ERR_DISK_TOO_SMALL, ERR_INVALID_REQUEST
    import fuseblk
    res = daemon.resource
    if res.device is not None:
        old = res.device
        await old.let_go_of_failed_disk()
    else:
        old = daemon.diskless.engine
        if not daemon.diskless.mounted:
            raise AttachError(*ERR_INVALID_REQUEST, "the device file is not served")
    dev = _open_disk(res, disk, meta_disk, meta_index, options)
    size = old.size()
    if dev.md.data_bytes < size:
        dev.syncer.close()
        await trio.to_thread.run_sync(dev.md.detach)
        res.change("device", hard=True, disk=Disk.Diskless)
        raise AttachError(*ERR_DISK_TOO_SMALL)
    dev._size = size
    dev.md.sb.la_size_sect = size // 512
    dev.drop_bits_beyond_size()
    dev.mark_all_out_of_sync()
    dev.handshake_done()            # a crashed Primary's old disk: the full sync settles it
    dev.exposed_uuid = old.exposed_uuid
    dev.release = lambda: detach_device(daemon, force=True)
    await daemon.nursery.start(dev.superblock_writer)
    if res.peer is None or not res.peer.mirroring() or res.state.conn != Conn.Connected:
        await _close_disk(dev, clean=True)  # the connection dropped meanwhile: nothing to
        res.change("device", hard=True, disk=Disk.Diskless)    # sync the new disk from
        raise AttachError(*ERR_INVALID_REQUEST, "the connection to the peer was lost")
    # no checkpoint from here on: an open or close served meanwhile would be counted by
    # the old engine and lost
    dev.open_count, dev.writers = old.open_count, old.writers
    if isinstance(old, Device):
        dev.fuse_scope, dev.fuse_done = old.fuse_scope, old.fuse_done
    else:
        dev.fuse_scope, dev.fuse_done = daemon.diskless.hand_over()
        old.open_count = old.writers = 0
    res.device = dev
    fuseblk.replace_engine(dev)
    res.change("device", hard=True, disk=Disk.Inconsistent)
    dev.save_superblock()
    resync.start_sync(res.peer, source=False, full=True, tell_peer=True, starting=True)


async def _close_disk(dev: Device, clean: bool) -> None:
    """Take the disk out of use once its I/O is done: the metadata written cleanly (bitmap,
    empty activity log, clean magic), or, for a disk that failed, just closed."""
    if dev._let_go is not None:             # (being) done: wait for it
        await dev._let_go.wait()
        return
    dev._let_go = trio.Event()
    try:
        await _release_disk(dev, clean)
    finally:
        dev._let_go.set()


async def _release_disk(dev: Device, clean: bool) -> None:
    peer = dev.resource.peer
    if peer is not None and peer.tl:        # A/B: the peer confirms all before the AL goes
        await peer.flush()
    async with dev.resize_lock:             # a resize moving the metadata finishes first
        pass
    await dev.superblock_synced(even_if_failed=True)   # (a failed write ends quickly)
    await dev.syncer.quiesce()              # no write, fdatasync or metadata write of the
    dev.syncer.close()                      # fd we are about to close
    dev.stop_superblock_writer()
    try:
        await trio.to_thread.run_sync(dev.md.detach if clean else dev.md.close)
    except (MetadataError, OSError) as e:
        dev.log.device(f"detach: {e}")
    dev.fd = dev.syncer.fd = -1             # the number may be reused: EBADF from now on


def _unstatted_path(path: str) -> str:
    """``path`` with its directory resolved but not the last component: the device file is
    served by this very process, so stat'ing it from the event loop would wait on itself."""
    path = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


async def _serve_fuse(daemon: Any, dev: Device, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    import fuseblk
    res = daemon.resource
    try:
        with trio.CancelScope() as scope:
            dev.fuse_scope = scope
            await fuseblk.serve(res.device_path, dev, fsname=f"drbd{res.minor}",
                                task_status=task_status)
    finally:
        dev.fuse_done.set()


async def detach_device(daemon: Any, force: bool = False,
                        serve_diskless: bool = True) -> tuple[int, str]:
    """``drbdsetup detach``: refuse while open (or when data would be lost), else unmount and
    close the metadata cleanly (bitmap written, AL emptied, magic clean); then the device
    file is the diskless one (not when going down). One at a time: a second caller (an
    I/O error's release and an attach, say) finds the first one's result."""
    async with _detaching:
        return await _detach_device(daemon, force, serve_diskless)


_detaching = trio.Lock()        # (one resource per daemon process)


async def _detach_device(daemon: Any, force: bool, serve_diskless: bool) -> tuple[int, str]:
    res = daemon.resource
    dev: Device | None = res.device
    if dev is None:
        return 0, ""
    if not force:
        try:
            res.validate(res.state.with_(disk=Disk.Diskless))
        except StateError as e:
            return e.code, e.text
        s = res.state               # 8.4's cluster-wide change: a diskless Primary peer
        if s.conn >= Conn.Connected and s.peer == Role.Primary and s.pdsk < Disk.Inconsistent:
            res.log.device(f"State change failed: {NO_UP_TO_DATE_DISK[1]}")
            return NO_UP_TO_DATE_DISK       # refuses to lose the only disk it has
    if dev.open_count:
        if dev.failed:                      # already without its disk: nothing to do
            return 0, ""
        if res.state.role != Role.Primary:
            from replicator.states import DEVICE_IN_USE
            return DEVICE_IN_USE
        # a Primary in use goes on through its UpToDate peer (validated above), as 8.4's
        # diskless Primary; a new disk can be attached later (replace_failed_disk)
        res.change("device", hard=True, disk=Disk.Failed)
        dev.failed = True                   # from here on every request goes to the peer
        await _close_disk(dev, clean=True)
        res.change("device", hard=True, disk=Disk.Diskless)
        return 0, ""
    if dev.fuse_scope is not None:
        dev.fuse_scope.cancel()
        await dev.fuse_done.wait()
    if not dev.failed:
        res.change("device", hard=True, disk=Disk.Failed)
    await _close_disk(dev, clean=not dev.failed)
    res.device = None
    engine = daemon.diskless.engine     # connected, it shows the peer's data from here on
    engine.exposed_uuid, engine.peer_size = dev.exposed_uuid, 0
    if res.state.conn >= Conn.Connected and res.state.pdsk >= Disk.Inconsistent:
        engine.peer_size = dev.size()   # (the peer's new generation for its diskless
        engine.exposed_uuid = res.peer.peer_uuids[0]   # Primary may have come meanwhile)
    res.change("device", hard=True, disk=Disk.Diskless)
    if serve_diskless:
        try:
            await daemon.diskless.start()
        except OSError as e:
            res.log.device(f"cannot serve the diskless device file: {e}")
    return 0, ""
