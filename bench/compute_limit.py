"""The compute limit of training: FLOPs per trained token against this machine's matrix-multiply rate.

FLOPs per trained token (analytic): nearly all arithmetic of an LSTM language model is matrix multiplies.
Per token and layer the forward pass multiplies [x, h] (in + H wide) by the 4H gate weights, and the
head multiplies h by the V output weights: 2 * ((in + H) * 4H summed over layers + H * V) FLOPs. The
backward pass does two multiplies of the same size for each (gradient of the input, of the weight):
training = 3x forward. Pointwise gate arithmetic, embedding, loss and optimizer are O(H) per token and
left out, so the bound is generous.

GEMM-bound rate: every matrix multiply of one training window (input projections over the whole window,
one recurrent multiply per time step, the head; forward and backward shapes) is timed alone at its shape
with PyTorch's BLAS (`torch.mm`) and with oneDNN (the library behind PyTorch's CPU LSTM kernel), each
into a preallocated output at the same thread count as training. The faster library per shape gives
the limit; the `torch.mm`-only limit is printed too (the two differ a lot on some CPUs).

Training: `Trainer.fit` tokens/s with the same model, lanes, window, data and threads, in the same run,
in variants interleaved in a fresh random order each repeat (medians and ranges):

    default        the Trainer as shipped (float32, oneDNN's fused LSTM kernel, AdamW)
    bf16           --precision bf16: the forward pass under bfloat16 autocast, so oneDNN's LSTM kernels
                   forward and backward run in bfloat16 (weights, loss, optimizer stay float32)
    fused-adamw    AdamW with fused=True (one kernel per step instead of a few per parameter)
    onednn-off     PyTorch's native LSTM path (per-step addmm + fused cell) instead of oneDNN's kernel

The float32 GEMM-bound limit does not apply to bf16, which changes the arithmetic: its row says how
much faster it is, and the README's bf16 quality check says what it costs.

plus a profile of the default (share of time per operator) that says where any speed-up must come from.

    python bench/compute_limit.py                         # about 4 minutes on 2 cores
    python bench/compute_limit.py --threads 1 --repeats 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

try:
    from statefulrnn.allocator import pin_malloc
except ImportError:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from statefulrnn.allocator import pin_malloc
from statefulrnn.engines.torch import onednn
from statefulrnn.train import Trainer
from train_throughput import TEXT, load_tokens, statefulrnn_trainer  # bench/ is on sys.path when a script in it runs


def forward_gemms(lanes: int, window: int, emb: int, hidden: int, layers: int, vocab: int) -> list[tuple]:
    """(m, k, n, count) of the forward matrix multiplies of one window, as a fused LSTM kernel does them."""
    tokens, out, width = lanes * window, [], emb
    for _ in range(layers):
        out.append((tokens, width, 4 * hidden, 1))  # input projection of the whole window
        out.append((lanes, hidden, 4 * hidden, window))  # recurrent projection, one per step
        width = hidden
    return out + [(tokens, hidden, vocab, 1)]


def training_gemms(forward: list[tuple]) -> list[tuple]:
    """Forward shapes plus, for each, the backward multiplies: dX = dY W^T and dW = X^T dY."""
    return forward + [(m, n, k, c) for m, k, n, c in forward] + [(k, m, n, c) for m, k, n, c in forward]


def flops_per_token(lanes: int, window: int, forward: list[tuple]) -> int:
    return 3 * sum(2 * m * k * n * c for m, k, n, c in forward) // (lanes * window)


def median_seconds(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def gemm_seconds(m: int, k: int, n: int, repeats: int) -> dict[str, float]:
    """Median seconds of one (m, k) @ (k, n) float32 multiply per library."""
    a, b, out = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
    result = {"torch.mm": median_seconds(lambda: torch.mm(a, b, out=out), repeats)}
    try:  # oneDNN through PyTorch's (private) linear op; weight is (n, k) as in nn.Linear
        am, wm = a.to_mkldnn(), b.t().contiguous().to_mkldnn()
        result["onednn"] = median_seconds(lambda: torch._C._nn.mkldnn_linear(am, wm, None), repeats)
    except (AttributeError, RuntimeError):
        pass
    return result


def gemm_bound(gemms: list[tuple], tokens_per_window: int, repeats: int) -> dict:
    """Tokens/s if training cost only its matrix multiplies: with the faster library per shape, and torch.mm only."""
    best = mm = 0.0
    flops = sum(2 * m * k * n * c for m, k, n, c in gemms)
    rows = []
    for m, k, n, c in gemms:
        t = gemm_seconds(m, k, n, repeats)
        best += c * min(t.values())
        mm += c * t["torch.mm"]
        rows.append(
            {"shape": [m, k, n], "count": c, **{f"{lib}_gflops": 2 * m * k * n / s / 1e9 for lib, s in t.items()}}
        )
    return {
        "tokens_per_s": tokens_per_window / best,
        "gflops": flops / best / 1e9,
        "torch_mm_tokens_per_s": tokens_per_window / mm,
        "torch_mm_gflops": flops / mm / 1e9,
        "shapes": rows,
    }


def make_trainer(tokens: np.ndarray, vocab: int, args: argparse.Namespace, windows: int, variant: str) -> Trainer:
    """train_throughput's Trainer (the one compared with a hand-written loop), changed as `variant` says."""
    trainer = statefulrnn_trainer(tokens, vocab, argparse.Namespace(**{**vars(args), "windows": windows}))
    if variant == "bf16":
        trainer.config.precision = "bf16"
    if variant == "fused-adamw":
        trainer.optimizer = torch.optim.AdamW(trainer.model.parameters(), lr=2e-3, weight_decay=0.01, fused=True)
    return trainer


