"""Online resize, as 8.4's ``drbdsetup resize`` (``drbd_determine_dev_size``).

The admin grows the backing disks (``lvextend``, ``truncate -s``) on both nodes, then runs
``drbdadm resize r0`` on one of them. Each node works out the size it can offer with its
metadata at the new end of its disk; the device becomes the smaller of the two offers (and
no larger than ``--size``). The nodes exchange their offers in SIZES frames: the one that
ran the command asks, the other answers, and whoever's size changed tells the other. A node
whose device grew moves its metadata, marks the new blocks out of sync (not with
``--assume-clean``), and once both sides have the same, larger size the Primary resyncs the
new area to its peer ("Resync of new storage after online grow"). Without a connection the
device grows only with ``--assume-peer-has-space``; it shrinks only to an explicit
``--size``.

The device file shows the new size right away, and loop devices set up on it are told to
re-read their capacity (``losetup -c``), so ``resize2fs`` works as on a real DRBD device.
"""
from __future__ import annotations

import fcntl
import glob
import os
from typing import Any

import trio

from meta import lkbd
from meta.metadata import MetadataError, ppsize
from replicator.protocol import Msg
from replicator.states import Conn, Disk, Role

ERR_RESIZE_RESYNC = (130, "Resize not allowed during resync.")
ERR_NO_PRIMARY = (131, "Need one Primary node to resize.")
ERR_IMPLICIT_SHRINK = (170, "Implicit device shrinking not allowed. See kernel log.")
LOOP_SET_CAPACITY = 0x4C07
REPLY_TIMEOUT = 30.0          # seconds the command waits for the peer's answer


class ResizeError(Exception):
    def __init__(self, err: tuple[int, str]):
        super().__init__(err[1])
        self.err = err


def new_dev_size(mine: int, peer: int, last_agreed: int, user: int) -> tuple[int, str]:
    """8.4 ``drbd_new_dev_size`` in bytes: the smaller of both nodes' offers (``peer`` 0:
    unknown, then no more than the last agreed size), capped by the user's ``--size``.
    Returns the size and the complaint to log when ``user`` asks for too much."""
    if peer and mine:
        size = min(peer, mine)
    elif last_agreed:
        size = min(x for x in (last_agreed, mine, peer) if x)
    else:
        size = mine or peer
    if user:
        if user > size:
            return size, f"Requested disk size is too big ({user >> 10} > {size >> 10})"
        size = user
    return size, ""


