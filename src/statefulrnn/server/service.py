"""The runtime around one `StreamingPredictor`: its thread pools, limits, health probes and JSON encoding.

Each kind of work has its own threads, so that no kind can starve another: the model thread (batched
steps), `max_generations` generation threads (a full set answers 429), two threads for the other store
and model calls, and one service thread for /healthz and /metrics, whose store calls are given up after
`health_timeout` seconds.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from ..stream import Contention, StreamingPredictor
from .batching import Batcher, Slots, StreamLocks
from .metrics import Metrics

ENCODE_OFF_LOOP = 4096  # numbers in an answer from which it is encoded on a worker thread


@dataclass(frozen=True)
class Limits:
    max_batch: int = 64
    max_wait_ms: float = 2.0
    max_body: int = 1 << 20
    max_steps: int = 4096
    max_generate: int = 2000
    max_generations: int = 2
    body_timeout: float = 30.0
    health_timeout: float = 0.5

    def check(self) -> None:
        for name in ("max_batch", "max_body", "max_steps", "max_generations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_generate < 0:
            raise ValueError(f"max_generate must be >= 0, got {self.max_generate}")
        for name in ("max_wait_ms", "body_timeout", "health_timeout"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    """An error answer: `{"error": message, ...extra}`."""
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def store_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [sqlite3.Error, OSError, Contention]
    try:
        from redis.exceptions import RedisError

        errors.append(RedisError)
    except ImportError:
        pass
    return tuple(errors)


def encode(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


class Service:
    def __init__(self, predictor: StreamingPredictor, limits: Limits) -> None:
        self.predictor, self.limits = predictor, limits
        self.metrics = Metrics()
        self.batcher = Batcher(predictor.apply, limits.max_batch, limits.max_wait_ms / 1000, self.metrics.batch.observe)
        self.locks = StreamLocks()
        self.slots = Slots(limits.max_generations)
        self.store_errors = store_errors()
        self.store_kind = predictor.store.url.split(":", 1)[0].split("?", 1)[0]
        self._aux = ThreadPoolExecutor(2, thread_name_prefix="statefulrnn-aux")
        self._generators = ThreadPoolExecutor(limits.max_generations, thread_name_prefix="statefulrnn-generate")
        self._service = ThreadPoolExecutor(2, thread_name_prefix="statefulrnn-service")  # one per probe name
        self._probes: dict[str, asyncio.Future] = {}

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        # The model, ONNX Runtime and the web stack leave millions of long-lived objects; unfrozen, every
        # full collection scans them all (~100 ms, several times a second under load): the p99 tail.
        gc.collect()
        gc.freeze()
        self.batcher.start()
        yield
        await self.batcher.stop()
        for pool in (self._aux, self._generators, self._service):
            pool.shutdown(wait=True)

    # --- running work off the event loop ----------------------------------------------------------
    async def off_loop(self, fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._aux, fn, *args)

    async def guarded(self, call: Awaitable) -> Any:
        """The call's result, or a 503 answer when the store failed."""
        try:
            return await call
        except self.store_errors as e:
            return error(503, f"state store unavailable: {type(e).__name__}: {e}")

    async def generating(self, fn: Callable[[], str]) -> str:
        """Run a generation on its own thread; the caller holds a slot, given back when the thread is done
        (not when a cancelled request stops waiting for it)."""
        loop = asyncio.get_running_loop()
        self.metrics.generations.inc()
        future: Future = self._generators.submit(fn)

        def done(_: Future) -> None:
            loop.call_soon_threadsafe(self._release)

        future.add_done_callback(done)
        return await asyncio.wrap_future(future)

    def _release(self) -> None:
        self.slots.give_back()
        self.metrics.generations.dec()

    async def answer(self, build: Callable[[], Any], size: int, status: int = 200) -> Response:
        """A JSON answer built and encoded here, or on a worker thread when it holds `size` >= 4096 numbers."""
        if size >= ENCODE_OFF_LOOP:
            body = await self.off_loop(lambda: encode(build()))
        else:
            body = encode(build())
        return Response(body, status_code=status, media_type="application/json")

    # --- /healthz and /metrics --------------------------------------------------------------------
    async def probe(self, name: str, fn: Callable[[], Any]) -> Any:
        """`fn()` on the service thread, given up after `health_timeout` seconds (TimeoutError). Calls of
        one name share the one in flight, so a hung store cannot pile up probes."""
        future = self._probes.get(name)
        if future is None or future.done():
            future = asyncio.get_running_loop().run_in_executor(self._service, fn)
            future.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: no warning
            self._probes[name] = future
        return await asyncio.wait_for(asyncio.shield(future), self.limits.health_timeout)

    async def health(self) -> Response:
        try:
            await self.probe("ping", self.predictor.store.ping)
        except asyncio.TimeoutError:
            return error(503, f"state store did not answer within {self.limits.health_timeout:g} s")
        except Exception as e:
            return error(503, f"state store unavailable: {type(e).__name__}: {e}")
        return JSONResponse({"status": "ok", "task": self.predictor.task, "store": self.store_kind})

    async def scrape(self) -> bytes:
        store = self.predictor.store

        def snapshot() -> tuple[int, dict[str, int]]:
            return store.count(), store.stats()

        try:
            counts = await self.probe("snapshot", snapshot)
        except Exception:  # an unreachable store must not break the scrape (statefulrnn_store_up 0)
            counts = None
        return self.metrics.render(counts)  # a few ms on the loop: a thread stuck in a store call cannot delay it
