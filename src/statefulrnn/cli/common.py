"""What every command module shares: the help formatter, option types and groups, output, errors.

The command modules import this module and the library, never `main.py` (no import cycle). Option
defaults are read from the library (`TrainConfig`, `ModelConfig`), so the CLI and a notebook agree.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, fields
from typing import Any

from ..files import jsonable
from ..model import PRESETS, ModelConfig
from ..precision import PRECISIONS
from ..state import CELLS
from ..train_config import SCHEDULES, TrainConfig

# Errors a user can fix: printed as one line, exit status 2. Anything else is a bug in statefulrnn.
USER_ERRORS = (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, UnicodeError)

# The TrainConfig fields the training commands expose, each as --NAME-WITH-DASHES.
TRAINING_OPTIONS = (
    "mode", "lanes", "window", "epochs", "lr", "weight_decay", "clip", "schedule", "warmup", "burn_in", "patience",
    "eval_every", "max_time", "max_tokens", "shuffle", "checkpoint_every", "log_every", "seed", "precision",
    "eval_window",
)  # fmt: skip
# Options that may change when a run is resumed, and the TrainConfig fields they set.
RESUMABLE = {
    "--epochs": "epochs", "--max-time": "max_time", "--max-tokens": "max_tokens", "--patience": "patience",
    "--eval-every": "eval_every",
}  # fmt: skip


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show each option's default where it has one worth showing (not None, a flag's False or an empty list;
    0 is shown)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        d = action.default
        if d is None or d is False or d is argparse.SUPPRESS or d == [] or not action.help:
            return action.help
        return super()._get_help_string(action)


def add_command(commands: argparse._SubParsersAction, name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A sub-parser with the shared help formatter."""
    return commands.add_parser(name, help=help, formatter_class=HelpFormatter, **kwargs)


def defaults(cls: type) -> dict[str, Any]:
    """A dataclass's field defaults by name (fields without one left out)."""
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


