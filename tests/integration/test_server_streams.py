"""Regression tests through the real HTTP service for faults found by fuzzing the stream endpoints:
deeply nested inputs (a RecursionError: a 500 and a long traceback in the log) and per-stream storage
that grew with request length and vocabulary size (a 4,096-character request kept ~1 MB of SQLite)."""

from __future__ import annotations

import logging
import string
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from test_server import ThreadedServer  # uvicorn with the production settings, in a thread

from statefulrnn.model import SequenceModel
from statefulrnn.runs import atomic_write, save_model
from statefulrnn.series import ForecastSpec, n_inputs
from statefulrnn.series.transform import transforms_to_json
from statefulrnn.server import create_app
from statefulrnn.text import Vocab

TEXT = string.printable  # a 100-character vocabulary: 400 bytes of logits per step


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("runs") / "text"
    vocab = Vocab.build(TEXT)
    torch.manual_seed(0)
    model = SequenceModel("lstm", vocab_size=len(vocab), hidden_size=64, num_layers=2, embedding_dim=8)
    save_model(path, model, {"task": "text"})
    vocab.save(path / "vocab.json")
    return path


@pytest.fixture(scope="module")
def series_run(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("runs") / "series"
    spec = ForecastSpec(horizon=3, season=4, diff=1)
    torch.manual_seed(1)
    model = SequenceModel("gru", n_features=n_inputs(spec), n_outputs=3, hidden_size=16, num_layers=1)
    save_model(path, model, {"task": "series", "forecast": asdict(spec), "data": {"read": {}}, "train": {"window": 8}})
    transform = spec.transform().fit(5 + np.sin(np.arange(60)))
    atomic_write(path / "transforms.json", transforms_to_json({"a": transform}).encode())
    return path


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def server_log() -> Iterator[list[logging.LogRecord]]:
    """Everything uvicorn, the app and the library log while a test runs (uvicorn's loggers do not
    propagate to the root logger, so the handler goes on them too)."""
    handler = _Records()
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.error", "statefulrnn")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler.records
    for logger in loggers:
        logger.removeHandler(handler)


def nested_body(depth: int, seq: int = 0) -> bytes:
    return b'{"seq": %d, "inputs": %s1%s}' % (seq, b"[" * depth, b"]" * depth)


@pytest.mark.parametrize("depth", [3, 323, 600, 989])
def test_deeply_nested_inputs_are_a_422_without_a_traceback_in_the_log(text_run, series_run, server_log, depth):
    headers = {"content-type": "application/json"}
    apps = {"text": create_app(text_run, "memory"), "series": create_app(series_run, "memory")}
    for task, app in apps.items():
        with ThreadedServer(app) as url, httpx.Client(timeout=30) as c:
            r = c.post(f"{url}/v1/streams/a/step", content=nested_body(depth), headers=headers)
            # ~1000 deep, the JSON parser itself may give up first: a 400 from the body parser, also fine
            assert r.status_code == 422 or (depth > 900 and r.status_code == 400), (task, depth, r.text[:300])
            error = r.json()["error"]
            assert "\n" not in error and len(error) < 200, error
            assert r.status_code == 400 or "inputs must be" in error, error
            if task == "series":
                history = b'{"history": %s1%s}' % (b"[" * depth, b"]" * depth)
                r = c.post(f"{url}/v1/forecast", content=history, headers=headers)
                assert r.status_code in (400, 422) and "\n" not in r.json()["error"], r.text[:300]
            assert c.get(f"{url}/v1/streams/a").status_code == 404  # nothing was created
    logged = [(r.name, r.levelname, r.getMessage()[:200]) for r in server_log if r.exc_info or r.levelno >= 40]
    assert not logged, logged


def test_a_4096_character_request_keeps_a_small_sqlite_file_and_its_retry_replays(text_run, tmp_path):
    db = tmp_path / "streams.db"
    wal = tmp_path / "streams.db-wal"
    app = create_app(text_run, f"sqlite:///{db}")
    rng = np.random.default_rng(0)
    head = "".join(rng.choice(list(TEXT), 5))
    text = "".join(rng.choice(list(TEXT), 4096))
    with ThreadedServer(app) as url, httpx.Client(timeout=60) as c:
        assert c.post(f"{url}/v1/streams/s/step", json={"seq": 0, "inputs": head}).status_code == 200
        before = db.stat().st_size + wal.stat().st_size
        first = c.post(f"{url}/v1/streams/s/step", json={"seq": 1, "inputs": text})
        assert first.status_code == 200 and not first.json()["replayed"], first.text[:300]
        assert len(first.json()["outputs"]) == 4096 and len(first.json()["outputs"][0]) == len(Vocab.build(TEXT))
        grown = db.stat().st_size + wal.stat().st_size - before
        assert grown < 256 * 1024, f"the store grew by {grown} bytes for one stream"
        again = c.post(f"{url}/v1/streams/s/step", json={"seq": 1, "inputs": text})
        assert again.status_code == 200 and again.json()["replayed"]
        assert again.json()["outputs"] == first.json()["outputs"]
        assert (again.json()["seq"], again.json()["steps"]) == (2, 4101)
        other = c.post(f"{url}/v1/streams/s/step", json={"seq": 1, "inputs": text[:-1]})
        assert other.status_code == 409 and other.json()["expected"] == 2
        stale = c.post(f"{url}/v1/streams/s/step", json={"seq": 0, "inputs": head})
        assert stale.status_code == 409 and stale.json()["expected"] == 2
        assert c.get(f"{url}/v1/streams/s").json()["steps"] == 4101
