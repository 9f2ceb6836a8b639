"""Dynamic batching: requests that arrive together run through the model together.

One worker task takes the first waiting request and every request queued behind it (up to
``max_batch``) and runs them as one batch on a single model thread, so the event loop keeps
accepting requests while the model works. While a batch runs, new requests queue; the next batch
starts with all of them. Under load the worker also waits up to ``max_wait_ms`` for more to join
a batch that is not full: when the previous batch held more than one request, or other requests
are still being answered, clients are sending concurrently and their next requests arrive a few
milliseconds apart (without the wait, 8 clients get batches of 1 and 7 by turns, 2 clients
batches of 1). A lone client never waits. Throughput comes from the batches: one forward pass over
B images costs less than B passes of one.

A request that gives up (its ``timeout`` passes) cancels its future; a batch skips cancelled
requests, so an abandoned request never costs model time and never holds up the queue.
``stop()`` runs what is queued, then ends the worker (graceful shutdown).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Sequence, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class QueueFullError(RuntimeError):
    """More requests are waiting than the queue holds."""


class BatcherStoppedError(RuntimeError):
    """The batcher is not running (not started yet, or stopping)."""


@dataclass
class BatchInfo:
    """How one request went through the batcher."""

    batch_size: int  # requests in the batch it ran in
    queue_ms: float  # from submission to the start of its batch
    inference_ms: float  # the batch's run time


@dataclass
class _Job(Generic[Item]):
    item: Item
    future: asyncio.Future
    submitted: float = field(default_factory=time.perf_counter)


_STOP = object()


class DynamicBatcher(Generic[Item, Result]):
    """Runs ``run_batch(items) -> results`` (one result per item, in order) on batches of
    concurrent submissions. Start it inside the event loop that submits (``await start()``)."""

    def __init__(self, run_batch: Callable[[Sequence[Item]], Sequence[Result]], max_batch: int = 8,
                 max_wait_ms: float = 5.0, max_queue: int = 256):
        if max_batch < 1:
            raise ValueError(f"max_batch must be 1 or more, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be 0 or more, got {max_wait_ms}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be 1 or more, got {max_queue}")
        self.run_batch = run_batch
        self.max_batch, self.max_wait_ms, self.max_queue = max_batch, max_wait_ms, max_queue
        self.batch_sizes: Counter[int] = Counter()  # batch size -> batches run
        self.skipped = 0  # requests that gave up before their batch ran
        self.in_flight = 0  # requests submitted and not answered yet
        self._last_batch = 0  # requests in the batch run last
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._stopping = False

    @property
    def queued(self) -> int:
        """Requests waiting for a batch."""
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        self._stopping = False
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="centernet-model")
        self._worker = asyncio.create_task(self._run(), name="centernet-batcher")

    async def stop(self) -> None:
        """Run every queued request, then end the worker and its thread."""
        if self._worker is None:
            return
        self._stopping = True
        self._queue.put_nowait(_STOP)
        await self._worker
        self._executor.shutdown(wait=True)
        self._worker = None

    async def submit(self, item: Item, timeout: float | None = None) -> tuple[Result, BatchInfo]:
        """The result for ``item`` and how it ran; ``asyncio.TimeoutError`` after ``timeout``
        seconds (the request is then dropped from the queue), ``QueueFullError`` when
        ``max_queue`` requests already wait, and the exception of ``run_batch`` if it raised."""
        if self._worker is None or self._stopping:
            raise BatcherStoppedError("the model queue is not running (the server is starting or stopping)")
        if self._queue.qsize() >= self.max_queue:
            raise QueueFullError(f"{self._queue.qsize()} requests are already waiting (--max-queue {self.max_queue})")
        job = _Job(item, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(job)
        self.in_flight += 1
        try:
            return await asyncio.wait_for(job.future, timeout)  # a timeout cancels job.future
        finally:
            self.in_flight -= 1

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is _STOP:
                break
            jobs = [first]
            concurrent = self._last_batch > 1 or self.in_flight > len(jobs)  # see the module docstring
            wait_s = self.max_wait_ms / 1000 if concurrent else 0.0
            deadline = loop.time() + wait_s
            while len(jobs) < self.max_batch:
                try:  # what is queued already joins at once; then wait until the deadline
                    job = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        job = await asyncio.wait_for(self._queue.get(), remaining)
                    except asyncio.TimeoutError:
                        break
                if job is _STOP:
                    stopping = True  # run this last batch, then stop
                    break
                jobs.append(job)
            live = [job for job in jobs if not job.future.done()]  # done: cancelled by its timeout
            self.skipped += len(jobs) - len(live)
            if live:
                await self._run_jobs(loop, live)

    async def _run_jobs(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job]) -> None:
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self.run_batch, [job.item for job in jobs])
            if len(results) != len(jobs):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(jobs)} items")
        except Exception as error:  # each waiting request gets the error; the worker goes on
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        inference_ms = 1000 * (time.perf_counter() - started)
        self.batch_sizes[len(jobs)] += 1
        self._last_batch = len(jobs)
        for job, result in zip(jobs, results):
            if not job.future.done():  # it may have timed out while its batch ran
                info = BatchInfo(len(jobs), 1000 * (started - job.submitted), inference_ms)
                job.future.set_result((result, info))

    def stats(self) -> dict[str, Any]:
        return {"in_flight": self.in_flight, "queued": self.queued, "skipped": self.skipped,
                "batch_sizes": {str(size): count for size, count in sorted(self.batch_sizes.items())}}
