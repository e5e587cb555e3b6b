"""A small pool of persistent threads for blocking calls, cheaper than trio.to_thread.

``trio.to_thread.run_sync`` costs about 105 us per call on the 2-core test VM (thread-cache
hand-off, capacity limiter, context copy, from_thread machinery); a call through this pool
costs about 40-50 us: the job goes to an idle thread over a ``queue.SimpleQueue`` and the
result comes back with one ``run_sync_soon`` that reschedules the waiting task. That difference
is a visible share of a 4 KiB write + fsync round trip (see bench/).

A call cannot be abandoned: when the waiting task is cancelled it still waits for the call to
finish (a pwrite/fdatasync cannot be interrupted anyway), then sees Cancelled.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable

import outcome
import trio

_STOP = object()


def _abort_failed(_raise_cancel):
    return trio.lowlevel.Abort.FAILED


class WorkerPool:
    def __init__(self, threads: int = 2, name: str = "fuseblk-io") -> None:
        self._threads_max = threads
        self._name = name
        self._jobs: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0    # threads waiting for a job
        self._queued = 0  # jobs not picked up yet
        self._lock = threading.Lock()
        self._closed = False

    def _submit(self, job) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self._name}: the worker pool is closed")
            self._queued += 1
            self._jobs.put(job)
            if self._queued <= self._idle or len(self._threads) >= self._threads_max:
                return
            t = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}",
                                 daemon=True)
            self._threads.append(t)
            self._idle += 1
        t.start()

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            job = jobs.get()
            if job is _STOP:
                return
            with self._lock:
                self._idle -= 1
                self._queued -= 1
            fn, args, token, task = job
            result = outcome.capture(fn, *args)
            with self._lock:
                self._idle += 1
            try:
                token.run_sync_soon(trio.lowlevel.reschedule, task, result)
            except trio.RunFinishedError:  # pragma: no cover - run ended under us
                pass

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` in a pool thread and return its result (or raise its error)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        task = trio.lowlevel.current_task()
        token = trio.lowlevel.current_trio_token()
        self._submit((fn, args, token, task))
        # Not abortable: the call runs to completion; a pending cancellation is delivered at
        # the caller's next checkpoint.
        return await trio.lowlevel.wait_task_rescheduled(_abort_failed)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        for _ in self._threads:
            self._jobs.put(_STOP)
        self._threads = []
