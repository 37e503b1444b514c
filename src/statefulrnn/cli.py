"""The `statefulrnn` command: argument parsing and error printing only; every command calls the library."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .export_cli import add_export_command, add_import_keras_command
from .serve_cli import add_serve_command
from .study_cli import add_study_command

# Errors a user can fix: printed as one line, exit status 2. Anything else is a bug in statefulrnn.
USER_ERRORS = (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, UnicodeError)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, one sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog="statefulrnn",
        description="Stateful LSTM/GRU/RNN models: train on long streams with truncated BPTT and carried "
        "state, evaluate statefully, generate, forecast.",
        formatter_class=_Help,
    )
    parser.add_argument("--version", action="version", version=f"statefulrnn {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback on errors (or set STATEFULRNN_DEBUG=1)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in _COMMANDS:
        register(commands)
    return parser


def _add_layout_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "layout",
        help="show how sequences are laid out in lanes and windows",
        description="Print which part of which sequence lies in which lane of which batch, for made-up "
        "sequences of the given lengths: the picture that answers 'how must I arrange my data for a "
        "stateful model?'.",
        formatter_class=_Help,
    )
    p.add_argument("lengths", type=int, nargs="+", help="length of each sequence, in steps")
    p.add_argument("--mode", choices=("concat", "pack", "stateless"), default="concat", help="layout kind")
    p.add_argument("--lanes", type=int, default=4, help="lanes (batch rows) carried in parallel")
    p.add_argument("--window", type=int, default=8, help="steps per window (truncated-BPTT length)")
    p.add_argument(
        "--reset-at-boundaries", action="store_true", help="concat mode: reset state where a sequence starts"
    )
    p.add_argument("--max-length", type=int, default=None, help="pack mode: cut longer sequences into pieces")
    p.add_argument("--burn-in", type=int, default=0, help="stateless mode: steps of warm-up context per window")
    p.add_argument("--batches", type=int, default=4, help="batches to show")
    p.set_defaults(run=_run_layout)


def _run_layout(args: argparse.Namespace) -> int:
    import numpy as np

    from .layout import ConcatLayout, PackLayout, StatelessLayout

    seqs = [np.arange(n) for n in args.lengths]
    if args.mode == "concat":
        layout = ConcatLayout(seqs, args.lanes, args.window, reset_at_boundaries=args.reset_at_boundaries)
    elif args.mode == "pack":
        layout = PackLayout(seqs, args.lanes, args.window, max_length=args.max_length)
    else:
        layout = StatelessLayout(seqs, args.lanes, args.window, burn_in=args.burn_in)
    print(layout.describe(max_batches=args.batches))
    return 0


def _duration(text: str) -> float:
    """Seconds from '90s', '15m', '1.5h' or a bare number of minutes."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text) * 60
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 90s, 15m or 1h)") from None


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Show a default only where there is one worth showing."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, argparse.SUPPRESS) or not action.help:
            return action.help
        return super()._get_help_string(action)


_formatter = _Help


def _add_model_options(p: argparse.ArgumentParser, hidden: int = 256, layers: int = 2, text: bool = True) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--cell", choices=("lstm", "gru", "rnn"), default="lstm", help="recurrent cell (rnn = tanh Elman)")
    g.add_argument("--hidden", type=int, default=hidden, help="units per recurrent layer")
    g.add_argument("--layers", type=int, default=layers, help="stacked recurrent layers")
    if text:
        g.add_argument("--embedding-dim", type=int, default=64, help="token embedding size")
    g.add_argument("--dropout", type=float, default=0.0, help="dropout on layer inputs and the head (0 = off)")


