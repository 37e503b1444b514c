"""The HTTP service around `StreamingPredictor`: routes, validation, micro-batching, metrics. No model code.

    app.py       create_app, app_from_env (uvicorn --factory workers), read_token
    schemas.py   request and response bodies (request bodies carry the app's limits)
    routes.py    the routes
    service.py   thread pools, limits, health probes, JSON encoding
    batching.py  the micro-batcher, per-stream locks, generation slots
    guard.py     ASGI middleware: bearer token, body limit and timeout, request metrics, 500s
    metrics.py   Prometheus (multiprocess-aware)
    runner.py    uvicorn configuration: connection limits, head timeout, worker supervision

Step requests for different streams that arrive together are gathered (up to `max_batch`, waiting at
most `max_wait_ms` for more) and applied in one fused model call and one store transaction; requests
for the same stream are serialised. A step is answered only after its state is committed.
"""

from .app import ENV_CONFIG, app_from_env, create_app, read_token
from .runner import run_server, uvicorn_config
from .schemas import STREAM_ID, ErrorResponse

__all__ = ["ENV_CONFIG", "STREAM_ID", "ErrorResponse", "app_from_env", "create_app", "read_token", "run_server",
           "uvicorn_config"]  # fmt: skip