async def determine(dev: Any, peer_offer: int, user: int, clean: bool,
                    connecting: bool = False) -> str:
    """Give ``dev`` the size both offers allow: 'grew', 'shrunk' or 'unchanged'.

    The new blocks are marked out of sync unless ``clean``; the metadata moves (internal)
    or is rewritten for the new size. Raises ResizeError when refused: an implicit shrink
    (``connecting``: just 'unchanged', the handshake finds the peer too small itself), a
    disk that shrank under its metadata, a failed metadata write."""
    from replicator.commands import ERR_DISK_TOO_SMALL, ERR_IO_MD_DISK
    async with dev.resize_lock:
        md, log = dev.md, dev.log
        try:
            layout = md.layout_for_current_size()
            md.check_move(layout)             # (before the bitmap is swapped)
        except MetadataError as e:
            log.device(str(e))
            raise ResizeError(ERR_DISK_TOO_SMALL) from None
        offer = md.max_data_bytes(layout)
        old = dev.size()
        size, complaint = new_dev_size(offer, peer_offer, old, user)
        if size < old and connecting:         # never at connect (8.4: the handshake
            return "unchanged"                # finds the peer too small)
        if size < old and not user:
            log.device(f"Implicit shrink not allowed. Use --size={size // 512}s for explicit "
                       "shrink.")
            raise ResizeError(ERR_IMPLICIT_SHRINK)
        if complaint:
            log.device(complaint)
        moved = layout != md.layout
        if size == old and not moved:
            return "unchanged"
        grew = size > old
        with trio.CancelScope(shield=True):   # the move runs to its end in its thread:
            bitmap = dev.bitmap.resized(offer, mark=(old, size) if grew and not clean else None)
            dev.bitmap = md.bitmap = bitmap   # from here on bits go to the new one
            what = ("size changed and md moved" if size != old and moved else
                    "size changed" if size != old else "md moved")
            log.device(f"Writing the whole bitmap, {what}")
            try:
                await dev.syncer.flushing(md.relocate, layout, bitmap, size // 512)
            except (OSError, MetadataError) as e:
                dev.io_error("meta data write",
                             e if isinstance(e, OSError) else OSError(str(e)), meta=True)
                raise ResizeError(ERR_IO_MD_DISK) from None
            if layout.is_internal:
                lkbd.record(dev.resource.minor, dev.backing_path, layout.md_dev_bytes)
            if size == old:
                return "unchanged"
            dev.set_size(size)                # ... and so does what follows it
            log.device(f"size = {ppsize(size >> 10)} ({size >> 10} KB)")
        return "grew" if grew else "shrunk"


# -- the SIZES exchange ------------------------------------------------------------------------
def send_sizes(peer: Any, ask: bool = False, answer: bool = False) -> None:
    """Tell the peer what this node offers and shows; ``ask``: it must answer (the side
    that ran the command); ``answer``: this is that answer."""
    dev = peer._usable_disk()
    peer.send(Msg.SIZES, {
        "max": dev.backing_size() if dev is not None else 0,
        "size": dev.size() if dev is not None else 0,
        "user": dev.user_size if dev is not None else 0,
        "ask": ask,
        "answer": answer,
        "clean": peer.resize_clean,
    })


def forget(peer: Any) -> None:
    """The connection ended: a resize round in progress is over (the handshake of the
    next one compares sizes afresh); a command waiting for its answer goes on."""
    peer.peer_offer = peer.peer_size = 0
    peer.resize_pending = peer.resize_clean = False
    if peer.sizes_answered is not None:
        peer.sizes_answered.set()
        peer.sizes_answered = None


async def on_sizes(peer: Any, b: dict) -> None:
    """A SIZES frame: take the peer's offer, resize to match, answer when asked or when
    our size changed, and start the resync of the new area once both sides agree."""
    peer.peer_offer = int(b["max"])
    peer.peer_size = int(b["size"])
    ask = bool(b.get("ask"))
    dev = peer._usable_disk()
    if peer.dev is None and peer.peer_size:     # no disk here: the peer's size is ours
        await peer.res.diskless.adopt_size(peer.peer_size)
    if ask:
        peer.resize_clean = bool(b.get("clean"))
        user = int(b.get("user") or 0)
        if dev is not None and user != dev.user_size:     # the resize's --size, or none
            dev.log.device(f"Peer sets u_size to {user // 512} sectors")
            dev.user_size = user
    outcome = "unchanged"
    if dev is not None and peer.res.state.conn == Conn.Connected:
        try:
            outcome = await determine(dev, peer.peer_offer, dev.user_size, peer.resize_clean)
        except ResizeError:
            outcome = "unchanged"
        if outcome == "grew":
            peer.resize_pending = True
    if ask or outcome != "unchanged":
        send_sizes(peer, answer=ask)
    if b.get("answer") and peer.sizes_answered is not None:
        peer.sizes_answered.set()
    resync_after_grow(peer)


def resync_after_grow(peer: Any) -> None:
    """Both sides grew to the same size: the Primary resyncs the new area (8.4's
    ``resync_after_online_grow``; between equals, the side that resolves conflicts)."""
    res, dev = peer.res, peer._usable_disk()
    if not peer.resize_pending or dev is None or peer.peer_size != dev.size():
        return
    if res.state.conn != Conn.Connected:
        return
    peer.resize_pending = False
    if res.state.disk < Disk.Inconsistent or res.state.pdsk < Disk.Inconsistent:
        return
    if peer.resize_clean:
        dev.log.device("Resync of new storage suppressed with --assume-clean")
        return
    dev.log.device("Resync of new storage after online grow")
    if res.state.role != res.state.peer:
        source = res.state.role == Role.Primary
    else:
        source = peer.link_accepted()
    if source:
        from replicator import resync
        resync.start_sync(peer, source=True, full=False, tell_peer=True)


# -- showing the new size ----------------------------------------------------------------------
async def expose(dev: Any, device_path: str) -> None:
    """Make the kernel see the device file's new size, and the loop devices on it."""
    import fuseblk
    try:
        await fuseblk.invalidate_size()
        names = await trio.to_thread.run_sync(refresh_loop_devices, device_path)
    except OSError as e:
        dev.log.device(f"could not update the size seen by the kernel: {e}")
        return
    for name in names:
        dev.log.device(f"{name}: capacity updated")


def refresh_loop_devices(device_path: str) -> list[str]:
    """``losetup -c`` for every loop device on ``device_path`` (call from a worker thread:
    the stat goes through our own FUSE mount)."""
    os.stat(device_path)                 # the kernel fetches the new size (a getattr)
    target = os.path.realpath(device_path)
    done = []
    for entry in sorted(glob.glob("/sys/block/loop*/loop/backing_file")):
        try:
            with open(entry) as f:
                backing = f.read().strip()
        except OSError:
            continue
        if backing != target:
            continue
        name = entry.split("/")[3]
        fd = os.open(f"/dev/{name}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, LOOP_SET_CAPACITY, 0)
        finally:
            os.close(fd)
        done.append(name)
    return done


# -- the command ---------------------------------------------------------------------------
async def command(daemon: Any, opts: dict) -> tuple[int, str] | None:
    """``drbdsetup resize MINOR [--size=N] [--assume-peer-has-space] [--assume-clean]``;
    returns the failure (code, text) or None. Waits for the peer's answer."""
    from replicator.commands import ERR_INVALID_REQUEST, ERR_NO_DISK
    from replicator.settings import OptionError, disk_options
    try:
        user = disk_options({"size": opts["size"]})["size"] * 512 if "size" in opts else 0
    except OptionError as e:
        return ERR_INVALID_REQUEST[0], str(e)
    res = daemon.resource
    dev = res.device
    if dev is None or dev.failed or res.state.disk < Disk.Inconsistent:
        return ERR_NO_DISK
    if res.state.conn > Conn.Connected:
        return ERR_RESIZE_RESYNC
    if res.state.role == Role.Secondary and res.state.peer == Role.Secondary:
        return ERR_NO_PRIMARY
    sb = dev.md.sb
    if (str(opts.get("al-stripes", sb.al_stripes)) != str(sb.al_stripes) or
            str(opts.get("al-stripe-size-kB", sb.al_stripe_size_4k * 4))
            != str(sb.al_stripe_size_4k * 4)):
        return ERR_INVALID_REQUEST[0], "udrbd does not change the activity log's layout"
    clean, forced = bool(opts.get("assume-clean")), bool(opts.get("assume-peer-has-space"))
    peer = res.peer
    connected = peer is not None and res.state.conn == Conn.Connected
    if connected:
        offer = peer.peer_offer if res.state.pdsk >= Disk.Inconsistent else 0
    elif forced:
        dev.log.device("Resize while not connected was forced by the user!")
        offer = 1 << 62                   # the peer will have whatever we have
    else:
        offer = 0
    if connected:
        peer.resize_clean = clean
    old_user, dev.user_size = dev.user_size, user    # as 8.4: resize without --size lifts it
    try:
        outcome = await determine(dev, offer, user, clean)
    except ResizeError as e:
        dev.user_size = old_user
        return e.err
    if connected and res.state.conn == Conn.Connected:
        if outcome == "grew":
            peer.resize_pending = True
        answered = peer.sizes_answered = trio.Event()
        send_sizes(peer, ask=True)
        with trio.move_on_after(REPLY_TIMEOUT):
            await answered.wait()             # (set too when the connection ends)
    return None
