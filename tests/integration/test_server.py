"""The real service on 127.0.0.1: uvicorn in a thread and `statefulrnn serve` subprocesses, real SQLite and Redis.

Step inputs here are a function of (stream, seq), so whichever client wins a seq, the stream's history
is the same, and its outputs can be checked against one offline forward pass over all its inputs.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
import torch
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import free_port
from statefulrnn.model import SequenceModel
from statefulrnn.runs import atomic_write, save_model
from statefulrnn.series import ForecastSpec, n_inputs
from statefulrnn.series.transform import transforms_to_json
from statefulrnn.server import STREAM_ID, create_app, uvicorn_config
from statefulrnn.stream import StreamingPredictor
from statefulrnn.text import Vocab

TEXT = "the quick brown fox jumps over the lazy dog.\n"
VOCAB = len(Vocab.build(TEXT))


def token_for(stream: str, seq: int) -> int:
    return (seq * 7 + sum(map(ord, stream))) % VOCAB


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("runs") / "text"
    torch.manual_seed(0)
    vocab = Vocab.build(TEXT)
    model = SequenceModel("lstm", vocab_size=len(vocab), hidden_size=16, num_layers=2, embedding_dim=8)
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
    values = 5 + np.sin(np.arange(60))
    transform = spec.transform().fit(values)
    atomic_write(path / "transforms.json", transforms_to_json({"a": transform, "b": transform}).encode())
    return path


@pytest.fixture(scope="module")
def reference(text_run):
    model = StreamingPredictor(text_run).model

    def outputs(ids: list[int]) -> np.ndarray:
        with torch.no_grad():
            return model(torch.tensor([ids]))[0][0].numpy()

    return outputs


class ThreadedServer:
    """uvicorn serving an app on a free port of 127.0.0.1, in a thread of this process."""

    def __init__(self, app, **limits) -> None:
        self.port = free_port()
        config = uvicorn_config(app, host="127.0.0.1", port=self.port, **limits)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            assert time.time() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def serve(run: Path, store: str, log: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """Start `statefulrnn serve` in its own process group; wait until /healthz answers."""
    port = free_port()
    cmd = [sys.executable, "-m", "statefulrnn", "serve", str(run), "--store", store, "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "ab"), start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen, url: str, log: Path, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"statefulrnn serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"statefulrnn serve did not become ready:\n{log.read_text()}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def step(client: httpx.Client, url: str, stream: str, seq: int, inputs) -> httpx.Response:
    return client.post(f"{url}/v1/streams/{stream}/step", json={"seq": seq, "inputs": inputs})


def race(urls: list[str], stream: str, steps: int, acked: dict, seed: int) -> None:
    """One client: advance `stream` until it has `steps` steps, learning the seq from 409s, retrying 10%."""
    rng = random.Random(seed)
    seq = 0
    with httpx.Client(timeout=30) as client:
        while seq < steps:
            url = rng.choice(urls)
            r = step(client, url, stream, seq, [token_for(stream, seq)])
            if r.status_code == 409:
                seq = min(r.json()["expected"], steps)
                continue
            assert r.status_code == 200, r.text
            body = r.json()
            acked.setdefault((stream, seq), []).append((body["outputs"][0], body["replayed"]))
            if rng.random() < 0.1:
                again = step(client, rng.choice(urls), stream, seq, [token_for(stream, seq)])
                assert again.status_code in (200, 409), again.text
                if again.status_code == 200:
                    assert again.json()["replayed"] and again.json()["outputs"] == body["outputs"]
            seq = body["seq"]


def check_streams(acked: dict, streams: list[str], steps: int, reference) -> None:
    """Every seq was applied once: all answers for a seq agree, each seq has exactly one fresh answer,
    and the outputs equal one offline pass over the stream's inputs."""
    for stream in streams:
        expected = reference([token_for(stream, k) for k in range(steps)])
        for k in range(steps):
            answers = acked[(stream, k)]
            assert sum(not replayed for _, replayed in answers) <= 1, (stream, k, answers)
            for outputs, _ in answers:
                np.testing.assert_allclose(outputs, expected[k], atol=1e-5)