def _add_training_options(
    p: argparse.ArgumentParser, lanes: int = 64, window: int = 64, epochs: int = 10, lr: float = 2e-3
) -> None:
    g = p.add_argument_group("training")
    g.add_argument(
        "--mode",
        choices=("stateful", "stateless"),
        default="stateful",
        help="stateful: carry each lane's state across windows (truncated BPTT); "
        "stateless: shuffled independent windows from zero state",
    )
    g.add_argument("--lanes", type=int, default=lanes, help="parallel lanes = batch size")
    g.add_argument("--window", type=int, default=window, help="steps per window (truncated-BPTT length)")
    g.add_argument("--epochs", type=int, default=epochs, help="passes over the training data")
    g.add_argument("--lr", type=float, default=lr, help="peak learning rate (AdamW)")
    g.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay")
    g.add_argument("--clip", type=float, default=1.0, help="max gradient norm (0 = no clipping)")
    g.add_argument(
        "--schedule", choices=("cosine", "step", "constant"), default="cosine", help="learning-rate schedule"
    )
    g.add_argument("--warmup", type=int, default=0, help="steps of linear learning-rate warm-up")
    g.add_argument(
        "--burn-in", type=int, default=0, help="stateless only: steps run without gradient before each window"
    )
    g.add_argument("--patience", type=int, default=None, help="early stopping: epochs without a better val loss")
    g.add_argument("--max-time", type=_duration, default=None, help="training time budget (e.g. 90s, 15m, 1h)")
    g.add_argument("--max-tokens", type=int, default=None, help="training token budget")
    g.add_argument("--shuffle", action="store_true", help="stateful: reorder whole documents each epoch (seeded)")
    g.add_argument("--checkpoint-every", type=float, default=60.0, help="seconds between checkpoints (0 = every step)")
    g.add_argument("--log-every", type=int, default=20, help="steps between metrics-log lines")
    g.add_argument("--seed", type=int, default=0, help="seed for weights, dropout and shuffling")
    g.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="bf16: training forward pass in bfloat16 autocast (weights, loss, state and evaluation stay "
        "float32); about 1.7x faster on CPUs with AVX512-BF16/AMX and on recent GPUs, slower elsewhere",
    )
    g.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    g.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="data-parallel processes on this machine (lanes are shared out; relaunches under torchrun)",
    )
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    g.add_argument("--json", action="store_true", help="print the final summary as JSON on stdout")
    g.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")


def _train_config(args: argparse.Namespace):
    from .train import TrainConfig

    return TrainConfig(
        mode=args.mode,
        lanes=args.lanes,
        window=args.window,
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        clip=args.clip,
        schedule=args.schedule,
        warmup=args.warmup,
        burn_in=args.burn_in,
        patience=args.patience,
        seed=args.seed,
        max_time=args.max_time,
        max_tokens=args.max_tokens,
        shuffle=args.shuffle,
        precision=args.precision,
        checkpoint_every=args.checkpoint_every,
        log_every=args.log_every,
        eval_window=getattr(args, "eval_window", 256),
    )


def _explicit(argv_flags: set[str], args: argparse.Namespace) -> dict:
    """Options given on the command line that may change when resuming."""
    names = {"--epochs": "epochs", "--max-time": "max_time", "--max-tokens": "max_tokens", "--patience": "patience"}
    return {attr: getattr(args, attr) for flag, attr in names.items() if flag in argv_flags}


def _relaunch(args: argparse.Namespace) -> int | None:
    """With --nproc N > 1 outside torchrun: run this command as N processes under torchrun, its exit status."""
    if args.nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {args.nproc}")
    from .distributed import launch, launched

    return launch(args.nproc, args.argv) if args.nproc > 1 and not launched() else None


def _emit(summary: dict, as_json: bool, lines: list[str]) -> None:
    import json

    from .checkpoint import jsonable

    if os.environ.get("RANK", "0") != "0":  # a non-zero rank of a distributed run: rank 0 reports
        return
    if as_json:
        print(json.dumps(jsonable(summary), indent=2, default=str, allow_nan=False))
    else:
        print("\n".join(lines))


