"""`statefulrnn demo`: stateful vs stateless LSTM forecasters on real hourly temperatures (`statefulrnn.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_command, add_device_option, add_json_option, emit


def add_demo_command(commands: argparse._SubParsersAction) -> None:
    # The defaults of `run_demo` (tests/test_cli.py checks they agree); importing statefulrnn.demo here
    # would load matplotlib and the trainer for every command.
    d = {"epochs": 40, "seeds": (0, 1, 2), "threads": 1, "device": "auto"}
    p = add_command(
        commands,
        "demo",
        "the main job: stateful vs stateless LSTM forecasters on real hourly temperatures",
        description="Train stateful and stateless LSTMs (same size, data and budget; 3 seeds each) on the hourly "
        "Seattle temperatures of 2010 shipped in vega_datasets, test them at 7 rolling origins of 24 hours against "
        "naive and seasonal-naive forecasts, print the table and write the forecast plot. No network needed.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="directory for runs, table and plot")
    p.add_argument("--epochs", type=int, default=d["epochs"], help="training epochs per run")
    p.add_argument("--seeds", type=int, nargs="+", default=list(d["seeds"]), help="seeds (one run per mode and seed)")
    p.add_argument("--threads", type=int, default=d["threads"], help="PyTorch CPU threads (small models: 1 is fastest)")
    add_device_option(p, d["device"])
    add_json_option(p, "print the results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run_demo_command)


def run_demo_command(args: argparse.Namespace) -> int:
    from ..demo import format_table, run_demo

    for name in ("epochs", "threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1")
    results = run_demo(
        args.out,
        epochs=args.epochs,
        seeds=tuple(args.seeds),
        device=args.device,
        progress=not args.quiet,
        threads=args.threads,
    )
    text = format_table(results["table"])
    interval = results["runs"][f"stateful-{args.seeds[0]}"]["backtest"].get("interval")
    lines = [
        "",
        "Seattle hourly temperature 2010 (vega_datasets), horizon 24 h, 7 rolling origins over the last week:",
        text,
    ]
    if interval:
        lines.append(
            f"stateful LSTM {interval['nominal']:.0%} interval covered {interval['coverage']:.1%} of test hours"
        )
    lines.append(f"plot: {results['plot']}   runs and results.json: {args.out}")
    emit(results, args.json, lines)
    return 0