def test_served_outputs_equal_offline_forward_and_requests_are_batched(text_run, reference):
    app = create_app(text_run, "memory", max_batch=32, max_wait_ms=5)
    streams = [f"s{i}" for i in range(16)]
    inputs = {s: [[token_for(s, 3 * k + j) for j in range(1 + (k % 3 == 0) * 2)] for k in range(8)] for s in streams}

    async def client(http: httpx.AsyncClient, url: str, stream: str) -> list:
        out = []
        for seq, ids in enumerate(inputs[stream]):
            r = await http.post(f"{url}/v1/streams/{stream}/step", json={"seq": seq, "inputs": ids})
            assert r.status_code == 200, r.text
            out += r.json()["outputs"]
        return out

    async def load(url: str) -> list:
        import asyncio

        async with httpx.AsyncClient(timeout=30) as http:
            return await asyncio.gather(*(client(http, url, s) for s in streams))

    with ThreadedServer(app) as url:
        import asyncio

        results = asyncio.run(load(url))
        metrics = httpx.get(url + "/metrics").text
        status = httpx.get(url + "/v1/streams/s3").json()
    for stream, outputs in zip(streams, results):
        ids = [i for chunk in inputs[stream] for i in chunk]
        np.testing.assert_allclose(outputs, reference(ids), atol=1e-5)
    assert status["seq"] == 8 and status["steps"] == len([i for c in inputs["s3"] for i in c])
    count = float(metrics.split("statefulrnn_batch_size_count ")[1].split()[0])
    total = float(metrics.split("statefulrnn_batch_size_sum ")[1].split()[0])
    assert total == 16 * 8 and count < total, "concurrent requests for different streams were not batched"
    assert (
        'statefulrnn_requests_total{method="POST",route="/v1/streams/{stream_id}/step",status="200"} 128.0' in metrics
    )
    assert "statefulrnn_streams 16.0" in metrics and "statefulrnn_request_seconds_bucket" in metrics


def test_start_up_freezes_the_loaded_heap_out_of_garbage_collection(text_run):
    """Unfrozen, every full collection rescanned the model and web stack: ~100 ms pauses several times a
    second under load, which were the whole p99 tail of bench/serve_load.py (BENCHMARKS.md)."""
    app = create_app(text_run, "memory")

    async def frozen_while_serving() -> int:
        async with app.router.lifespan_context(app):
            return gc.get_freeze_count()

    gc.unfreeze()
    try:
        assert asyncio.run(frozen_while_serving()) > 10_000
    finally:
        gc.unfreeze()


