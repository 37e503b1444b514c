"""The HTTP service around `StreamingPredictor`: routes, validation, micro-batching, metrics. No model code.

Step requests for different streams that arrive together are gathered (up to `max_batch`, waiting at
most `max_wait_ms` for more) and applied in one fused model call and one store transaction; requests
for the same stream are serialised. A step is answered only after its state is committed.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import json
import os
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path as FilePath
from typing import Annotated, Any

import torch
from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from starlette.exceptions import HTTPException

from .stores import StateStore, open_store
from .stream import Contention, SeqConflict, StepRequest, StepResult, StreamingPredictor, json_rows

STREAM_ID = r"^[A-Za-z0-9._:~-]{1,128}$"
ENV_CONFIG = "STATEFULRNN_SERVE"
_OPEN_PATHS = ("/healthz", "/docs", "/docs/oauth2-redirect", "/openapi.json")
StreamId = Annotated[str, Path(pattern=STREAM_ID, description="1-128 characters: letters, digits and . _ : ~ -")]


# --- request and response bodies -------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StepBody(_Body):
    seq: StrictInt = Field(ge=0, le=2**62, description="the stream's next seq: 0 for a new stream, then +1 per step")
    inputs: str | list[Any] = Field(
        description="text runs: token ids or a string; series runs: raw values, one per step "
        "(rows [value, feature, ...] when the run has features)"
    )
    series: str | None = Field(None, max_length=256, description="series runs: a trained series for a new stream")
    position: StrictInt | None = Field(None, ge=0, le=2**62, description="series runs: a new stream's phase")


class StepResponse(BaseModel):
    stream: str
    seq: int = Field(description="the seq the stream's next step request must carry")
    steps: int = Field(description="time steps applied since the stream started or was reset")
    outputs: list[list[float | None]] = Field(description="one row per input step: logits, or forecasts")
    replayed: bool = Field(description="true when this answers a retry from the stored outputs")


class StreamStatus(BaseModel):
    stream: str
    seq: int
    steps: int
    updated_at: float


class Deleted(BaseModel):
    stream: str
    deleted: bool


class GenerateBody(_Body):
    prompt: str = Field("", max_length=100_000)
    n: StrictInt = Field(100, ge=0, description="tokens to generate")
    temperature: float = Field(1.0, ge=0, le=100, allow_inf_nan=False)
    top_k: StrictInt | None = Field(None, ge=1, le=2**31)
    top_p: float | None = Field(None, gt=0, le=1, allow_inf_nan=False)
    seed: StrictInt | None = Field(None, ge=0, le=2**63 - 1)


class GenerateResponse(BaseModel):
    text: str


class ForecastBody(_Body):
    history: list[Any] = Field(description="raw values (or rows [value, feature, ...]), oldest first")
    series: str | None = Field(None, max_length=256, description="the trained series whose transform to use")
    horizon: StrictInt | None = Field(None, ge=1, le=2**31)
    position: StrictInt | None = Field(None, ge=0, le=2**62, description="the phase of the history's first value")


class ForecastResponse(BaseModel):
    forecast: list[float | None]
    lo: list[float | None] | None = None
    hi: list[float | None] | None = None


class ErrorResponse(BaseModel):
    error: str
    expected: int | None = None


# --- plumbing --------------------------------------------------------------------------------------
class _Metrics:
    def __init__(self, store: StateStore) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("statefulrnn_requests", "HTTP requests", ["method", "route", "status"], registry=r)
        self.latency = Histogram(
            "statefulrnn_request_seconds",
            "HTTP request latency",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=r,
        )
        self.batch = Histogram(
            "statefulrnn_batch_size",
            "step requests per fused model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.steps = Counter("statefulrnn_steps", "time steps applied to streams", registry=r)
        self.replays = Counter("statefulrnn_replays", "retried step requests answered from stored outputs", registry=r)
        self.conflicts = Counter("statefulrnn_seq_conflicts", "step requests refused for their seq", registry=r)
        r.register(_StoreCollector(store))

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)


class _StoreCollector:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    def collect(self):
        try:
            yield GaugeMetricFamily("statefulrnn_streams", "streams held by the state store", value=self.store.count())
            for name, value in self.store.stats().items():
                yield CounterMetricFamily(f"statefulrnn_store_{name}", f"state store {name}", value=value)
        except Exception:  # an unreachable store must not break the scrape
            return


class _Batcher:
    """Gathers step requests into batches and applies each in one call on the model thread."""

    def __init__(self, apply: Callable, max_batch: int, max_wait_s: float, metrics: _Metrics) -> None:
        self.apply, self.max_batch, self.max_wait_s, self.metrics = apply, max_batch, max_wait_s, metrics
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
            self.metrics.batch.observe(len(batch))
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)


class _StreamLocks:
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


class _Guard:
    """Pure ASGI middleware: bearer token, body size limit, request metrics."""

    def __init__(self, app: Callable, *, token: str | None, max_body: int, metrics: _Metrics) -> None:
        self.app, self.max_body, self.metrics = app, max_body, metrics
        self.expected = None if token is None else b"Bearer " + token.encode()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.record(scope["method"], route, status[0], time.perf_counter() - start)

    async def _guarded(self, scope: dict, receive: Callable, send: Callable) -> None:
        headers = dict(scope["headers"])
        if self.expected is not None and scope["path"] not in _OPEN_PATHS:
            if not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
                await _send_json(
                    send, 401, {"error": "missing or wrong bearer token"}, [(b"www-authenticate", b"Bearer")]
                )
                return
        too_large = {"error": f"the request body is larger than the limit of {self.max_body} bytes"}
        try:
            declared = int(headers.get(b"content-length", b"0"))
        except ValueError:
            declared = 0
        if declared > self.max_body:
            await _send_json(send, 413, too_large)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                await _send_json(send, 413, too_large)
                return
            if not message.get("more_body"):
                break
        body, delivered = b"".join(chunks), [False]

        async def replay() -> dict:
            if not delivered[0]:
                delivered[0] = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _send_json(send: Callable, status: int, payload: dict, headers: list | None = None) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": body})


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _store_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [sqlite3.Error, OSError, Contention]
    try:
        from redis.exceptions import RedisError

        errors.append(RedisError)
    except ImportError:
        pass
    return tuple(errors)


# --- the app -------------------------------------------------------------------------------------------
def create_app(
    run: str | FilePath | StreamingPredictor,
    store: StateStore | str | None = None,
    *,
    token: str | None = None,
    max_batch: int = 64,
    max_wait_ms: float = 2.0,
    max_body: int = 1 << 20,
    max_steps: int = 4096,
    max_generate: int = 2000,
    device: str = "cpu",
    engine: str = "torch",
) -> FastAPI:
    """The FastAPI app serving the streams of `run` (a run directory or a ready `StreamingPredictor`).

    `store` is a `StateStore` or URL (default: in memory); `token` requires `Authorization: Bearer TOKEN`
    on everything but /healthz and the docs; `max_batch` and `max_wait_ms` bound micro-batching
    (`max_batch=1` turns it off); `max_body` (bytes), `max_steps` (steps per step request, prompt
    characters, history values) and `max_generate` (tokens) bound the work one request can ask for.
    """
    for name, value in (("max_batch", max_batch), ("max_body", max_body), ("max_steps", max_steps)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if max_wait_ms < 0:
        raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
    if token is not None and not token:
        raise ValueError("the bearer token is empty")
    if not isinstance(run, StreamingPredictor):
        run = StreamingPredictor(run, store, device=device, engine=engine)
    predictor = run
    metrics = _Metrics(predictor.store)
    batcher = _Batcher(predictor.apply, max_batch, max_wait_ms / 1000, metrics)
    locks = _StreamLocks()
    aux = ThreadPoolExecutor(2, thread_name_prefix="statefulrnn-aux")
    store_errors = _store_errors()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The model, ONNX Runtime and the web stack leave millions of long-lived objects; unfrozen, every
        # full collection scans them all (~100 ms, several times a second under load): the p99 tail.
        gc.collect()
        gc.freeze()
        batcher.start()
        yield
        await batcher.stop()
        aux.shutdown(wait=True)

    app = FastAPI(
        title="statefulrnn",
        version="1",
        description=f"Stateful streams of a {predictor.task} run: one recurrent state per stream, advanced "
        "exactly once per seq.",
        lifespan=lifespan,
    )
    app.state.predictor = predictor
    app.add_middleware(_Guard, token=token, max_body=max_body, metrics=metrics)

    async def off_loop(fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(aux, fn, *args)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors()[:10]:
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {e.get('msg', 'invalid')}")
        return _error(422, "; ".join(problems))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error: {type(exc).__name__}")

    async def guarded(call: Awaitable) -> Any:
        try:
            return await call
        except store_errors as e:
            return _error(503, f"state store unavailable: {type(e).__name__}: {e}")

    errors = {409: {"model": ErrorResponse}, 413: {"model": ErrorResponse}, 422: {"model": ErrorResponse}}

    @app.post("/v1/streams/{stream_id}/step", response_model=StepResponse, responses=errors, tags=["streams"])
    async def step(stream_id: StreamId, body: StepBody) -> Any:
        """Advance a stream by the steps in `inputs`. `seq` must be the stream's next seq (0 for a new
        stream); the same request sent again (a retry) returns the stored outputs without advancing the
        state; any other seq is a 409 naming the expected one."""
        if predictor.task == "text" and (body.series is not None or body.position is not None):
            return _error(422, "series and position apply to series runs only")
        try:
            x = predictor.check_inputs(body.inputs)
        except ValueError as e:
            return _error(422, str(e))
        if len(x) > max_steps:
            return _error(413, f"{len(x)} steps in one request; the limit is {max_steps}")
        request = StepRequest(stream_id, x, body.seq, body.series, body.position)
        async with locks.hold(stream_id):
            result = await guarded(batcher.submit(request))
        if isinstance(result, JSONResponse):
            return result
        if isinstance(result, SeqConflict):
            metrics.conflicts.inc()
            return _error(409, str(result), expected=result.expected)
        if isinstance(result, Contention) or isinstance(result, store_errors):
            return _error(503, str(result))
        if isinstance(result, ValueError):
            return _error(422, str(result))
        if isinstance(result, Exception):
            raise result
        if result.replayed:
            metrics.replays.inc()
        else:
            metrics.steps.inc(len(x))
        return {
            "stream": stream_id,
            "seq": result.seq,
            "steps": result.steps,
            "outputs": json_rows(result.outputs),
            "replayed": result.replayed,
        }

    @app.post("/v1/streams/{stream_id}/reset", response_model=StreamStatus, tags=["streams"])
    async def reset(stream_id: StreamId) -> Any:
        """Zero a stream's state (a new, unrelated sequence starts). Its seq is kept."""
        async with locks.hold(stream_id):
            info = await guarded(off_loop(predictor.reset, stream_id))
        if isinstance(info, JSONResponse):
            return info
        return {"stream": stream_id, "seq": info.seq, "steps": info.steps, "updated_at": info.updated_at}

    @app.get("/v1/streams/{stream_id}", response_model=StreamStatus, responses={404: {"model": ErrorResponse}})
    async def status(stream_id: StreamId) -> Any:
        """Where a stream stands: its next seq, the steps it has seen, when it was last updated."""
        info = await guarded(off_loop(predictor.info, stream_id))
        if isinstance(info, JSONResponse):
            return info
        if info is None:
            return _error(404, f"no stream '{stream_id}'")
        return {"stream": stream_id, "seq": info.seq, "steps": info.steps, "updated_at": info.updated_at}

    @app.delete("/v1/streams/{stream_id}", response_model=Deleted, responses={404: {"model": ErrorResponse}})
    async def delete(stream_id: StreamId) -> Any:
        """Forget a stream: its next step request starts over at seq 0."""
        async with locks.hold(stream_id):
            found = await guarded(off_loop(predictor.forget, stream_id))
        if isinstance(found, JSONResponse):
            return found
        if not found:
            return _error(404, f"no stream '{stream_id}'")
        return {"stream": stream_id, "deleted": True}

    if predictor.task == "text":

        @app.post("/v1/generate", response_model=GenerateResponse, responses=errors, tags=["text"])
        async def generate(body: GenerateBody) -> Any:
            """Sample `n` tokens after `prompt` (the prompt warms a fresh state in one call)."""
            if body.n > max_generate:
                return _error(413, f"n={body.n} tokens; the limit is {max_generate}")
            if len(body.prompt) > max_steps:
                return _error(413, f"the prompt has {len(body.prompt)} characters; the limit is {max_steps}")
            if 0 < body.temperature < 1e-3:
                return _error(422, "temperature must be 0 (greedy) or at least 0.001")
            options = body.model_dump(exclude={"prompt", "n"})
            try:
                text = await off_loop(lambda: predictor.generate(body.prompt, body.n, **options))
            except ValueError as e:
                return _error(422, str(e))
            return {"text": text}

    else:

        @app.post("/v1/forecast", response_model=ForecastResponse, responses=errors, tags=["series"])
        async def forecast(body: ForecastBody) -> Any:
            """Forecast the values after a history (raw values), warming a scratch state in one call."""
            if len(body.history) > max_steps:
                return _error(413, f"{len(body.history)} history steps; the limit is {max_steps}")
            try:
                out = await off_loop(
                    lambda: predictor.forecast(
                        body.history, series=body.series, horizon=body.horizon, position=body.position
                    )
                )
            except ValueError as e:
                return _error(422, str(e))
            return {k: json_rows([v])[0] for k, v in out.items()}

    @app.get("/healthz", tags=["service"])
    async def healthz() -> Any:
        """Liveness and store reachability."""
        result = await guarded(off_loop(predictor.store.ping))
        if isinstance(result, JSONResponse):
            return result
        return {"status": "ok", "task": predictor.task, "store": predictor.store.url.split("@")[-1]}

    @app.get("/metrics", tags=["service"], response_class=Response)
    async def prometheus() -> Response:
        """Prometheus text: requests, latency histogram, batch sizes, streams."""
        body = await off_loop(generate_latest, metrics.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app


def app_from_env() -> FastAPI:
    """App factory for `uvicorn --factory` workers: the `create_app` arguments as JSON in $STATEFULRNN_SERVE."""
    options = json.loads(os.environ[ENV_CONFIG])
    torch.set_num_threads(options.pop("threads", 1))
    token_file = options.pop("token_file", None)
    if token_file:
        options["token"] = read_token(token_file)
    run, store = options.pop("run"), options.pop("store")
    return create_app(run, open_store(store), **options)


def read_token(path: str | FilePath) -> str:
    """The bearer token in a file (surrounding whitespace dropped); an empty file is an error."""
    token = FilePath(path).read_text(encoding="utf-8").strip()
    if not token:
        raise ValueError(f"token file {path} is empty")
    return token