def _add_prepare_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "prepare",
        help="tokenise text into compact memory-mapped token files",
        description="Tokenise text files once into compact token files (uint8/16/32 by vocabulary size) that "
        "training memory-maps, so corpora larger than memory can be trained on.",
        formatter_class=_formatter,
    )
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    t = kinds.add_parser("text", help="text files (each file is one document)", formatter_class=_formatter)
    t.add_argument("files", nargs="+", type=Path, help="UTF-8 text files; each is one document")
    t.add_argument("--out", type=Path, required=True, help="output directory")
    t.add_argument("--level", choices=("char", "word"), default="char", help="tokens are characters or words")
    t.add_argument("--val", type=Path, default=None, help="a separate validation text file")
    t.add_argument("--val-fraction", type=float, default=None, help="hold out the last fraction of the text")
    t.add_argument("--boundary", default=None, help="a token inserted between documents (e.g. '<doc>')")
    t.add_argument("--replace-invalid", action="store_true", help="replace invalid UTF-8 bytes instead of failing")
    t.add_argument("--json", action="store_true", help="print the summary as JSON")
    t.set_defaults(run=_run_prepare_text)


def _run_prepare_text(args: argparse.Namespace) -> int:
    from .text import prepare_text

    summary = prepare_text(
        [str(f) for f in args.files],
        args.out,
        level=args.level,
        val=None if args.val is None else str(args.val),
        val_fraction=args.val_fraction,
        boundary=args.boundary,
        replace_invalid=args.replace_invalid,
    )
    _emit(
        summary,
        args.json,
        [
            f"prepared {args.out}: "
            + ", ".join(f"{k}={v}" for k, v in summary.items() if not isinstance(v, (dict, list)))
        ],
    )
    return 0


def _add_train_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train",
        help="train a stateful model",
        description="Train a model with truncated backpropagation through time. In stateful mode each lane's "
        "state is carried from one window to the next (and reset at each epoch and sequence start).",
        formatter_class=_formatter,
    )
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    t = kinds.add_parser(
        "text",
        help="a character or word language model on a text file or prepared corpus",
        description="Train a language model on a whole text as one stream (or a directory from "
        "'statefulrnn prepare text'). Validation is evaluated statefully with its own state.",
        formatter_class=_formatter,
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
    _add_model_options(t)
    _add_training_options(t)
    t.set_defaults(run=_run_train_text)

    s = kinds.add_parser(
        "series",
        help="a multi-horizon forecaster on one or many numeric series (CSV or Parquet)",
        description="Train a forecaster whose state is carried over each series' whole history. Each series is "
        "split in time: training part, --val-windows x horizon steps for model selection and intervals, then "
        "--test-windows x horizon steps tested at rolling origins against naive and seasonal-naive forecasts. "
        "Long format (unique_id, ds, y) holds many series; a file without an id column is one series.",
        formatter_class=_formatter,
    )
    s.add_argument("source", nargs="?", type=Path, help="CSV (optionally compressed) or Parquet file")
    s.add_argument("--out", type=Path, required=True, help="run directory to write (or resume)")
    _add_series_read_options(s)
    g = s.add_argument_group("forecasting")
    g.add_argument("--horizon", type=int, required=False, help="steps forecast from each origin (required)")
    g.add_argument("--season", type=int, default=1, help="seasonal period in steps (24 for hourly data, 12 monthly)")
    g.add_argument("--diff", type=int, default=0, choices=(0, 1, 2), help="first differences before scaling")
    g.add_argument("--seasonal-diff", action="store_true", help="difference at lag --season first")
    g.add_argument("--scale", choices=("minmax", "standard", "none"), default="minmax", help="per-series scaling")
    g.add_argument("--no-phase", action="store_true", help="do not feed sin/cos of the position in the season")
    g.add_argument("--test-windows", type=int, default=4, help="rolling-origin test windows per series")
    g.add_argument("--val-windows", type=int, default=4, help="validation windows before the test part")
    g.add_argument("--interval", type=float, default=0.8, help="prediction-interval coverage (0 = none)")
    _add_model_options(s, hidden=64, layers=1, text=False)
    _add_training_options(s, lanes=16, window=48, epochs=40, lr=3e-3)
    s.set_defaults(run=_run_train_series, eval_window=512)


def _add_series_read_options(p: argparse.ArgumentParser) -> None:
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


def _read_options(args: argparse.Namespace) -> dict:
    freq = None if str(args.freq).lower() == "none" else args.freq
    return {
        "id_col": args.id_col,
        "time_col": args.time_col,
        "target": args.target,
        "fill": args.fill,
        "freq": freq,
        "sort": args.sort,
    }


def _run_train_series(args: argparse.Namespace) -> int:
    from .forecast import ForecastSpec, train_series

    if (status := _relaunch(args)) is not None:
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
        read=_read_options(args),
        model_args={"cell": args.cell, "hidden_size": args.hidden, "num_layers": args.layers, "dropout": args.dropout},
        config=_train_config(args),
        device=args.device,
        resume=args.resume,
        overrides=_explicit(args.given, args) if args.resume else None,
        progress=not args.quiet,
    )
    if "backtest" not in summary:  # a non-zero rank of a distributed run: rank 0 reports
        return 0
    lines = [
        f"run: {summary['run']} ({summary['stopped']}, {summary['epochs']} epoch(s), {summary['steps']} steps, "
        f"{summary['elapsed_s']:.0f} s, {summary['tokens_per_s']:,.0f} steps/s)",
        _backtest_text(summary["backtest"]),
    ]
    _emit(summary, args.json, lines)
    return 0


