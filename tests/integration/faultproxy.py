"""A TCP proxy for tests that can flip one byte of the stream (loopback only).

    with FaultProxy(listen=("127.0.0.3", 7789), target=("127.0.0.2", 7788),
                    source="127.0.0.4", corrupt_after=2 << 20) as proxy: ...

``source`` is the address the proxy connects from (the one the target expects its peer
at). After ``corrupt_after`` bytes (counted over both directions) one byte is inverted, once.
``cut()`` partitions the link as a network would: bytes in flight and new connections
vanish without an answer (no reset); ``heal()`` lets new connections through again.
"""
from __future__ import annotations

import socket
import threading


class FaultProxy:
    def __init__(self, listen: tuple[str, int], target: tuple[str, int], source: str,
                 corrupt_after: int | None = None):
        self.listen, self.target, self.source = listen, target, source
        self.corrupt_after = corrupt_after
        self.corrupted = threading.Event()
        self.forwarded = 0
        self._stop = threading.Event()
        self._cut = threading.Event()
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()

    def __enter__(self) -> "FaultProxy":
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(self.listen)
        self.server.listen(8)
        self.server.settimeout(0.2)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        self.server.close()
        with self._lock:
            for s in self._socks:
                try:
                    s.close()
                except OSError:
                    pass

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if self._cut.is_set():          # held open, never answered, never forwarded
                with self._lock:
                    self._socks.append(client)
                continue
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                upstream.bind((self.source, 0))
                upstream.connect(self.target)
            except OSError:
                client.close()
                upstream.close()
                continue
            with self._lock:
                self._socks += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self._cut.is_set():
                    continue                # lost in the partition
                if self.corrupt_after is not None and not self.corrupted.is_set():
                    with self._lock:
                        start = self.forwarded
                        self.forwarded += len(data)
                        hit = start <= self.corrupt_after < start + len(data)
                    if hit:
                        buf = bytearray(data)
                        buf[self.corrupt_after - start] ^= 0xFF
                        data = bytes(buf)
                        self.corrupted.set()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self._cut.set()

    def heal(self) -> None:
        self._cut.clear()
