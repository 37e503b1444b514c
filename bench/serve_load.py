"""Load on `statefulrnn serve`: N concurrent clients x M streams on loopback, 10% of requests retried.

A real `statefulrnn serve` process (one worker, SQLite store by default) serves a text run; one client
process drives it with N asyncio connections (HTTP/1.1 keep-alive, a minimal client so that the load
generator costs little CPU). Each client owns M/N streams and steps them in turn, one token per
request, with seq numbers; after 10% of answers it sends the same request again, which must come back
replayed. Reported per mode: step requests/s, p50/p99 latency, mean batch size (from /metrics), the
server's CPU time per request (a figure that shared or busy CPUs distort less than throughput), and
the check that every stream's committed seq equals its acknowledged steps and that its final state
equals a sequential reference (an offline forward pass over its whole input). The same load is then
served with micro-batching off (--max-batch 1).

    python bench/serve_load.py                       # 2 x 10 s
    python bench/serve_load.py --clients 64 --streams 256 --seconds 20 --store memory --json
    python bench/serve_load.py --store 'sqlite?synchronous=normal'   # durable against kill -9, not power loss
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

try:
    from statefulrnn.runs import save_model
except ImportError:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from statefulrnn.runs import save_model
from statefulrnn.model import SequenceModel
from statefulrnn.stream import StreamingPredictor
from statefulrnn.text import Vocab

TEXT = "The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs!\n"


def make_run(path: Path, hidden: int, layers: int) -> Path:
    """A text run with an untrained model (serving cost does not depend on the weights)."""
    torch.manual_seed(0)
    vocab = Vocab.build(TEXT)
    model = SequenceModel("lstm", vocab_size=len(vocab), hidden_size=hidden, num_layers=layers, embedding_dim=64)
    save_model(path, model, {"task": "text"})
    vocab.save(path / "vocab.json")
    return path


def token_for(stream: str, seq: int, vocab: int) -> int:
    return (seq * 7 + sum(map(ord, stream))) % vocab


class Connection:
    """One keep-alive HTTP/1.1 connection that sends a request and reads one Content-Length response."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        self.writer.write(f"{head}content-length: {len(body)}\r\n\r\n".encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def drive(port: int, clients: int, streams: list[str], seconds: float, vocab: int, seed: int) -> dict:
    """Run the load; per stream the acknowledged steps, and all latencies."""
    acked = {s: 0 for s in streams}
    latencies: list[float] = []
    errors = {"replay_mismatch": 0, "unexpected": 0}
    stop_at = time.perf_counter() + seconds

    async def client(k: int) -> None:
        rng = random.Random(seed + k)
        mine = streams[k::clients]
        conn = await Connection.open(port)
        try:
            i = 0
            while time.perf_counter() < stop_at:
                stream = mine[i % len(mine)]
                i += 1
                seq = acked[stream]
                body = json.dumps({"seq": seq, "inputs": [token_for(stream, seq, vocab)]}).encode()
                path = f"/v1/streams/{stream}/step"
                t0 = time.perf_counter()
                status, answer = await conn.request("POST", path, body)
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    errors["unexpected"] += 1
                    continue
                acked[stream] = seq + 1
                if rng.random() < 0.1:
                    t0 = time.perf_counter()
                    status, again = await conn.request("POST", path, body)
                    latencies.append(time.perf_counter() - t0)
                    replay = json.loads(again) if status == 200 else {}
                    if not replay.get("replayed") or replay["outputs"] != json.loads(answer)["outputs"]:
                        errors["replay_mismatch"] += 1
        finally:
            conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    return {"acked": acked, "latencies": latencies, "elapsed": time.perf_counter() - start, **errors}


async def final_check(port: int, streams: list[str], acked: dict, predictor: StreamingPredictor) -> dict:
    """Committed seq == acknowledged steps for every stream, and each final state equals the reference's."""
    conn = await Connection.open(port)
    lost_or_doubled, state_mismatch, worst = 0, 0, 0.0
    vocab = len(predictor.vocab)
    try:
        for stream in streams:
            n = acked[stream]
            if n == 0:
                continue
            status, body = await conn.request("GET", f"/v1/streams/{stream}")
            if status != 200 or json.loads(body)["seq"] != n:
                lost_or_doubled += 1
                continue
            probe = token_for(stream, n, vocab)
            status, body = await conn.request(
                "POST", f"/v1/streams/{stream}/step", json.dumps({"seq": n, "inputs": [probe]}).encode()
            )
            served = np.asarray(json.loads(body)["outputs"][0])
            ids = [token_for(stream, k, vocab) for k in range(n)] + [probe]
            with torch.no_grad():
                expected = predictor.model(torch.tensor([ids]))[0][0, -1].numpy()
            gap = float(np.abs(served - expected).max())
            worst = max(worst, gap)
            state_mismatch += gap > 1e-4
    finally:
        conn.close()
    return {"lost_or_doubled": lost_or_doubled, "state_mismatch": state_mismatch, "max_abs_diff": worst}


