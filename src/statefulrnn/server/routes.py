# No `from __future__ import annotations`: FastAPI must see the per-app body models, which are locals.
"""The HTTP routes: streams (step, reset, status, delete), text generation or series forecasts, service.

Limits are checked before any work: lengths (strings count characters) and `n` answer 413 before any
tokenising or conversion; a full set of generation slots answers 429 with Retry-After.
"""

from typing import Annotated, Any

from fastapi import FastAPI, Path, Security
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPBearer

from ..stream import SeqConflict, StepRequest, UnknownStream, json_rows
from .metrics import CONTENT_TYPE_LATEST
from .schemas import (
    STREAM_ID,
    Bodies,
    Deleted,
    ForecastResponse,
    GenerateResponse,
    Health,
    StepResponse,
    StreamStatus,
    error_responses,
)
from .service import Service, error

StreamId = Annotated[str, Path(pattern=STREAM_ID, description="1-128 characters: letters, digits and . _ : ~ -")]
_BEARER = HTTPBearer(auto_error=False, description="the token given to `statefulrnn serve --token-file`")


def add_routes(app: FastAPI, service: Service, bodies: Bodies, *, secured: bool) -> None:
    """Register every route; `secured` declares the bearer scheme (and 401s) on all but /healthz and docs."""
    protected: dict[str, Any] = {"dependencies": [Security(_BEARER)]} if secured else {}
    auth = (401,) if secured else ()
    _stream_routes(app, service, bodies, protected, auth)
    if bodies.generate is not None:
        _generate_route(app, service, bodies, protected, auth)
    else:
        _forecast_route(app, service, bodies, protected, auth)
    _service_routes(app, service, protected, auth)


def _status(stream_id: str, info: Any) -> dict[str, Any]:
    return {"stream": stream_id, "seq": info.seq, "steps": info.steps, "updated_at": info.updated_at}


def _too_long(what: str, value: Any, limit: int) -> JSONResponse | None:
    """413 when a string has more than `limit` characters or a list more than `limit` items."""
    if isinstance(value, str | list) and len(value) > limit:
        unit = "characters" if isinstance(value, str) else "steps"
        return error(413, f"{what} has {len(value)} {unit}; the limit is {limit} (strings count characters)")
    return None


def _stream_routes(app: FastAPI, s: Service, bodies: Bodies, protected: dict, auth: tuple) -> None:
    predictor, limits, metrics = s.predictor, s.limits, s.metrics
    StepBody = bodies.step

    @app.post(
        "/v1/streams/{stream_id}/step",
        response_model=StepResponse,
        responses=error_responses(400, *auth, 408, 409, 413, 422, 503),
        tags=["streams"],
        **protected,
    )
    async def step(stream_id: StreamId, body: StepBody) -> Any:  # type: ignore[valid-type]
        """Advance a stream by the steps in `inputs`. `seq` must be the stream's next seq (0 for a new
        stream); the same request sent again (a retry) returns the stored outputs without advancing the
        state; any other seq is a 409 naming the expected one."""
        if (refused := _too_long("inputs", body.inputs, limits.max_steps)) is not None:
            return refused
        try:
            x = predictor.check_inputs(body.inputs)
        except ValueError as e:
            return error(422, str(e))
        if len(x) > limits.max_steps:
            return error(413, f"{len(x)} steps in one request; the limit is {limits.max_steps}")
        series, position = getattr(body, "series", None), getattr(body, "position", None)  # series runs only
        request = StepRequest(stream_id, x, body.seq, series, position)
        async with s.locks.hold(stream_id):
            result = await s.guarded(s.batcher.submit(request))
        if isinstance(result, JSONResponse):
            return result
        if isinstance(result, SeqConflict):
            metrics.conflicts.inc()
            return error(409, str(result), expected=result.expected)
        if isinstance(result, s.store_errors):  # Contention included
            return error(503, str(result))
        if isinstance(result, ValueError):
            return error(422, str(result))
        if isinstance(result, Exception):
            raise result
        if result.replayed:
            metrics.replays.inc()
        else:
            metrics.steps.inc(len(x))

        def build() -> dict[str, Any]:
            outputs = json_rows(result.outputs)
            return {"stream": stream_id, "seq": result.seq, "steps": result.steps, "outputs": outputs,
                    "replayed": result.replayed}  # fmt: skip

        return await s.answer(build, result.outputs.size)

    @app.post(
        "/v1/streams/{stream_id}/reset",
        response_model=StreamStatus,
        responses=error_responses(*auth, 404, 503),
        tags=["streams"],
        **protected,
    )
    async def reset(stream_id: StreamId) -> Any:
        """Zero a stream's state (a new, unrelated sequence starts). Its seq is kept."""
        async with s.locks.hold(stream_id):
            try:
                info = await s.guarded(s.off_loop(predictor.reset, stream_id))
            except UnknownStream:
                return error(404, f"no stream '{stream_id}'")
        if isinstance(info, JSONResponse):
            return info
        return JSONResponse(_status(stream_id, info))

    @app.get(
        "/v1/streams/{stream_id}",
        response_model=StreamStatus,
        responses=error_responses(*auth, 404, 503),
        tags=["streams"],
        **protected,
    )
    async def status(stream_id: StreamId) -> Any:
        """Where a stream stands: its next seq, the steps it has seen, when it was last updated."""
        info = await s.guarded(s.off_loop(predictor.info, stream_id))
        if isinstance(info, JSONResponse):
            return info
        if info is None:
            return error(404, f"no stream '{stream_id}'")
        return JSONResponse(_status(stream_id, info))

    @app.delete(
        "/v1/streams/{stream_id}",
        response_model=Deleted,
        responses=error_responses(*auth, 404, 503),
        tags=["streams"],
        **protected,
    )
    async def delete(stream_id: StreamId) -> Any:
        """Forget a stream: its next step request starts over at seq 0."""
        async with s.locks.hold(stream_id):
            found = await s.guarded(s.off_loop(predictor.forget, stream_id))
        if isinstance(found, JSONResponse):
            return found
        if not found:
            return error(404, f"no stream '{stream_id}'")
        return JSONResponse({"stream": stream_id, "deleted": True})


