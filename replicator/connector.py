"""Finding the peer: listen and connect at once, agree on one connection, authenticate.

Both nodes listen on their own address and connect to the peer's (every ``connect-int``).
On a new connection the connecting side says HELLO and the accepting side gives the verdict.
When connections cross, each HELLO carries a random nonce and the connection whose connector
drew the larger one wins; both sides compare the same two numbers, so they agree.
Then, if ``cram-hmac-alg`` is set, both sides prove knowledge of the shared secret before
anything else is exchanged (DRBD's challenge/response, drbd-reference.md §7.3).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import socket
from dataclasses import dataclass

import trio

from replicator.link import LinkClosed, PeerLink
from replicator.protocol import PROTOCOL_VERSION, Msg, ProtocolError

HELLO_TIMEOUT = 5.0
CHALLENGE_LEN = 64


class AuthFailed(Exception):
    pass


@dataclass(frozen=True)
class Endpoint:
    af: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> "Endpoint":
        """``ipv4:127.0.0.1:7788`` / ``ipv6:[::1]:7788`` as drbdsetup connect gets them."""
        af, _, rest = text.partition(":")
        if af not in ("ipv4", "ipv6"):
            raise ValueError(f"unsupported address family in '{text}'")
        host, _, port = rest.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"'{text}': expected {af}:HOST:PORT with a port in 1..65535")
        return cls(af, host.strip("[]"), int(port))

    @property
    def family(self) -> int:
        return socket.AF_INET6 if self.af == "ipv6" else socket.AF_INET

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"



async def _first_frame(link: PeerLink, expected: Msg) -> object:
    with trio.fail_after(HELLO_TIMEOUT):
        async for frame in link.frames():
            if frame is None:
                continue
            if frame.type != expected:
                raise ProtocolError(f"expected {expected.name}, got {frame.type.name}")
            return frame.body
    raise LinkClosed("closed during handshake")


class Connector:
    """Produces one agreed, authenticated PeerLink per ``establish()`` call."""

    def __init__(self, local: Endpoint, peer: Endpoint, connect_int: float, log):
        self.local, self.peer = local, peer
        self.connect_int = connect_int
        self.log = log
        self._outgoing_nonce = 0
        self._listener: trio.socket.SocketType | None = None

    async def open_listener(self) -> None:
        sock = trio.socket.socket(self.local.family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await sock.bind((self.local.host, self.local.port))
        sock.listen(4)
        self._listener = sock

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    async def establish(self) -> PeerLink:
        """Wait until a connection with the peer is agreed on; returns it."""
        if self._listener is None:
            await self.open_listener()
        result: list[PeerLink] = []
        self._outgoing: PeerLink | None = None
        async with trio.open_nursery() as nursery:
            def deliver(link: PeerLink) -> None:
                if result:
                    link.close()
                    return
                result.append(link)
                nursery.cancel_scope.cancel()
            nursery.start_soon(self._accept_loop, deliver)
            nursery.start_soon(self._connect_loop, deliver)
        return result[0]

    async def _accept_loop(self, deliver) -> None:
        while True:
            sock, addr = await self._listener.accept()
            if addr[0] != self.peer.host:
                self.log.resource_line(f"Dropping connection from unknown address {addr[0]}")
                sock.close()
                continue
            link = PeerLink(sock)
            won = False
            try:
                won = await self._answer(link)
            finally:                        # also when cancelled: our own connection won
                if not won:
                    link.close()
            if won:
                deliver(link)
                return

    async def _answer(self, link: PeerLink) -> bool:
        """Read the caller's HELLO, settle crossed connections; True if this link wins."""
        try:
            hello = await _first_frame(link, Msg.HELLO)
        except (LinkClosed, ProtocolError, trio.TooSlowError):
            return False
        if not isinstance(hello, dict) or hello.get("v") != PROTOCOL_VERSION:
            theirs = hello.get("v") if isinstance(hello, dict) else "?"
            self.log.resource_line(f"incompatible udrbd dialects: I support {PROTOCOL_VERSION},"
                                   f" peer supports {theirs}")
            return False
        try:
            theirs = int(hello.get("nonce", 0))
        except (TypeError, ValueError):
            return False
        if self._outgoing is not None and self._outgoing_nonce > theirs:
            return False                    # crossed: my own connection wins
        try:
            link.send(Msg.HELLO, {"v": PROTOCOL_VERSION, "ok": True})
            await link.flush_queued()
        except (LinkClosed, OSError):
            return False
        if self._outgoing is not None:
            self._outgoing.close()
        link.accepted = True                # DRBD: the acceptor holds RESOLVE_CONFLICTS
        return True

    async def _connect_loop(self, deliver) -> None:
        while True:
            link = await self._try_connect()
            if link is not None:
                deliver(link)
                return
            await trio.sleep(self.connect_int)

    async def _try_connect(self) -> PeerLink | None:
        sock = trio.socket.socket(self.peer.family, socket.SOCK_STREAM)
        try:
            await sock.bind((self.local.host, 0))
            with trio.fail_after(self.connect_int):
                await sock.connect((self.peer.host, self.peer.port))
        except (OSError, trio.TooSlowError):
            sock.close()
            return None
        link = PeerLink(sock)
        self._outgoing = link
        self._outgoing_nonce = secrets.randbits(62)
        agreed = False
        try:
            link.send(Msg.HELLO, {"v": PROTOCOL_VERSION, "nonce": self._outgoing_nonce})
            await link.flush_queued()
            verdict = await _first_frame(link, Msg.HELLO)
            agreed = isinstance(verdict, dict) and bool(verdict.get("ok"))
        except (LinkClosed, ProtocolError, trio.TooSlowError, OSError):
            pass
        finally:                            # also when cancelled: the other side won
            self._outgoing = None
            if not agreed:
                link.close()
        return link if agreed else None


async def authenticate(link: PeerLink, alg: str, secret: str) -> int:
    """DRBD's cram-hmac: challenge both ways; returns the HMAC length. Raises AuthFailed."""
    try:
        hashlib.new(alg)
    except ValueError:
        raise AuthFailed(f"cram-hmac-alg '{alg}' is not available") from None
    mine = os.urandom(CHALLENGE_LEN)
    link.send(Msg.AUTH_CHALLENGE, None, mine)
    await link.flush_queued()
    theirs = await _payload(link, Msg.AUTH_CHALLENGE)
    if not CHALLENGE_LEN <= len(theirs) <= 128:
        raise AuthFailed("Authentication of peer failed")
    if theirs == mine:
        raise AuthFailed("Peer presented the same challenge!")
    key = secret.encode()
    link.send(Msg.AUTH_RESPONSE, None, hmac.new(key, theirs, alg).digest())
    await link.flush_queued()
    response = await _payload(link, Msg.AUTH_RESPONSE)
    expected = hmac.new(key, mine, alg).digest()
    if not hmac.compare_digest(response, expected):
        raise AuthFailed("Authentication of peer failed")
    return len(expected)


async def _payload(link: PeerLink, expected: Msg) -> bytes:
    with trio.fail_after(HELLO_TIMEOUT):
        async for frame in link.frames():
            if frame is None:
                continue
            if frame.type != expected:
                raise AuthFailed(f"expected {expected.name}, got {frame.type.name}")
            return bytes(frame.data or b"")
    raise LinkClosed("closed during authentication")
