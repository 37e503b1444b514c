"""`statefulrnn study`: run the stateful-vs-stateless experiments and write DIR/REPORT.md."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from ..study import NAMES
from .common import add_command


def add_study_command(commands: argparse._SubParsersAction) -> None:
    """Register `statefulrnn study [NAME ...] --out DIR [--quick] [--seeds ...] [--json]`."""
    p = add_command(
        commands,
        "study",
        "run the stateful-vs-stateless experiments and write a report",
        description="Answer the seeds' questions with measurements: memory beyond the window, the alphabet "
        "start-state pitfall, a whole book against window length, batch size, cost, and forecasting. Writes "
        "DIR/REPORT.md (tables, PNG plots, transcripts, machine, versions, seeds, wall times) and "
        "DIR/results.json. --quick runs reduced forms in about a minute; the full study takes hours on 2 cores.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help=f"experiments to run (default: all): {', '.join(NAMES)}")
    p.add_argument(
        "--out", type=Path, default=Path("runs/study"), metavar="DIR", help="directory for the report and runs"
    )
    p.add_argument("--quick", action="store_true", help="reduced forms: tiny models, small data (seconds each)")
    p.add_argument(
        "--seeds", type=int, nargs="+", default=None, metavar="SEED", help="seeds (default: 0 with --quick, else 0 1 2)"
    )
    p.add_argument("--json", action="store_true", help="print the results (results.json) on stdout")
    p.set_defaults(run=run_study_command)


def run_study_command(args: argparse.Namespace) -> int:
    from ..study import report, run_study

    unknown = [n for n in args.names if n not in NAMES]
    if unknown:
        raise ValueError(f"unknown experiment(s) {', '.join(unknown)}: choose from {', '.join(NAMES)}")
    study = run_study(
        args.out,
        args.names or None,
        quick=args.quick,
        seeds=args.seeds,
        command=shlex.join(["statefulrnn", *sys.argv[1:]]),
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    if args.json:
        print(json.dumps(study, indent=1, default=report.jsonable))
        return 0
    for name, r in study["experiments"].items():
        print(f"{name}: {r['answer']}\n")
    print(f"report: {study['report']}  (total {report.duration(study['wall_s'])})")
    return 0