def _backtest_text(report: dict) -> str:
    head = f"{'forecaster':<16} {'MAE':>10} {'RMSE':>10} {'MASE':>7} {'sMAPE%':>7}"
    lines = [
        f"rolling-origin test: {report['windows']} window(s) x horizon {report['horizon']} per series, "
        f"mean over {len(report['series'])} series (season {report['season']})",
        head,
        "-" * len(head),
    ]
    for name, m in report["mean"].items():
        lines.append(f"{name:<16} {m['mae']:10.4g} {m['rmse']:10.4g} {m['mase']:7.3f} {m['smape']:7.3f}")
    if "interval" in report:
        i = report["interval"]
        lines.append(f"{i['nominal']:.0%} interval: {i['coverage']:.1%} of {i['points']} test values covered")
    return "\n".join(lines)


def _run_train_text(args: argparse.Namespace) -> int:
    from .textlm import train_text

    if (status := _relaunch(args)) is not None:
        return status
    summary = train_text(
        args.source,
        args.out,
        level=args.level,
        val=args.val,
        val_fraction=args.val_fraction,
        replace_invalid=args.replace_invalid,
        model_args={
            "cell": args.cell,
            "hidden_size": args.hidden,
            "num_layers": args.layers,
            "embedding_dim": args.embedding_dim,
            "dropout": args.dropout,
        },
        config=_train_config(args),
        device=args.device,
        resume=args.resume,
        overrides=_explicit(args.given, args) if args.resume else None,
        progress=not args.quiet,
    )
    val = summary.get("val") or {}
    lines = [
        f"run: {summary['run']} ({summary['stopped']}, {summary['epochs']} epoch(s), {summary['steps']} steps, "
        f"{summary['elapsed_s']:.0f} s, {summary['tokens_per_s']:,.0f} tokens/s)",
        "validation (stateful): " + ", ".join(f"{k} {v:.4f}" for k, v in val.items()) if val else "no validation",
    ]
    _emit(summary, args.json, lines)
    return 0


