"""Micro-batching of step requests, and one lock per stream id.

Step requests for different streams that arrive together are gathered (up to `max_batch`, waiting at
most `max_wait_s` for more) and applied in one fused model call and one store transaction on the model
thread; requests for the same stream are serialised by `StreamLocks`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from ..stream import StepRequest, StepResult


class Batcher:
    """Gathers step requests into batches and applies each in one call on the model thread."""

    def __init__(self, apply: Callable, max_batch: int, max_wait_s: float, observe: Callable[[int], None]) -> None:
        self.apply, self.max_batch, self.max_wait_s, self.observe = apply, max_batch, max_wait_s, observe
        self._pending: deque = deque()
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="statefulrnn-model")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._executor.shutdown(wait=True)

    async def submit(self, request: StepRequest) -> StepResult | Exception:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        self._wake.set()
        return await future

    def _take(self, batch: list) -> None:
        while self._pending and len(batch) < self.max_batch:
            batch.append(self._pending.popleft())

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch: list = []
            self._take(batch)
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch and (remaining := deadline - loop.time()) > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except asyncio.TimeoutError:
                    break
                self._take(batch)
            try:
                results = await loop.run_in_executor(self._executor, self.apply, [r for r, _ in batch])
            except Exception as e:  # a store failure: every request of the batch gets it
                results = [e] * len(batch)
            self.observe(len(batch))
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)


class StreamLocks:
    """One asyncio lock per stream id with requests in flight (dropped when the last one leaves)."""

    def __init__(self) -> None:
        self._locks: dict[str, list] = {}

    @asynccontextmanager
    async def hold(self, stream_id: str) -> AsyncIterator[None]:
        entry = self._locks.setdefault(stream_id, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._locks[stream_id]


class Slots:
    """A non-blocking counting semaphore on the event loop: `try_take` or refuse (the caller answers 429)."""

    def __init__(self, size: int) -> None:
        self.size, self.taken = size, 0

    def try_take(self) -> bool:
        if self.taken >= self.size:
            return False
        self.taken += 1
        return True

    def give_back(self) -> None:
        self.taken -= 1
