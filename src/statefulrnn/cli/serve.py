"""`statefulrnn serve`: argument parsing only; the service is `statefulrnn.server.create_app`."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .common import add_command


def add_serve_command(commands: argparse._SubParsersAction) -> None:
    """Register `statefulrnn serve RUN [--store URL] [--host H --port P --workers N] ...`."""
    p = add_command(
        commands,
        "serve",
        "serve a run over HTTP: one carried state per live stream, exactly once, durable",
        description="Serve a text or series run with FastAPI and uvicorn. Each stream (a sensor, a user, a chat) "
        'keeps its own recurrent state in the store; POST /v1/streams/ID/step with {"seq": n, "inputs": [...]} '
        "advances it exactly once per seq. Requests for different streams are micro-batched into one model call. "
        "The API is described at /docs.",
    )
    p.add_argument("run_dir", type=Path, help="run directory of a text or series run")
    p.add_argument(
        "--store",
        default=None,
        help="memory | sqlite:///PATH (four slashes for an absolute path) | redis://HOST:PORT/DB[?ttl=SECONDS] "
        "(default: sqlite:///RUN/streams.db)",
    )
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--workers", type=int, default=1, help="server processes (they share streams through the store)")
    p.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="require 'Authorization: Bearer TOKEN' (TOKEN read from this file)",
    )
    p.add_argument(
        "--max-batch", type=int, default=64, help="most step requests in one fused model call (1: no batching)"
    )
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="longest wait for more requests to fill a batch")
    p.add_argument("--max-body", type=int, default=1 << 20, help="largest request body in bytes")
    p.add_argument(
        "--max-steps",
        type=int,
        default=4096,
        help="most time steps in one step request; also the most characters of a string input or prompt and "
        "the most history values of a forecast (longer: 413 before any work)",
    )
    p.add_argument("--max-generate", type=int, default=2000, help="most tokens one /v1/generate may ask for")
    p.add_argument(
        "--max-generations",
        type=int,
        default=2,
        help="generations running at once per worker; more answer 429 with Retry-After",
    )
    p.add_argument(
        "--limit-concurrency",
        type=int,
        default=1000,
        help="most open connections and requests per worker; more answer 503",
    )
    p.add_argument("--timeout-keep-alive", type=int, default=5, help="seconds an idle keep-alive connection is kept")
    p.add_argument(
        "--timeout-head",
        type=float,
        default=10.0,
        help="seconds a client has to send a request's head (then 408 and the connection is closed)",
    )
    p.add_argument("--timeout-body", type=float, default=30.0, help="seconds a client has to send a request's body")
    p.add_argument(
        "--worker-timeout",
        type=int,
        default=120,
        help="seconds a worker may take to answer the supervisor's health ping, start-up (importing torch, "
        "loading the model) included, before it is killed and replaced",
    )
    p.add_argument("--threads", type=int, default=1, help="PyTorch threads per worker")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument(
        "--engine",
        choices=("torch", "onnx", "auto"),
        default="auto",
        help="what steps the model: auto = ONNX Runtime on CPU when installed (statefulrnn[onnx]), else PyTorch",
    )
    p.add_argument(
        "--log-level",
        default="warning",
        choices=("critical", "error", "warning", "info", "debug"),
        help="uvicorn's log level",
    )
    p.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: F401

        from ..server import ENV_CONFIG, create_app, read_token, run_server, uvicorn_config
    except ImportError as e:
        raise ValueError(
            f"serving needs the serve extra ({e.name} is missing): pip install 'statefulrnn[serve]'"
        ) from None
    import torch

    for name in ("workers", "threads", "max_generations", "limit_concurrency", "worker_timeout"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port} is not a TCP port")
    store = args.store or f"sqlite:///{args.run_dir / 'streams.db'}"
    if args.workers > 1 and store.startswith("memory"):
        raise ValueError("several workers cannot share a memory store: use sqlite:///PATH or redis://HOST:PORT/DB")
    torch.set_num_threads(args.threads)
    options = {
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "max_body": args.max_body,
        "max_steps": args.max_steps,
        "max_generate": args.max_generate,
        "max_generations": args.max_generations,
        "body_timeout": args.timeout_body,
        "device": args.device,
        "engine": args.engine,
    }
    token = None if args.token_file is None else read_token(args.token_file)
    app = create_app(args.run_dir, store, token=token, **options)  # fails here, once, on a bad run or store
    where = f"http://{args.host}:{args.port}"
    print(
        f"statefulrnn: serving {args.run_dir} ({app.state.predictor.task} run) on {where} with store "
        f"{store.split('@')[-1]}, {args.workers} worker(s); API docs at {where}/docs",
        file=sys.stderr,
        flush=True,
    )
    limits = {
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level,
        "limit_concurrency": args.limit_concurrency,
        "timeout_keep_alive": args.timeout_keep_alive,
        "timeout_head": args.timeout_head,
        "worker_timeout": args.worker_timeout,
    }
    if args.workers == 1:
        run_server(uvicorn_config(app, **limits))
        return 0
    app.state.predictor.store.close()
    config = {"run": str(args.run_dir), "store": store, "token_file": args.token_file and str(args.token_file)}
    os.environ[ENV_CONFIG] = json.dumps({**config, **options, "threads": args.threads})
    # Workers count into files of a fresh directory, so that a scrape of any worker reports all of them.
    metrics_dir = tempfile.mkdtemp(prefix="statefulrnn-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        run_server(uvicorn_config("statefulrnn.server:app_from_env", factory=True, workers=args.workers, **limits))
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
