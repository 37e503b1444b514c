"""`statefulrnn`: the parser assembled from the command modules, and the entry point's error handling."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from .common import HelpFormatter, error_report
from .demo import add_demo_command
from .evaluate import add_eval_command
from .export import add_export_command, add_import_keras_command
from .generate import add_forecast_command, add_generate_command
from .layout import add_layout_command
from .prepare import add_prepare_command
from .serve import add_serve_command
from .study import add_study_command
from .train import add_train_command

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_prepare_command,
    add_train_command,
    add_eval_command,
    add_generate_command,
    add_forecast_command,
    add_serve_command,
    add_layout_command,
    add_demo_command,
    add_export_command,
    add_import_keras_command,
    add_study_command,
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, one sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog="statefulrnn",
        description="Stateful LSTM/GRU/RNN models: train on long streams with truncated BPTT and carried "
        "state, evaluate statefully, generate, forecast.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"statefulrnn {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback on errors (or set STATEFULRNN_DEBUG=1)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in COMMANDS:
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run, and turn errors into one clear line."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # for --resume (options given again) and --nproc (the relaunch under torchrun)
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    debug = args.debug or os.environ.get("STATEFULRNN_DEBUG") == "1"
    from ..allocator import pin_malloc

    pin_malloc()
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("statefulrnn: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:
        if debug:
            raise
        line, status = error_report(e)
        print(line, file=sys.stderr)
        return status