def duration(text: str) -> float:
    """Seconds from '90s', '15m', '1.5h' or a bare number of minutes."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text) * 60
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 90s, 15m or 1h)") from None


def add_model_options(
    p: argparse.ArgumentParser, overrides: Mapping[str, Any] | None = None, text: bool = True
) -> None:
    """The model group; defaults from `ModelConfig`, then `overrides` (ModelConfig field names)."""
    d = {**defaults(ModelConfig), **(overrides or {})}
    g = p.add_argument_group("model")
    g.add_argument(
        "--cell",
        choices=CELLS,
        default=d["cell"],
        help="recurrent cell (rnn = tanh Elman; mingru, minlstm = parallel-scan cells)",
    )
    g.add_argument("--hidden", type=int, default=d["hidden_size"], help="units per recurrent layer")
    g.add_argument("--layers", type=int, default=d["num_layers"], help="stacked recurrent layers")
    if text:
        g.add_argument("--embedding-dim", type=int, default=d["embedding_dim"], help="token embedding size")
    g.add_argument("--dropout", type=float, default=d["dropout"], help="dropout on layer inputs and the head (0 = off)")
    g.add_argument(
        "--locked-dropout",
        type=float,
        default=None,
        help="variational dropout: one mask per lane and window, the same at every step, on the "
        f"{'embedding output' if text else 'input'}, between layers and on the head input (default "
        f"{d['locked_dropout']:g} = off; training only)",
    )
    g.add_argument(
        "--weight-drop",
        type=float,
        default=None,
        help="DropConnect on the hidden-to-hidden weights, a fresh mask per window; lstm, gru and rnn only "
        f"(default {d['weight_drop']:g} = off; training only)",
    )
    if text:
        g.add_argument(
            "--embedding-dropout",
            type=float,
            default=None,
            help="drop whole rows of the embedding matrix (every occurrence of a token in a window) "
            f"(default {d['embedding_dropout']:g} = off; training only)",
        )
        g.add_argument(
            "--tie-weights",
            action="store_const",
            const=True,
            default=None,
            help="the output head uses the embedding matrix (through a hidden -> embedding projection when "
            "--hidden differs from --embedding-dim): fewer parameters (in short runs here it cost validation loss)",
        )
        g.add_argument(
            "--preset",
            choices=sorted(PRESETS),
            default=None,
            help="a named regularisation for long runs (on tinyshakespeare it lost to the defaults in 3 minutes "
            "and won in 15; BENCHMARKS.md); options given explicitly win. "
            + "; ".join(f"{name}: {_preset_flags(values)}" for name, values in sorted(PRESETS.items())),
        )


def _preset_flags(values: Mapping[str, Any]) -> str:
    return " ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v:g}") for k, v in values.items())


REGULARISERS = ("locked_dropout", "weight_drop", "embedding_dropout", "tie_weights")


def model_args(args: argparse.Namespace, text: bool = True) -> dict[str, Any]:
    """The `SequenceModel` arguments the model group parsed: an option given wins over --preset, which
    wins over the `ModelConfig` default."""
    out = {"cell": args.cell, "hidden_size": args.hidden, "num_layers": args.layers}
    if text:
        out["embedding_dim"] = args.embedding_dim
    preset = PRESETS[args.preset] if getattr(args, "preset", None) else {}
    for name in REGULARISERS:
        given = getattr(args, name, None)
        if given is not None or name in preset:
            out[name] = given if given is not None else preset[name]
    return {**out, "dropout": args.dropout}


def add_training_options(p: argparse.ArgumentParser, overrides: Mapping[str, Any] | None = None) -> None:
    """The training group; defaults from `TrainConfig`, then `overrides` (TrainConfig field names)."""
    d = {**defaults(TrainConfig), **(overrides or {})}
    p.set_defaults(eval_window=d["eval_window"])
    g = p.add_argument_group("training")
    g.add_argument(
        "--mode",
        choices=("stateful", "stateless"),
        default=d["mode"],
        help="stateful: carry each lane's state across windows (truncated BPTT); "
        "stateless: shuffled independent windows from zero state",
    )
    g.add_argument("--lanes", type=int, default=d["lanes"], help="parallel lanes = batch size")
    g.add_argument("--window", type=int, default=d["window"], help="steps per window (truncated-BPTT length)")
    g.add_argument("--epochs", type=int, default=d["epochs"], help="passes over the training data")
    g.add_argument("--lr", type=float, default=d["lr"], help="peak learning rate (AdamW)")
    g.add_argument("--weight-decay", type=float, default=d["weight_decay"], help="AdamW weight decay")
    g.add_argument("--clip", type=float, default=d["clip"], help="max gradient norm (0 = no clipping)")
    g.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default=d["schedule"],
        help="learning rate over the budget (whichever of --epochs, --max-tokens, --max-time ends the run "
        "first; a time budget's decay follows elapsed training time). wsd: the peak --lr (after any --warmup) "
        f"until the last {d['decay_fraction']:.0%}% of the budget, then a linear decay to {d['min_lr']:g} x lr: "
        "good at every budget, and a run extended on --resume returns to the peak rate and decays again before its new "
        f"end. cosine: a half cosine from lr to {d['min_lr']:g} x lr over the whole budget (spends a short "
        f"budget at reduced rates). step: x {d['gamma']:g} every {d['step_epochs']} epoch(s). constant: --lr "
        "throughout",
    )
    g.add_argument(
        "--warmup",
        type=int,
        default=d["warmup"],
        help="steps of linear warm-up to --lr, for any schedule (0 = none; 100 cost validation loss in our tests)",
    )
    g.add_argument(
        "--burn-in",
        type=int,
        default=d["burn_in"],
        help="stateless only: steps run without gradient before each window",
    )
    g.add_argument(
        "--patience", type=int, default=d["patience"], help="early stopping: evaluations without a better val loss"
    )
    g.add_argument(
        "--eval-every",
        type=duration,
        default=d["eval_every"],
        help="also evaluate validation every this much training time within an epoch (e.g. 30s, 5m; default: at "
        "each epoch's end only); each evaluation may become the kept best weights, and its time counts in --max-time",
    )
    g.add_argument("--max-time", type=duration, default=d["max_time"], help="training time budget (e.g. 90s, 15m, 1h)")
    g.add_argument("--max-tokens", type=int, default=d["max_tokens"], help="training token budget")
    g.add_argument(
        "--shuffle",
        action="store_true",
        default=d["shuffle"],
        help="stateful: reorder whole documents each epoch (seeded)",
    )
    g.add_argument(
        "--checkpoint-every",
        type=float,
        default=d["checkpoint_every"],
        help="seconds between checkpoints (0 = every step)",
    )
    g.add_argument("--log-every", type=int, default=d["log_every"], help="steps between metrics-log lines")
    g.add_argument("--seed", type=int, default=d["seed"], help="seed for weights, dropout and shuffling")
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=d["precision"],
        help="fp32: everything in float32. bf16: the training forward pass in bfloat16 autocast (weights, "
        "loss, state and evaluation stay float32); about 1.7x faster on CPUs with AVX512-BF16/AMX and on "
        "recent GPUs, refused where the device cannot run the cell in bf16 (e.g. oneDNN's LSTM on AVX2-only "
        "CPUs). auto: bf16 where it is native and a quick measurement finds it faster, else fp32. The "
        "precision used is recorded in the run's config.json and kept on --resume",
    )
    g.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    g.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="data-parallel processes on this machine (lanes are shared out; relaunches under torchrun)",
    )
    g.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    add_json_option(g, "print the final summary as JSON on stdout")
    g.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The `TrainConfig` the training group parsed."""
    return TrainConfig(**{name: getattr(args, name) for name in TRAINING_OPTIONS})


