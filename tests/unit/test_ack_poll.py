"""The bounded poll before the event loop sleeps: for the next FUSE request, for an ack."""
from __future__ import annotations

import time

import trio

from fuseblk._lowlevel import poll_briefly, wait_polling


def test_poll_returns_once_the_event_is_set_by_another_task():
    async def main() -> None:
        ev = trio.Event()
        passes = 0

        async def setter() -> None:
            nonlocal passes
            for passes in range(1, 4):           # three scheduler passes later
                await trio.lowlevel.checkpoint()
            ev.set()
        async with trio.open_nursery() as n:
            n.start_soon(setter)
            t0 = time.perf_counter_ns()
            assert await poll_briefly(ev.is_set, 10_000_000_000)     # (a budget of 10 s)
            assert ev.is_set() and passes == 3
            assert time.perf_counter_ns() - t0 < 5_000_000_000
    trio.run(main)


def test_poll_gives_up_after_its_budget():
    async def main() -> None:
        ev = trio.Event()
        t0 = time.perf_counter_ns()
        assert not await poll_briefly(ev.is_set, 2_000_000)
        assert not ev.is_set() and time.perf_counter_ns() - t0 >= 2_000_000
    trio.run(main)


def test_wait_polling_returns_once_the_event_is_set_with_or_without_a_poll():
    async def main() -> None:
        for budget in (0, 10_000_000_000):
            ev = trio.Event()

            async def setter() -> None:
                for _ in range(3):
                    await trio.lowlevel.checkpoint()
                ev.set()
            async with trio.open_nursery() as n:
                n.start_soon(setter)
                await wait_polling(ev, budget)
                assert ev.is_set()
    trio.run(main)
