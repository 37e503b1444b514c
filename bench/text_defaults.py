"""The CLI's training defaults against a plain hand-written TBPTT loop, at several training budgets.

Every contender trains the same model (the defaults: 2-layer LSTM 256, embedding 64) on the same split
of the same text (first 90% train, last 10% validation), 64 lanes x window 64, peak lr 2e-3, and is
scored by the library's stateful evaluation on the validation part (nats/char and bits per char):

  new     `statefulrnn.text.train_text` with the default `TrainConfig` (what `statefulrnn train text`
          runs), the budget given as `max_time` (or `max_tokens`)
  old     the same with schedule="cosine", the default before issue 16 (decaying over the same budget)
  plain   a hand-written loop: Adam at a constant 2e-3, no weight decay, clip 1.0, the state detached
          after every window, zero state at each epoch start
  NAME    a `--variant NAME:field=value,...`: the defaults with those `TrainConfig` fields changed

All runs happen in this one process, one thread, one after another: for each repeat and budget every
contender in turn (the order rotates per repeat), so outside load falls on all of them alike. The library's
runs count their epoch-end validation passes against a time budget (as the CLI does); the plain loop
does not evaluate until its budget is spent. Prints a table, writes results.json and a PNG into --out.

    python bench/text_defaults.py --budgets 30 60 180               # about 14 min of one core
    python bench/text_defaults.py --kind tokens --budgets 500000 --contenders new plain \\
        --variant d10:decay_fraction=0.1 --variant w100:warmup=100
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    from statefulrnn.text import train_text
except ImportError:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from statefulrnn.text import train_text
from statefulrnn.allocator import pin_malloc
from statefulrnn.evaluation import evaluate
from statefulrnn.layout import evaluation_layout
from statefulrnn.model import SequenceModel
from statefulrnn.objectives import NextToken
from statefulrnn.text.corpus import text_corpus
from statefulrnn.train import TrainConfig, seed_everything

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "text" / "tinyshakespeare" / "input.txt"
BASE = {"new": {}, "old": {"schedule": "cosine"}}
LABELS = {"new": "new default (wsd)", "old": "old default (cosine)", "plain": "plain loop (Adam 2e-3 constant)"}


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """'NAME:field=value,...' -> (NAME, TrainConfig overrides); values are read as JSON, else kept as text."""
    name, _, spec = text.partition(":")
    known = {f.name for f in fields(TrainConfig)}
    over: dict[str, Any] = {}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        if key not in known:
            raise SystemExit(f"--variant {text!r}: {key!r} is not a TrainConfig field")
        try:
            over[key] = json.loads(value)
        except json.JSONDecodeError:
            over[key] = value
    TrainConfig(**over)  # fails here, not an hour later, on a bad value
    return name, over


def budget(kind: str, amount: float) -> dict[str, Any]:
    """The TrainConfig fields that set a budget of `amount` seconds or tokens."""
    return {"max_time": float(amount)} if kind == "time" else {"max_tokens": int(amount)}


def run_library(source: Path, out: Path, over: dict[str, Any], kind: str, amount: float, seed: int) -> dict:
    """One `train_text` run with the default settings plus `over`, stopped by the budget."""
    config = replace(TrainConfig(**over), seed=seed, **budget(kind, amount))
    start = time.perf_counter()
    run = train_text(source, out, config=config, device="cpu", progress=False)
    s = run.summary
    return {
        "val": s["val"],
        "steps": s["steps"],
        "tokens": s["tokens"],
        "train_s": s["elapsed_s"],
        "wall_s": time.perf_counter() - start,
        "stopped": s["stopped"],
    }


def run_plain(source: Path, kind: str, amount: float, seed: int, lr: float = 2e-3) -> dict:
    """The plain loop a PyTorch user writes: contiguous lanes, windows in order, detached state, constant Adam."""
    d = TrainConfig()
    train, valid = text_corpus(source, level="char", val_fraction=0.1)
    seed_everything(seed)
    model = SequenceModel(vocab_size=len(train.vocab))  # the library's default model, same initial weights
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    lane_len = len(train.tokens) // d.lanes
    data = torch.from_numpy(np.asarray(train.tokens[: lane_len * d.lanes], dtype=np.int64)).view(d.lanes, lane_len)
    steps = tokens = 0
    start = time.perf_counter()
    done = False
    model.train()
    while not done:
        state = None
        for t in range(0, lane_len - 1, d.window):
            x, y = data[:, t : t + d.window], data[:, t + 1 : t + d.window + 1]
            x = x[:, : y.shape[1]]
            out, state = model(x, state)
            state = state.detach()
            loss = torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            steps, tokens = steps + 1, tokens + y.numel()
            train_s = time.perf_counter() - start
            if (train_s if kind == "time" else tokens) >= amount:
                done = True
                break
    layout = evaluation_layout(valid.to_sequences(), d.eval_lanes, d.eval_window)
    val = evaluate(model.eval(), layout, NextToken("char"))
    return {"val": val, "steps": steps, "tokens": tokens, "train_s": train_s, "wall_s": time.perf_counter() - start}


def fmt_range(values: list[float]) -> str:
    """Median, with the range when there is more than one value."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.median(values):.3f} ({min(values):.3f}..{max(values):.3f})"


