"""The dynamic batcher: rows batched up to the limit and delay, split back, bounded queue, graceful drain."""

import asyncio
import threading
import time

import numpy as np
import pytest

from vipr.serve.batcher import DynamicBatcher, Overloaded


def double(batch):
    return batch * 2


def test_concurrent_requests_share_one_call_and_get_their_own_rows():
    batcher = DynamicBatcher(double, max_batch_size=8, max_delay_ms=200).start()

    async def many():
        return await asyncio.gather(*(batcher.submit(np.full((1, 3), i, np.float32)) for i in range(6)))

    results = asyncio.run(many())
    batcher.drain()
    assert [float(r[0, 0]) for r in results] == [2.0 * i for i in range(6)]
    assert list(batcher.batch_sizes) == [6]


def test_batches_stop_at_max_batch_size_and_carry_the_rest():
    batcher = DynamicBatcher(double, max_batch_size=4, max_delay_ms=200)
    futures = [batcher.submit_nowait(np.ones((n, 2))) for n in (3, 2, 1)]  # queued before the worker starts
    batcher.start()
    results = [f.result(5) for f in futures]
    batcher.drain()
    assert [len(r) for r in results] == [3, 2, 1]
    assert list(batcher.batch_sizes) == [3, 3]  # 3 + 2 > 4: the 2 opens the next batch with the 1


def test_full_queue_is_overloaded_and_drain_finishes_queued_work():
    gate = threading.Event()
    batcher = DynamicBatcher(lambda b: (gate.wait(5), b)[1], max_batch_size=1, max_delay_ms=0, max_queue=1).start()
    running = batcher.submit_nowait(np.ones((1, 1)))
    while batcher.queue_depth():  # until the worker holds the first request
        time.sleep(0.001)
    queued = batcher.submit_nowait(np.ones((1, 1)))
    with pytest.raises(Overloaded, match="queue is full"):
        batcher.submit_nowait(np.ones((1, 1)))
    gate.set()
    batcher.drain()
    assert running.result(0).shape == queued.result(0).shape == (1, 1)
    with pytest.raises(Overloaded, match="shutting down"):
        batcher.submit_nowait(np.ones((1, 1)))


def test_a_failing_model_fails_its_requests_not_the_worker():
    calls = []

    def flaky(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return batch

    batcher = DynamicBatcher(flaky, max_batch_size=1, max_delay_ms=0).start()
    with pytest.raises(RuntimeError, match="boom"):
        batcher.submit_nowait(np.ones((1, 1))).result(5)
    assert batcher.submit_nowait(np.ones((1, 1))).result(5).shape == (1, 1)
    batcher.drain()