def test_retries_replay_gaps_conflict_and_stream_lifecycle(text_run, reference, tmp_path):
    app = create_app(text_run, f"sqlite:///{tmp_path / 'streams.db'}")
    with ThreadedServer(app) as url, httpx.Client(timeout=30) as c:
        first = step(c, url, "s", 0, "the")
        assert first.status_code == 200 and first.json()["seq"] == 1 and not first.json()["replayed"]
        again = step(c, url, "s", 0, "the")
        assert again.json()["replayed"] and again.json()["outputs"] == first.json()["outputs"]
        assert c.get(f"{url}/v1/streams/s").json()["steps"] == 3
        other = step(c, url, "s", 0, "fox")
        assert other.status_code == 409 and other.json()["expected"] == 1 and "other inputs" in other.json()["error"]
        for seq in (2, 9):
            gap = step(c, url, "s", seq, "x")
            assert gap.status_code == 409 and gap.json()["expected"] == 1
        second = step(c, url, "s", 1, "fox").json()
        ids = StreamingPredictor(text_run).check_inputs("thefox").tolist()
        np.testing.assert_allclose(first.json()["outputs"] + second["outputs"], reference(ids), atol=1e-5)
        assert c.post(f"{url}/v1/streams/s/reset").json()["seq"] == 2
        dog = StreamingPredictor(text_run).check_inputs("dog").tolist()
        np.testing.assert_allclose(step(c, url, "s", 2, "dog").json()["outputs"], reference(dog), atol=1e-5)
        assert c.delete(f"{url}/v1/streams/s").status_code == 200
        assert c.get(f"{url}/v1/streams/s").status_code == 404
        assert c.delete(f"{url}/v1/streams/s").status_code == 404
        assert step(c, url, "s", 0, "the").json()["outputs"] == first.json()["outputs"]
        text = c.post(f"{url}/v1/generate", json={"prompt": "the ", "n": 12, "seed": 3}).json()["text"]
        assert text == c.post(f"{url}/v1/generate", json={"prompt": "the ", "n": 12, "seed": 3}).json()["text"]
        assert c.get(url + "/healthz").json()["status"] == "ok"
        assert "/v1/streams/{stream_id}/step" in c.get(url + "/openapi.json").json()["paths"]


