"""Running the app under uvicorn: connection limits, a timeout for request heads, worker supervision.

uvicorn times out idle keep-alive connections but never a connection whose request head is unfinished
(a slow or stalled client holds its socket forever), so `HeadTimeoutProtocol` answers 408 and closes a
connection whose head has not arrived within `timeout_head` seconds. With several workers, uvicorn
kills a worker that misses its health ping (`worker_timeout`, which must cover importing torch and
loading the model) and logs the death at info; `Supervisor` logs it at warning and drops the dead
worker's live gauges.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess

log = logging.getLogger("uvicorn.error")

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is missing: uvicorn's h11 protocol, without the head timeout
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

_HEAD_LATE = b'{"error": "the request head did not arrive in time"}'
_TIMEOUT_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_HEAD_LATE), _HEAD_LATE)
)

if HttpToolsProtocol is not None:

    class HeadTimeoutProtocol(HttpToolsProtocol):  # type: ignore[misc,valid-type]
        """uvicorn's httptools protocol, closing connections whose request head takes too long."""

        def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
            super().__init__(config, *args, **kwargs)
            self.timeout_head = float(getattr(config, "timeout_head", 10.0))
            self._head_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            if self._head_timer is None and self.timeout_head > 0:
                self._head_timer = self.loop.call_later(self.timeout_head, self._head_timed_out)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def timeout_keep_alive_handler(self) -> None:
            self._disarm()
            super().timeout_keep_alive_handler()

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.write(_TIMEOUT_408)
                self.transport.close()

else:  # pragma: no cover
    HeadTimeoutProtocol = None  # type: ignore[assignment,misc]


def uvicorn_config(
    app: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    log_level: str = "warning",
    limit_concurrency: int | None = 1000,
    timeout_keep_alive: int = 5,
    timeout_head: float = 10.0,
    worker_timeout: int = 120,
    factory: bool = False,
) -> uvicorn.Config:
    """The uvicorn config `statefulrnn serve` runs: at most `limit_concurrency` connections and tasks
    (more answer 503), idle keep-alive connections closed after `timeout_keep_alive` s, request heads
    due within `timeout_head` s (408), workers given `worker_timeout` s to answer their health ping."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        factory=factory,
        http=HeadTimeoutProtocol or "h11",
        limit_concurrency=limit_concurrency,
        timeout_keep_alive=timeout_keep_alive,
        timeout_worker_healthcheck=worker_timeout,
        timeout_graceful_shutdown=30,
    )
    config.timeout_head = timeout_head  # read by HeadTimeoutProtocol (travels to spawned workers with the config)
    return config


class Supervisor(Multiprocess):
    """uvicorn's worker supervisor, logging worker deaths at warning and retiring their live gauges."""

    def keep_subprocess_alive(self) -> None:
        before = list(self.processes)
        super().keep_subprocess_alive()
        for process in before:
            if process not in self.processes:
                log.warning(
                    "worker [%s] died (exit code %s) or missed its %s s health ping; starting a replacement",
                    process.pid,
                    process.exitcode,
                    self.config.timeout_worker_healthcheck,
                )
                _mark_dead(process.pid)


def _mark_dead(pid: int | None) -> None:
    try:
        from prometheus_client import multiprocess

        if pid is not None and multiprocess_dir():
            multiprocess.mark_process_dead(pid)
    except Exception:  # pragma: no cover - metrics bookkeeping must not stop supervision
        pass


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def run_server(config: uvicorn.Config) -> None:
    """Serve `config` in this process (one worker) or under `Supervisor` (several)."""
    if config.workers <= 1:
        server = uvicorn.Server(config)
        server.run()
        if not server.started:
            raise SystemExit(STARTUP_FAILURE)
        return
    sock = config.bind_socket()
    try:
        Supervisor(config, sockets=[sock]).run()
    finally:
        sock.close()
