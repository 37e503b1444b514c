"""`statefulrnn generate` (text runs) and `statefulrnn forecast` (series runs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_command, add_device_option, add_json_option


def add_generate_command(commands: argparse._SubParsersAction) -> None:
    p = add_command(
        commands,
        "generate",
        "sample text from a text run",
        description="Warm the state on the prompt in one call, then sample token by token from the carried "
        "state, printing the text as it is produced.",
    )
    p.add_argument("run_dir", type=Path, help="run directory of a text run")
    p.add_argument("--prompt", default="", help="text that warms up the state (default: a line break)")
    p.add_argument("-n", type=int, default=500, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (0 = greedy)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling: smallest set with this mass")
    p.add_argument("--seed", type=int, default=None, help="seed for reproducible samples")
    add_device_option(p)
    p.set_defaults(run=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from ..text import load_text_run
    from ..text.generate import generate

    model, vocab, _ = load_text_run(args.run_dir, args.device)
    pieces = generate(
        model,
        vocab,
        args.prompt,
        args.n,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    )
    sys.stdout.write(args.prompt)
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def add_forecast_command(commands: argparse._SubParsersAction) -> None:
    p = add_command(
        commands,
        "forecast",
        "forecast the steps after each series' history with a series run",
        description="Warm the state on each series' full history in one fused pass, then forecast the next "
        "steps. Series the run was trained on use its fitted transforms and calibrated intervals; new series get "
        "transforms fitted on their history and no interval.",
    )
    p.add_argument("run_dir", type=Path, help="run directory of a series run")
    p.add_argument("--history", type=Path, required=True, help="CSV/Parquet with each series' history")
    p.add_argument("--horizon", type=int, default=None, help="steps to forecast (default and maximum: the run's)")
    p.add_argument("--out", type=Path, default=None, help="write the forecast as CSV (unique_id, ds, step, ...)")
    p.add_argument("--plot", type=Path, default=None, help="write a PNG of history tail, forecast and interval")
    add_device_option(p)
    add_json_option(p, "print the forecast as JSON records")
    p.set_defaults(run=run_forecast)


def run_forecast(args: argparse.Namespace) -> int:
    from ..series import forecast_run, load_series_run, plot_forecast_table, read_series

    _, spec, _, config = load_series_run(args.run_dir, "cpu")
    history = read_series(args.history, features=spec.features, **config["data"]["read"])
    table = forecast_run(args.run_dir, history, horizon=args.horizon, device=args.device)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out, index=False)
    if args.plot:
        plot_forecast_table(history, table, args.plot)
    if args.json:
        print(table.to_json(orient="records", date_format="iso", indent=1))
    elif not args.out:
        print(table.to_string(index=False))
    else:
        print(f"wrote {len(table)} forecast rows for {table['unique_id'].nunique()} series to {args.out}")
    return 0
