"""`statefulrnn prepare text`: tokenise text once into memory-mapped token files."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_command, add_json_option, emit


def add_prepare_command(commands: argparse._SubParsersAction) -> None:
    p = add_command(
        commands,
        "prepare",
        "tokenise text into compact memory-mapped token files",
        description="Tokenise text files once into compact token files (uint8/16/32 by vocabulary size) that "
        "training memory-maps, so corpora larger than memory can be trained on.",
    )
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    t = add_command(kinds, "text", "text files (each file is one document)")
    t.add_argument("files", nargs="+", type=Path, help="UTF-8 text files; each is one document")
    t.add_argument("--out", type=Path, required=True, help="output directory")
    t.add_argument("--level", choices=("char", "word"), default="char", help="tokens are characters or words")
    t.add_argument("--val", type=Path, default=None, help="a separate validation text file")
    t.add_argument("--val-fraction", type=float, default=None, help="hold out the last fraction of the text")
    t.add_argument("--boundary", default=None, help="a token inserted between documents (e.g. '<doc>')")
    t.add_argument("--replace-invalid", action="store_true", help="replace invalid UTF-8 bytes instead of failing")
    add_json_option(t)
    t.set_defaults(run=run_prepare_text)


def run_prepare_text(args: argparse.Namespace) -> int:
    from ..text import prepare_text

    summary = prepare_text(
        [str(f) for f in args.files],
        args.out,
        level=args.level,
        val=None if args.val is None else str(args.val),
        val_fraction=args.val_fraction,
        boundary=args.boundary,
        replace_invalid=args.replace_invalid,
    )
    scalars = ", ".join(f"{k}={v}" for k, v in summary.items() if not isinstance(v, (dict, list)))
    emit(summary, args.json, [f"prepared {args.out}: {scalars}"])
    return 0