def table(results: list[dict], contenders: list[str], budgets: list[float], kind: str) -> str:
    """Markdown: one row per budget and contender, validation loss and bpc (median and range over repeats)."""
    unit = "s" if kind == "time" else " tokens"
    rows = ["| budget | contender | val nats/char | val bpc | steps | tokens/s | vs plain (bpc) |", "|---" * 7 + "|"]
    for b in budgets:
        plain = [r["val"]["bpc"] for r in results if r["budget"] == b and r["contender"] == "plain"]
        for c in contenders:
            rs = [r for r in results if r["budget"] == b and r["contender"] == c]
            if not rs:
                continue
            bpc = [r["val"]["bpc"] for r in rs]
            diff = f"{statistics.median(bpc) - statistics.median(plain):+.3f}" if plain and c != "plain" else ""
            rate = statistics.median(r["tokens"] / max(r["train_s"], 1e-9) for r in rs)
            rows.append(
                f"| {b:g}{unit} | {c} | {fmt_range([r['val']['loss'] for r in rs])} | {fmt_range(bpc)} "
                f"| {statistics.median(r['steps'] for r in rs):.0f} | {rate:,.0f} | {diff} |"
            )
    return "\n".join(rows)


def plot(results: list[dict], contenders: list[str], budgets: list[float], kind: str, path: Path) -> None:
    """Validation loss (median over repeats, range as error bars) against the budget, one line per contender."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for c in contenders:
        xs, med, lo, hi = [], [], [], []
        for b in budgets:
            v = [r["val"]["loss"] for r in results if r["budget"] == b and r["contender"] == c]
            if v:
                xs.append(b)
                med.append(statistics.median(v))
                lo.append(med[-1] - min(v))
                hi.append(max(v) - med[-1])
        ax.errorbar(xs, med, yerr=[lo, hi], marker="o", capsize=3, label=LABELS.get(c, c))
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
    ax.set_xlabel("training time budget (s, one thread)" if kind == "time" else "training token budget")
    ax.set_ylabel("validation loss (nats/char)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("validation loss against budget: CLI defaults vs the plain loop")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA, help="a text file (default: ../shared tinyshakespeare)")
    p.add_argument("--out", type=Path, default=Path("runs/text-defaults"), help="runs, results.json and the PNG")
    p.add_argument("--kind", choices=("time", "tokens"), default="time", help="budget in seconds or in tokens")
    p.add_argument("--budgets", type=float, nargs="+", default=[30, 60, 180])
    p.add_argument("--contenders", nargs="+", default=["old", "new", "plain"], help="old, new, plain, variants")
    p.add_argument("--variant", action="append", default=[], help="NAME:field=value,... (TrainConfig fields)")
    p.add_argument("--repeats", type=int, default=1, help="repeats of every (budget, contender); seeds 0, 1, ...")
    p.add_argument("--replot", action="store_true", help="only redraw the table and PNG from --out/results.json")
    args = p.parse_args(argv)
    if args.replot:
        results = json.loads((args.out / "results.json").read_text())
        print(table(results, args.contenders, args.budgets, args.kind))
        plot(results, args.contenders, args.budgets, args.kind, args.out / "text_defaults.png")
        return
    if not args.data.is_file():
        raise SystemExit(f"no such text file: {args.data} (give one with --data)")
    configs = {**BASE, **dict(parse_variant(v) for v in args.variant)}
    unknown = [c for c in args.contenders if c != "plain" and c not in configs]
    if unknown:
        raise SystemExit(f"unknown contender(s) {', '.join(unknown)}: use old, new, plain or a --variant name")
    pin_malloc()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for rep in range(args.repeats):
        order = args.contenders[rep % len(args.contenders) :] + args.contenders[: rep % len(args.contenders)]
        for b in args.budgets:
            for c in order:
                if c == "plain":
                    r = run_plain(args.data, args.kind, b, seed=rep)
                else:
                    r = run_library(args.data, args.out / f"{c}-{b:g}-{rep}", configs[c], args.kind, b, seed=rep)
                results.append({"contender": c, "budget": b, "seed": rep, **r})
                print(
                    f"budget {b:g} {c:8} seed {rep}: val {r['val']['loss']:.4f} nats/char, {r['val']['bpc']:.4f} bpc,"
                    f" {r['steps']} steps in {r['train_s']:.0f} s",
                    flush=True,
                )
                (args.out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    text = table(results, args.contenders, args.budgets, args.kind)
    variants = "; ".join(f"{k}: {v}" for k, v in configs.items() if k in args.contenders)
    print()
    print(text)
    print(f"\ntorch {torch.__version__}, 1 thread; {args.data.name}; contenders {variants}; plain: Adam 2e-3 const")
    (args.out / "table.md").write_text(text + "\n")
    plot(results, args.contenders, args.budgets, args.kind, args.out / "text_defaults.png")
    print(f"wrote {args.out / 'results.json'}, {args.out / 'table.md'}, {args.out / 'text_defaults.png'}")


if __name__ == "__main__":
    main()
