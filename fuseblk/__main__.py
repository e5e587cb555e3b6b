"""Serve a file through fuseblk: ``python -m fuseblk IMAGE MOUNTFILE``.

The FileEngine passthrough the benchmark measures, and a way to try the front end by hand.
Prints ``ready`` on stdout once mounted; SIGINT/SIGTERM unmount and exit.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys

import trio

from fuseblk.file_engine import FileEngine
from fuseblk.mount import serve


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fuseblk", description=__doc__.splitlines()[0])
    p.add_argument("image", help="backing file (or block device)")
    p.add_argument("mountpoint", help="regular file to mount on (created if missing)")
    p.add_argument("--page-cache", dest="direct_io", action="store_false",
                   help="let the kernel page-cache the file (default: FOPEN_DIRECT_IO)")
    p.add_argument("--inline-max", type=int, default=None,
                   help="largest read/write done inline (default: all); larger use threads")
    p.add_argument("--max-background", type=int, default=None)
    p.add_argument("--min-tasks", type=int, default=2)
    p.add_argument("--max-tasks", type=int, default=64)
    p.add_argument("--splice-read", action="store_true")
    p.add_argument("--no-fast-wait", dest="fast_wait", action="store_false",
                   help="wait for every request through pyfuse3's own trio wait")
    p.add_argument("--debug", action="store_true", help="libfuse debug output")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    engine = FileEngine(args.image, inline_max=args.inline_max)
    try:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                async def serve_then_stop(task_status=trio.TASK_STATUS_IGNORED):
                    await serve(args.mountpoint, engine, direct_io=args.direct_io,
                                fast_wait=args.fast_wait,
                                max_background=args.max_background, min_tasks=args.min_tasks,
                                max_tasks=args.max_tasks, splice_read=args.splice_read,
                                debug=args.debug, task_status=task_status)
                    nursery.cancel_scope.cancel()  # unmounted from outside: exit

                await nursery.start(serve_then_stop)
                print("ready", flush=True)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break
    finally:
        engine.close()


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
                        stream=sys.stderr)
    trio.run(run, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
