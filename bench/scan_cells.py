"""minGRU and minLSTM (parallel scan) against the fused LSTM and GRU, at equal parameter count, in one process.

Every contender is a whole `SequenceModel` (vocab 65, embedding 64, 2 layers, linear head) whose hidden
size is chosen so that its total parameter count is the nearest to the LSTM's (2 x 256 by default):
equal parameters means about equal matrix-multiply FLOPs per token, so the scan cells get wider states
(minGRU ~2.4x, minLSTM ~1.9x the LSTM's width). Two more rows run the scan cells at the LSTM's width
(`name@256`: far fewer parameters), the other fair question. All run the same token ids.

Training throughput: the truncated-BPTT loop (forward over a window from the carried state, next-token
cross-entropy, backward, detach the state), `--windows` windows per timed run, at 1 and 2 threads, in
fp32 and (where the CPU has native bf16) with the forward under bf16 autocast, as `--precision bf16`. In
every repeat the cells run in a fresh random order, so machine drift hits them alike; each cell's
tokens/s is also divided by the LSTM's of the same repeat. Median and range (min-max) over repeats.

Step latency: one stream, one token per call, state carried, through the torch engine (TorchEngine)
and the ONNX engine (OnnxEngine: ONNX Runtime on the exported step model, where the scan cells are an
ONNX Loop) at one thread; p50 and p99 over `--calls` calls per cell and engine, cells interleaved.

    python bench/scan_cells.py                    # ~3 min of CPU (6 min wall on a busy 2-core machine)
    python bench/scan_cells.py --repeats 9 --window 256 --json out.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

try:
    from statefulrnn import SequenceModel
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from statefulrnn import SequenceModel
from statefulrnn.allocator import pin_malloc
from statefulrnn.engines.onnx import OnnxEngine
from statefulrnn.engines.torch import TorchEngine
from statefulrnn.precision import bf16_native

CELLS = ("lstm", "gru", "mingru", "minlstm")
FUSED_GATES = {"lstm": 4, "gru": 3, "rnn": 1}
SCAN_BLOCKS = {"mingru": 2, "minlstm": 3}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--hidden", type=int, default=256, help="LSTM hidden size; the others match its parameters (256)")
    p.add_argument("--layers", type=int, default=2, help="layers of every cell (2)")
    p.add_argument("--embedding", type=int, default=64, help="embedding size (64)")
    p.add_argument("--vocab", type=int, default=65, help="vocabulary size (65)")
    p.add_argument("--lanes", type=int, default=32, help="lanes (batch size) of the training loop (32)")
    p.add_argument("--window", type=int, default=64, help="time steps per window (64)")
    p.add_argument("--windows", type=int, default=3, help="windows per timed run (3)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per precision and thread count (5)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts to measure (1 2)")
    p.add_argument(
        "--precision", nargs="+", choices=("fp32", "bf16"), default=None, help="fp32, bf16 (default: bf16 where native)"
    )
    p.add_argument("--calls", type=int, default=400, help="single-stream calls per cell and engine (400)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights, data and order (0)")
    p.add_argument("--json", type=Path, default=None, help="also write all measurements to this JSON file")
    args = p.parse_args(argv)
    for name in ("hidden", "layers", "embedding", "vocab", "lanes", "window", "windows", "repeats", "calls"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    return args


def parameters(cell: str, hidden: int, layers: int, embedding: int, vocab: int) -> int:
    """The parameter count of a token `SequenceModel` (embedding, stack, head), from the layer shapes."""
    total = vocab * embedding + hidden * vocab + vocab
    for layer in range(layers):
        n_in = embedding if layer == 0 else hidden
        if cell in FUSED_GATES:
            total += FUSED_GATES[cell] * hidden * (n_in + hidden + 2)
        else:
            total += SCAN_BLOCKS[cell] * hidden * (n_in + 1)
    return total


def matched_hidden(cell: str, target: int, args: argparse.Namespace) -> int:
    """The hidden size whose model has the parameter count nearest to `target`."""
    sizes = range(1, 8 * args.hidden)
    return min(sizes, key=lambda h: abs(parameters(cell, h, args.layers, args.embedding, args.vocab) - target))


def build(cell: str, hidden: int, args: argparse.Namespace) -> SequenceModel:
    torch.manual_seed(args.seed)
    model = SequenceModel(
        cell, vocab_size=args.vocab, embedding_dim=args.embedding, hidden_size=hidden, num_layers=args.layers
    )
    counted = sum(p.numel() for p in model.parameters())
    assert counted == parameters(cell, hidden, args.layers, args.embedding, args.vocab), (cell, counted)
    return model


def train_windows(model: SequenceModel, data: torch.Tensor, args: argparse.Namespace, bf16: bool) -> float:
    """Seconds for `--windows` forward+backward windows with the state carried (and detached) between them."""
    state = None
    start = time.perf_counter()
    for w in range(args.windows):
        x = data[:, w * args.window : (w + 1) * args.window]
        y = data[:, w * args.window + 1 : (w + 1) * args.window + 1]
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            out, state = model(x, state)
        F.cross_entropy(out.float().reshape(-1, args.vocab), y.reshape(-1)).backward()
        state = state.detach()
        for p in model.parameters():
            p.grad = None
    return time.perf_counter() - start


def throughput(models: dict[str, SequenceModel], args: argparse.Namespace, threads: int, bf16: bool) -> dict:
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(args.seed)
    data = torch.randint(0, args.vocab, (args.lanes, args.windows * args.window + 1), generator=gen)
    tokens = args.lanes * args.window * args.windows
    order, rates = list(models), {cell: [] for cell in models}
    for model in models.values():
        model.train()
        train_windows(model, data, args, bf16)  # warm-up
    rng = random.Random(args.seed + threads)
    for _ in range(args.repeats):
        rng.shuffle(order)
        for cell in order:
            rates[cell].append(tokens / train_windows(models[cell], data, args, bf16))
    out = {}
    for cell, r in rates.items():
        ratio = [a / b for a, b in zip(r, rates["lstm"])]
        out[cell] = {"tokens_per_s": r, "vs_lstm": ratio}
    return out


def latency(models: dict[str, SequenceModel], args: argparse.Namespace) -> dict[str, dict]:
    torch.set_num_threads(1)
    engines = {}
    for cell, model in models.items():
        model.eval()
        engines[(cell, "torch")] = TorchEngine(model)
        engines[(cell, "onnx")] = OnnxEngine.from_source(model, threads=1)
    states = {key: e.initial_state(1) for key, e in engines.items()}
    times: dict[tuple[str, str], list[float]] = {key: [] for key in engines}
    gen = torch.Generator().manual_seed(args.seed)
    tokens = torch.randint(0, args.vocab, (args.calls + 20, 1, 1), generator=gen)
    keys, rng = list(engines), random.Random(args.seed)
    for i, x in enumerate(tokens):
        rng.shuffle(keys)
        for key in keys:
            start = time.perf_counter()
            _, states[key] = engines[key].step(states[key], x)
            if i >= 20:  # the first calls warm caches and allocators
                times[key].append(time.perf_counter() - start)
    return {f"{cell}/{engine}": {"seconds": t} for (cell, engine), t in times.items()}


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def report(args, hidden, counts, train, steps) -> str:
    lines = [
        f"scan cells vs fused LSTM/GRU, {datetime.date.today()}, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}",
        f"model: vocab {args.vocab}, embedding {args.embedding}, {args.layers} layers, linear head; "
        f"training loop: {args.lanes} lanes x window {args.window}, {args.windows} windows per run, "
        f"{args.repeats} repeats (median [min-max])",
        "",
        "| cell | hidden | parameters | precision | threads | tokens/s fwd+bwd | vs LSTM (same repeat) |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for (precision, threads), result in train.items():
        for cell in hidden:
            r, v = result[cell]["tokens_per_s"], result[cell]["vs_lstm"]
            lines.append(
                f"| {cell} | {hidden[cell]} | {counts[cell]:,} | {precision} | {threads} | {statistics.median(r):,.0f} "
                f"[{min(r):,.0f}-{max(r):,.0f}] | {statistics.median(v):.2f}x [{min(v):.2f}-{max(v):.2f}] |"
            )
    lines += [
        "",
        f"single stream, one token per call, 1 thread, {args.calls} calls (microseconds per call)",
        "",
        "| cell | torch p50 | torch p99 | onnx p50 | onnx p99 |",
        "|---|---:|---:|---:|---:|",
    ]
    for cell in hidden:
        t, o = steps[f"{cell}/torch"]["seconds"], steps[f"{cell}/onnx"]["seconds"]
        cells = [f"{quantile(s, q) * 1e6:,.0f}" for s in (t, o) for q in (0.5, 0.99)]
        lines.append(f"| {cell} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    pin_malloc()  # as the CLI does: fixed glibc thresholds, so big per-window buffers stay in the heap
    target = parameters("lstm", args.hidden, args.layers, args.embedding, args.vocab)
    hidden = {cell: matched_hidden(cell, target, args) for cell in CELLS}
    hidden["lstm"] = args.hidden
    hidden.update({f"{cell}@{args.hidden}": args.hidden for cell in SCAN_BLOCKS})
    models = {name: build(name.split("@")[0], size, args) for name, size in hidden.items()}
    counts = {name: sum(p.numel() for p in model.parameters()) for name, model in models.items()}
    precisions = args.precision or (["fp32", "bf16"] if bf16_native("cpu") else ["fp32"])
    train = {
        (precision, threads): throughput(models, args, threads, precision == "bf16")
        for precision in precisions
        for threads in args.threads
    }
    steps = latency(models, args)
    print(report(args, hidden, counts, train, steps))
    if args.json:
        blob = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
        blob.update(
            hidden=hidden, parameters=counts, steps=steps, train={"/".join(map(str, k)): v for k, v in train.items()}
        )
        args.json.write_text(json.dumps(blob, indent=1))


if __name__ == "__main__":
    main()
