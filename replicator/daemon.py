"""The resource daemon: one process per resource, started by ``drbdsetup new-resource``.

It owns the backing disk and its metadata, the FUSE device file, (later) the peer connection,
and the control socket ``$RUN_DIR/<res>.sock`` through which drbdsetup drives it. Everything
runs in one trio run; blocking disk work is pushed to threads by the device.

    python -m replicator.daemon RESOURCE
"""
from __future__ import annotations

import fcntl
import logging
import os
import signal
import sys
import traceback
from typing import Any

import trio

from replicator import commands, control, io_commands, rundir, sync_commands  # noqa: F401
from replicator import procfile
from replicator.diskless import DisklessFile
from replicator.resource import Resource
from replicator.statelog import ResourceLog


class Daemon:
    def __init__(self, name: str):
        self.name = name
        self.log = ResourceLog(rundir.log_path(name), name)
        self.resource = Resource(name, self.log)
        self.nursery: trio.Nursery | None = None
        self.stopping = trio.Event()
        self.diskless = DisklessFile(self)    # the device file while no disk is attached

    async def serve_client(self, stream: trio.SocketStream) -> None:
        reader = _FrameReader(stream)
        async with stream:
            while True:
                try:
                    request = await reader.next()
                except (control.ControlError, trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                if request is None:
                    return
                cmd = request.get("cmd") if isinstance(request, dict) else None
                args = request.get("args") or {} if isinstance(request, dict) else {}
                if cmd == "events":
                    await commands.stream_events(self, stream, args)
                    return
                dev = self.resource.device
                before = dev.superblock_version() if dev is not None else None
                try:
                    reply = await commands.dispatch(self, str(cmd), dict(args))
                except Exception as e:  # a bug must not take the daemon down
                    self.log.resource_line(f"internal error in {cmd}: {e!r}")
                    traceback.print_exc()
                    reply = {"rc": 20, "out": "", "err": f"{self.name}: internal error: {e}"}
                dev = self.resource.device      # what a command changed is on disk when it
                if dev is not None and dev.superblock_version() != before:   # returns, as
                    await dev.superblock_synced()                            # drbd_md_sync()
                try:
                    await stream.send_all(control.encode(reply))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return

    async def run(self) -> None:
        """Serve until ``down`` or a signal. The caller holds the resource's lock."""
        path = rundir.socket_path(self.name)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        old_umask = os.umask(0o077)
        try:
            await sock.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        sock.listen(16)
        with open(rundir.pid_path(self.name), "w") as f:
            f.write(f"{os.getpid()}\n")
        listener = trio.SocketListener(sock)
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = self.resource.nursery = nursery
                nursery.start_soon(trio.serve_listeners, self.serve_client, [listener])
                nursery.start_soon(self._watch_signals)
                nursery.start_soon(procfile.run, self)   # $RUN_DIR/proc (status issue)
                await self.stopping.wait()
                await commands.shutdown(self)
                nursery.cancel_scope.cancel()
        finally:
            for leftover in (path, rundir.pid_path(self.name),
                             rundir.device_record_path(self.name)):
                try:
                    os.unlink(leftover)
                except FileNotFoundError:
                    pass
            self.log.close()

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:           # as `down`: demote first, refused (and
                self.log.resource_line("terminating on signal")   # still serving) while
                reply = await commands.dispatch(self, "down", {})  # the device is open
                if reply["rc"]:
                    self.log.resource_line(f"not terminating: {reply['err']}")


class _FrameReader:
    def __init__(self, stream: trio.SocketStream):
        self.stream = stream
        self.buf = bytearray()

    async def _fill(self, n: int) -> bool:
        while len(self.buf) < n:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                return False
            self.buf += chunk
        return True

    async def next(self) -> Any:
        if not await self._fill(4):
            return None
        length = control.decode_length(bytes(self.buf[:4]))
        if not await self._fill(4 + length):
            return None
        body = bytes(self.buf[4:4 + length])
        del self.buf[:4 + length]
        return control.decode_body(body)      # garbage: ControlError, that client is dropped


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m replicator.daemon RESOURCE", file=sys.stderr)
        return 1
    rundir.ensure_run_dir()
    lock = open(rundir.lock_path(argv[0]), "a")         # one daemon per resource: held
    try:                                                # until this process ends
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"{argv[0]}: a resource daemon is already running", file=sys.stderr)
        return rundir.ALREADY_RUNNING
    daemon = Daemon(argv[0])
    logging.basicConfig(level=logging.WARNING, handlers=[_ResourceLogHandler(daemon.log)])
    trio.run(daemon.run)
    return 0


class _ResourceLogHandler(logging.Handler):
    """Warnings from libraries (fuseblk) go to the resource log as ``drbd RES:`` lines."""

    def __init__(self, log: ResourceLog):
        super().__init__(logging.WARNING)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.log.resource_line(record.getMessage().splitlines()[0])
        except Exception:
            self.handleError(record)


if __name__ == "__main__":
    sys.exit(main())
