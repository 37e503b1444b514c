"""The stateful-vs-stateless study: experiments that answer the seeds' questions with measurements.

Each experiment module has `run(out_dir, quick, seeds) -> dict` (title, question, measured answer,
tables, plots, checks, raw data); `run_study` runs a selection of them and writes the report.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

NAMES = ("memory", "alphabet", "book", "batch", "cost", "forecasting")
QUICK_SEEDS = (0,)
FULL_SEEDS = (0, 1, 2)


def experiment(name: str) -> Any:
    """The module of experiment `name`."""
    if name not in NAMES:
        raise ValueError(f"unknown experiment {name!r}: use {', '.join(NAMES)}")
    return importlib.import_module(f"{__name__}.{name}")


def run_study(
    out: str | Path,
    names: Sequence[str] | None = None,
    *,
    quick: bool = False,
    seeds: Sequence[int] | None = None,
    command: str = "statefulrnn study",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the named experiments (all by default) into `out` and write `out/REPORT.md` and `out/results.json`."""
    from .report import machine, versions, write_report

    out = Path(out)
    names = list(names or NAMES)
    modules = {name: experiment(name) for name in names}
    seeds = tuple(seeds or (QUICK_SEEDS if quick else FULL_SEEDS))
    study: dict[str, Any] = {
        "command": command,
        "quick": quick,
        "seeds": list(seeds),
        "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "versions": versions(),
        "experiments": {},
    }
    start = time.perf_counter()
    for i, (name, module) in enumerate(modules.items(), 1):
        if log:
            log(f"study: {name} ({i}/{len(modules)}){' quick' if quick else ''}, seeds {list(seeds)} ...")
        t0 = time.perf_counter()
        result = module.run(out / name, quick, seeds)
        result.update(wall_s=time.perf_counter() - t0, seeds=list(seeds))
        study["experiments"][name] = result
        if log:
            log(f"study: {name} done in {result['wall_s']:.0f} s")
    study["wall_s"] = time.perf_counter() - start
    study["report"] = str(write_report(out, study))
    return study


__all__ = ["FULL_SEEDS", "NAMES", "QUICK_SEEDS", "experiment", "run_study"]
