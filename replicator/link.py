"""One TCP connection to the peer: a direct/batching sender and a frame receiver.

A frame goes to the kernel right away from the task that sends it when nothing is queued
before it (a non-blocking ``sendmsg`` of the header+body buffer and the untouched payload
view): no task switch on the latency path. Whatever the kernel does not take at once is
queued, and the sender task drains the queue with one ``sendmsg`` per batch. The receiver
reads with ``recv_into`` into a preallocated buffer and yields frames whose payloads are
views into that buffer (valid until the next frame is read).
"""
from __future__ import annotations

import os
import socket
from typing import AsyncIterator

import trio

from replicator.protocol import Frame, FrameReader, Msg, ProtocolError, encode

IOV_MAX = 512


class LinkClosed(Exception):
    """The connection is gone (peer closed, reset, or we closed it)."""


class PeerLink:
    def __init__(self, sock: trio.socket.SocketType):
        self.sock = sock
        self.reader = FrameReader()
        self._send, self._queue = trio.open_memory_channel(float("inf"))
        self.closed = False
        self.accepted = False          # True on the side that accepted the TCP connection
        self.bytes_sent = 0
        self.bytes_received = 0
        self._backlog = 0              # frames queued for the sender task, not yet sent
        # a second handle on the same (non-blocking) socket for the direct path
        self._raw = socket.socket(fileno=os.dup(sock.fileno()))
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    # -- sending ------------------------------------------------------------------------
    def send(self, msg: Msg, body: object = None, data: bytes | memoryview | None = None,
             done: trio.Event | None = None, batch: bool = False) -> None:
        """Queue a frame; ``done`` (if given) is set once the kernel has taken all of it.
        ``batch``: leave it to the sender task, which sends everything queued by then in
        one call (for a frame among many in flight, where syscalls cost more than a task
        switch of latency)."""
        if self.closed:
            raise LinkClosed("connection closed")
        bufs = encode(msg, body, data)
        if not self._backlog and not batch:
            bufs = self._send_now(bufs)
            if not bufs:
                if done is not None:
                    done.set()
                return
        self._backlog += 1
        self._send.send_nowait((bufs, done))

    def _send_now(self, bufs: list) -> list:
        """Hand as much as the kernel takes without waiting; return what is left."""
        try:
            sent = self._raw.sendmsg(bufs)
        except (BlockingIOError, InterruptedError):
            return bufs
        except OSError:
            return bufs                    # the sender task will meet the error and report it
        self.bytes_sent += sent
        left = []
        for b in bufs:
            n = len(b)
            if sent >= n:
                sent -= n
                continue
            left.append(memoryview(b)[sent:])
            sent = 0
        return left

    async def sender(self) -> None:
        """Run in the session's nursery: batch queued frames into sendmsg calls."""
        try:
            async for first in self._queue:
                batch = [first]
                while len(batch) < IOV_MAX // 2:
                    try:
                        batch.append(self._queue.receive_nowait())
                    except trio.WouldBlock:
                        break
                buffers = [memoryview(b) for bufs, _ in batch for b in bufs]
                await self._sendmsg_all(buffers)
                self._backlog -= len(batch)
                for _, done in batch:
                    if done is not None:
                        done.set()
        except OSError as e:
            raise LinkClosed(f"send failed: {e.strerror or e}") from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise LinkClosed("connection closed") from None

    async def flush_queued(self) -> None:
        """Send what is queued now, without the sender task (before a session starts)."""
        batch = []
        while True:
            try:
                batch.append(self._queue.receive_nowait())
            except trio.WouldBlock:
                break
        self._backlog -= len(batch)
        try:
            await self._sendmsg_all([memoryview(b) for bufs, _ in batch for b in bufs])
        except OSError as e:
            raise LinkClosed(f"send failed: {e.strerror or e}") from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise LinkClosed("connection closed") from None

    async def _sendmsg_all(self, buffers: list[memoryview]) -> None:
        while buffers:
            sent = await self.sock.sendmsg(buffers[:IOV_MAX])
            self.bytes_sent += sent
            while sent:
                head = buffers[0]
                if sent >= len(head):
                    sent -= len(head)
                    buffers.pop(0)
                else:
                    buffers[0] = head[sent:]
                    sent = 0

    # -- receiving ------------------------------------------------------------------------
    async def frames(self) -> AsyncIterator[Frame | None]:
        """Yield frames until the peer closes; raise ProtocolError on garbage.

        ``None`` is yielded whenever everything received so far has been handed out, just
        before waiting for more: the moment to send coalesced acknowledgements.
        """
        reader = self.reader
        while True:
            frame = reader.next_frame()
            if frame is not None:
                yield frame
                continue
            yield None
            try:
                n = await self.sock.recv_into(reader.space())
            except OSError as e:
                raise LinkClosed(f"receive failed: {e.strerror or e}") from None
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                raise LinkClosed("connection closed") from None
            if n == 0:
                raise LinkClosed("peer closed the connection")
            self.bytes_received += n
            reader.advance(n)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._send.close()
            for s in (self._raw, self.sock):
                try:
                    s.close()
                except OSError:
                    pass


__all__ = ["PeerLink", "LinkClosed", "ProtocolError"]
