"""Micro-batching: concurrent requests share one model call, run off the event loop.

Greedy batching: when an inference slot is free, everything queued (up to
`max_batch_transcripts`) goes into one call at once; while all slots are busy, new
requests wait in the queue and form the next batch. An idle server therefore adds no
wait to a single request, and a loaded one batches as much as the load allows. The queue
is bounded: past `max_queue_transcripts` callers get `Overloaded` (RESOURCE_EXHAUSTED)
instead of unbounded memory growth.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from echogate.errors import Overloaded

In = TypeVar("In")
Out = TypeVar("Out")


class Batcher(Generic[In, Out]):
    def __init__(self, fn: Callable[[Sequence[In]], list[Out]], *, max_batch: int, max_queue: int, workers: int,
                 on_batch: Callable[[int, float], None] | None = None,
                 on_queue: Callable[[int], None] | None = None,
                 on_wait: Callable[[float], None] | None = None,
                 on_busy: Callable[[int], None] | None = None):
        self._fn = fn
        self._max_batch = max_batch
        self._max_queue = max_queue
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="echogate-infer")
        self._slots = asyncio.Semaphore(workers)
        self._queue: deque[tuple[Sequence[In], asyncio.Future, float]] = deque()  # items, future, enqueued at
        self._queued = 0
        self._on_batch = on_batch or (lambda size, seconds: None)
        self._on_queue = on_queue or (lambda depth: None)
        self._on_wait = on_wait or (lambda seconds: None)
        self._on_busy = on_busy or (lambda workers: None)
        self._busy = 0
        self._tasks: set[asyncio.Task] = set()

    @property
    def queued(self) -> int:
        return self._queued

    async def submit(self, items: Sequence[In]) -> list[Out]:
        if self._queued + len(items) > self._max_queue and self._queued:
            raise Overloaded(f"scoring queue full ({self._queued} transcripts waiting)", retry_after_s=0.5)
        future = asyncio.get_running_loop().create_future()
        self._queue.append((items, future, time.perf_counter()))
        self._queued += len(items)
        self._on_queue(self._queued)
        self._spawn()
        return await future

    def _spawn(self) -> None:
        task = asyncio.create_task(self._dispatch())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch(self) -> None:
        async with self._slots:
            if not self._queue:
                return  # an earlier dispatcher took our request along
            batch: list[tuple[Sequence[In], asyncio.Future]] = []
            size = 0
            now = time.perf_counter()
            while self._queue and (not batch or size + len(self._queue[0][0]) <= self._max_batch):
                items, fut, enqueued = self._queue.popleft()
                batch.append((items, fut))
                size += len(items)
                self._on_wait(now - enqueued)
            self._queued -= size
            self._on_queue(self._queued)
            live = [(items, fut) for items, fut in batch if not fut.cancelled()]
            if not live:
                return
            flat = [item for items, _ in live for item in items]
            started = time.perf_counter()
            self._busy += 1
            self._on_busy(self._busy)
            try:
                results = await asyncio.get_running_loop().run_in_executor(self._executor, self._fn, flat)
            except Exception as exc:  # the batch fails as a whole; each caller sees the error
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                return
            finally:
                self._busy -= 1
                self._on_busy(self._busy)
                self._on_batch(len(flat), time.perf_counter() - started)
            offset = 0
            for items, fut in live:
                if not fut.done():
                    fut.set_result(results[offset : offset + len(items)])
                offset += len(items)
        if self._queue:
            self._spawn()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)
