"""Forecasting on every series in ../shared/data/series: stateful vs stateless LSTM vs naive baselines.

The suite itself (series, specs, the many-series file, the driver and the table) lives in
`statefulrnn.study.forecasting`, which the study's experiment 6 also runs; this is its command line.

    python bench/series_suite.py --out runs/series-suite            # about 15 minutes on 2 cores
    python bench/series_suite.py --only seattle co2 --seeds 0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

try:
    from statefulrnn.study.forecasting import SUITE, markdown_table, run_suite, suite_names
except ImportError:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from statefulrnn.study.forecasting import SUITE, markdown_table, run_suite, suite_names
from statefulrnn.allocator import pin_malloc


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/series-suite"))
    p.add_argument("--only", nargs="*", default=None, help=f"series to run: {', '.join(SUITE)}, many")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--modes", nargs="+", default=["stateful", "stateless"], choices=("stateful", "stateless"))
    p.add_argument("--ensemble", type=int, default=1, help="models per run (median forecast)")
    args = p.parse_args(argv)
    pin_malloc()
    results = run_suite(
        args.out,
        args.only or suite_names(),
        args.seeds,
        args.epochs,
        log=lambda s: print(s, flush=True),
        modes=args.modes,
        ensemble=args.ensemble,
    )
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    text = markdown_table(results) + (
        f"\n\ntorch {torch.__version__}; MASE is the mean over series (stocks: 5, many: 60) and over seeds."
    )
    print()
    print(text)
    (args.out / "table.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
