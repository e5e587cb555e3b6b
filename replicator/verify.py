"""Online verify (``drbdadm verify``): compare digests of every block with the peer.

The node that starts it is VerifyS: it asks for the digests of each range (VerifyT reads
its blocks and answers), compares them with its own, marks differing 4 KiB blocks out of
sync on both sides and logs them as DRBD does. Found blocks are not resynced by verify
itself: disconnect/connect (or invalidate) does that afterwards, as in DRBD.
"""
from __future__ import annotations

import time
from typing import Any

import trio

from replicator import handlers
from replicator.protocol import Msg, ProtocolError
from replicator.resync import digest, done_line
from replicator.states import Conn

RANGE = 256 << 10          # bytes per OV_REQUEST (64 blocks)
BLOCK = 4096
WINDOW = 8                 # requests in flight


async def block_digests(alg: str, dev: Any, off: int, length: int) -> list[bytes]:
    """Digests of the 4 KiB blocks of a range of ``dev``, after every write issued before."""
    data = await dev.syncer.read(length, off)
    if len(data) < length:
        data += bytes(length - len(data))
    view = memoryview(data)
    return [digest(alg, view[i:i + BLOCK]) for i in range(0, length, BLOCK)]


class Verify:
    def __init__(self, peer: Any, source: bool):
        self.peer = peer
        self.res = peer.res
        self.dev = peer.dev
        self.source = source
        self.alg = peer.opts["verify-alg"]
        self.replies: dict[int, list[bytes]] = {}
        self.wakeup = trio.Event()
        self.found = 0
        self.started = time.monotonic()
        self.scope = trio.CancelScope()

    async def run(self) -> None:
        """VerifyS: walk the device, compare, report."""
        with self.scope:
            size = self.dev.size()
            off, inflight = 0, []
            while off < size or inflight:
                while off < size and len(inflight) < WINDOW:
                    length = min(RANGE, size - off)
                    self.peer.send(Msg.OV_REQUEST, {"off": off, "len": length})
                    inflight.append((off, length))
                    off += length
                first_off, first_len = inflight[0]
                while first_off not in self.replies:
                    await self.wakeup.wait()
                    self.wakeup = trio.Event()
                theirs = self.replies.pop(first_off)
                inflight.pop(0)
                mine = await block_digests(self.alg, self.dev, first_off, first_len)
                self._compare(first_off, mine, theirs)
            self.peer.send(Msg.OV_DONE, {"found": self.found})
            self._finish()

    def _compare(self, off: int, mine: list[bytes], theirs: list[bytes]) -> None:
        if len(theirs) != len(mine):
            raise ProtocolError("verify reply of the wrong length")
        runs, start = [], None
        for i, (a, b) in enumerate(zip(mine, theirs)):
            if a != b and start is None:
                start = i
            elif a == b and start is not None:
                runs.append((start, i - start))
                start = None
        if start is not None:
            runs.append((start, len(mine) - start))
        bits = []
        for first, count in runs:
            bit = off // BLOCK + first
            self.dev.bitmap.set_bits(bit, count)
            self.found += count
            bits.append([bit, count])
            self.dev.log.device(f"Out of sync: start={bit * 8}, size={count * 8} (sectors)")
        if bits:
            self.peer.send(Msg.OV_RESULT, {"bits": bits})

    def handle(self, frame) -> bool:
        t, b = frame.type, frame.body
        if t == Msg.OV_REPLY and self.source:
            self.replies[int(b["off"])] = list(b["digests"])
            self.wakeup.set()
            return True
        if t == Msg.OV_RESULT and not self.source:
            for bit, count in b["bits"]:
                self.dev.bitmap.set_bits(int(bit), int(count))
                self.found += int(count)
            return True
        if t == Msg.OV_DONE and not self.source:
            self._finish()
            return True
        return False

    def _finish(self) -> None:
        bits = -(-self.dev.size() // 4096)
        self.dev.log.device(done_line("Online verify", time.monotonic() - self.started, 0.0, bits))
        if self.found:
            self.dev.log.device(f"Online verify found {self.found} 4k block out of sync!")
            if self.source:
                self.peer.nursery.start_soon(handlers.call, self.res, "out-of-sync")
        self.peer.verify = None
        self.res.change("device", hard=True, conn=Conn.Connected)

    def stop(self) -> None:
        self.scope.cancel()


async def answer(peer: Any, b: dict) -> None:
    """VerifyT: digests of a range of my blocks."""
    off, length = int(b["off"]), int(b["len"])
    if peer._usable_disk() is None:
        raise ProtocolError("verify request, but no disk here")
    if length <= 0 or length > RANGE or off < 0 or off + length > peer.dev.size():
        raise ProtocolError(f"verify request {off}+{length} out of range")
    alg = peer.opts["verify-alg"]
    if not alg:
        raise ProtocolError("verify requested but no verify-alg is configured")
    digests = await block_digests(alg, peer.dev, off, length)
    peer.send(Msg.OV_REPLY, {"off": off, "digests": digests})


def start(peer: Any) -> tuple[int, str]:
    """``verify`` on this node: VerifyS here, VerifyT on the peer."""
    from replicator.states import NO_VERIFY_ALG
    res = peer.res
    if not peer.opts["verify-alg"]:
        return NO_VERIFY_ALG
    if res.state.conn != Conn.Connected:
        return (-15, "Need a connection to start verify or resync") if res.state.conn < \
            Conn.Connected else (-8, "Can not start OV/resync since it is already active")
    peer.verify = Verify(peer, source=True)
    peer.send(Msg.STATE_REQ, {"what": "verify"})
    res.change("device", hard=True, conn=Conn.VerifyS)
    peer.nursery.start_soon(peer.verify.run)
    return 0, ""


def begin_target(peer: Any) -> None:
    peer.verify = Verify(peer, source=False)
    peer.res.change("device", hard=True, conn=Conn.VerifyT)