def batch_mean(port: int) -> float:
    async def fetch() -> str:
        conn = await Connection.open(port)
        try:
            return (await conn.request("GET", "/metrics"))[1].decode()
        finally:
            conn.close()

    text = asyncio.run(fetch())
    total = float(text.split("statefulrnn_batch_size_sum ")[1].split()[0])
    count = float(text.split("statefulrnn_batch_size_count ")[1].split()[0])
    return total / max(count, 1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(
    run: Path, store: str, port: int, max_batch: int, max_wait_ms: float, log: Path, engine: str = "auto"
) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "statefulrnn", "serve", str(run), "--store", store, "--port", str(port)]
    cmd += ["--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms), "--engine", engine]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "wb"), start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"statefulrnn serve exited:\n{log.read_text()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("statefulrnn serve did not start")


def measure(args: argparse.Namespace, run: Path, workdir: Path, max_batch: int) -> dict:
    store = args.store
    base, _, query = store.partition("?")
    if base == "sqlite":
        store = f"sqlite:///{workdir / f'streams-{max_batch}.db'}" + (f"?{query}" if query else "")
    port = free_port()
    proc = serve(run, store, port, max_batch, args.max_wait_ms, workdir / f"serve-{max_batch}.log", args.engine)
    try:
        streams = [f"s{i}" for i in range(args.streams)]
        predictor = StreamingPredictor(run)
        gc.collect()
        gc.freeze()  # as the server does: the load generator's own GC pauses must not count as latency
        cpu = cpu_seconds(proc.pid)
        load = asyncio.run(drive(port, args.clients, streams, args.seconds, len(predictor.vocab), args.seed))
        cpu = cpu_seconds(proc.pid) - cpu
        batch = batch_mean(port)
        check = asyncio.run(final_check(port, streams, load["acked"], predictor))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    lat = np.asarray(load["latencies"]) * 1000
    return {
        "max_batch": max_batch,
        "requests": len(lat),
        "requests_per_s": len(lat) / load["elapsed"],
        "steps_acked": sum(load["acked"].values()),
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "mean_batch": batch,
        "server_cpu_ms_per_request": cpu * 1000 / len(lat),
        "unexpected_status": load["unexpected"],
        "replay_mismatch": load["replay_mismatch"],
        **check,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=64, help="concurrent clients (connections)")
    p.add_argument("--streams", type=int, default=256, help="streams, shared out among the clients")
    p.add_argument("--seconds", type=float, default=10.0, help="load time per mode")
    p.add_argument(
        "--store",
        default="sqlite",
        help="sqlite[?synchronous=normal] (a fresh file per mode), memory, or a redis:// URL",
    )
    p.add_argument("--hidden", type=int, default=256, help="LSTM units per layer")
    p.add_argument("--layers", type=int, default=2, help="LSTM layers")
    p.add_argument("--max-batch", type=int, default=64, help="the server's --max-batch with micro-batching on")
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="micro-batching wait")
    p.add_argument("--run", type=Path, default=None, help="serve this text run instead of a generated one")
    p.add_argument("--engine", choices=("torch", "onnx", "auto"), default="auto", help="the server's --engine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print results as JSON")
    args = p.parse_args()
    if args.streams < args.clients:
        p.error("--streams must be at least --clients (each client owns its streams)")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        run = args.run or make_run(workdir / "run", args.hidden, args.layers)
        results = [measure(args, run, workdir, args.max_batch), measure(args, run, workdir, 1)]
    if args.json:
        print(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2))
        return
    print(
        f"{args.clients} clients x {args.streams} streams, {args.seconds:.0f} s per mode, store {args.store}, "
        f"LSTM {args.layers}x{args.hidden}, {os.cpu_count()} CPUs"
    )
    head = f"{'micro-batching':<16} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'batch':>6} "
    head += f"{'cpu ms/req':>10} {'lost/doubled':>13} {'state':>6}"
    print(head + "\n" + "-" * len(head))
    for r in results:
        mode = f"on ({r['max_batch']})" if r["max_batch"] > 1 else "off"
        ok = "ok" if r["state_mismatch"] == 0 and r["replay_mismatch"] == 0 and r["unexpected_status"] == 0 else "FAIL"
        print(
            f"{mode:<16} {r['requests_per_s']:8.0f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['mean_batch']:6.1f} "
            f"{r['server_cpu_ms_per_request']:10.2f} {r['lost_or_doubled']:13d} {ok:>6}"
        )


if __name__ == "__main__":
    main()