def train_rate(tokens: np.ndarray, vocab: int, args: argparse.Namespace, variant: str, windows: int) -> float:
    """Tokens/s of `Trainer.fit` over `windows` windows in one variant."""
    trainer = make_trainer(tokens, vocab, args, windows, variant)
    with onednn(variant != "onednn-off"):
        return trainer.fit()["tokens_per_s"]


def profile(tokens: np.ndarray, vocab: int, args: argparse.Namespace) -> list[dict]:
    """Share of self CPU time per operator over a few default training steps, largest first."""
    from torch.profiler import profile as torch_profile

    trainer = make_trainer(tokens, vocab, args, 8, "default")
    with torch_profile() as p:
        trainer.fit()
    events = [e for e in p.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [{"op": e.key, "share": e.self_cpu_time_total / total} for e in events[:8]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", type=Path, default=TEXT, help="training text (default: tinyshakespeare; random if absent)")
    p.add_argument("--lanes", type=int, default=64)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--embedding", type=int, default=64)
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: all)")
    p.add_argument("--windows", type=int, default=30, help="training windows per timed run")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats of every training variant")
    p.add_argument("--gemm-repeats", type=int, default=30, help="timed calls per matrix-multiply shape")
    p.add_argument("--json", type=Path, default=None, help="also write every number here")
    args = p.parse_args()

    pinned = pin_malloc()
    torch.set_num_threads(args.threads)
    tokens, vocab = load_tokens(args.text, 2_000_000)
    forward = forward_gemms(args.lanes, args.window, args.embedding, args.hidden, args.layers, vocab)
    per_token = flops_per_token(args.lanes, args.window, forward)
    bound = gemm_bound(training_gemms(forward), args.lanes * args.window, args.gemm_repeats)
    print(
        f"torch {torch.__version__}, {args.threads} threads, malloc {'pinned' if pinned else 'default'}, "
        f"{platform.processor() or platform.machine()}; LSTM {args.layers}x{args.hidden}, emb {args.embedding}, "
        f"vocab {vocab}, {args.lanes} lanes x window {args.window}"
    )
    print(f"\ntraining FLOPs per token: {per_token / 1e6:.2f} M (forward {per_token / 3e6:.2f} M)")
    print("matrix multiplies of one window, GFLOP/s per library:")
    for row in bound["shapes"]:
        m, k, n = row["shape"]
        rates = "  ".join(f"{key[:-7]} {v:6.1f}" for key, v in row.items() if key.endswith("_gflops"))
        print(f"  ({m:5d} x {k:4d}) @ ({k:4d} x {n:4d}) x{row['count']:3d}: {rates}")
    print(
        f"GEMM-bound: {bound['tokens_per_s']:,.0f} tokens/s at {bound['gflops']:.1f} GFLOP/s (faster library "
        f"per shape); torch.mm only: {bound['torch_mm_tokens_per_s']:,.0f} tokens/s at "
        f"{bound['torch_mm_gflops']:.1f} GFLOP/s"
    )

    variants = ("default", "bf16", "fused-adamw", "onednn-off")
    for v in variants:  # warm-up
        train_rate(tokens, vocab, args, v, 3)
    rates: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(args.repeats):
        for v in random.sample(variants, len(variants)):
            rates[v].append(train_rate(tokens, vocab, args, v, args.windows))
        print(f"repeat {r + 1}: " + ", ".join(f"{v} {rates[v][-1]:,.0f}" for v in variants) + " tokens/s")
    result = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads},
        "flops_per_token": per_token,
        "gemm_bound": bound,
        "training": {},
        "profile": profile(tokens, vocab, args),
    }
    print("\ntraining tokens/s, median (min..max), and the fraction of the GEMM-bound limit reached:")
    base = statistics.median(rates["default"])
    for v, r in rates.items():
        med = statistics.median(r)
        result["training"][v] = {"median": med, "min": min(r), "max": max(r), "vs_default": med / base}
        print(
            f"  {v:<12} {med:8,.0f} ({min(r):,.0f}..{max(r):,.0f})  {med / base:5.3f}x default  "
            f"{med / bound['tokens_per_s']:5.1%} of the limit "
            f"({med / bound['torch_mm_tokens_per_s']:5.1%} of torch.mm's)"
        )
    print("\nwhere the default spends its time (self CPU time per operator):")
    for row in result["profile"]:
        print(f"  {row['share']:6.1%}  {row['op']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
