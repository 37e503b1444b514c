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
    g = s.add_argument_group(
        "forecasting",
        "Preparation options left at 'auto' are chosen on the validation windows: each candidate trains with a "
        "quarter of the budget, the best with all of it; the choice and its validation MASE next to seasonal "
        "naive's are printed and saved in RUN/selection.json. Give a value to fix it.",
    )
    g.add_argument("--horizon", type=int, required=False, help="steps forecast from each origin (required)")
    g.add_argument(
        "--season",
        nargs="+",
        default=["auto"],
        metavar="STEPS",
        help="seasonal periods in steps, the main one first (MASE and seasonal naive use it): e.g. 48 336 for "
        "half-hourly data with daily and weekly cycles; 1 for none; auto: the usual periods of the "
        "data's frequency (hourly 24 168, half-hourly 48 336, daily 7, weekly 52, monthly 12, quarterly 4)",
    )
    g.add_argument(
        "--diff",
        default="auto",
        choices=("auto", "0", "1", "2"),
        help="first differences before scaling",
    )
    g.add_argument(
        "--seasonal-diff",
        nargs="?",
        const="main",
        default="auto",
        metavar="LAG",
        help="difference at this seasonal lag first (0: never; without a value: the main season; auto: choose "
        "among none and each season)",
    )
    g.add_argument(
        "--deseason",
        default="auto",
        choices=("auto", "yes", "no"),
        help="subtract the seasonal profile an MSTL decomposition (statsmodels) finds in the training part, so the "
        "network models what the seasons leave (a hybrid, as the M4 winner ES-RNN)",
    )
    g.add_argument(
        "--scale",
        choices=("auto", "minmax", "standard", "none"),
        default="auto",
        help="per-series scaling",
    )
    g.add_argument("--no-phase", action="store_true", help="do not feed sin/cos of the position in each season")
    g.add_argument(
        "--ensemble",
        type=int,
        default=1,
        metavar="N",
        help="train N models (seeds seed..seed+N-1) and forecast their median",
    )
    g.add_argument(
        "--test-windows",
        type=int,
        default=d["test_windows"],
        help="rolling-origin test windows per series (0: none, train on everything before validation)",
    )
    g.add_argument("--val-windows", type=int, default=d["val_windows"], help="validation windows before the test part")
    g.add_argument(
        "--interval", type=float, default=d["interval"], help="conformal prediction-interval coverage (0 = none)"
    )
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
            **_seasons(args.season),
            diff=None if args.diff == "auto" else int(args.diff),
            seasonal_diff=_seasonal_diff(args.seasonal_diff),
            deseason={"auto": None, "yes": True, "no": False}[args.deseason],
            scale=None if args.scale == "auto" else args.scale,
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
        ensemble=args.ensemble,
        device=args.device,
        resume=args.resume,
        overrides=resume_overrides(args),
        progress=not args.quiet,
    ).summary
    if "validation" not in summary:  # a non-zero rank of a distributed run: rank 0 reports
        return 0
    emit(summary, args.json, _series_lines(summary))
    return 0


def _series_lines(summary: dict[str, Any]) -> list[str]:
    """What a series run prints: the run, the preparation and how it was chosen, validation, the backtest."""
    from ..series.select import selection_lines

    lines = [_run_line(summary, "steps/s")]
    if summary.get("selection"):
        lines += selection_lines(summary["selection"])
    v = summary["validation"]
    members = f", median of {summary['ensemble']} models" if summary["ensemble"] > 1 else ""
    naive = ", ".join(f"{k.rsplit('_', 1)[1]}: {x:.3f}" for k, x in _naive_means(v).items())
    lines.append(
        f"model: {summary['preparation']}, seasons {tuple(summary['seasons']) or 'none'}{members}; validation MASE "
        f"{v['mase']:.3f} (seasonal naive at season {naive})"
    )
    if summary.get("backtest"):
        lines.append(format_backtest(summary["backtest"]))
    if summary.get("warning"):
        lines.append(f"WARNING: {summary['warning']}")
    return lines


def _naive_means(validation: dict[str, Any]) -> dict[str, float]:
    """The mean validation MASE of seasonal naive at each season, from the per-series report."""
    per = list(validation["series"].values())
    return {k: sum(p[k] for p in per) / len(per) for k in per[0] if k.startswith("seasonal_naive_")}


def _seasons(given: list[str]) -> dict[str, Any]:
    """ForecastSpec's season fields from --season: "auto" or one or more periods."""
    if given == ["auto"]:
        return {"season": "auto"}
    try:
        periods = [int(p) for p in given]
    except ValueError:
        raise ValueError(f"--season takes 'auto' or whole numbers of steps, got {' '.join(given)}") from None
    if any(p < 1 for p in periods):
        raise ValueError(f"--season periods must be at least 1, got {' '.join(given)}")
    return {"season": periods[0], "seasons": tuple(p for p in periods if p > 1)}


def _seasonal_diff(given: str) -> int | bool | None:
    if given == "auto":
        return None
    if given == "main":
        return True
    try:
        return int(given)
    except ValueError:
        raise ValueError(f"--seasonal-diff takes a lag in steps (0 for none) or auto, got {given!r}") from None


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
