"""What the experiments share: threads, training on a layout, data paths, aggregates, tables and plots."""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..layout import Layout  # noqa: E402
from ..model import SequenceModel  # noqa: E402
from ..objectives import Objective  # noqa: E402
from ..train import TrainConfig, Trainer  # noqa: E402

CPU = torch.device("cpu")
QUIET = {"log_every": 10**9, "checkpoint_every": 1e9}


@contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Run with `n` torch threads (None: leave as is), restoring the previous setting afterwards.

    Tiny models train fastest on one thread: on busy cores extra threads mostly wait for each other.
    """
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def fit(model: SequenceModel, objective: Objective, layout: Layout, config: TrainConfig) -> dict[str, Any]:
    """Train `model` on `layout` on the CPU without a run directory; returns the trainer's summary."""
    return Trainer(model, objective, layout, None, config, None, device=CPU, progress=False).fit()


def data_dir() -> Path:
    """The shared data folder: $STATEFULRNN_DATA, else the first `shared/data` above the cwd or this package."""
    if os.environ.get("STATEFULRNN_DATA"):
        return Path(os.environ["STATEFULRNN_DATA"])
    for base in (Path.cwd(), Path(__file__).resolve()):
        for parent in (base, *base.parents):
            if (parent / "shared" / "data").is_dir():
                return parent / "shared" / "data"
    raise FileNotFoundError("the shared data folder (shared/data) was not found: set STATEFULRNN_DATA to its path")


def spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, min and max of per-seed values."""
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def fmt(stats: dict[str, float], digits: int = 3) -> str:
    """`mean` alone for one seed, `mean (min..max)` for several."""
    if stats["min"] == stats["max"]:
        return f"{stats['mean']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} ({stats['min']:.{digits}f}..{stats['max']:.{digits}f})"


def table(title: str, columns: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    """A table for the report: a title, column names and rows of cells (any value, shown with str)."""
    return {"title": title, "columns": columns, "rows": [[str(c) for c in r] for r in rows]}


def line_plot(
    out: Path,
    panels: dict[str, dict[str, tuple[Sequence[float], Sequence[float]]]],
    *,
    xlabel: str,
    ylabel: str | dict[str, str],
    title: str,
    styles: dict[str, dict[str, Any]] | None = None,
    hlines: dict[str, float] | None = None,
    vlines: dict[str, float] | None = None,
    logx: bool = False,
) -> Path:
    """Side-by-side panels of labelled lines, `panels[panel][label] = (x, y)`, saved as a PNG.

    `ylabel` is one label for every panel or one per panel name.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), dpi=110, squeeze=False)
    for ax, (name, lines) in zip(axes[0], panels.items()):
        for label, (x, y) in lines.items():
            ax.plot(x, y, label=label, **(styles or {}).get(label, {"marker": "o", "ms": 3}))
        for label, y in (hlines or {}).items():
            ax.axhline(y, color="0.5", ls=":", lw=1, label=label)
        for (label, x), ls in zip((vlines or {}).items(), ("--", "-.", ":")):
            ax.axvline(x, color="0.3", ls=ls, lw=0.8, label=label)
        if logx:
            ax.set_xscale("log", base=2)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel if isinstance(ylabel, str) else ylabel[name])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def bar_plot(out: Path, groups: list[str], panels: dict[str, dict[str, list[float]]], *, title: str) -> Path:
    """Side-by-side panels of grouped bars, `panels[ylabel][label][i]` the value of `groups[i]`, saved as a PNG."""
    fig, axes = plt.subplots(1, len(panels), figsize=(max(5.0, 0.9 * len(groups) + 2) * len(panels), 3.8), dpi=110)
    for ax, (ylabel, bars) in zip(np.atleast_1d(axes), panels.items()):
        width = 0.8 / max(len(bars), 1)
        for k, (label, values) in enumerate(bars.items()):
            ax.bar([i + (k - (len(bars) - 1) / 2) * width for i in range(len(groups))], values, width, label=label)
        ax.set_xticks(range(len(groups)), groups, fontsize=8)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, axis="y")
        if len(bars) > 1:
            ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