def resume_overrides(args: argparse.Namespace) -> dict[str, Any] | None:
    """With --resume: the options given on the command line that may change when resuming; else None."""
    if not args.resume:
        return None
    given = {a.split("=")[0] for a in getattr(args, "argv", ()) if a.startswith("--")}
    return {attr: getattr(args, attr) for flag, attr in RESUMABLE.items() if flag in given}


def add_json_option(
    p: argparse.ArgumentParser | argparse._ArgumentGroup, help: str = "print the summary as JSON"
) -> None:
    p.add_argument("--json", action="store_true", help=help)


def add_device_option(p: argparse.ArgumentParser, default: str = "auto") -> None:
    p.add_argument("--device", default=default, help="auto, cpu, cuda, cuda:N")


def emit(summary: Any, as_json: bool, lines: Iterable[str]) -> None:
    """Print `summary` as strict JSON, or the summary lines; nothing on a non-zero distributed rank."""
    if os.environ.get("RANK", "0") != "0":  # a non-zero rank of a distributed run: rank 0 reports
        return
    if as_json:
        print(json.dumps(jsonable(summary), indent=2, default=str, allow_nan=False))
    else:
        print("\n".join(lines))


def one_line(e: BaseException) -> str:
    """An exception's message on one line (a file error as 'reason: path')."""
    text = str(e) or type(e).__name__
    if isinstance(e, (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)) and e.filename:
        text = f"{e.strerror}: {e.filename}"
    return " ".join(text.split())


def error_report(e: Exception) -> tuple[str, int]:
    """The one line printed for an exception a command raised, and the exit status.

    A user error (bad input, missing file) is `statefulrnn: error: ...` with status 2; a failed
    distributed process the same with status 1; anything else is a bug: status 1, with the way to see more.
    """
    if isinstance(e, USER_ERRORS):
        return f"statefulrnn: error: {one_line(e)}", 2
    from ..distributed import DistributedError  # here, so that parsing and serving never load torch.distributed

    if isinstance(e, DistributedError):
        return f"statefulrnn: error: {one_line(e)}", 1
    return f"statefulrnn: internal error: {type(e).__name__}: {one_line(e)} (rerun with --debug for the traceback)", 1
