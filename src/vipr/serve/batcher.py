"""Dynamic batching: many small requests, one model call.

Requests put ``(rows, future)`` into a bounded queue; one worker thread takes the first
waiting request, then keeps collecting until ``max_batch_size`` rows are gathered or
``max_delay_ms`` has passed since that first request, runs the model once on the
concatenated rows and hands each request its own slice of the output. A full queue
refuses at once (:class:`Overloaded`) rather than letting latency grow without bound.

Examples:
    >>> batcher = DynamicBatcher(runtime.predict, max_batch_size=16, max_delay_ms=5).start()
    >>> logits = await batcher.submit(batch)       # (n, 3, S, S) -> (n, C)
    >>> batcher.drain()                             # stop accepting, finish the queue
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import queue
import threading
import time
from typing import Callable

import numpy as np

_POLL_S = 0.05  # how often an idle worker checks for shutdown


class Overloaded(Exception):
    """The queue is full, or the batcher is shutting down: retry later."""


class DynamicBatcher:
    def __init__(self, run_batch: Callable[[np.ndarray], np.ndarray], *, max_batch_size: int = 16,
                 max_delay_ms: float = 5.0, max_queue: int = 256,
                 on_batch: Callable[[int], None] | None = None):
        if max_batch_size < 1 or max_queue < 1 or max_delay_ms < 0:
            raise ValueError(f"need max_batch_size >= 1, max_queue >= 1, max_delay_ms >= 0; got {max_batch_size}, "
                             f"{max_queue}, {max_delay_ms}")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_ms / 1000
        self.on_batch = on_batch
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=10_000)  # rows per model call
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._accepting = True  # requests queued before start() run once the worker starts
        self._accept_lock = threading.Lock()  # no request slips in after drain() has closed the door
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._carry = None  # a request taken from the queue that did not fit in the last batch

    def start(self) -> DynamicBatcher:
        self._worker = threading.Thread(target=self._loop, name="vipr-batcher", daemon=True)
        self._worker.start()
        return self

    def queue_depth(self) -> int:
        return self._queue.qsize() + (self._carry is not None)

    def submit_nowait(self, rows: np.ndarray) -> concurrent.futures.Future:
        """Queue ``rows`` (n, ...); the future gets the model's (n, ...) output. Overloaded when full."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._accept_lock:
            if not self._accepting:
                raise Overloaded("the server is shutting down and accepts no new requests")
            try:
                self._queue.put_nowait((rows, future))
            except queue.Full:
                raise Overloaded(f"the request queue is full ({self._queue.maxsize} requests waiting)") from None
        return future

    async def submit(self, rows: np.ndarray) -> np.ndarray:
        return await asyncio.wrap_future(self.submit_nowait(rows))

    def drain(self, timeout: float | None = 30.0) -> None:
        """Graceful shutdown: refuse new requests, run everything already queued, stop the worker."""
        with self._accept_lock:
            self._accepting = False
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout)

    def _loop(self) -> None:
        while True:
            batch = self._collect()
            if batch:
                self._run(batch)
            elif self._stop.is_set():
                return

    def _collect(self) -> list:
        """Up to ``max_batch_size`` rows, waiting at most ``max_delay_s`` after the first request."""
        first = self._carry or self._get(_POLL_S)
        self._carry = None
        if first is None:
            return []
        batch, rows = [first], len(first[0])
        deadline = time.monotonic() + self.max_delay_s
        while rows < self.max_batch_size:
            item = self._get(deadline - time.monotonic())
            if item is None:
                break
            if rows + len(item[0]) > self.max_batch_size:
                self._carry = item  # opens the next batch
                break
            batch.append(item)
            rows += len(item[0])
        return batch

    def _get(self, timeout: float):
        try:
            return self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None

    def _run(self, batch: list) -> None:
        live = [(rows, future) for rows, future in batch if future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            outputs = self.run_batch(np.concatenate([rows for rows, _ in live]))
        except Exception as err:  # the model failed: every waiting request hears why, the worker goes on
            for _, future in live:
                future.set_exception(err)
            return
        self.batch_sizes.append(len(outputs))
        if self.on_batch:
            self.on_batch(len(outputs))
        start = 0
        for rows, future in live:
            future.set_result(outputs[start:start + len(rows)])
            start += len(rows)