def _add_eval_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "eval",
        help="evaluate a run statefully on a file",
        description="Evaluate a trained run on new data, carrying the state across windows as in training.",
        formatter_class=_formatter,
    )
    p.add_argument("run_dir", type=Path, help="run directory")
    p.add_argument("file", type=Path, help="text file (text runs) or series CSV/Parquet (series runs)")
    p.add_argument("--lanes", type=int, default=None, help="evaluation lanes (default: the run's)")
    p.add_argument("--window", type=int, default=None, help="evaluation window (default: the run's)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--replace-invalid", action="store_true", help="replace invalid UTF-8 bytes instead of failing")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    p.set_defaults(run=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from .checkpoint import read_config
    from .textlm import evaluate_text

    if read_config(args.run_dir).get("task") == "series":
        from .forecast import evaluate_series_run

        report = evaluate_series_run(args.run_dir, args.file, device=args.device)
        _emit(report, args.json, [_backtest_text(report)])
        return 0

    metrics = evaluate_text(
        args.run_dir,
        args.file,
        lanes=args.lanes,
        window=args.window,
        device=args.device,
        replace_invalid=args.replace_invalid,
    )
    _emit(metrics, args.json, [f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in metrics.items()])
    return 0


def _add_generate_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "generate",
        help="sample text from a text run",
        description="Warm the state on the prompt in one call, then sample token by token from the carried "
        "state, printing the text as it is produced.",
        formatter_class=_formatter,
    )
    p.add_argument("run_dir", type=Path, help="run directory of a text run")
    p.add_argument("--prompt", default="", help="text that warms up the state (default: a line break)")
    p.add_argument("-n", type=int, default=500, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (0 = greedy)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling: smallest set with this mass")
    p.add_argument("--seed", type=int, default=None, help="seed for reproducible samples")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.set_defaults(run=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    from .generate import generate
    from .textlm import load_text_run

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


def _add_forecast_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "forecast",
        help="forecast the steps after each series' history with a series run",
        description="Warm the state on each series' full history in one fused pass, then forecast the next "
        "steps. Series the run was trained on use its fitted transforms and calibrated intervals; new series get "
        "transforms fitted on their history and no interval.",
        formatter_class=_formatter,
    )
    p.add_argument("run_dir", type=Path, help="run directory of a series run")
    p.add_argument("--history", type=Path, required=True, help="CSV/Parquet with each series' history")
    p.add_argument("--horizon", type=int, default=None, help="steps to forecast (default and maximum: the run's)")
    p.add_argument("--out", type=Path, default=None, help="write the forecast as CSV (unique_id, ds, step, ...)")
    p.add_argument("--plot", type=Path, default=None, help="write a PNG of history tail, forecast and interval")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--json", action="store_true", help="print the forecast as JSON records")
    p.set_defaults(run=_run_forecast)


def _run_forecast(args: argparse.Namespace) -> int:
    from .forecast import forecast_run, load_series_run, plot_forecast_table
    from .series_data import read_series

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


def _add_demo_command(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "demo",
        help="the main job: stateful vs stateless LSTM forecasters on real hourly temperatures",
        description="Train stateful and stateless LSTMs (same size, data and budget; 3 seeds each) on the hourly "
        "Seattle temperatures of 2010 shipped in vega_datasets, test them at 7 rolling origins of 24 hours against "
        "naive and seasonal-naive forecasts, print the table and write the forecast plot. No network needed.",
        formatter_class=_formatter,
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="directory for runs, table and plot")
    p.add_argument("--epochs", type=int, default=40, help="training epochs per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (one run per mode and seed)")
    p.add_argument("--threads", type=int, default=1, help="PyTorch CPU threads (small models: 1 is fastest)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from .checkpoint import write_json
    from .demo import format_table, run_demo

    results = run_demo(
        args.out,
        epochs=args.epochs,
        seeds=tuple(args.seeds),
        device=args.device,
        progress=not args.quiet,
        threads=args.threads,
    )
    write_json(args.out / "results.json", results)
    text = format_table(results["table"])
    (args.out / "table.txt").write_text(text + "\n")
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
    _emit(results, args.json, lines)
    return 0


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_prepare_command,
    _add_train_command,
    _add_eval_command,
    _add_generate_command,
    _add_forecast_command,
    add_serve_command,
    _add_layout_command,
    _add_demo_command,
    add_export_command,
    add_import_keras_command,
    add_study_command,
]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run, and turn user errors into one clear line."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.given = {a.split("=")[0] for a in argv if a.startswith("--")}
    args.argv = argv
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    debug = args.debug or os.environ.get("STATEFULRNN_DEBUG") == "1"
    from .allocator import pin_malloc

    pin_malloc()
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("statefulrnn: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except USER_ERRORS as e:
        if debug:
            raise
        print(f"statefulrnn: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: still one line, with the way to see more
        if debug:
            raise
        distributed = sys.modules.get(f"{__package__}.distributed")
        if distributed is not None and isinstance(e, distributed.DistributedError):
            print(f"statefulrnn: error: {_one_line(e)}", file=sys.stderr)
            return 1
        print(
            f"statefulrnn: internal error: {type(e).__name__}: {_one_line(e)} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


def _one_line(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if isinstance(e, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)) and e.filename:
        text = f"{e.strerror}: {e.filename}"
    return " ".join(text.split())
