"""`statefulrnn eval`: evaluate a run statefully on a file (`statefulrnn.assess.evaluate_run`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..assess import evaluate_run, format_evaluation
from .common import add_command, add_device_option, add_json_option, emit


def add_eval_command(commands: argparse._SubParsersAction) -> None:
    p = add_command(
        commands,
        "eval",
        "evaluate a run statefully on a file",
        description="Evaluate a trained run on new data, carrying the state across windows as in training.",
    )
    p.add_argument("run_dir", type=Path, help="run directory")
    p.add_argument("file", type=Path, help="text file (text runs) or series CSV/Parquet (series runs)")
    p.add_argument("--lanes", type=int, default=None, help="evaluation lanes (default: the run's)")
    p.add_argument("--window", type=int, default=None, help="evaluation window (default: the run's)")
    add_device_option(p)
    p.add_argument("--replace-invalid", action="store_true", help="replace invalid UTF-8 bytes instead of failing")
    add_json_option(p, "print metrics as JSON")
    p.set_defaults(run=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    report = evaluate_run(
        args.run_dir,
        args.file,
        lanes=args.lanes,
        window=args.window,
        device=args.device,
        replace_invalid=args.replace_invalid,
    )
    emit(report, args.json, [format_evaluation(report)])
    return 0
