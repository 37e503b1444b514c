"""Streaming step latency of the engines: one stream at a time, and many streams stepped together.

Model: the benchmark model (vocab 65, embedding 64, 2-layer LSTM 256, linear head), random weights.
Contenders, interleaved in a fresh random order in every repeat so that machine drift hits them alike:

    torch+onednn   TorchEngine with oneDNN's RNN kernel forced on (PyTorch's CPU default)
    torch-onednn   TorchEngine with oneDNN forced off
    torch          TorchEngine with its own per-call choice (engines.torch.use_onednn)
    onnx           OnnxEngine (ONNX Runtime, CPU provider) on the exported step model
    onnx-raw       the same ONNX Runtime session called directly with numpy state, no engine around it

Single stream: batch 1, one token per call, the state carried from call to call; p50/p99 per call.
The same single-stream load also goes through the whole `StreamingPredictor` (ONNX engine, every call
with its `seq`, so the exactly-once check and a store commit are in the path) with the memory store and
with a real SQLite file at `synchronous=full` (the default: survives power loss) and `normal` (survives
kill -9 of the process, not of the machine).
Many streams: 1,024 lanes stepped one token together; stream-steps/s, against the GEMM-bound rate: the
matrix multiplies one step of 1,024 lanes needs (input and recurrent projections of both layers, the
head), each timed alone at its shape with torch and numpy, the faster kept. `--grid` also times oneDNN
on/off over lanes x steps per call, the measurement behind `use_onednn`.

    python bench/step_latency.py                     # about a minute on 2 cores (3-4 with --grid)
    python bench/step_latency.py --grid --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

try:
    from statefulrnn import SequenceModel
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from statefulrnn import SequenceModel
from compute_limit import gemm_seconds  # bench/ is on sys.path when a script in it runs
from statefulrnn.engines.onnx import OnnxEngine
from statefulrnn.engines.torch import TorchEngine
from statefulrnn.export import model_to_onnx
from statefulrnn.runs import save_model
from statefulrnn.stream import StreamingPredictor
from statefulrnn.text import Vocab

VOCAB, EMBEDDING, HIDDEN, LAYERS = 65, 64, 256, 2


class RawOnnx:
    """ONNX Runtime called directly: numpy state in and out, the floor for any engine."""

    name = "onnx-raw"

    def __init__(self, session) -> None:
        self.session = session

    def initial_state(self, lanes: int) -> tuple[np.ndarray, np.ndarray]:
        zeros = np.zeros((LAYERS, lanes, HIDDEN), np.float32)
        return zeros, zeros.copy()

    def step(self, state: tuple[np.ndarray, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, tuple]:
        y, h, c = self.session.run(None, {"inputs": x, "h": state[0], "c": state[1]})
        return y, (h, c)


class Predictor:
    """One stream through `StreamingPredictor.step` with its seq: engine, exactly-once check and store commit."""

    def __init__(self, name: str, predictor: StreamingPredictor) -> None:
        self.name, self.predictor, self.streams = name, predictor, 0

    def initial_state(self, lanes: int) -> tuple[str, int]:
        assert lanes == 1, "the predictor contenders time one stream"
        self.streams += 1
        return f"s{self.streams}", 0

    def step(self, state: tuple[str, int], x: np.ndarray) -> tuple[np.ndarray, tuple[str, int]]:
        stream, seq = state
        return self.predictor.step(stream, x[0], seq=seq), (stream, seq + 1)


def benchmark_run(model: SequenceModel, where: Path) -> Path:
    """The benchmark model saved as a text run over a 65-character vocabulary."""
    alphabet = "".join(chr(c) for c in range(48, 48 + VOCAB))
    save_model(where, model, {"task": "text"})
    Vocab.build(alphabet).save(where / "vocab.json")
    return where


def contenders(model: SequenceModel, threads: int, workdir: Path) -> dict:
    onnx = OnnxEngine(model_to_onnx(model), (model.cell, LAYERS, HIDDEN), threads=threads)
    run = benchmark_run(model, workdir / "run")
    stores = {
        "memory": "memory",
        "sqlite-full": f"sqlite:///{workdir}/full.db",
        "sqlite-normal": f"sqlite:///{workdir}/normal.db?synchronous=normal",
    }
    return {
        "torch+onednn": TorchEngine(model, onednn=True),
        "torch-onednn": TorchEngine(model, onednn=False),
        "torch": TorchEngine(model),
        "onnx": onnx,
        "onnx-raw": RawOnnx(onnx.session),
        **{
            f"predictor+{name}": Predictor(f"predictor+{name}", StreamingPredictor(run, url, engine=onnx))
            for name, url in stores.items()
        },
    }


def inputs_for(engine, lanes: int, steps: int, rng: np.random.Generator):
    x = rng.integers(0, VOCAB, (lanes, steps), dtype=np.int64)
    return x if isinstance(engine, (RawOnnx, Predictor)) else torch.from_numpy(x)


def gemm_shapes(lanes: int, fused: bool) -> list[tuple[int, int, int]]:
    """(m, k, n) of the matrix multiplies in one step of `lanes` streams: per layer the input and recurrent
    projections to the 4 gates (`fused`: as one multiply of [x, h]), then the head."""
    shapes, width = [], EMBEDDING
    for _ in range(LAYERS):
        if fused:
            shapes.append((lanes, width + HIDDEN, 4 * HIDDEN))
        else:
            shapes += [(lanes, width, 4 * HIDDEN), (lanes, HIDDEN, 4 * HIDDEN)]
        width = HIDDEN
    return shapes + [(lanes, HIDDEN, VOCAB)]


def gemm_bound(lanes: int, repeats: int) -> dict:
    """Stream-steps/s if a step cost nothing but its float32 matrix multiplies, split or fused, each shape
    with the faster of torch.mm and oneDNN (`compute_limit.gemm_seconds`); and with torch.mm only."""
    best = mm = None
    for fused in (False, True):
        times = [gemm_seconds(m, k, n, repeats) for m, k, n in gemm_shapes(lanes, fused)]
        fastest, blas = sum(min(t.values()) for t in times), sum(t["torch.mm"] for t in times)
        best = fastest if best is None else min(best, fastest)
        mm = blas if mm is None else min(mm, blas)
    flops = sum(2 * m * k * n for m, k, n in gemm_shapes(lanes, False))
    return {
        "stream_steps_per_s": lanes / best,
        "gflops": flops / best / 1e9,
        "torch_mm_stream_steps_per_s": lanes / mm,
        "flops_per_stream_step": flops // lanes,
    }


def time_calls(engine, lanes: int, steps: int, calls: int, rng: np.random.Generator) -> list[float]:
    """Seconds per call over `calls` calls, the state carried from each call to the next."""
    state = engine.initial_state(lanes)
    xs = [inputs_for(engine, lanes, steps, rng) for _ in range(8)]
    out = []
    for i in range(calls):
        t = time.perf_counter()
        _, state = engine.step(state, xs[i % 8])
        out.append(time.perf_counter() - t)
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def single_stream(engines: dict, repeats: int, calls: int, rng: np.random.Generator) -> dict:
    samples: dict[str, list[float]] = {name: [] for name in engines}
    for e in engines.values():
        time_calls(e, 1, 1, 50, rng)
    for _ in range(repeats):
        for name in random.sample(list(engines), len(engines)):
            samples[name] += time_calls(engines[name], 1, 1, calls, rng)
    return {
        name: {"p50_us": pct(s, 50) * 1e6, "p99_us": pct(s, 99) * 1e6, "calls": len(s)} for name, s in samples.items()
    }


def many_streams(engines: dict, lanes: int, repeats: int, calls: int, rng: np.random.Generator) -> dict:
    """Stream-steps/s per repeat (median of its calls), and the p50/p99 of every call's time."""
    rates: dict[str, list[float]] = {name: [] for name in engines}
    times: dict[str, list[float]] = {name: [] for name in engines}
    for e in engines.values():
        time_calls(e, lanes, 1, 3, rng)
    for _ in range(repeats):
        for name in random.sample(list(engines), len(engines)):
            t = time_calls(engines[name], lanes, 1, calls, rng)
            rates[name].append(lanes / statistics.median(t))
            times[name] += t
    return {
        name: {
            "median": statistics.median(r),
            "min": min(r),
            "max": max(r),
            "repeats": len(r),
            "call_p50_ms": pct(times[name], 50) * 1e3,
            "call_p99_ms": pct(times[name], 99) * 1e3,
        }
        for name, r in rates.items()
    }


