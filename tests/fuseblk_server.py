"""A fuseblk server for the integration tests: ``python -m tests.fuseblk_server IMAGE MOUNT``.

Runs in its own process so a crash of the test process cannot wedge the mount. Wraps a
FileEngine in a layer that records what reaches the engine (one line per event in the
``--events`` file, flushed at once) and injects faults at chosen offsets. Prints ``ready``
once mounted; SIGTERM/SIGINT unmount and exit.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys

import pyfuse3
import trio

from fuseblk.file_engine import FileEngine
from fuseblk.mount import serve


class RecordingEngine:
    """Passes everything to a FileEngine, logging events and failing on request."""

    def __init__(self, inner: FileEngine, events_path: str, args: argparse.Namespace) -> None:
        self.inner = inner
        self.events = open(events_path, "a", buffering=1)
        self.args = args

    def _event(self, *words) -> None:
        self.events.write(" ".join(str(w) for w in words) + "\n")

    def _maybe_fail(self, offset: int, length: int) -> None:
        def hit(at):
            return at is not None and offset <= at < offset + length
        if hit(self.args.boom_at):
            raise RuntimeError("injected engine bug")
        if hit(self.args.oserror_at):
            raise OSError(errno.ENOSPC, "injected ENOSPC")
        if hit(self.args.fuseerror_at):
            raise pyfuse3.FUSEError(errno.EROFS)

    def size(self) -> int:
        return self.inner.size()

    async def read(self, offset, length):
        self._maybe_fail(offset, length)
        return await self.inner.read(offset, length)

    async def write(self, offset, data):
        # "view": libfuse's buffer handed over without a copy (fuseblk's zero-copy handler)
        base = data.obj if isinstance(data, memoryview) else data
        self._event("write", offset, len(data), "copy" if type(base) is bytes else "view")
        self._maybe_fail(offset, len(data))
        return await self.inner.write(offset, data)

    async def flush(self):
        await self.inner.flush()
        self._event("flush")

    async def discard(self, offset, length):
        await self.inner.discard(offset, length)
        self._event("discard", offset, length)

    def may_open(self, writable):
        if writable and self.args.refuse_writable:
            return self.args.refuse_writable
        return 0

    def opened(self, writable):
        self._event("opened", int(writable))

    def released(self, writable):
        self._event("released", int(writable))


async def run(args: argparse.Namespace) -> None:
    inner = FileEngine(args.image, inline_max=args.inline_max)
    engine = RecordingEngine(inner, args.events, args)
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                async def serve_then_stop(task_status=trio.TASK_STATUS_IGNORED):
                    await serve(args.mountpoint, engine, task_status=task_status,
                                direct_io=not args.page_cache)
                    nursery.cancel_scope.cancel()

                await nursery.start(serve_then_stop)
                print("ready", flush=True)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break
    finally:
        engine.events.close()
        inner.close()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("image")
    p.add_argument("mountpoint")
    p.add_argument("--events", required=True)
    p.add_argument("--boom-at", type=int, default=None, help="RuntimeError at this offset")
    p.add_argument("--oserror-at", type=int, default=None, help="OSError(ENOSPC) here")
    p.add_argument("--fuseerror-at", type=int, default=None, help="FUSEError(EROFS) here")
    p.add_argument("--refuse-writable", type=int, default=0, help="errno for writable opens")
    p.add_argument("--page-cache", action="store_true")
    p.add_argument("--inline-max", type=int, default=None,
                   help="pread/pwrite larger than this in threads (0: all)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    trio.run(run, args)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
