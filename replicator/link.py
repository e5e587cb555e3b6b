"""One TCP connection to the peer: a batching sender and a frame receiver.

The sender task drains everything queued and hands it to the kernel with one ``sendmsg``
(header+body buffers and untouched payload views), so many small acks or writes cost one
system call. The receiver reads with ``recv_into`` into a preallocated buffer and yields
frames whose payloads are views into that buffer (valid until the next frame is read).
"""
from __future__ import annotations

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
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    # -- sending ------------------------------------------------------------------------
    def send(self, msg: Msg, body: object = None, data: bytes | memoryview | None = None,
             done: trio.Event | None = None) -> None:
        """Queue a frame; ``done`` (if given) is set once the kernel has taken all of it."""
        if self.closed:
            raise LinkClosed("connection closed")
        self._send.send_nowait((encode(msg, body, data), done))

    async def sender(self) -> None:
        """Run in the session's nursery: batch queued frames into sendmsg calls."""
        try:
            async for first in self._queue:
                # let the other runnable tasks (more FUSE writes, more acks) queue theirs
                # first: one sendmsg for many frames is the cheapest way through TCP
                await trio.lowlevel.cancel_shielded_checkpoint()
                batch = [first]
                while len(batch) < IOV_MAX // 2:
                    try:
                        batch.append(self._queue.receive_nowait())
                    except trio.WouldBlock:
                        break
                buffers = [memoryview(b) for bufs, _ in batch for b in bufs]
                await self._sendmsg_all(buffers)
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
    async def frames(self) -> AsyncIterator[Frame]:
        """Yield frames until the peer closes; raise ProtocolError on garbage."""
        reader = self.reader
        while True:
            frame = reader.next_frame()
            if frame is not None:
                yield frame
                continue
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
            try:
                self.sock.close()
            except OSError:
                pass


__all__ = ["PeerLink", "LinkClosed", "ProtocolError"]
