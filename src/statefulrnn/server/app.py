"""`create_app` (the FastAPI app of one run), `app_from_env` (the `uvicorn --factory` entry of workers)."""

from __future__ import annotations

import json
import os
from pathlib import Path as FilePath

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..stores import StateStore, open_store
from ..stream import StreamingPredictor
from .guard import CLOSE, Guard
from .routes import add_routes
from .schemas import build_bodies
from .service import Limits, Service, error

ENV_CONFIG = "STATEFULRNN_SERVE"


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
    max_generations: int = 2,
    body_timeout: float = 30.0,
    health_timeout: float = 0.5,
    device: str = "cpu",
    engine: str = "torch",
) -> FastAPI:
    """The FastAPI app serving the streams of `run` (a run directory or a ready `StreamingPredictor`).

    `store` is a `StateStore` or URL (default: in memory); `token` requires `Authorization: Bearer TOKEN`
    on everything but /healthz and the docs; `max_batch` and `max_wait_ms` bound micro-batching
    (`max_batch=1` turns it off); `max_body` (bytes), `max_steps` (steps per step request, prompt and
    string-input characters, history values) and `max_generate` (tokens) bound the work one request can
    ask for; `max_generations` bounds the generations running at once (more answer 429); a body must
    arrive within `body_timeout` seconds (408); /healthz gives the store `health_timeout` seconds (503).
    """
    limits = Limits(max_batch, max_wait_ms, max_body, max_steps, max_generate, max_generations, body_timeout,
                    health_timeout)  # fmt: skip
    limits.check()
    if token is not None and not token:
        raise ValueError("the bearer token is empty")
    predictor = (
        run if isinstance(run, StreamingPredictor) else StreamingPredictor(run, store, device=device, engine=engine)
    )
    service = Service(predictor, limits)
    app = FastAPI(
        title="statefulrnn",
        version="1",
        description=f"Stateful streams of a {predictor.task} run: one recurrent state per stream, advanced "
        'exactly once per seq. Every error answers `{"error": ...}`.',
        lifespan=service.lifespan,
    )
    app.state.predictor = predictor
    app.state.service = service
    app.add_middleware(Guard, token=token, max_body=max_body, body_timeout=body_timeout, record=service.metrics.record)
    _add_error_handlers(app)
    bodies = build_bodies(predictor, max_steps=max_steps, max_generate=max_generate)
    add_routes(app, service, bodies, secured=token is not None)

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = bodies.exact_schemas(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error(400, "the body is not valid JSON")
        problems = []
        for e in errors[:10]:
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {e.get('msg', 'invalid')}")
        return error(422, "; ".join(problems))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:  # reached only if the Guard failed
        return error(
            500, f"internal error: {type(exc).__name__}", headers=dict((k.decode(), v.decode()) for k, v in CLOSE)
        )


def app_from_env() -> FastAPI:
    """App factory for `uvicorn --factory` workers: the `create_app` arguments as JSON in $STATEFULRNN_SERVE."""
    import torch

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
