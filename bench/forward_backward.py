"""Forward+backward throughput: `SequenceModel` versus a bare torch LSTM loop, in one process.

Both contenders run the classic truncated-BPTT training loop over windows of token ids: embed, run the
recurrent stack from the carried state, project to logits, cross-entropy against the next token,
`loss.backward()`, then detach the state and carry it into the next window. They share the same
dimensions, the same initial weights (the bare modules are loaded from the SequenceModel's), the same
data and the same thread count.

Contenders, run in a fresh random order in every repeat so that machine drift hits them alike:

    bare       nn.Embedding -> nn.LSTM(batch_first=True) -> nn.Linear, state as an (h, c) tuple
    seq        SequenceModel.forward(x, state), no resets                      -> scenario (a)
    seq+reset  SequenceModel.forward(x, state, resets) with one lane of all lanes resetting at one
               column per window (column random in 1..window-1, lane random), so every window runs
               as two fused calls                                               -> scenario (b)

Both ratios are taken against the bare no-reset loop of the same repeat. Targets: (a) >= 0.97,
(b) >= 0.85, judged on the median ratio.

Allocator: by default the script pins glibc malloc (mallopt: fixed 32 MiB mmap threshold, 1 GiB trim
threshold) at start-up, before the models are built. Without that, glibc's dynamic mmap/trim thresholds
depend on the history of allocation sizes in the process, and the large per-window buffers of the fused
LSTM (forward and backward) can end up being returned to the OS and faulted back in every window (~10k minor page
faults and ~10 ms per window here) for some contenders and not others, which couples the contenders
through the heap and swings the ratios by +-20%. `--malloc default` leaves glibc alone; the minor page
faults per window are printed for every contender either way.

    python bench/forward_backward.py                 # defaults: about 1-3 minutes on 2 cores
    python bench/forward_backward.py --repeats 5 --windows 4 --json out.json
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

try:
    from statefulrnn import SequenceModel
    from statefulrnn.allocator import pin_malloc
except ImportError:  # running from a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from statefulrnn import SequenceModel
    from statefulrnn.allocator import pin_malloc

TARGETS = {"seq": 0.97, "seq+reset": 0.85}
CONTENDERS = ("bare", "seq", "seq+reset")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeats", type=int, default=30, help="timed rounds; each runs every contender once (30)")
    p.add_argument("--windows", type=int, default=16, help="windows (TBPTT steps) per timed run (16)")
    p.add_argument("--lanes", type=int, default=32, help="parallel lanes, i.e. batch size (32)")
    p.add_argument("--window", type=int, default=64, help="time steps per window (64)")
    p.add_argument("--hidden", type=int, default=256, help="LSTM hidden size (256)")
    p.add_argument("--layers", type=int, default=2, help="LSTM layers (2)")
    p.add_argument("--embedding", type=int, default=64, help="embedding size (64)")
    p.add_argument("--vocab", type=int, default=65, help="vocabulary size (65)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for both contenders (2)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs of every contender before timing (3)")
    p.add_argument(
        "--optimizer",
        choices=("none", "sgd", "adam"),
        default="none",
        help="optimizer step after backward, identical in all contenders (none)",
    )
    p.add_argument(
        "--malloc",
        choices=("pinned", "default"),
        default="pinned",
        help="pinned: fix glibc's mmap/trim thresholds so contenders cannot perturb each other\n"
        "through the heap; default: leave glibc alone (pinned)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for weights, data, reset schedule and order (0)")
    p.add_argument("--json", type=Path, default=None, help="also write all measurements to this JSON file")
    args = p.parse_args(argv)
    if args.window < 2:
        p.error("--window must be at least 2 so a reset column can fall inside the window")
    for name in ("repeats", "windows", "lanes", "hidden", "layers", "embedding", "vocab", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    return args


def make_optimizer(kind: str, params: list[nn.Parameter]) -> torch.optim.Optimizer | None:
    if kind == "sgd":
        return torch.optim.SGD(params, lr=1e-3)
    if kind == "adam":
        return torch.optim.Adam(params, lr=1e-3)
    return None


def zero_grad(params: list[nn.Parameter]) -> None:
    for q in params:
        q.grad = None


class Bare:
    """The hand-written loop: three torch modules called directly, state as a plain (h, c) tuple."""

    def __init__(self, model: SequenceModel, optimizer: str) -> None:
        self.embedding = nn.Embedding(model.vocab_size, model.embedding_dim)
        self.lstm = nn.LSTM(model.embedding_dim, model.hidden_size, model.num_layers, batch_first=True)
        self.head = nn.Linear(model.hidden_size, model.n_outputs)
        self.embedding.load_state_dict(model.embedding.state_dict())
        self.lstm.load_state_dict(model.rnn.state_dict())
        self.head.load_state_dict(model.head.state_dict())
        self.params = [*self.embedding.parameters(), *self.lstm.parameters(), *self.head.parameters()]
        self.opt = make_optimizer(optimizer, self.params)
        self.hx = None

    def window(self, x: torch.Tensor, y: torch.Tensor, resets: torch.Tensor | None) -> torch.Tensor:
        zero_grad(self.params)
        out, hx = self.lstm(self.embedding(x), self.hx)
        logits = self.head(out)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        if self.opt is not None:
            self.opt.step()
        self.hx = (hx[0].detach(), hx[1].detach())
        return loss


class Seq:
    """The same loop through `SequenceModel.forward(x, state, resets)` and `State.detach()`."""

    def __init__(self, model: SequenceModel, optimizer: str, use_resets: bool) -> None:
        self.model = model
        self.params = list(model.parameters())
        self.opt = make_optimizer(optimizer, self.params)
        self.use_resets = use_resets
        self.state = None

    def window(self, x: torch.Tensor, y: torch.Tensor, resets: torch.Tensor | None) -> torch.Tensor:
        zero_grad(self.params)
        logits, state = self.model(x, self.state, resets if self.use_resets else None)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        if self.opt is not None:
            self.opt.step()
        self.state = state.detach()
        return loss


def make_data(args: argparse.Namespace, gen: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """`windows` consecutive windows of one token stream per lane, with one reset per window."""
    total = args.windows * args.window
    stream = torch.randint(args.vocab, (args.lanes, total + 1), generator=gen)
    data = []
    for w in range(args.windows):
        a = w * args.window
        x = stream[:, a : a + args.window].contiguous()
        y = stream[:, a + 1 : a + args.window + 1].contiguous()
        resets = torch.zeros(args.lanes, args.window, dtype=torch.bool)
        lane = int(torch.randint(args.lanes, (1,), generator=gen))
        column = int(torch.randint(1, args.window, (1,), generator=gen))
        resets[lane, column] = True
        data.append((x, y, resets))
    return data


def timed_run(contender, data) -> tuple[float, int]:
    """Run every window once; return seconds and minor page faults."""
    gc.collect()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for x, y, resets in data:
        contender.window(x, y, resets)
    seconds = time.perf_counter() - start
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def check_same_numbers(model: SequenceModel, bare: Bare, data) -> float:
    """The bare modules must compute what SequenceModel computes: compare the first window's loss and grads."""
    x, y, _ = data[0]
    ref_model = Seq(model, "none", use_resets=False)
    loss_seq = ref_model.window(x, y, None).item()
    grads_seq = [q.grad.clone() for q in ref_model.params]
    loss_bare = bare.window(x, y, None).item()
    grads_bare = [q.grad for q in bare.params]
    zero_grad(ref_model.params)
    zero_grad(bare.params)
    bare.hx = None
    worst = max((a - b).abs().max().item() for a, b in zip(grads_seq, grads_bare))
    if abs(loss_seq - loss_bare) > 1e-5 or worst > 1e-5:
        raise SystemExit(f"contenders disagree: loss {loss_seq} vs {loss_bare}, max grad diff {worst}")
    return worst


