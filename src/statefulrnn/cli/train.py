"""`statefulrnn train text|series`: parse the options, call `train_text` / `train_series`, print the summary."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..assess import format_backtest
from ..series import SERIES_MODEL, SERIES_TRAIN, ForecastSpec
from .common import (
    add_command,
    add_model_options,
    add_training_options,
    defaults,
    emit,
    model_args,
    resume_overrides,
    train_config,
)


def add_train_command(commands: argparse._SubParsersAction) -> None:
    p = add_command(
        commands,
        "train",
        "train a stateful model",
        description="Train a model with truncated backpropagation through time. In stateful mode each lane's "
        "state is carried from one window to the next (and reset at each epoch and sequence start).",
    )
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    _add_text(kinds)
    _add_series(kinds)


def _add_text(kinds: argparse._SubParsersAction) -> None:
    t = add_command(
        kinds,
        "text",
        "a character or word language model on a text file or prepared corpus",
        description="Train a language model on a whole text as one stream (or a directory from "
        "'statefulrnn prepare text'). Validation is evaluated statefully with its own state.",
    )
    t.add_argument("source", nargs="?", type=Path, help="text file or prepared directory (optional with --resume)")
    t.add_argument("--out", type=Path, required=True, help="run directory to write (or resume)")
    t.add_argument(
        "--level", choices=("char", "word"), default=None, help="characters or words (default: char, or as prepared)"
    )
    t.add_argument("--val", type=Path, default=None, help="validation text file")
    t.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="hold out the last fraction for validation (default for a text file: 0.1; a prepared directory "
        "uses its own split)",
    )
    t.add_argument("--replace-invalid", action="store_true", help="replace invalid UTF-8 bytes instead of failing")
    add_model_options(t)
    add_training_options(t)
    t.set_defaults(run=run_train_text)


def _add_series(kinds: argparse._SubParsersAction) -> None:
    s = add_command(
        kinds,
        "series",
        "a multi-horizon forecaster on one or many numeric series (CSV or Parquet)",
        description="Train a forecaster whose state is carried over each series' whole history. Each series is "
        "split in time: training part, --val-windows x horizon steps for model selection and intervals, then "
        "--test-windows x horizon steps tested at rolling origins against naive and seasonal-naive forecasts. "
        "Long format (unique_id, ds, y) holds many series; a file without an id column is one series.",
    )
    s.add_argument("source", nargs="?", type=Path, help="CSV (optionally compressed) or Parquet file")
    s.add_argument("--out", type=Path, required=True, help="run directory to write (or resume)")
    add_series_read_options(s)
    d = defaults(ForecastSpec)
    g = s.add_argument_group("forecasting")
    g.add_argument("--horizon", type=int, required=False, help="steps forecast from each origin (required)")
    g.add_argument(
        "--season", type=int, default=d["season"], help="seasonal period in steps (24 for hourly data, 12 monthly)"
    )
    g.add_argument("--diff", type=int, default=d["diff"], choices=(0, 1, 2), help="first differences before scaling")
    g.add_argument("--seasonal-diff", action="store_true", help="difference at lag --season first")
    g.add_argument("--scale", choices=("minmax", "standard", "none"), default=d["scale"], help="per-series scaling")
    g.add_argument("--no-phase", action="store_true", help="do not feed sin/cos of the position in the season")
    g.add_argument("--test-windows", type=int, default=d["test_windows"], help="rolling-origin test windows per series")
    g.add_argument("--val-windows", type=int, default=d["val_windows"], help="validation windows before the test part")
    g.add_argument("--interval", type=float, default=d["interval"], help="prediction-interval coverage (0 = none)")
    add_model_options(s, SERIES_MODEL, text=False)
    add_training_options(s, SERIES_TRAIN)
    s.set_defaults(run=run_train_series)


def add_series_read_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("reading the file")
    g.add_argument("--id-col", default=None, help="series id column (default: unique_id, id or series_id if present)")
    g.add_argument("--time-col", default=None, help="timestamp column (default: ds, timestamp, time, date...)")
    g.add_argument("--target", default=None, help="value column (default: y, value or target)")
    g.add_argument("--features", nargs="*", default=[], help="extra numeric input columns")
    g.add_argument(
        "--fill",
        choices=("ffill", "interpolate"),
        default=None,
        help="fill missing timestamps and values instead of failing (filled steps are left out of metrics)",
    )
    g.add_argument("--freq", default="infer", help="expected pandas frequency (e.g. h, D, MS), infer, or none")
    g.add_argument("--sort", action="store_true", help="sort rows by id and time instead of failing on disorder")


def read_options(args: argparse.Namespace) -> dict[str, Any]:
    """The `read_series` options the reading group parsed."""
    freq = None if str(args.freq).lower() == "none" else args.freq
    return {
        "id_col": args.id_col,
        "time_col": args.time_col,
        "target": args.target,
        "fill": args.fill,
        "freq": freq,
        "sort": args.sort,
    }


def relaunch(args: argparse.Namespace) -> int | None:
    """With --nproc N > 1 outside torchrun: this command's exit status run as N processes under torchrun."""
    if args.nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {args.nproc}")
    from ..distributed import launch, launched

    return launch(args.nproc, args.argv) if args.nproc > 1 and not launched() else None


def run_train_series(args: argparse.Namespace) -> int:
    from ..series import train_series

    if (status := relaunch(args)) is not None:
        return status
    spec = None
    if not args.resume:
        if args.horizon is None:
            raise ValueError("--horizon is required: how many steps to forecast from each origin")
        spec = ForecastSpec(
            horizon=args.horizon,
            season=args.season,
            diff=args.diff,
            seasonal_diff=args.seasonal_diff,
            scale=args.scale,
            phase=not args.no_phase,
            test_windows=args.test_windows,
            val_windows=args.val_windows,
            interval=args.interval,
            features=tuple(args.features),
        )
    summary = train_series(
        args.source,
        args.out,
        spec,
        read=read_options(args),
        model_args=model_args(args, text=False),
        config=train_config(args),
        device=args.device,
        resume=args.resume,
        overrides=resume_overrides(args),
        progress=not args.quiet,
    ).summary
    if "backtest" not in summary:  # a non-zero rank of a distributed run: rank 0 reports
        return 0
    emit(summary, args.json, [_run_line(summary, "steps/s"), format_backtest(summary["backtest"])])
    return 0


def run_train_text(args: argparse.Namespace) -> int:
    from ..text import train_text

    if (status := relaunch(args)) is not None:
        return status
    summary = train_text(
        args.source,
        args.out,
        level=args.level,
        val=args.val,
        val_fraction=args.val_fraction,
        replace_invalid=args.replace_invalid,
        model_args=model_args(args),
        config=train_config(args),
        device=args.device,
        resume=args.resume,
        overrides=resume_overrides(args),
        progress=not args.quiet,
    ).summary
    val = summary.get("val") or {}
    metrics = "validation (stateful): " + ", ".join(f"{k} {v:.4f}" for k, v in val.items())
    emit(summary, args.json, [_run_line(summary, "tokens/s"), metrics if val else "no validation"])
    return 0


def _run_line(summary: dict[str, Any], rate: str) -> str:
    return (
        f"run: {summary['run']} ({summary['stopped']}, {summary['epochs']} epoch(s), {summary['steps']} steps, "
        f"{summary['elapsed_s']:.0f} s, {summary['tokens_per_s']:,.0f} {rate})"
    )
