"""Training throughput: statefulrnn's Trainer versus a hand-written PyTorch TBPTT loop, in one process.

The hand-written loop is the classic one of pytorch/examples `word_language_model`: the token stream
reshaped to (lanes, steps), windows cut in order, embedding -> nn.LSTM -> linear, cross-entropy,
backward, gradient clipping, AdamW step, hidden state detached and carried on. statefulrnn runs the
same model size, data, lanes, window, optimizer, learning rate and clipping through `Trainer.fit`
(ConcatLayout, stateful mode, no validation, no run directory). Both use the same threads and the
same allocator settings; they alternate, in a fresh random order, every repeat.

Also measured: the start-up cost of the CLI (`statefulrnn train text` wall time minus the training
time it reports, for a short run that still reads, tokenises, evaluates and plots).

    python bench/train_throughput.py                  # about 3 minutes on 2 cores
    python bench/train_throughput.py --repeats 3 --windows 20 --no-cli
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

try:
    from statefulrnn.allocator import pin_malloc
except ImportError:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from statefulrnn.allocator import pin_malloc
from statefulrnn.layout import ConcatLayout
from statefulrnn.model import SequenceModel
from statefulrnn.objectives import NextToken
from statefulrnn.train import TrainConfig, Trainer

TEXT = Path(__file__).resolve().parents[2] / "shared" / "data" / "text" / "tinyshakespeare" / "input.txt"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", type=Path, default=TEXT, help="training text (default: tinyshakespeare; random if absent)")
    p.add_argument("--lanes", type=int, default=64)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--embedding", type=int, default=64)
    p.add_argument("--windows", type=int, default=40, help="training steps per timed run")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--no-cli", action="store_true", help="skip the CLI start-up measurement")
    p.add_argument("--json", type=Path, default=None, help="also write every measurement here")
    return p.parse_args(argv)


def load_tokens(path: Path, n: int) -> tuple[np.ndarray, int]:
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        chars = sorted(set(text))
        lookup = {c: i for i, c in enumerate(chars)}
        return np.array([lookup[c] for c in text], dtype=np.int64), len(chars)
    rng = np.random.default_rng(0)
    return rng.integers(0, 65, n), 65


class HandWritten(nn.Module):
    """The word_language_model RNNModel, minus dropout."""

    def __init__(self, vocab: int, emb: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.encoder = nn.Embedding(vocab, emb)
        self.rnn = nn.LSTM(emb, hidden, layers, batch_first=True)
        self.decoder = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor, hidden: tuple[torch.Tensor, torch.Tensor] | None):
        out, hidden = self.rnn(self.encoder(x), hidden)
        return self.decoder(out), hidden


def run_hand_written(tokens: np.ndarray, vocab: int, args: argparse.Namespace) -> float:
    """Tokens per second of the hand-written loop over `args.windows` windows."""
    torch.manual_seed(0)
    model = HandWritten(vocab, args.embedding, args.hidden, args.layers)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    steps = len(tokens) // args.lanes
    data = torch.from_numpy(tokens[: steps * args.lanes]).view(args.lanes, steps)
    hidden = None
    start = time.perf_counter()
    for k in range(args.windows):
        i = k * args.window
        x, y = data[:, i : i + args.window], data[:, i + 1 : i + 1 + args.window]
        if hidden is not None:
            hidden = tuple(h.detach() for h in hidden)
        out, hidden = model(x, hidden)
        loss = F.cross_entropy(out.reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return args.windows * args.lanes * args.window / (time.perf_counter() - start)


def statefulrnn_trainer(tokens: np.ndarray, vocab: int, args: argparse.Namespace) -> Trainer:
    """`Trainer` for `args.windows` windows of the same data and settings as the hand-written loop."""
    torch.manual_seed(0)
    model = SequenceModel(
        "lstm", vocab_size=vocab, hidden_size=args.hidden, num_layers=args.layers, embedding_dim=args.embedding
    )
    config = TrainConfig(
        lanes=args.lanes,
        window=args.window,
        epochs=1,
        lr=2e-3,
        schedule="constant",
        max_tokens=args.windows * args.lanes * args.window,
        log_every=10**9,
    )
    layout = ConcatLayout(tokens, args.lanes, args.window, reset_at_boundaries=False)
    return Trainer(model, NextToken("char"), layout, None, config, None, progress=False)


def run_statefulrnn(tokens: np.ndarray, vocab: int, args: argparse.Namespace) -> float:
    """Tokens per second of `Trainer.fit` on the same data and settings."""
    return statefulrnn_trainer(tokens, vocab, args).fit()["tokens_per_s"]


def cli_overhead(text: Path) -> dict:
    """Wall time of a short `statefulrnn train text` run minus the training time it reports."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "statefulrnn", "train", "text", str(text), "--out", f"{tmp}/run"]
        cmd += ["--max-tokens", "262144", "--lanes", "64", "--window", "64", "--quiet", "--json"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t0
    summary = json.loads(out.stdout)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "statefulrnn", "--version"], capture_output=True, check=True)
    version = time.perf_counter() - t0
    return {
        "wall_s": wall,
        "train_s": summary["elapsed_s"],
        "overhead_s": wall - summary["elapsed_s"],
        "version_s": version,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    pinned = pin_malloc()
    torch.set_num_threads(args.threads)
    tokens, vocab = load_tokens(args.text, 2_000_000)
    need = (args.windows * args.window + 1) * args.lanes
    if len(tokens) < need:
        sys.exit(f"the text has {len(tokens)} tokens; {args.windows} windows of {args.lanes}x{args.window} need {need}")
    contenders = {"hand-written": run_hand_written, "statefulrnn": run_statefulrnn}
    print(
        f"torch {torch.__version__}, {args.threads} threads, malloc {'pinned' if pinned else 'default'}, "
        f"{platform.processor() or platform.machine()}; LSTM {args.layers}x{args.hidden}, emb {args.embedding}, "
        f"vocab {vocab}, {args.lanes} lanes x window {args.window}, {args.windows} windows/run, AdamW + clip"
    )
    for fn in contenders.values():  # warm-up
        fn(tokens, vocab, argparse.Namespace(**{**vars(args), "windows": 3}))
    rates: dict[str, list[float]] = {k: [] for k in contenders}
    ratios = []
    rng = random.Random(0)
    for r in range(args.repeats):
        order = list(contenders)
        rng.shuffle(order)
        got = {k: contenders[k](tokens, vocab, args) for k in order}
        for k, v in got.items():
            rates[k].append(v)
        ratios.append(got["statefulrnn"] / got["hand-written"])
        print(
            f"repeat {r + 1}: " + ", ".join(f"{k} {v:,.0f} tok/s" for k, v in got.items()) + f", ratio {ratios[-1]:.3f}"
        )
    result = {k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in rates.items()}
    result["ratio"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    for k, v in result.items():
        print(f"{k:>13}: median {v['median']:,.3f}  range {v['min']:,.3f}..{v['max']:,.3f}")
    print(f"target: ratio >= 0.95 -> {'met' if result['ratio']['median'] >= 0.95 else 'NOT met'} (median)")
    if not args.no_cli and args.text.is_file():
        result["cli"] = cli_overhead(args.text)
        c = result["cli"]
        print(
            f"CLI: wall {c['wall_s']:.1f} s, training {c['train_s']:.1f} s -> start-up, data and end-of-run "
            f"work {c['overhead_s']:.1f} s; `statefulrnn --version` {c['version_s']:.2f} s"
        )
    if args.json:
        args.json.write_text(json.dumps({"rates": rates, "ratios": ratios, **result}, indent=1))


if __name__ == "__main__":
    main()