def summary(values: list[float]) -> dict[str, float]:
    q1, _, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "q1": q1, "q3": q3}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    pinned = pin_malloc() if args.malloc == "pinned" else False
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    order_rng = random.Random(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    model = SequenceModel(
        "lstm", vocab_size=args.vocab, hidden_size=args.hidden, num_layers=args.layers, embedding_dim=args.embedding
    )
    data = make_data(args, gen)
    bare = Bare(model, args.optimizer)
    check_same_numbers(model, bare, data)
    # seq and seq+reset each train their own copy, so an optimizer step in one cannot affect another.
    seq_model = SequenceModel(**model.config)
    seq_model.load_state_dict(model.state_dict())
    contenders = {
        "bare": bare,
        "seq": Seq(model, args.optimizer, use_resets=False),
        "seq+reset": Seq(seq_model, args.optimizer, use_resets=True),
    }
    tokens = args.windows * args.window * args.lanes

    print(
        f"forward+backward, torch {torch.__version__}, {args.threads} threads, python {platform.python_version()}, "
        f"{platform.machine()}; lstm {args.layers}x{args.hidden}, embedding {args.embedding}, vocab {args.vocab}, "
        f"{args.lanes} lanes x window {args.window}, {args.windows} windows/run ({tokens} tokens), "
        f"optimizer {args.optimizer}, {args.repeats} repeats, mkldnn {torch.backends.mkldnn.is_available()}, "
        f"malloc {'pinned' if pinned else 'default'}",
        flush=True,
    )
    for _ in range(args.warmup):
        for name in CONTENDERS:
            timed_run(contenders[name], data)

    rates: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    faults: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    ratios: dict[str, list[float]] = {"seq": [], "seq+reset": []}
    orders = []
    for r in range(args.repeats):
        order = list(CONTENDERS)
        order_rng.shuffle(order)
        orders.append(order)
        this = {}
        for name in order:
            seconds, n_faults = timed_run(contenders[name], data)
            this[name] = tokens / seconds
            faults[name].append(n_faults / args.windows)
        for name in CONTENDERS:
            rates[name].append(this[name])
        for name in ratios:
            ratios[name].append(this[name] / this["bare"])
        print(
            f"  repeat {r + 1:2d}/{args.repeats}  "
            + "  ".join(f"{n} {this[n]:8.0f}" for n in CONTENDERS)
            + f"  tok/s   ratio a {ratios['seq'][-1]:.3f}  b {ratios['seq+reset'][-1]:.3f}",
            flush=True,
        )

    print(f"\n{'contender':<12}{'median tok/s':>14}{'min..max':>18}{'q1..q3':>18}{'page faults/window':>20}")
    for name in CONTENDERS:
        s = summary(rates[name])
        print(
            f"{name:<12}{s['median']:>14.0f}{s['min']:>10.0f}..{s['max']:<6.0f}{s['q1']:>10.0f}..{s['q3']:<6.0f}"
            f"{statistics.median(faults[name]):>20.0f}"
        )
    print(f"\n{'ratio vs bare':<26}{'median':>8}{'min..max':>16}{'q1..q3':>16}{'target':>9}  met (median)")
    labels = {"seq": "(a) seq, no resets", "seq+reset": "(b) seq, 1/lanes reset"}
    results = {}
    for name, label in labels.items():
        s = summary(ratios[name])
        met = s["median"] >= TARGETS[name]
        results[name] = {**s, "target": TARGETS[name], "met": met}
        print(
            f"{label:<26}{s['median']:>8.3f}{s['min']:>9.3f}..{s['max']:<6.3f}{s['q1']:>9.3f}..{s['q3']:<6.3f}"
            f"{TARGETS[name]:>9.2f}  "
            f"{'yes' if met else 'NO'}"
        )

    report = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "malloc_pinned": pinned,
        "tokens_per_run": tokens,
        "tokens_per_s": rates,
        "tokens_per_s_summary": {n: summary(v) for n, v in rates.items()},
        "minor_page_faults_per_window": faults,
        "ratios": ratios,
        "ratio_summary": results,
        "orders": orders,
    }
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