def test_concurrent_clients_on_one_stream_never_lose_or_double_a_step(text_run, reference):
    app = create_app(text_run, "memory", max_wait_ms=1)
    acked: dict = {}
    with ThreadedServer(app) as url:
        threads = [threading.Thread(target=race, args=([url], "shared", 40, acked, i)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        status = httpx.get(url + "/v1/streams/shared").json()
    assert (status["seq"], status["steps"]) == (40, 40)
    check_streams(acked, ["shared"], 40, reference)


def test_token_ids_lengths_and_sizes_are_checked(text_run):
    app = create_app(text_run, "memory", token="s3cret-token", max_body=4000, max_steps=50, max_generate=20)
    auth = {"Authorization": "Bearer s3cret-token"}
    with ThreadedServer(app) as url, httpx.Client(timeout=30) as c:
        assert step(c, url, "s", 0, [1]).status_code == 401
        r = c.post(f"{url}/v1/streams/s/step", json={"seq": 0, "inputs": [1]}, headers={"Authorization": "Bearer x"})
        assert r.status_code == 401 and "token" in r.json()["error"]
        assert c.get(url + "/metrics").status_code == 401 and c.get(url + "/healthz").status_code == 200
        c.headers.update(auth)
        assert step(c, url, "s", 0, [1]).status_code == 200
        cases = [
            ("a" * 129, {"seq": 0, "inputs": [1]}, 422),
            ("a%20b", {"seq": 0, "inputs": [1]}, 422),
            ("ok", {"seq": 0, "inputs": [VOCAB]}, 422),
            ("ok", {"seq": 0, "inputs": [-1]}, 422),
            ("ok", {"seq": 0, "inputs": "zzz\u00e9"}, 422),
            ("ok", {"seq": 0, "inputs": [1.5]}, 422),
            ("ok", {"seq": 0, "inputs": [True]}, 422),
            ("ok", {"seq": -1, "inputs": [1]}, 422),
            ("ok", {"seq": "0", "inputs": [1]}, 422),
            ("ok", {"seq": 0, "inputs": [1], "extra": 1}, 422),
            ("ok", {"seq": 0, "inputs": [1], "series": "a"}, 422),
            ("ok", {"seq": 0, "inputs": [1] * 51}, 413),
            ("ok", {"seq": 0, "inputs": [1] * 2000}, 413),
        ]
        for stream, body, code in cases:
            r = c.post(f"{url}/v1/streams/{stream}/step", json=body)
            assert r.status_code == code and r.json()["error"], (stream, body, r.status_code, r.text)
        assert c.post(f"{url}/v1/generate", json={"n": 21}).status_code == 413
        assert c.post(f"{url}/v1/generate", json={"n": 5, "temperature": 1e-9}).status_code == 422
        r = c.post(f"{url}/v1/streams/ok/step", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code in (400, 422) and r.json()["error"]
        assert c.get(f"{url}/v1/streams/ok").status_code == 404


def test_series_streams_forecast_in_original_units(series_run):
    p = StreamingPredictor(series_run)
    values = (5 + np.sin(np.arange(40) * 0.5)).tolist()
    app = create_app(p)
    with ThreadedServer(app) as url, httpx.Client(timeout=30) as c:
        r = c.post(f"{url}/v1/streams/a/step", json={"seq": 0, "inputs": values[:1]}).json()
        assert r["outputs"] == [[None, None, None]]
        rest = c.post(f"{url}/v1/streams/a/step", json={"seq": 1, "inputs": values[1:]}).json()["outputs"]
        forecast = c.post(f"{url}/v1/forecast", json={"history": values, "series": "a"}).json()
        assert c.post(f"{url}/v1/forecast", json={"history": values[:1], "series": "a"}).status_code == 422
        cold = c.post(f"{url}/v1/streams/new/step", json={"seq": 0, "inputs": values})
        assert cold.status_code == 422 and "series" in cold.json()["error"]
        named = c.post(f"{url}/v1/streams/new/step", json={"seq": 0, "inputs": values, "series": "b"})
        assert named.status_code == 200
    np.testing.assert_allclose(forecast["forecast"], rest[-1], rtol=1e-5)
    np.testing.assert_allclose(named.json()["outputs"][1:], rest, rtol=1e-5)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)
STREAMS = st.from_regex(STREAM_ID, fullmatch=True) | st.text(max_size=140)
STEP_BODIES = st.fixed_dictionaries(
    {
        "seq": st.integers(-2, 3) | st.integers() | JSON,
        "inputs": st.lists(st.integers(-2, VOCAB + 2) | st.integers() | st.floats() | JSON, max_size=8)
        | st.text(max_size=12)
        | JSON,
    },
    optional={"series": JSON, "position": st.integers() | JSON},
)
GENERATE_BODIES = st.fixed_dictionaries(
    {},
    optional={
        "prompt": st.text(alphabet=TEXT + "\u00e9", max_size=20) | JSON,
        "n": st.integers(-2, 40) | JSON,
        "temperature": st.floats() | JSON,
        "top_k": st.integers(-2, 100) | JSON,
        "top_p": st.floats() | JSON,
        "seed": st.integers() | JSON,
    },
)
FORECAST_BODIES = st.fixed_dictionaries(
    {"history": st.lists(st.floats() | st.integers() | JSON, max_size=12) | JSON},
    optional={"series": st.sampled_from(["a", "b", "zz"]) | JSON, "horizon": st.integers(-1, 5) | JSON},
)


def _body(data) -> bytes:
    return data if isinstance(data, bytes) else json.dumps(data).encode()


def _fuzz(url: str, requests) -> None:
    with httpx.Client(timeout=30) as c:
        for method, path, data in requests:
            r = c.request(method, url + path, content=_body(data), headers={"content-type": "application/json"})
            assert r.status_code < 500, (method, path, data, r.status_code, r.text)
            if r.status_code >= 400:
                assert r.json()["error"]


def test_fuzzed_requests_never_give_a_500(text_run, series_run):
    text_app = create_app(text_run, "memory", max_generate=30, max_body=20_000)
    series_app = create_app(series_run, "memory")
    with ThreadedServer(text_app) as text_url, ThreadedServer(series_app) as series_url:

        @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(
            st.lists(
                st.tuples(st.just("POST"), STREAMS.map(lambda s: f"/v1/streams/{quote(s, safe='')}/step"), STEP_BODIES)
                | st.tuples(st.sampled_from(["POST", "GET", "DELETE"]), st.just("/v1/generate"), GENERATE_BODIES)
                | st.tuples(
                    st.sampled_from(["POST", "GET", "DELETE", "PUT"]),
                    STREAMS.map(lambda s: "/" + quote(s, safe="")),
                    JSON | st.binary(),
                ),
                min_size=1,
                max_size=3,
            ),
            STREAMS,
        )
        def text_requests(requests, stream):
            sid = quote(stream, safe="")
            _fuzz(text_url, requests + [("POST", f"/v1/streams/{sid}/reset", b""), ("GET", f"/v1/streams/{sid}", b"")])

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(
            st.lists(
                st.tuples(st.just("POST"), st.just("/v1/streams/a/step"), STEP_BODIES)
                | st.tuples(st.just("POST"), st.just("/v1/forecast"), FORECAST_BODIES),
                min_size=1,
                max_size=3,
            )
        )
        def series_requests(requests):
            _fuzz(series_url, requests)

        text_requests()
        series_requests()


def test_kill_9_mid_load_then_restart_keeps_every_acknowledged_step(text_run, reference, tmp_path):
    store, log = f"sqlite:///{tmp_path / 'streams.db'}", tmp_path / "serve.log"
    streams, steps = [f"k{i}" for i in range(4)], 60
    proc, url = serve(text_run, store, log)
    acked: dict = {}
    sent: dict = {}
    try:
        wait_ready(proc, url, log)

        def load(stream: str) -> None:
            with httpx.Client(timeout=10) as client:
                for seq in range(steps):
                    sent[stream] = seq
                    try:
                        r = step(client, url, stream, seq, [token_for(stream, seq)])
                    except httpx.TransportError:
                        return
                    assert r.status_code == 200, r.text
                    acked.setdefault((stream, seq), []).append((r.json()["outputs"][0], r.json()["replayed"]))

        threads = [threading.Thread(target=load, args=(s,)) for s in streams]
        for t in threads:
            t.start()
        deadline = time.time() + 20
        while len(acked) < 40 and time.time() < deadline:
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        for t in threads:
            t.join(15)
    finally:
        stop(proc)
    assert 0 < len(acked) < len(streams) * steps, "kill -9 should land mid-load"
    proc, url = serve(text_run, store, log)
    try:
        wait_ready(proc, url, log)
        with httpx.Client(timeout=30) as client:
            for stream in streams:
                done = sum(1 for s, _ in acked if s == stream)
                seq = client.get(f"{url}/v1/streams/{stream}").json()["seq"] if done else 0
                assert done <= seq <= done + 1, (stream, done, seq)  # acked steps survived; at most the one in flight
                for k in range(done, steps):
                    r = step(client, url, stream, k, [token_for(stream, k)])
                    assert r.status_code == 200 and r.json()["replayed"] == (k < seq), r.text
                    acked.setdefault((stream, k), []).append((r.json()["outputs"][0], r.json()["replayed"]))
                assert client.get(f"{url}/v1/streams/{stream}").json()["steps"] == steps
    finally:
        stop(proc)
    check_streams(acked, streams, steps, reference)


def test_two_server_processes_share_streams_through_redis(text_run, reference, redis_url, tmp_path):
    a, url_a = serve(text_run, redis_url, tmp_path / "a.log", "--workers", "2")
    b, url_b = serve(text_run, redis_url, tmp_path / "b.log")
    try:
        wait_ready(a, url_a, tmp_path / "a.log")
        wait_ready(b, url_b, tmp_path / "b.log")
        acked: dict = {}
        streams = ["r0", "r1", "r2"]
        threads = [threading.Thread(target=race, args=([url_a, url_b], streams[i % 3], 25, acked, i)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for stream in streams:
            assert httpx.get(f"{url_a}/v1/streams/{stream}").json()["steps"] == 25
            assert httpx.get(f"{url_b}/v1/streams/{stream}").json()["seq"] == 25
    finally:
        stop(a)
        stop(b)
    check_streams(acked, streams, 25, reference)