def _generate_route(app: FastAPI, s: Service, bodies: Bodies, protected: dict, auth: tuple) -> None:
    predictor, limits = s.predictor, s.limits
    GenerateBody = bodies.generate

    @app.post(
        "/v1/generate",
        response_model=GenerateResponse,
        responses=error_responses(400, *auth, 408, 413, 422, 429),
        tags=["text"],
        **protected,
    )
    async def generate(body: GenerateBody) -> Any:  # type: ignore[valid-type]
        """Sample `n` tokens after `prompt` (the prompt warms a fresh state in one call). At most
        `max_generations` run at once; more answer 429 with Retry-After."""
        if body.n > limits.max_generate:
            return error(413, f"n={body.n} tokens; the limit is {limits.max_generate}")
        if (refused := _too_long("the prompt", body.prompt, limits.max_steps)) is not None:
            return refused
        if 0 < body.temperature < 1e-3:
            return error(422, "temperature must be 0 (greedy) or at least 0.001")
        if not s.slots.try_take():
            s.metrics.refused.inc()
            busy = f"all {limits.max_generations} generation slots are busy; retry later"
            return error(429, busy, headers={"Retry-After": "1"})
        options = body.model_dump(exclude={"prompt", "n"})
        try:
            text = await s.generating(lambda: predictor.generate(body.prompt, body.n, **options))
        except (ValueError, RuntimeError) as e:  # bad prompt tokens, or sampling options with no valid draw
            return error(422, f"cannot sample with these options: {e}")
        return JSONResponse({"text": text})


def _forecast_route(app: FastAPI, s: Service, bodies: Bodies, protected: dict, auth: tuple) -> None:
    predictor, limits = s.predictor, s.limits
    ForecastBody = bodies.forecast

    @app.post(
        "/v1/forecast",
        response_model=ForecastResponse,
        responses=error_responses(400, *auth, 408, 413, 422),
        tags=["series"],
        **protected,
    )
    async def forecast(body: ForecastBody) -> Any:  # type: ignore[valid-type]
        """Forecast the values after a history (raw values), warming a scratch state in one call."""
        if len(body.history) > limits.max_steps:
            return error(413, f"{len(body.history)} history steps; the limit is {limits.max_steps}")
        try:
            out = await s.off_loop(
                lambda: predictor.forecast(
                    body.history, series=body.series, horizon=body.horizon, position=body.position
                )
            )
        except ValueError as e:
            return error(422, str(e))
        return JSONResponse({k: json_rows([v])[0] for k, v in out.items()})


def _service_routes(app: FastAPI, s: Service, protected: dict, auth: tuple) -> None:
    @app.get("/healthz", response_model=Health, responses=error_responses(503), tags=["service"])
    async def healthz() -> Response:
        """Liveness and store reachability (the store is given `health_timeout` seconds to answer)."""
        return await s.health()

    @app.get(
        "/metrics",
        tags=["service"],
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **error_responses(*auth)},
        **protected,
    )
    async def prometheus() -> Response:
        """Prometheus text: requests, latency histogram, batch sizes, generations, streams (all workers)."""
        return Response(await s.scrape(), media_type=CONTENT_TYPE_LATEST)