def onednn_grid(model: SequenceModel, repeats: int, rng: np.random.Generator) -> list[dict]:
    """Median seconds per call with oneDNN on and off, per (lanes, steps): the crossover `use_onednn` encodes."""
    rows = []
    for lanes in (1, 16, 64, 256, 1024):
        for steps in (1, 4, 16, 64):
            if lanes * steps > 16384:
                continue
            calls = max(3, min(40, 1500 // (lanes * steps)))
            times: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(repeats):
                for flag in random.sample([True, False], 2):
                    e = TorchEngine(model, onednn=flag)
                    time_calls(e, lanes, steps, 2, rng)
                    times[flag].append(statistics.median(time_calls(e, lanes, steps, calls, rng)))
            on, off = statistics.median(times[True]), statistics.median(times[False])
            rows.append(
                {"lanes": lanes, "steps": steps, "on_us": on * 1e6, "off_us": off * 1e6, "off_over_on": off / on}
            )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads (serve's default: 1)")
    p.add_argument("--repeats", type=int, default=10, help="interleaved repeats per measurement")
    p.add_argument("--calls", type=int, default=200, help="single-stream calls per contender per repeat")
    p.add_argument("--lanes", type=int, default=1024, help="streams stepped together")
    p.add_argument("--lane-calls", type=int, default=10, help="many-stream calls per contender per repeat")
    p.add_argument("--grid", action="store_true", help="also time oneDNN on/off over lanes x steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write every number as JSON here")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = SequenceModel("lstm", vocab_size=VOCAB, embedding_dim=EMBEDDING, hidden_size=HIDDEN, num_layers=LAYERS)
    workdir = Path(tempfile.mkdtemp(prefix="step_latency."))
    engines = contenders(model.eval(), args.threads, workdir)
    batched = {k: v for k, v in engines.items() if not isinstance(v, Predictor)}
    import onnxruntime

    result = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "threads": args.threads,
        "model": model.config,
        "single_stream": single_stream(engines, args.repeats, args.calls, rng),
        "many_streams": {"lanes": args.lanes, **many_streams(batched, args.lanes, args.repeats, args.lane_calls, rng)},
        "gemm_bound": gemm_bound(args.lanes, 20 * args.repeats),
    }
    print(f"threads {args.threads}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")
    print(f"\nsingle stream, batch 1, 1 step per call, state carried ({args.repeats} x {args.calls} calls each)")
    raw = result["single_stream"]["onnx-raw"]["p50_us"]
    for name, r in result["single_stream"].items():
        print(
            f"  {name:<14} p50 {r['p50_us']:8.0f} µs   p99 {r['p99_us']:8.0f} µs"
            f"   p50 / onnx-raw {r['p50_us'] / raw:5.2f}"
        )
    bound = result["gemm_bound"]
    print(f"\n{args.lanes} streams stepped together, 1 step per call ({args.repeats} repeats)")
    print(
        f"  GEMM-bound     {bound['stream_steps_per_s']:10,.0f} stream-steps/s"
        f"  ({bound['flops_per_stream_step'] / 1e6:.2f} MFLOP per stream-step at {bound['gflops']:.1f} GFLOP/s;"
        f" torch.mm only: {bound['torch_mm_stream_steps_per_s']:,.0f})"
    )
    for name, r in result["many_streams"].items():
        if name != "lanes":
            print(
                f"  {name:<14} {r['median']:10,.0f} stream-steps/s  ({r['min']:,.0f}..{r['max']:,.0f})"
                f"  {r['median'] / bound['stream_steps_per_s']:5.2f}x GEMM-bound"
                f"  call p50 {r['call_p50_ms']:6.2f} ms p99 {r['call_p99_ms']:6.2f} ms"
            )
    if args.grid:
        result["onednn_grid"] = onednn_grid(model, max(3, args.repeats // 2), rng)
        print("\noneDNN off / on time per call (< 1: off is faster)")
        for row in result["onednn_grid"]:
            print(
                f"  lanes {row['lanes']:5d} steps {row['steps']:3d}: on {row['on_us']:9.0f} µs"
                f"  off {row['off_us']:9.0f} µs  off/on {row['off_over_on']:5.2f}"
            )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
