"""`statefulrnn layout`: print how sequences are laid out in lanes and windows."""

from __future__ import annotations

import argparse

from .common import add_command


def add_layout_command(commands: argparse._SubParsersAction) -> None:
    p = add_command(
        commands,
        "layout",
        "show how sequences are laid out in lanes and windows",
        description="Print which part of which sequence lies in which lane of which batch, for made-up "
        "sequences of the given lengths: the picture that answers 'how must I arrange my data for a "
        "stateful model?'.",
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
    p.set_defaults(run=run_layout)


def run_layout(args: argparse.Namespace) -> int:
    import numpy as np

    from ..layout import ConcatLayout, PackLayout, StatelessLayout

    seqs = [np.arange(n) for n in args.lengths]
    if args.mode == "concat":
        layout = ConcatLayout(seqs, args.lanes, args.window, reset_at_boundaries=args.reset_at_boundaries)
    elif args.mode == "pack":
        layout = PackLayout(seqs, args.lanes, args.window, max_length=args.max_length)
    else:
        layout = StatelessLayout(seqs, args.lanes, args.window, burn_in=args.burn_in)
    print(layout.describe(max_batches=args.batches))
    return 0
